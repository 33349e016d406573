//! Test support: `serde_json::Value` to PostgreSQL's binary jsonb, as `convertToJsonb` writes
//! it (src/backend/utils/adt/jsonb_util.c), so properties can check the reader against the
//! writer without a server. Not used by the extension (it only ever reads PostgreSQL's own
//! jsonb); compiled for tests and, with the `encoder` feature, for core/fuzz.
//!
//! Layout: a container is a header word (count | JB_FOBJECT/JB_FARRAY, JB_FSCALAR for a
//! top-level scalar), then one JEntry per element (an object: all keys, then all values; keys
//! sorted by length, then bytes), then the entries' data. A JEntry holds the entry's length,
//! except every JB_OFFSET_STRIDE-th, which holds its end offset (JENTRY_HAS_OFF). Numerics and
//! containers are padded to 4-byte alignment, counted from the varlena's start, and the padding
//! counts as part of the padded entry.

use serde_json::Value;

const JB_OFFSET_STRIDE: usize = 32;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

/// The jsonb of `value`: the bytes that follow the varlena header (what
/// [`crate::jsonb::Container::new`] reads). Recursive: for values of modest depth; see
/// [`nested_arrays`] and [`nested_objects`] for deep ones.
pub fn encode(value: &Value) -> Vec<u8> {
    // Alignment counts from the varlena's start: keep a 4-byte stand-in for its header.
    let mut buf = vec![0u8; 4];
    match value {
        Value::Array(items) => {
            convert_array(&mut buf, items.iter(), items.len(), 0);
        }
        Value::Object(_) => {
            convert_value(&mut buf, value);
        }
        scalar => {
            convert_array(&mut buf, std::iter::once(scalar), 1, JB_FSCALAR);
        }
    }
    buf.split_off(4)
}

fn pad_to_int(buf: &mut Vec<u8>) -> u32 {
    let pad = (4 - buf.len() % 4) % 4;
    buf.resize(buf.len() + pad, 0);
    pad as u32
}

/// Append `value`'s data to `buf`; its JEntry.
fn convert_value(buf: &mut Vec<u8>, value: &Value) -> u32 {
    match value {
        Value::Null => JENTRY_ISNULL,
        Value::Bool(false) => JENTRY_ISBOOL_FALSE,
        Value::Bool(true) => JENTRY_ISBOOL_TRUE,
        Value::String(s) => {
            buf.extend_from_slice(s.as_bytes());
            s.len() as u32
        }
        Value::Number(n) => {
            let pad = pad_to_int(buf);
            let numeric = numeric_varlena(&n.to_string(), Header::Pg);
            buf.extend_from_slice(&numeric);
            JENTRY_ISNUMERIC | (pad + numeric.len() as u32)
        }
        Value::Array(items) => convert_array(buf, items.iter(), items.len(), 0),
        Value::Object(members) => {
            let base = buf.len();
            pad_to_int(buf);
            let mut pairs: Vec<(&String, &Value)> = members.iter().collect();
            pairs.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            pairs.dedup_by(|a, b| a.0 == b.0);
            let n = pairs.len();
            buf.extend_from_slice(&(n as u32 | JB_FOBJECT).to_ne_bytes());
            let jentries = buf.len();
            buf.resize(jentries + 8 * n, 0);
            let mut total = 0;
            let keys = pairs.iter().map(|(k, _)| convert_value(buf, &Value::String((*k).clone())));
            let keys: Vec<u32> = keys.collect();
            for (i, meta) in keys.into_iter().enumerate() {
                total = set_jentry(buf, jentries, i, meta, total);
            }
            for (i, (_, v)) in pairs.iter().enumerate() {
                let meta = convert_value(buf, v);
                total = set_jentry(buf, jentries, n + i, meta, total);
            }
            JENTRY_ISCONTAINER | (buf.len() - base) as u32
        }
    }
}

fn convert_array<'v>(
    buf: &mut Vec<u8>,
    items: impl Iterator<Item = &'v Value>,
    n: usize,
    flags: u32,
) -> u32 {
    let base = buf.len();
    pad_to_int(buf);
    buf.extend_from_slice(&(n as u32 | JB_FARRAY | flags).to_ne_bytes());
    let jentries = buf.len();
    buf.resize(jentries + 4 * n, 0);
    let mut total = 0;
    for (i, item) in items.enumerate() {
        let meta = convert_value(buf, item);
        total = set_jentry(buf, jentries, i, meta, total);
    }
    JENTRY_ISCONTAINER | (buf.len() - base) as u32
}

/// Store entry `i`'s JEntry (an end offset every JB_OFFSET_STRIDE entries); the new total.
fn set_jentry(buf: &mut [u8], jentries: usize, i: usize, meta: u32, total: u32) -> u32 {
    let total = total + (meta & JENTRY_OFFLENMASK);
    let meta = if i.is_multiple_of(JB_OFFSET_STRIDE) {
        (meta & JENTRY_TYPEMASK) | total | JENTRY_HAS_OFF
    } else {
        meta
    };
    buf[jentries + 4 * i..jentries + 4 * i + 4].copy_from_slice(&meta.to_ne_bytes());
    total
}

/// Containers nested in one another, outermost first: `true` is an object `{"a": ...}`, `false`
/// an array `[...]`; the innermost holds an empty array. Depth `shape.len() + 1`; built without
/// recursion or any `Value`, so any depth can be tested.
pub fn nested(shape: &[bool]) -> Vec<u8> {
    // size of the container at each level, from the innermost (4 bytes: `[]`) outwards
    let mut sizes = vec![4usize; shape.len() + 1];
    for i in (0..shape.len()).rev() {
        sizes[i] = if shape[i] { 16 } else { 8 } + sizes[i + 1];
    }
    let mut out = Vec::with_capacity(sizes[0]);
    for (i, object) in shape.iter().enumerate() {
        let child = sizes[i + 1] as u32;
        if *object {
            out.extend_from_slice(&(1 | JB_FOBJECT).to_ne_bytes());
            out.extend_from_slice(&(JENTRY_HAS_OFF | 1).to_ne_bytes()); // key "a" ends at 1
            out.extend_from_slice(&(JENTRY_ISCONTAINER | (3 + child)).to_ne_bytes());
            out.extend_from_slice(b"a\0\0\0"); // the key, then padding to the child
        } else {
            out.extend_from_slice(&(1 | JB_FARRAY).to_ne_bytes());
            out.extend_from_slice(&(JENTRY_ISCONTAINER | JENTRY_HAS_OFF | child).to_ne_bytes());
        }
    }
    out.extend_from_slice(&JB_FARRAY.to_ne_bytes());
    out
}

/// `levels` arrays nested in one another around `[]`'s innermost (so depth `levels`), built
/// without recursion or any `Value`.
pub fn nested_arrays(levels: usize) -> Vec<u8> {
    assert!(levels >= 1);
    nested(&vec![false; levels - 1])
}

/// `{"a": {"a": ... {}}}`, `levels` deep, built without recursion or any `Value`.
pub fn nested_objects(levels: usize) -> Vec<u8> {
    assert!(levels >= 1);
    let mut out = Vec::with_capacity(16 * levels);
    for i in 0..levels - 1 {
        let child = 16 * (levels - 2 - i) + 4;
        out.extend_from_slice(&(1 | JB_FOBJECT).to_ne_bytes());
        out.extend_from_slice(&(JENTRY_HAS_OFF | 1).to_ne_bytes()); // key "a" ends at 1
        out.extend_from_slice(&(JENTRY_ISCONTAINER | (3 + child) as u32).to_ne_bytes());
        out.extend_from_slice(b"a\0\0\0"); // the key, then padding to the child
    }
    out.extend_from_slice(&JB_FOBJECT.to_ne_bytes());
    out
}

/// How a hand-built numeric varlena is headed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// As PostgreSQL's make_result builds it: a 4-byte varlena header, the numeric's 2-byte
    /// short header when dscale and weight fit (`NUMERIC_CAN_BE_SHORT`), else the long one.
    Pg,
    /// A 4-byte varlena header and always the long numeric header.
    Long,
    /// A 1-byte (short) varlena header, as a packed datum carries it, and make_result's choice.
    OneByteVarlena,
}

/// A numeric in PostgreSQL's format: sign, weight (of the first base-10000 digit), display
/// scale and base-10000 digits with no leading or trailing zero digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Numeric {
    pub negative: bool,
    pub weight: i16,
    pub dscale: u16,
    pub digits: Vec<i16>,
}

impl Numeric {
    /// As numeric_in reads JSON number text (`-12.50`, `1e400`, `2.5E-3`).
    pub fn parse(text: &str) -> Numeric {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().expect("exponent")),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let dscale = (frac.len() as i64 - exp).max(0) as u16;
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        // the decimal point sits after `point` of `digits`
        let mut point = int.len() as i64 + exp;
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        point -= leading as i64;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Numeric { negative: false, weight: 0, dscale, digits: vec![] };
        }
        let pad = (4 - point.rem_euclid(4)) % 4;
        let mut padded = vec![0u8; pad as usize];
        padded.extend(&digits);
        while !padded.len().is_multiple_of(4) {
            padded.push(0);
        }
        let weight = ((point + pad) / 4 - 1) as i16;
        let groups =
            padded.chunks(4).map(|g| g.iter().fold(0i16, |acc, d| acc * 10 + *d as i16)).collect();
        Numeric { negative, weight, dscale, digits: groups }
    }

    /// The varlena (header included) PostgreSQL stores.
    pub fn varlena(&self, header: Header) -> Vec<u8> {
        let short =
            header != Header::Long && self.dscale <= 63 && (-64..=63).contains(&self.weight);
        let mut body = Vec::new();
        if short {
            let sign = if self.negative { 0x2000 } else { 0 };
            let weight = (if self.weight < 0 { 0x0040 } else { 0 }) | (self.weight as u16 & 0x003F);
            body.extend_from_slice(&(0x8000 | sign | (self.dscale << 7) | weight).to_ne_bytes());
        } else {
            let sign = if self.negative { 0x4000 } else { 0 };
            body.extend_from_slice(&(sign | self.dscale).to_ne_bytes());
            body.extend_from_slice(&self.weight.to_ne_bytes());
        }
        for d in &self.digits {
            body.extend_from_slice(&d.to_ne_bytes());
        }
        let mut out = Vec::new();
        if header == Header::OneByteVarlena {
            assert!(body.len() < 127);
            out.push((((body.len() + 1) << 1) | 1) as u8);
        } else {
            out.extend_from_slice(&(((body.len() + 4) as u32) << 2).to_ne_bytes());
        }
        out.extend(body);
        out
    }
}

/// [`Numeric::parse`] then [`Numeric::varlena`].
pub fn numeric_varlena(text: &str, header: Header) -> Vec<u8> {
    Numeric::parse(text).varlena(header)
}

/// What numeric_out prints for JSON number `text`, computed on decimal strings (independently
/// of the base-10000 format): the reference the reader's numbers are checked against.
pub fn numeric_out(text: &str) -> String {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().expect("exponent")),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let dscale = (frac.len() as i64 - exp).max(0) as usize;
    let digits: String = format!("{int}{frac}");
    let point = int.len() as i64 + exp;
    // digits before the point, and exactly `dscale` after it
    let (before, after) = if point <= 0 {
        (String::new(), format!("{}{digits}", "0".repeat((-point) as usize)))
    } else if point as usize >= digits.len() {
        (format!("{digits}{}", "0".repeat(point as usize - digits.len())), String::new())
    } else {
        (digits[..point as usize].to_owned(), digits[point as usize..].to_owned())
    };
    let before = before.trim_start_matches('0');
    let before = if before.is_empty() { "0" } else { before };
    let mut after = after;
    after.truncate(dscale);
    while after.len() < dscale {
        after.push('0');
    }
    let zero = before == "0" && after.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    if after.is_empty() {
        format!("{sign}{before}")
    } else {
        format!("{sign}{before}.{after}")
    }
}
