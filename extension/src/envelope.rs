//! Validation of what callers hand to `append`: stream ids and the JSON array of events.
//! Pure Rust, so every rule is unit-tested without a database.

use std::collections::HashMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::EsError;

/// One event as the caller described it, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Caller-supplied id (the idempotency key), if any.
    pub id: Option<Uuid>,
    pub event_type: String,
    pub data: Value,
    pub metadata: Value,
}

const EVENT_KEYS: &str = "\"type\", \"data\", \"metadata\" and \"id\"";

pub fn validate_stream_id(stream_id: Option<&str>) -> Result<&str, EsError> {
    match stream_id {
        None => Err(EsError::invalid("stream_id", "must not be NULL")),
        Some(s) if s.trim().is_empty() => Err(EsError::invalid("stream_id", "must not be empty")),
        Some(s) => Ok(s),
    }
}

pub fn validate_event_type(argument: &str, event_type: Option<&str>) -> Result<String, EsError> {
    match event_type {
        None => Err(EsError::invalid(argument, "is required")),
        Some(t) if t.trim().is_empty() => Err(EsError::invalid(argument, "must not be empty")),
        Some(t) => Ok(t.to_owned()),
    }
}

pub fn validate_metadata(argument: &str, metadata: Value) -> Result<Value, EsError> {
    match metadata {
        Value::Object(_) => Ok(metadata),
        other => Err(EsError::invalid(
            argument,
            format!("must be a JSON object, got {}", json_kind(&other)),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse `events` (the `append` argument) into validated events, in order.
pub fn parse_events(events: Option<Value>) -> Result<Vec<NewEvent>, EsError> {
    let items = match events {
        None => return Err(EsError::invalid("events", "must not be NULL")),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(EsError::invalid(
                "events",
                format!("must be a JSON array of event objects, got {}", json_kind(&other)),
            ))
        }
    };
    if items.is_empty() {
        return Err(EsError::invalid("events", "must contain at least one event"));
    }
    let mut parsed = Vec::with_capacity(items.len());
    let mut seen_ids: HashMap<Uuid, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let event = parse_event(i, item)?;
        if let Some(id) = event.id {
            if let Some(first) = seen_ids.insert(id, i) {
                return Err(EsError::invalid(
                    format!("events[{i}].id"),
                    format!("{id} is also the id of events[{first}]; ids must be unique"),
                ));
            }
        }
        parsed.push(event);
    }
    Ok(parsed)
}

fn parse_event(i: usize, item: Value) -> Result<NewEvent, EsError> {
    let mut object: Map<String, Value> = match item {
        Value::Object(o) => o,
        other => {
            return Err(EsError::invalid(
                format!("events[{i}]"),
                format!("must be a JSON object with {EVENT_KEYS}, got {}", json_kind(&other)),
            ))
        }
    };
    let event_type = match object.remove("type") {
        Some(Value::String(t)) => validate_event_type(&format!("events[{i}].type"), Some(&t))?,
        None | Some(Value::Null) => {
            return Err(EsError::invalid(format!("events[{i}].type"), "is required"))
        }
        Some(other) => {
            return Err(EsError::invalid(
                format!("events[{i}].type"),
                format!("must be a string, got {}", json_kind(&other)),
            ))
        }
    };
    let data = object.remove("data").unwrap_or_else(|| Value::Object(Map::new()));
    let metadata = match object.remove("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(m) => validate_metadata(&format!("events[{i}].metadata"), m)?,
    };
    let id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_uuid(&format!("events[{i}].id"), &s)?),
        Some(other) => {
            return Err(EsError::invalid(
                format!("events[{i}].id"),
                format!("must be a UUID string, got {}", json_kind(&other)),
            ))
        }
    };
    if let Some(unknown) = object.keys().next() {
        return Err(EsError::invalid(
            format!("events[{i}]"),
            format!("unknown key \"{unknown}\" (an event has {EVENT_KEYS})"),
        ));
    }
    Ok(NewEvent { id, event_type, data, metadata })
}

pub fn parse_uuid(argument: &str, s: &str) -> Result<Uuid, EsError> {
    Uuid::parse_str(s)
        .map_err(|e| EsError::invalid(argument, format!("\"{s}\" is not a valid UUID ({e})")))
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn reason(r: Result<Vec<NewEvent>, EsError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        e.to_string()
    }

    #[test]
    fn defaults_fill_data_and_metadata() {
        let events = parse_events(Some(json!([{"type": "OrderPlaced"}]))).unwrap();
        assert_eq!(
            events,
            vec![NewEvent {
                id: None,
                event_type: "OrderPlaced".into(),
                data: json!({}),
                metadata: json!({}),
            }]
        );
    }

    #[test]
    fn keeps_order_ids_and_any_json_data() {
        let id = "5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10";
        let events = parse_events(Some(json!([
            {"type": "A", "data": [1, 2], "id": id},
            {"type": "B", "data": "text", "metadata": {"correlation_id": "c1"}},
        ])))
        .unwrap();
        assert_eq!(events[0].id, Some(Uuid::parse_str(id).unwrap()));
        assert_eq!(events[0].data, json!([1, 2]));
        assert_eq!(events[1].event_type, "B");
        assert_eq!(events[1].metadata, json!({"correlation_id": "c1"}));
    }

    #[test]
    fn rejects_what_is_not_an_array_of_events() {
        assert!(reason(parse_events(None)).contains("invalid events: must not be NULL"));
        assert!(reason(parse_events(Some(json!({"type": "A"})))).contains("got an object"));
        assert!(reason(parse_events(Some(json!([])))).contains("at least one event"));
        assert!(reason(parse_events(Some(json!([1])))).contains("invalid events[0]"));
    }

    #[test]
    fn rejects_missing_or_empty_type_naming_the_position() {
        let r = reason(parse_events(Some(json!([{"type": "A"}, {"data": {}}]))));
        assert_eq!(r, "invalid events[1].type: is required");
        let r = reason(parse_events(Some(json!([{"type": "  "}]))));
        assert_eq!(r, "invalid events[0].type: must not be empty");
        let r = reason(parse_events(Some(json!([{"type": 5}]))));
        assert!(r.contains("events[0].type: must be a string"), "{r}");
    }

    #[test]
    fn rejects_bad_ids_metadata_and_unknown_keys() {
        let r = reason(parse_events(Some(json!([{"type": "A", "id": "nope"}]))));
        assert!(r.starts_with("invalid events[0].id: \"nope\" is not a valid UUID"), "{r}");
        let r = reason(parse_events(Some(json!([{"type": "A", "metadata": [1]}]))));
        assert_eq!(r, "invalid events[0].metadata: must be a JSON object, got an array");
        let r = reason(parse_events(Some(json!([{"type": "A", "payload": {}}]))));
        assert!(r.contains("unknown key \"payload\""), "{r}");
        let id = "5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10";
        let r = reason(parse_events(Some(json!([{"type": "A", "id": id}, {"type": "B", "id": id}]))));
        assert!(r.contains("events[1].id") && r.contains("events[0]"), "{r}");
    }

    #[test]
    fn stream_ids_must_be_non_empty() {
        assert_eq!(validate_stream_id(Some("order-1")).unwrap(), "order-1");
        assert_eq!(
            validate_stream_id(Some("")).unwrap_err().to_string(),
            "invalid stream_id: must not be empty"
        );
        assert!(validate_stream_id(None).is_err());
    }
}
