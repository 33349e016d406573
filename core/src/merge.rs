//! The logic of `eventstore.merge`, the built-in reducer: fold object-valued event data into a
//! state, key by key and recursively. Plain Rust, so replay can keep the state as a
//! `serde_json::Value` between events instead of converting it to and from jsonb each step.

use serde_json::Value;

/// Merge `patch` into `target`: where both are objects, each key of `patch` is merged into the
/// same key of `target` (recursively); anywhere else `patch` replaces `target` (arrays, scalars
/// and JSON null included).
pub fn deep_merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(slot) => deep_merge(slot, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// One step of the reducer. `state` is `None` for SQL NULL. Event data that is an object is
/// merged into the state; any other event data (an array, a scalar, JSON null) leaves the state
/// as it is, so a `"data": null` event does not wipe what was folded before.
pub fn apply(state: &mut Option<Value>, data: Value) {
    if !data.is_object() {
        return;
    }
    match state {
        Some(s) => deep_merge(s, data),
        None => *state = Some(data),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn merged(state: Option<Value>, data: Value) -> Option<Value> {
        let mut s = state;
        apply(&mut s, data);
        s
    }

    #[test]
    fn objects_merge_key_by_key_recursively() {
        let state = json!({"status": "placed", "customer": {"id": 7, "name": "Ada"}, "n": 1});
        let data = json!({"status": "paid", "customer": {"name": "Ada L.", "vip": true}});
        assert_eq!(
            merged(Some(state), data),
            Some(json!({"status": "paid", "customer": {"id": 7, "name": "Ada L.", "vip": true}, "n": 1}))
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
        assert_eq!(merged(Some(json!({"a": 1})), json!({"a": {"b": 2}})), Some(json!({"a": {"b": 2}})));
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
        assert_eq!(merged(Some(json!({"a": {"b": 1}})), json!({"a": {}})), Some(json!({"a": {"b": 1}})));
    }
}
