//! What every JSON path shares: how nesting depth is counted, the limits, and the error a
//! bounded walk returns.
//!
//! **Depth.** A scalar (string, number, boolean, null) has depth 0; an array or object has one
//! more than its deepest element or member value: `{}`, `[]` and `[1, 2]` are 1, `{"a": {}}`
//! and `[[1]]` are 2. Object keys do not count. A jsonb's top-level scalar (stored as a
//! one-element array flagged scalar) is depth 0, like the scalar it stands for.
//!
//! Every walk over JSON here is iterative or carries an explicit depth budget, so no input can
//! exhaust the stack of the PostgreSQL backend the extension runs in.

use serde_json::Value;

/// The deepest JSON the extension reads back from storage: `replay`'s merge, snapshots and
/// reads of stored data refuse anything deeper with [`JsonError::TooDeep`] (SQLSTATE 54001).
///
/// Larger than any append limit on purpose: events appended before `eventstore.max_json_depth`
/// existed may nest deeper and must still be readable. Small enough that the one recursive
/// walk (merge: [`crate::jsonb::merge_object`], [`crate::merge::deep_merge`]) stays far from the
/// stack's end: at this depth it needs under 512 KB in a release build and under 1 MB in a
/// debug one (measured, and held by `merge_recursion_stack_use` in jsonb's tests), on top of
/// what PostgreSQL may use (`max_stack_depth`, 2 MB by default) within a backend's 8 MB stack.
/// serde_json's serializer and `Value`'s drop also recurse, with smaller frames.
pub const READ_DEPTH_LIMIT: usize = 1000;

/// A suggested default for `eventstore.max_json_depth`, the limit `append` puts on each event's
/// `data` and `metadata` (it is the SQL side's GUC; this crate only takes the value as an
/// argument). Below 127, serde_json's own text-parser limit, with room for the envelope
/// levels that wrap `data` (`{"data": ...}` in a worker envelope, `[{...}]` in a batch), so an
/// accepted event can travel through any text path.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 64;

/// The setting that holds the append limit; error messages name it.
pub const MAX_JSON_DEPTH_SETTING: &str = "eventstore.max_json_depth";

/// Why a bounded JSON walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The value nests deeper than `limit` levels (see the module doc for how depth counts).
    /// Nothing was recursed into beyond the limit.
    #[error("nests more than {limit} levels deep")]
    TooDeep { limit: usize },
    /// A string or key is not valid UTF-8. jsonb keeps text in the database encoding, so the
    /// binary reader only understands a UTF-8 database.
    #[error("holds text that is not valid UTF-8")]
    NotUtf8,
    /// The bytes are not a jsonb container as PostgreSQL writes one (corruption, or a bug).
    #[error("is not jsonb as PostgreSQL writes it")]
    Malformed,
}

impl JsonError {
    /// The same error, a `TooDeep` naming `limit`: a walk that checked part of a value with
    /// the budget left at that level reports the whole value's limit.
    pub(crate) fn of_limit(self, limit: usize) -> JsonError {
        match self {
            JsonError::TooDeep { .. } => JsonError::TooDeep { limit },
            other => other,
        }
    }
}

/// The depth of `value` if it is at most `limit`, else [`JsonError::TooDeep`]; computed with
/// an explicit stack, stopping as soon as the walk goes past `limit`.
pub fn value_depth(value: &Value, limit: usize) -> Result<usize, JsonError> {
    let mut stack: Vec<Children<'_>> = Vec::new();
    let mut deepest = 0;
    let mut next = Some(value);
    loop {
        if let Some(v) = next.take() {
            let children = match v {
                Value::Array(a) => Children::Array(a.iter()),
                Value::Object(o) => Children::Object(o.values()),
                _ => Children::None,
            };
            if !matches!(children, Children::None) {
                if stack.len() >= limit {
                    return Err(JsonError::TooDeep { limit });
                }
                stack.push(children);
                deepest = deepest.max(stack.len());
            }
        }
        let Some(top) = stack.last_mut() else { return Ok(deepest) };
        match top.next() {
            Some(child) => next = Some(child),
            None => {
                stack.pop();
            }
        }
    }
}

enum Children<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(serde_json::map::Values<'a>),
    None,
}

impl<'a> Iterator for Children<'a> {
    type Item = &'a Value;
    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Children::Array(it) => it.next(),
            Children::Object(it) => it.next(),
            Children::None => None,
        }
    }
}

/// Drop `value` without recursion. serde_json's `Value` drops recursively: a value nested
/// tens of thousands of levels deep (one built in Rust, never one this crate reads, which
/// stops at its limit) would overflow the stack on an ordinary drop.
pub fn drop_iteratively(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(members) => stack.extend(members.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers_not_keys() {
        let cases = [
            (json!(1), 0),
            (json!("s"), 0),
            (json!(null), 0),
            (json!({}), 1),
            (json!([]), 1),
            (json!([1, "a", null]), 1),
            (json!({"a": {}}), 2),
            (json!([[1]]), 2),
            (json!({"a": 1, "b": [2, {"c": [3]}], "d": {}}), 4),
        ];
        for (v, depth) in cases {
            assert_eq!(value_depth(&v, 100), Ok(depth), "{v}");
            assert_eq!(value_depth(&v, depth), Ok(depth), "{v}: the limit is inclusive");
            if depth > 0 {
                assert_eq!(
                    value_depth(&v, depth - 1),
                    Err(JsonError::TooDeep { limit: depth - 1 })
                );
            }
        }
    }

    /// `levels` nested arrays around `null`, built without recursion.
    fn nested(levels: usize) -> Value {
        let mut v = Value::Null;
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn deep_values_are_measured_and_dropped_without_recursion() {
        let v = nested(200_000);
        assert_eq!(value_depth(&v, 1000), Err(JsonError::TooDeep { limit: 1000 }));
        assert_eq!(value_depth(&v, 300_000), Ok(200_000));
        drop_iteratively(v);
    }
}
