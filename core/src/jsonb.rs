//! Reading PostgreSQL's on-disk jsonb (a `JsonbContainer`, src/include/utils/jsonb.h) directly:
//! `append` validates its arguments and replay merges each event's data into the state without
//! printing jsonb as text and parsing it again. Numbers go through the same text as `jsonb_out` prints, so they come out exactly
//! as a `serde_json` parse of the jsonb text would. Anything unexpected returns `None` and the
//! caller takes the slow path.

use std::fmt::Write;

use serde_json::{Map, Number, Value};

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
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
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn int_align(n: usize) -> usize {
    (n + 3) & !3
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
    /// `bytes` is a jsonb datum's payload: what follows the varlena header.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        Some(Container { bytes, header: u32_at(bytes, 0)? })
    }

    pub fn is_object(&self) -> bool {
        self.header & JB_FOBJECT != 0
    }

    /// The value this container stands for: a top-level scalar is stored as a one-element
    /// array flagged scalar; that element is the value.
    pub fn root(self) -> Option<Entry<'a>> {
        if self.is_scalar() {
            self.range(0, 1).next()?
        } else {
            Some(Entry::Container(self))
        }
    }

    /// An array's elements (`None` for an object), each `None` if unreadable.
    pub fn elements(self) -> Option<impl Iterator<Item = Option<Entry<'a>>> + 'a> {
        if self.is_object() {
            None
        } else {
            Some(self.range(0, self.count()))
        }
    }

    fn is_scalar(&self) -> bool {
        self.header & JB_FSCALAR != 0
    }

    fn count(&self) -> usize {
        (self.header & JB_CMASK) as usize
    }

    fn entries(&self) -> usize {
        if self.is_object() { self.count() * 2 } else { self.count() }
    }

    fn jentry(&self, i: usize) -> Option<u32> {
        u32_at(self.bytes, 4 + 4 * i)
    }

    /// Start of entry `index`'s data, relative to the end of the JEntry array.
    fn offset(&self, index: usize) -> Option<usize> {
        let mut offset = 0usize;
        for i in (0..index).rev() {
            let je = self.jentry(i)?;
            offset += (je & JENTRY_OFFLENMASK) as usize;
            if je & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        Some(offset)
    }

    /// Entries `from..to`, in order.
    fn range(self, from: usize, to: usize) -> impl Iterator<Item = Option<Entry<'a>>> + 'a {
        let base = 4 + 4 * self.entries();
        let mut offset = self.offset(from);
        (from..to).map(move |i| {
            let start = offset?;
            let je = self.jentry(i)?;
            let field = (je & JENTRY_OFFLENMASK) as usize;
            let end = if je & JENTRY_HAS_OFF != 0 { field } else { start + field };
            offset = Some(end);
            let data = self.bytes.get(base + start..base + end)?;
            let aligned = |d: &'a [u8]| d.get(int_align(start) - start..);
            Some(match je & JENTRY_TYPEMASK {
                JENTRY_ISSTRING => Entry::String(data),
                JENTRY_ISNUMERIC => Entry::Number(aligned(data)?),
                JENTRY_ISBOOL_FALSE => Entry::Bool(false),
                JENTRY_ISBOOL_TRUE => Entry::Bool(true),
                JENTRY_ISNULL => Entry::Null,
                JENTRY_ISCONTAINER => Entry::Container(Container::new(aligned(data)?)?),
                _ => return None,
            })
        })
    }

    /// An object's (key, value) pairs.
    pub fn pairs(self) -> impl Iterator<Item = Option<(&'a str, Entry<'a>)>> + 'a {
        let n = self.count();
        self.range(0, n).zip(self.range(n, 2 * n)).map(|(k, v)| match (k?, v?) {
            (Entry::String(k), v) => Some((std::str::from_utf8(k).ok()?, v)),
            _ => None,
        })
    }

    pub fn to_value(self) -> Option<Value> {
        if self.is_object() {
            let mut map = Map::new();
            for pair in self.pairs() {
                let (k, v) = pair?;
                map.insert(k.to_owned(), v.to_value()?);
            }
            Some(Value::Object(map))
        } else if self.is_scalar() {
            self.range(0, 1).next()??.to_value()
        } else {
            let items: Option<Vec<Value>> =
                self.range(0, self.count()).map(|e| e?.to_value()).collect();
            Some(Value::Array(items?))
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

    pub fn to_value(self) -> Option<Value> {
        Some(match self {
            Entry::String(s) => Value::String(std::str::from_utf8(s).ok()?.to_owned()),
            Entry::Number(n) => Value::Number(numeric(n)?),
            Entry::Bool(b) => Value::Bool(b),
            Entry::Null => Value::Null,
            Entry::Container(c) => c.to_value()?,
        })
    }
}

/// A numeric varlena as `numeric_out` prints it, then parsed as a JSON number.
fn numeric(varlena: &[u8]) -> Option<Number> {
    let text = numeric_text(varlena)?;
    // Integers (the common case) without the JSON parser.
    if let Ok(i) = text.parse::<i64>() {
        return Some(Number::from(i));
    }
    serde_json::from_str(&text).ok()
}

/// `numeric_out` of a numeric varlena (src/backend/utils/adt/numeric.c, get_str_from_var).
pub fn numeric_text(varlena: &[u8]) -> Option<String> {
    let first = *varlena.first()?;
    let (size, body) = if first & 0x01 == 0x01 {
        ((first >> 1) as usize, varlena.get(1..)?) // 1-byte varlena header
    } else {
        ((u32_at(varlena, 0)? >> 2) as usize, varlena.get(4..)?)
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
    let digit = |i: i32| -> i16 {
        let Ok(at) = usize::try_from(i) else { return 0 };
        match digits.get(at * 2..at * 2 + 2) {
            Some(d) => i16::from_ne_bytes([d[0], d[1]]),
            None => 0,
        }
    };
    let mut out = String::with_capacity(16);
    if negative && digits.len() >= 2 {
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

/// Deep-merge the object `patch` into `target` (see [`crate::merge::deep_merge`]). `None` means
/// the bytes were not understood; `target` may then be partly merged, which is harmless:
/// merging the same patch again gives the same result.
pub fn merge_object(target: &mut Value, patch: Container<'_>) -> Option<()> {
    let Value::Object(into) = target else {
        *target = patch.to_value()?;
        return Some(());
    };
    for pair in patch.pairs() {
        let (key, value) = pair?;
        match (into.get_mut(key), value) {
            (Some(slot @ Value::Object(_)), Entry::Container(c)) if c.is_object() => {
                merge_object(slot, c)?;
            }
            // Replace a string in place: its buffer is reused, no allocation per event.
            (Some(Value::String(slot)), Entry::String(s)) => {
                let s = std::str::from_utf8(s).ok()?;
                slot.clear();
                slot.push_str(s);
            }
            (Some(slot), value) => *slot = value.to_value()?,
            (None, value) => {
                into.insert(key.to_owned(), value.to_value()?);
            }
        }
    }
    Some(())
}

/// [`crate::merge::apply`] on binary event data.
pub fn apply(state: &mut Option<Value>, data: Container<'_>) -> Option<()> {
    if !data.is_object() {
        return Some(());
    }
    match state {
        Some(s) => merge_object(s, data),
        None => {
            *state = Some(data.to_value()?);
            Some(())
        }
    }
}
