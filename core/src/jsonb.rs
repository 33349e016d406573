//! Reading PostgreSQL's on-disk jsonb (a `JsonbContainer`, src/include/utils/jsonb.h) directly:
//! `append` validates its arguments and replay merges each event's data into the state without
//! printing jsonb as text and parsing it again.
//!
//! Numbers keep the exact text `numeric_out` prints (see [`numeric_text`]; serde_json's
//! `arbitrary_precision` holds it), so `120.50` stays `120.50` and `1e400` keeps its 401 digits.
//!
//! Nothing here trusts the bytes: a container's JEntry array must fit in it, every child is a
//! strict sub-slice of its parent, and anything unexpected is [`JsonError::Malformed`], never a
//! panic. Walks are iterative ([`depth_within`], [`Container::to_value`]) or carry a depth
//! budget ([`merge_object`]); the property tests and core/fuzz feed them arbitrary bytes.

use std::fmt::Write;

use serde_json::{Map, Number, Value};

pub use crate::json::{JsonError, READ_DEPTH_LIMIT};

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn int_align(n: usize) -> usize {
    (n + 3) & !3
}

fn utf8(s: &[u8]) -> Result<&str, JsonError> {
    std::str::from_utf8(s).map_err(|_| JsonError::NotUtf8)
}

/// One jsonb container: its bytes start at the header word.
#[derive(Clone, Copy)]
pub struct Container<'a> {
    bytes: &'a [u8],
    header: u32,
}

/// An entry of a container, still in binary form.
#[derive(Clone, Copy)]
pub enum Entry<'a> {
    String(&'a [u8]),
    /// A numeric varlena (header included).
    Number(&'a [u8]),
    Bool(bool),
    Null,
    Container(Container<'a>),
}

impl<'a> Container<'a> {
    /// `bytes` is a jsonb datum's payload: what follows the varlena header. `None` unless the
    /// header is an object, an array or a one-element scalar array, and its JEntry array fits.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let c = Container { bytes, header: u32_at(bytes, 0)? };
        let shape_ok = match c.header & (JB_FSCALAR | JB_FOBJECT | JB_FARRAY) {
            JB_FOBJECT | JB_FARRAY => true,
            flags => flags == JB_FSCALAR | JB_FARRAY && c.count() == 1,
        };
        // With the JEntry array inside `bytes`, every loop over entries is bounded by the input.
        let fits = c.entries().checked_mul(4).and_then(|n| n.checked_add(4)) <= Some(bytes.len());
        (shape_ok && fits).then_some(c)
    }

    pub fn is_object(&self) -> bool {
        self.header & JB_FOBJECT != 0
    }

    /// The container's bytes, from its header on: a nested container copied behind a varlena
    /// header is a jsonb datum of its own (what PostgreSQL's `JsonbValueToJsonb` does for a
    /// binary value).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// How many elements (an array) or key/value pairs (an object) this container holds.
    pub fn len(&self) -> usize {
        self.count()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The value this container stands for: a top-level scalar is stored as a one-element
    /// array flagged scalar; that element is the value (`None` if it is not a scalar).
    pub fn root(self) -> Option<Entry<'a>> {
        if self.is_scalar() {
            match self.range(0, 1).next()?? {
                Entry::Container(_) => None,
                scalar => Some(scalar),
            }
        } else {
            Some(Entry::Container(self))
        }
    }

    /// An array's elements (`None` for an object), each `None` if unreadable (the last item
    /// then).
    pub fn elements(self) -> Option<Entries<'a>> {
        if self.is_object() {
            None
        } else {
            Some(self.range(0, self.count()))
        }
    }

    /// An object's (key, value) pairs, in storage order (keys by length, then bytes); each
    /// `None` if unreadable (the last item then). Empty for an array.
    pub fn pairs(self) -> Pairs<'a> {
        let n = if self.is_object() { self.count() } else { 0 };
        Pairs { keys: self.range(0, n), values: self.range(n, 2 * n) }
    }

    /// The whole value as a `serde_json::Value`, built without recursion; `TooDeep` if it
    /// nests more than `limit` levels.
    pub fn to_value(self, limit: usize) -> Result<Value, JsonError> {
        if self.is_scalar() {
            return self.root().ok_or(JsonError::Malformed)?.to_value(limit);
        }
        if limit == 0 {
            return Err(JsonError::TooDeep { limit });
        }
        let mut stack = vec![Building::new(self)?];
        loop {
            let top = stack.last_mut().ok_or(JsonError::Malformed)?;
            match top.next_child()? {
                Some(Entry::Container(c)) => {
                    if stack.len() >= limit {
                        return Err(JsonError::TooDeep { limit });
                    }
                    stack.push(Building::new(c)?);
                }
                Some(scalar) => top.add(scalar.to_value(0)?),
                None => {
                    let done = stack.pop().ok_or(JsonError::Malformed)?.finish();
                    match stack.last_mut() {
                        Some(parent) => parent.add(done),
                        None => return Ok(done),
                    }
                }
            }
        }
    }

    fn is_scalar(&self) -> bool {
        self.header & JB_FSCALAR != 0
    }

    fn count(&self) -> usize {
        (self.header & JB_CMASK) as usize
    }

    fn entries(&self) -> usize {
        if self.is_object() {
            self.count() * 2
        } else {
            self.count()
        }
    }

    fn jentry(&self, i: usize) -> Option<u32> {
        u32_at(self.bytes, 4 + 4 * i)
    }

    /// Start of entry `index`'s data, relative to the end of the JEntry array.
    fn offset(&self, index: usize) -> Option<usize> {
        let mut offset = 0usize;
        for i in (0..index).rev() {
            let je = self.jentry(i)?;
            offset = offset.checked_add((je & JENTRY_OFFLENMASK) as usize)?;
            if je & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        Some(offset)
    }

    /// Entries `from..to`, in order (`to` at most the number of entries).
    fn range(self, from: usize, to: usize) -> Entries<'a> {
        let to = to.min(self.entries());
        Entries { container: self, next: from, end: to, offset: self.offset(from) }
    }

    /// The entries that can hold containers: an array's elements, an object's values.
    fn children(self) -> Entries<'a> {
        if self.is_object() {
            self.range(self.count(), 2 * self.count())
        } else {
            self.range(0, self.count())
        }
    }
}

/// Some of a container's entries, in order, each read from the previous one's offset.
#[derive(Clone)]
pub struct Entries<'a> {
    container: Container<'a>,
    next: usize,
    end: usize,
    /// Where entry `next`'s data starts; `None` once the offsets stopped making sense.
    offset: Option<usize>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Option<Entry<'a>>;

    fn next(&mut self) -> Option<Option<Entry<'a>>> {
        if self.next >= self.end {
            return None;
        }
        let entry = self.read(self.next);
        // After an unreadable entry nothing later can be located: stop there.
        self.next = if entry.is_some() { self.next + 1 } else { self.end };
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next);
        (0, Some(n))
    }
}

impl<'a> Entries<'a> {
    fn read(&mut self, i: usize) -> Option<Entry<'a>> {
        let c = self.container;
        let start = self.offset?;
        let je = c.jentry(i)?;
        let field = (je & JENTRY_OFFLENMASK) as usize;
        let end = if je & JENTRY_HAS_OFF != 0 { field } else { start.checked_add(field)? };
        self.offset = Some(end);
        let base = 4 + 4 * c.entries();
        // `get` refuses end < start and anything past the container: children are sub-slices.
        let data = c.bytes.get(base.checked_add(start)?..base.checked_add(end)?)?;
        let aligned = |d: &'a [u8]| d.get(int_align(start) - start..);
        Some(match je & JENTRY_TYPEMASK {
            JENTRY_ISSTRING => Entry::String(data),
            JENTRY_ISNUMERIC => Entry::Number(aligned(data)?),
            JENTRY_ISBOOL_FALSE => Entry::Bool(false),
            JENTRY_ISBOOL_TRUE => Entry::Bool(true),
            JENTRY_ISNULL => Entry::Null,
            JENTRY_ISCONTAINER => {
                let child = Container::new(aligned(data)?)?;
                // Only a top-level value is ever stored as a scalar container.
                if child.is_scalar() {
                    return None;
                }
                Entry::Container(child)
            }
            _ => return None,
        })
    }
}

/// An object's (key, value) pairs; see [`Container::pairs`].
#[derive(Clone)]
pub struct Pairs<'a> {
    keys: Entries<'a>,
    values: Entries<'a>,
}

impl<'a> Pairs<'a> {
    /// The next pair, saying why it is unreadable if it is.
    pub fn next_pair(&mut self) -> Option<Result<(&'a str, Entry<'a>), JsonError>> {
        let key = self.keys.next()?;
        let value = self.values.next();
        Some(match (key, value) {
            (Some(Entry::String(k)), Some(Some(v))) => utf8(k).map(|k| (k, v)),
            _ => {
                self.keys.next = self.keys.end;
                Err(JsonError::Malformed)
            }
        })
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Option<(&'a str, Entry<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.next_pair()?;
        if pair.is_err() {
            self.keys.next = self.keys.end;
        }
        Some(pair.ok())
    }
}

/// A container being turned into a `Value` by [`Container::to_value`].
enum Building<'a> {
    Array { items: Vec<Value>, rest: Entries<'a> },
    Object { map: Map<String, Value>, rest: Pairs<'a>, key: &'a str },
}

impl<'a> Building<'a> {
    fn new(c: Container<'a>) -> Result<Self, JsonError> {
        Ok(if c.is_object() {
            Building::Object { map: Map::new(), rest: c.pairs(), key: "" }
        } else {
            // The count is bounded by the input's length (Container::new checked it).
            Building::Array { items: Vec::with_capacity(c.count()), rest: c.range(0, c.count()) }
        })
    }

    /// The next element or member value (remembering its key); `None` when all are done.
    fn next_child(&mut self) -> Result<Option<Entry<'a>>, JsonError> {
        match self {
            Building::Array { rest, .. } => match rest.next() {
                None => Ok(None),
                Some(entry) => entry.map(Some).ok_or(JsonError::Malformed),
            },
            Building::Object { rest, key, .. } => match rest.next_pair() {
                None => Ok(None),
                Some(pair) => {
                    let (k, v) = pair?;
                    *key = k;
                    Ok(Some(v))
                }
            },
        }
    }

    /// Add the value of the child [`Self::next_child`] returned last.
    fn add(&mut self, value: Value) {
        match self {
            Building::Array { items, .. } => items.push(value),
            Building::Object { map, key, .. } => {
                map.insert((*key).to_owned(), value);
            }
        }
    }

    fn finish(self) -> Value {
        match self {
            Building::Array { items, .. } => Value::Array(items),
            Building::Object { map, .. } => Value::Object(map),
        }
    }
}

impl<'a> Entry<'a> {
    /// The JSON kind, as error messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::String(_) => "a string",
            Entry::Number(_) => "a number",
            Entry::Bool(_) => "a boolean",
            Entry::Null => "null",
            Entry::Container(c) if c.is_object() => "an object",
            Entry::Container(_) => "an array",
        }
    }

    /// The value as a `serde_json::Value` (see [`Container::to_value`]); a number keeps the
    /// exact text `numeric_out` prints.
    pub fn to_value(self, limit: usize) -> Result<Value, JsonError> {
        Ok(match self {
            Entry::String(s) => Value::String(utf8(s)?.to_owned()),
            Entry::Number(n) => Value::Number(numeric(n).ok_or(JsonError::Malformed)?),
            Entry::Bool(b) => Value::Bool(b),
            Entry::Null => Value::Null,
            Entry::Container(c) => c.to_value(limit)?,
        })
    }
}

/// The depth of `entry` (see [`crate::json`]: a scalar is 0, `{}` and `[]` are 1, `{"a": {}}`
/// is 2) if it is at most `limit`, else [`JsonError::TooDeep`]. Iterative, and it stops as soon
/// as the walk goes past `limit`; it reads only JEntries and container headers (no strings or
/// numbers), so a small flat event costs one pass over its JEntry array.
pub fn depth_within(entry: Entry<'_>, limit: usize) -> Result<usize, JsonError> {
    let Entry::Container(root) = entry else { return Ok(0) };
    if root.is_scalar() {
        return root.root().map(|_| 0).ok_or(JsonError::Malformed);
    }
    if limit == 0 {
        return Err(JsonError::TooDeep { limit });
    }
    let mut stack = vec![root.children()];
    let mut deepest = 1;
    while let Some(top) = stack.last_mut() {
        match top.next() {
            None => {
                stack.pop();
            }
            Some(None) => return Err(JsonError::Malformed),
            Some(Some(Entry::Container(c))) => {
                if stack.len() >= limit {
                    return Err(JsonError::TooDeep { limit });
                }
                stack.push(c.children());
                deepest = deepest.max(stack.len());
            }
            Some(Some(_)) => {}
        }
    }
    Ok(deepest)
}

/// A numeric varlena as `numeric_out` prints it, as a JSON number holding that exact text.
fn numeric(varlena: &[u8]) -> Option<Number> {
    numeric_text(varlena)?.parse().ok()
}

/// `numeric_out` of a numeric varlena (src/backend/utils/adt/numeric.c, get_str_from_var;
/// the format is in src/include/utils/numeric.h and numeric.c's "NumericData" comment).
/// `None` for NaN and infinities (not JSON, and never in a jsonb) and for anything that is not
/// a well-formed numeric.
pub fn numeric_text(varlena: &[u8]) -> Option<String> {
    let first = *varlena.first()?;
    let (size, body) = match first & 0x03 {
        0x00 => ((u32_at(varlena, 0)? >> 2) as usize, varlena.get(4..)?), // 4-byte header
        0x02 => return None, // compressed in line: jsonb never stores numerics so
        _ if first == 0x01 => return None, // a TOAST pointer
        _ => ((first >> 1) as usize, varlena.get(1..)?), // 1-byte header
    };
    let body = body.get(..size.checked_sub(varlena.len() - body.len())?)?;
    let n_header = u16_at(body, 0)?;
    let (negative, dscale, weight, digits) = if n_header & 0xC000 == 0xC000 {
        return None; // NaN and infinities are not JSON
    } else if n_header & 0x8000 != 0 {
        let sign_bits = if n_header & 0x0040 != 0 { !0x003F_i16 } else { 0 };
        let weight = sign_bits | (n_header & 0x003F) as i16;
        (n_header & 0x2000 != 0, ((n_header & 0x1F80) >> 7) as usize, weight, body.get(2..)?)
    } else {
        let weight = u16_at(body, 2)? as i16;
        (n_header & 0xC000 == 0x4000, (n_header & 0x3FFF) as usize, weight, body.get(4..)?)
    };
    // Base-10000 digits; an odd trailing byte or a digit out of range is not a numeric.
    if digits.len() % 2 != 0 {
        return None;
    }
    let digits: Vec<i16> =
        digits.chunks_exact(2).map(|d| i16::from_ne_bytes([d[0], d[1]])).collect();
    if digits.iter().any(|d| !(0..10_000).contains(d)) {
        return None;
    }
    let digit = |i: i32| -> i16 {
        usize::try_from(i).ok().and_then(|at| digits.get(at).copied()).unwrap_or(0)
    };
    let mut out = String::with_capacity(16);
    if negative && !digits.is_empty() {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for d in 0..=weight as i32 {
            if d == 0 {
                let _ = write!(out, "{}", digit(d));
            } else {
                let _ = write!(out, "{:04}", digit(d));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut d = weight as i32 + 1;
        while out.len() - start < dscale {
            let _ = write!(out, "{:04}", digit(d));
            d += 1;
        }
        out.truncate(start + dscale);
    }
    Some(out)
}

/// Deep-merge `patch` into `target` (see [`crate::merge::deep_merge`]): where both are
/// objects, key by key and recursively; anywhere else `patch` replaces `target`.
/// [`JsonError::TooDeep`] if the merged value would nest more than `limit` levels; on any
/// error `target` may be partly merged (merging the same patch again gives the same result).
///
/// Recursive, one frame per level where both sides are objects, never more than `limit + 1`
/// frames (see [`READ_DEPTH_LIMIT`] for their size).
pub fn merge_object(
    target: &mut Value,
    patch: Container<'_>,
    limit: usize,
) -> Result<(), JsonError> {
    merge_at(target, patch, 0, limit)
}

/// [`merge_object`] for a `target` that sits inside `level` containers of the whole value.
/// Only the descent is here, so each level's frame stays small; the rest is in [`merge_member`].
fn merge_at(
    target: &mut Value,
    patch: Container<'_>,
    level: usize,
    limit: usize,
) -> Result<(), JsonError> {
    let Some(into) = merge_into(target, patch, level, limit)? else { return Ok(()) };
    let mut pairs = patch.pairs();
    while let Some(pair) = pairs.next_pair() {
        let (key, value) = pair?;
        if let Some((slot, c)) = merge_member(into, key, value, level, limit)? {
            merge_at(slot, c, level + 1, limit)?;
        }
    }
    Ok(())
}

/// The object of `target` to merge `patch`'s members into, or `None` when `patch` has replaced
/// `target` whole.
#[inline(never)]
fn merge_into<'t>(
    target: &'t mut Value,
    patch: Container<'_>,
    level: usize,
    limit: usize,
) -> Result<Option<&'t mut Map<String, Value>>, JsonError> {
    let budget = limit.checked_sub(level).ok_or(JsonError::TooDeep { limit })?;
    if target.is_object() && patch.is_object() {
        if budget == 0 {
            return Err(JsonError::TooDeep { limit });
        }
        return Ok(target.as_object_mut());
    }
    *target = patch.to_value(budget).map_err(|e| e.of_limit(limit))?;
    Ok(None)
}

/// Merge one member of a patch object into `into` (at `level`), unless both sides are objects:
/// then the slot and the patch's object, for [`merge_at`] to descend into.
#[inline(never)]
fn merge_member<'t, 'p>(
    into: &'t mut Map<String, Value>,
    key: &str,
    value: Entry<'p>,
    level: usize,
    limit: usize,
) -> Result<Option<(&'t mut Value, Container<'p>)>, JsonError> {
    // the member's value sits inside level + 1 containers
    let budget = limit - level - 1;
    if let Entry::Container(c) = value {
        if c.is_object() && into.get(key).is_some_and(Value::is_object) {
            return Ok(into.get_mut(key).map(|slot| (slot, c)));
        }
    }
    match (into.get_mut(key), value) {
        // Replace a string in place: its buffer is reused, no allocation per event.
        (Some(Value::String(slot)), Entry::String(s)) => {
            let s = utf8(s)?;
            slot.clear();
            slot.push_str(s);
        }
        (Some(slot), value) => *slot = value.to_value(budget).map_err(|e| e.of_limit(limit))?,
        (None, value) => {
            into.insert(key.to_owned(), value.to_value(budget).map_err(|e| e.of_limit(limit))?);
        }
    }
    Ok(None)
}

/// [`crate::merge::apply`] on binary event data: object data is merged into the state (which
/// it becomes if there is none yet); any other data leaves the state as it is.
pub fn apply(
    state: &mut Option<Value>,
    data: Container<'_>,
    limit: usize,
) -> Result<(), JsonError> {
    if !data.is_object() {
        return Ok(());
    }
    match state {
        Some(s) => merge_object(s, data, limit),
        None => {
            *state = Some(data.to_value(limit)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::encode::{
        encode, nested_arrays, nested_objects, numeric_out, numeric_varlena, Header, Numeric,
    };
    use crate::json::{drop_iteratively, value_depth};
    use serde_json::json;

    fn root(bytes: &[u8]) -> Entry<'_> {
        Container::new(bytes).and_then(Container::root).expect("readable")
    }

    #[test]
    fn reads_back_what_postgres_writes() {
        let values = [
            json!({"status": "placed", "customer": {"id": 7, "name": "Ada", "tags": ["a", "b"]}}),
            json!([1, "two", null, true, false, {"k": []}]),
            json!("a top-level scalar"),
            json!(null),
            json!({}),
            json!([]),
            json!({"é": "ü", "longer key": 1, "k": 2}),
        ];
        for v in values {
            let bytes = encode(&v);
            assert_eq!(root(&bytes).to_value(100), Ok(v.clone()), "{v}");
            assert_eq!(depth_within(root(&bytes), 100), value_depth(&v, 100), "{v}");
        }
    }

    #[test]
    fn offsets_every_32_entries_are_followed() {
        let big: Vec<Value> = (0..100).map(|i| json!({"i": i, "s": "x".repeat(i)})).collect();
        let obj: Map<String, Value> = (0..70).map(|i| (format!("key{i}"), json!([i]))).collect();
        for v in [Value::Array(big), Value::Object(obj)] {
            assert_eq!(root(&encode(&v)).to_value(10), Ok(v));
        }
    }

    #[test]
    fn depth_is_counted_without_recursion_and_stops_at_the_limit() {
        assert_eq!(depth_within(root(&encode(&json!(5))), 0), Ok(0));
        assert_eq!(depth_within(root(&encode(&json!({}))), 1), Ok(1));
        assert_eq!(depth_within(root(&encode(&json!({"a": {}}))), 2), Ok(2));
        assert_eq!(
            depth_within(root(&encode(&json!({"a": {}}))), 1),
            Err(JsonError::TooDeep { limit: 1 })
        );
        // 200,000 levels: a recursive walk would need tens of MB of stack
        for bytes in [nested_arrays(200_000), nested_objects(200_000)] {
            assert_eq!(depth_within(root(&bytes), 128), Err(JsonError::TooDeep { limit: 128 }));
            assert_eq!(depth_within(root(&bytes), 1_000_000), Ok(200_000));
        }
    }

    #[test]
    fn to_value_refuses_past_its_limit() {
        for bytes in [nested_arrays(200_000), nested_objects(200_000)] {
            let r = root(&bytes).to_value(READ_DEPTH_LIMIT);
            assert_eq!(r, Err(JsonError::TooDeep { limit: READ_DEPTH_LIMIT }));
        }
        let at_limit = root(&nested_objects(READ_DEPTH_LIMIT)).to_value(READ_DEPTH_LIMIT).unwrap();
        assert_eq!(value_depth(&at_limit, READ_DEPTH_LIMIT), Ok(READ_DEPTH_LIMIT));
        drop_iteratively(at_limit);
        assert!(root(&nested_arrays(11)).to_value(10).is_err());
        assert!(root(&nested_arrays(10)).to_value(10).is_ok());
    }

    /// Hand-built: 120.50 as PostgreSQL stores it (short numeric header, dscale 2, weight 0,
    /// base-10000 digits 120 and 5000) behind a 4-byte varlena header.
    const NUMERIC_120_50: [u8; 10] = {
        let size = (10u32 << 2).to_ne_bytes();
        let header = (0x8000u16 | (2 << 7)).to_ne_bytes();
        let (d0, d1) = (120i16.to_ne_bytes(), 5000i16.to_ne_bytes());
        [size[0], size[1], size[2], size[3], header[0], header[1], d0[0], d0[1], d1[0], d1[1]]
    };

    #[test]
    fn numeric_text_is_numeric_out() {
        assert_eq!(numeric_text(&NUMERIC_120_50).as_deref(), Some("120.50"));
        let n = Numeric::parse("120.50");
        assert_eq!(
            (n.negative, n.weight, n.dscale, n.digits.as_slice()),
            (false, 0, 2, &[120, 5000][..])
        );
        assert_eq!(n.varlena(Header::Pg), NUMERIC_120_50);
        let n = Numeric::parse("0.00001234");
        assert_eq!((n.weight, n.dscale, n.digits.as_slice()), (-2, 8, &[1234][..]));

        let cases = [
            "123456789012345678901234567890",
            "0.1234567890123456789",
            "120.50",
            "1e400",
            "-1e400",
            "-42",
            "-0.5",
            "-123456789012345678901234567890.000000000000000000001",
            "0",
            "-0",
            "0.000",
            "-0.000",
            "0.00001234",
            "0.5",
            "1e-20",
            "2.5E-3",
            "9999.9999",
            "10000",
            "100000000",
            "1.5e100",
            "12345.678901234567890123456789e-40",
        ];
        for text in cases {
            let expected = numeric_out(text);
            for header in [Header::Pg, Header::Long, Header::OneByteVarlena] {
                let varlena = numeric_varlena(text, header);
                if header == Header::OneByteVarlena && varlena.len() > 127 {
                    continue;
                }
                assert_eq!(numeric_text(&varlena), Some(expected.clone()), "{text} {header:?}");
            }
        }
        assert_eq!(numeric_out("1e400"), format!("1{}", "0".repeat(400)));
        assert_eq!(numeric_out("-0.000"), "0.000");
        assert_eq!(numeric_out("2.5E-3"), "0.0025");

        // NaN, infinities, truncated or garbled numerics are not numbers
        for header in [0xC000u16, 0xD000, 0xF000] {
            let mut nan = NUMERIC_120_50;
            nan[4..6].copy_from_slice(&header.to_ne_bytes());
            assert_eq!(numeric_text(&nan[..6]), None);
        }
        assert_eq!(numeric_text(&NUMERIC_120_50[..9]), None);
        let mut bad_digit = NUMERIC_120_50;
        bad_digit[8..10].copy_from_slice(&10_000i16.to_ne_bytes());
        assert_eq!(numeric_text(&bad_digit), None);
    }

    #[test]
    fn numbers_come_back_exactly_as_numeric_out_prints_them() {
        let text = r#"{"big": 123456789012345678901234567890, "frac": 0.1234567890123456789,
                       "price": 120.50, "huge": 1e400, "neg": -0.000, "small": 2.5E-3}"#;
        let data: Value = serde_json::from_str(text).unwrap();
        let bytes = encode(&data);
        let state = merged(Some(json!({"price": 1})), &data, 100).unwrap().unwrap();
        let printed = serde_json::to_string(&state).unwrap();
        let huge = format!("1{}", "0".repeat(400));
        assert_eq!(
            printed,
            format!(
                r#"{{"big":123456789012345678901234567890,"frac":0.1234567890123456789,"huge":{huge},"neg":0.000,"price":120.50,"small":0.0025}}"#
            )
        );
        // and through to_value and the serde merge alike
        assert_eq!(serde_json::to_string(&root(&bytes).to_value(10).unwrap()).unwrap(), printed);
        let mut state = Some(json!({"price": 1}));
        let read = root(&bytes).to_value(10).unwrap();
        crate::merge::apply(&mut state, read, 10).unwrap();
        assert_eq!(serde_json::to_string(&state).unwrap(), printed);
    }

    fn merged(
        state: Option<Value>,
        data: &Value,
        limit: usize,
    ) -> Result<Option<Value>, JsonError> {
        let mut state = state;
        let bytes = encode(data);
        apply(&mut state, Container::new(&bytes).unwrap(), limit)?;
        Ok(state)
    }

    #[test]
    fn binary_merge_is_the_reducer() {
        let state = json!({"status": "placed", "customer": {"id": 7, "name": "Ada"}, "n": 1});
        let data = json!({"status": "paid", "customer": {"name": "Ada L.", "vip": true}});
        let expected =
            json!({"status": "paid", "customer": {"id": 7, "name": "Ada L.", "vip": true}, "n": 1});
        assert_eq!(merged(Some(state), &data, 100), Ok(Some(expected)));
        assert_eq!(merged(None, &json!({"a": 1}), 100), Ok(Some(json!({"a": 1}))));
        for not_object in [json!(null), json!([1]), json!("s"), json!(3)] {
            assert_eq!(merged(Some(json!({"a": 1})), &not_object, 100), Ok(Some(json!({"a": 1}))));
            assert_eq!(merged(None, &not_object, 100), Ok(None));
        }
    }

    #[test]
    fn merge_bounds_the_state_it_builds() {
        // {"a": {"b": {}}} is 3 deep: fits a limit of 3, not 2, whether it is new or merged
        let data = json!({"a": {"b": {}}});
        assert!(merged(None, &data, 3).is_ok());
        assert_eq!(merged(None, &data, 2), Err(JsonError::TooDeep { limit: 2 }));
        assert_eq!(merged(Some(json!({"a": {}})), &data, 2), Err(JsonError::TooDeep { limit: 2 }));
        assert_eq!(merged(Some(json!({"a": 1})), &data, 2), Err(JsonError::TooDeep { limit: 2 }));
        assert!(merged(Some(json!({"a": {"b": {"c": 1}}})), &data, 3).is_ok());

        let deep = nested_objects(100_000);
        let mut state = Some(json!({"a": {"a": {}}}));
        let r = apply(&mut state, Container::new(&deep).unwrap(), READ_DEPTH_LIMIT);
        assert_eq!(r, Err(JsonError::TooDeep { limit: READ_DEPTH_LIMIT }));
        drop_iteratively(state.unwrap());
    }

    /// A state and a patch both `levels` objects deep: the merges (binary and serde) recurse
    /// all the way down.
    fn deepest_merge(levels: usize) -> Result<(), JsonError> {
        let patch = nested_objects(levels);
        let value = || root(&nested_objects(levels)).to_value(levels);
        let mut state = Some(value()?);
        let binary = apply(&mut state, Container::new(&patch).unwrap(), READ_DEPTH_LIMIT);
        let serde = crate::merge::apply(&mut state, value()?, READ_DEPTH_LIMIT);
        drop_iteratively(state.unwrap());
        binary.and(serde)
    }

    #[test]
    fn merge_recursion_stack_use() {
        // READ_DEPTH_LIMIT's doc quotes what this needs; run it on a stack of that size (plus
        // the test harness's own frames) so the claim stays true.
        let stack = if cfg!(debug_assertions) { 1024 } else { 512 } * 1024;
        let t = std::thread::Builder::new().stack_size(stack + 64 * 1024).spawn(|| {
            assert_eq!(deepest_merge(READ_DEPTH_LIMIT), Ok(()));
            assert_eq!(
                deepest_merge(READ_DEPTH_LIMIT + 1),
                Err(JsonError::TooDeep { limit: READ_DEPTH_LIMIT })
            );
        });
        t.unwrap().join().unwrap();
    }

    /// Measure merge's stack use at READ_DEPTH_LIMIT: `STACK_KB=n cargo test ... -- --ignored
    /// measure_merge_stack` overflows (aborts) below the need.
    #[test]
    #[ignore]
    fn measure_merge_stack() {
        let kb: usize = std::env::var("STACK_KB").map_or(1024, |s| s.parse().unwrap());
        let t = std::thread::Builder::new()
            .stack_size(kb * 1024)
            .spawn(|| deepest_merge(READ_DEPTH_LIMIT));
        assert_eq!(t.unwrap().join().unwrap(), Ok(()));
    }
}
