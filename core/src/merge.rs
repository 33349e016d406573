//! The logic of `eventstore.merge`, the built-in reducer: fold object-valued event data into a
//! state, key by key and recursively. Plain Rust, so replay can keep the state as a
//! `serde_json::Value` between events instead of converting it to and from jsonb each step.

use serde_json::{Map, Value};

use crate::json::{drop_iteratively, value_depth, JsonError};

type Object = Map<String, Value>;

/// Merge `patch` into `target`: where both are objects, each key of `patch` is merged into the
/// same key of `target` (recursively); anywhere else `patch` replaces `target` (arrays, scalars
/// and JSON null included). [`JsonError::TooDeep`] if the merged value would nest more than
/// `limit` levels (see [`crate::json`]); `target` may then be partly merged.
///
/// Recursive, one frame per level where both sides are objects, never more than `limit + 1`
/// frames (see [`crate::json::READ_DEPTH_LIMIT`] for their size).
pub fn deep_merge(target: &mut Value, patch: Value, limit: usize) -> Result<(), JsonError> {
    merge_at(target, patch, 0, limit)
}

/// [`deep_merge`] for a `target` that sits inside `level` containers of the whole value. Only
/// the descent is here, so each level's frame stays small; the rest is in [`merge_member`].
fn merge_at(target: &mut Value, patch: Value, level: usize, limit: usize) -> Result<(), JsonError> {
    let Some((into, from)) = merge_into(target, patch, level, limit)? else { return Ok(()) };
    let mut members = from.into_iter();
    while let Some((key, value)) = members.next() {
        let result = match merge_member(into, key, value, level, limit) {
            Ok(Some((slot, value))) => merge_at(slot, value, level + 1, limit),
            other => other.map(|_| ()),
        };
        if let Err(e) = result {
            members.for_each(|(_, v)| drop_iteratively(v));
            return Err(e);
        }
    }
    Ok(())
}

/// The object of `target` to merge `patch`'s members into, with those members; `None` when
/// `patch` has replaced `target` whole.
#[inline(never)]
fn merge_into(
    target: &mut Value,
    patch: Value,
    level: usize,
    limit: usize,
) -> Result<Option<(&mut Object, Object)>, JsonError> {
    let too_deep = JsonError::TooDeep { limit };
    let Some(budget) = limit.checked_sub(level) else { return Err(refuse(patch, too_deep)) };
    match (target, patch) {
        (Value::Object(into), Value::Object(from)) => {
            if budget == 0 {
                return Err(refuse(Value::Object(from), too_deep));
            }
            Ok(Some((into, from)))
        }
        (slot, value) => match value_depth(&value, budget) {
            Ok(_) => {
                *slot = value;
                Ok(None)
            }
            Err(e) => Err(refuse(value, e.of_limit(limit))),
        },
    }
}

/// Merge one member of a patch object into `into` (at `level`): a new key is inserted; for an
/// existing one, the slot and the value, for [`merge_at`] to merge one level down.
#[inline(never)]
fn merge_member(
    into: &mut Object,
    key: String,
    value: Value,
    level: usize,
    limit: usize,
) -> Result<Option<(&mut Value, Value)>, JsonError> {
    if into.contains_key(&key) {
        return Ok(into.get_mut(&key).map(|slot| (slot, value)));
    }
    // the member's value sits inside level + 1 containers
    match value_depth(&value, limit - level - 1) {
        Ok(_) => {
            into.insert(key, value);
            Ok(None)
        }
        Err(e) => Err(refuse(value, e.of_limit(limit))),
    }
}

/// `error`, for a patch that does not fit; the patch is dropped without recursion (it may be
/// arbitrarily deep).
fn refuse(patch: Value, error: JsonError) -> JsonError {
    drop_iteratively(patch);
    error
}

/// One step of the reducer. `state` is `None` for SQL NULL. Event data that is an object is
/// merged into the state; any other event data (an array, a scalar, JSON null) leaves the state
/// as it is, so a `"data": null` event does not wipe what was folded before.
/// [`JsonError::TooDeep`] if the state would nest more than `limit` levels.
pub fn apply(state: &mut Option<Value>, data: Value, limit: usize) -> Result<(), JsonError> {
    if !data.is_object() {
        drop_iteratively(data);
        return Ok(());
    }
    match state {
        Some(s) => deep_merge(s, data, limit),
        None => match value_depth(&data, limit) {
            Ok(_) => {
                *state = Some(data);
                Ok(())
            }
            Err(e) => Err(refuse(data, e)),
        },
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn merged(state: Option<Value>, data: Value) -> Option<Value> {
        let mut s = state;
        apply(&mut s, data, 100).unwrap();
        s
    }

    #[test]
    fn objects_merge_key_by_key_recursively() {
        let state = json!({"status": "placed", "customer": {"id": 7, "name": "Ada"}, "n": 1});
        let data = json!({"status": "paid", "customer": {"name": "Ada L.", "vip": true}});
        assert_eq!(
            merged(Some(state), data),
            Some(
                json!({"status": "paid", "customer": {"id": 7, "name": "Ada L.", "vip": true}, "n": 1})
            )
        );
    }

    #[test]
    fn other_values_replace() {
        let state = json!({"items": [1, 2], "address": {"city": "Oslo"}, "note": "x"});
        let data = json!({"items": [3], "address": "unknown", "note": null});
        assert_eq!(
            merged(Some(state), data),
            Some(json!({"items": [3], "address": "unknown", "note": null}))
        );
        // an object replaces a scalar
        assert_eq!(
            merged(Some(json!({"a": 1})), json!({"a": {"b": 2}})),
            Some(json!({"a": {"b": 2}}))
        );
    }

    #[test]
    fn non_object_data_leaves_state_alone() {
        for data in [json!(null), json!([1, 2]), json!("text"), json!(42)] {
            assert_eq!(merged(Some(json!({"a": 1})), data.clone()), Some(json!({"a": 1})));
            assert_eq!(merged(None, data), None);
        }
    }

    #[test]
    fn object_data_replaces_a_non_object_or_null_state() {
        assert_eq!(merged(None, json!({"a": 1})), Some(json!({"a": 1})));
        assert_eq!(merged(Some(json!(null)), json!({"a": 1})), Some(json!({"a": 1})));
        assert_eq!(merged(Some(json!([1])), json!({"a": 1})), Some(json!({"a": 1})));
    }

    #[test]
    fn empty_object_changes_nothing() {
        assert_eq!(merged(Some(json!({"a": {"b": 1}})), json!({})), Some(json!({"a": {"b": 1}})));
        assert_eq!(
            merged(Some(json!({"a": {"b": 1}})), json!({"a": {}})),
            Some(json!({"a": {"b": 1}}))
        );
    }
}
