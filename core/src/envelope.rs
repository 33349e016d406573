//! Validation of what callers hand to `append`: stream ids and the JSON array of events.
//! The rules are written once against [`JsonView`], which both `serde_json` values and
//! PostgreSQL's binary jsonb implement: the extension validates the jsonb it is given in place
//! (the rows are then built from that same jsonb in SQL, never printed and reparsed), and every
//! rule is unit-tested in plain Rust.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::error::EsError;
use crate::jsonb::Entry;

/// What `append` needs to know of one event of a batch; `data` and `metadata` stay in the
/// caller's jsonb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Caller-supplied id (the idempotency key), if any.
    pub id: Option<Uuid>,
    pub event_type: String,
}

const EVENT_KEYS: &str = "\"type\", \"data\", \"metadata\" and \"id\"";

/// Read access to a JSON value, as much as validation needs.
pub trait JsonView<'a>: Sized {
    /// The JSON kind, as error messages name it ("an object", "null", ...).
    fn kind(&self) -> &'static str;
    fn as_str(&self) -> Option<&'a str>;
    fn is_null(&self) -> bool;
    fn is_object(&self) -> bool;
    /// An array's elements; `None` if this is not an array.
    fn elements(&self) -> Option<Vec<Self>>;
    /// An object's members; `None` if this is not an object.
    fn members(&self) -> Option<Vec<(&'a str, Self)>>;
}

impl<'a> JsonView<'a> for &'a Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
    fn as_str(&self) -> Option<&'a str> {
        Value::as_str(self)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn elements(&self) -> Option<Vec<Self>> {
        self.as_array().map(|a| a.iter().collect())
    }
    fn members(&self) -> Option<Vec<(&'a str, Self)>> {
        self.as_object().map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect())
    }
}

/// Binary jsonb that does not read as PostgreSQL writes it is a bug, not bad input.
fn readable<T>(v: Option<T>) -> T {
    v.expect("pg_eventstore: unreadable jsonb")
}

impl<'a> JsonView<'a> for Entry<'a> {
    fn kind(&self) -> &'static str {
        Entry::kind(self)
    }
    fn as_str(&self) -> Option<&'a str> {
        match self {
            Entry::String(s) => Some(readable(std::str::from_utf8(s).ok())),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Entry::Null)
    }
    fn is_object(&self) -> bool {
        matches!(self, Entry::Container(c) if c.is_object())
    }
    fn elements(&self) -> Option<Vec<Self>> {
        match self {
            Entry::Container(c) => c.elements().map(|items| items.map(readable).collect()),
            _ => None,
        }
    }
    fn members(&self) -> Option<Vec<(&'a str, Self)>> {
        match self {
            Entry::Container(c) if c.is_object() => Some(c.pairs().map(readable).collect()),
            _ => None,
        }
    }
}

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

/// Metadata must be a JSON object.
pub fn validate_metadata<'a>(argument: &str, metadata: impl JsonView<'a>) -> Result<(), EsError> {
    if metadata.is_object() {
        Ok(())
    } else {
        Err(EsError::invalid(argument, format!("must be a JSON object, got {}", metadata.kind())))
    }
}

/// Validate `events` (the `append` argument): a non-empty array of event objects, in order.
pub fn parse_events<'a, V: JsonView<'a>>(events: Option<V>) -> Result<Vec<NewEvent>, EsError> {
    let Some(events) = events else {
        return Err(EsError::invalid("events", "must not be NULL"));
    };
    let Some(items) = events.elements() else {
        return Err(EsError::invalid(
            "events",
            format!("must be a JSON array of event objects, got {}", events.kind()),
        ));
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

fn parse_event<'a, V: JsonView<'a>>(i: usize, item: V) -> Result<NewEvent, EsError> {
    let Some(members) = item.members() else {
        return Err(EsError::invalid(
            format!("events[{i}]"),
            format!("must be a JSON object with {EVENT_KEYS}, got {}", item.kind()),
        ));
    };
    let (mut event_type, mut metadata, mut id, mut unknown) = (None, None, None, None);
    for (key, value) in members {
        match key {
            "type" => event_type = Some(value),
            "data" => {}
            "metadata" => metadata = Some(value),
            "id" => id = Some(value),
            other => unknown = unknown.or(Some(other)),
        }
    }
    let event_type = match event_type {
        Some(t) if !t.is_null() => match t.as_str() {
            Some(s) => validate_event_type(&format!("events[{i}].type"), Some(s))?,
            None => {
                return Err(EsError::invalid(
                    format!("events[{i}].type"),
                    format!("must be a string, got {}", t.kind()),
                ))
            }
        },
        _ => return Err(EsError::invalid(format!("events[{i}].type"), "is required")),
    };
    if let Some(m) = metadata.filter(|m| !m.is_null()) {
        validate_metadata(&format!("events[{i}].metadata"), m)?;
    }
    let id = match id {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(parse_uuid(&format!("events[{i}].id"), s)?),
            None => {
                return Err(EsError::invalid(
                    format!("events[{i}].id"),
                    format!("must be a UUID string, got {}", v.kind()),
                ))
            }
        },
    };
    if let Some(unknown) = unknown {
        return Err(EsError::invalid(
            format!("events[{i}]"),
            format!("unknown key \"{unknown}\" (an event has {EVENT_KEYS})"),
        ));
    }
    Ok(NewEvent { id, event_type })
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

    fn parse(v: Value) -> Result<Vec<NewEvent>, EsError> {
        parse_events(Some(&v))
    }

    #[test]
    fn type_alone_is_an_event() {
        let events = parse(json!([{"type": "OrderPlaced"}])).unwrap();
        assert_eq!(events, vec![NewEvent { id: None, event_type: "OrderPlaced".into() }]);
    }

    #[test]
    fn keeps_order_ids_and_any_json_data() {
        let id = "5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10";
        let events = parse(json!([
            {"type": "A", "data": [1, 2], "id": id},
            {"type": "B", "data": "text", "metadata": {"correlation_id": "c1"}},
            {"type": "C", "data": null, "metadata": null, "id": null},
        ]))
        .unwrap();
        assert_eq!(events[0].id, Some(Uuid::parse_str(id).unwrap()));
        assert_eq!(events[1].event_type, "B");
        assert_eq!(events[2], NewEvent { id: None, event_type: "C".into() });
    }

    #[test]
    fn rejects_what_is_not_an_array_of_events() {
        assert!(reason(parse_events::<&Value>(None)).contains("invalid events: must not be NULL"));
        assert!(reason(parse(json!({"type": "A"}))).contains("got an object"));
        assert!(reason(parse(json!([]))).contains("at least one event"));
        assert!(reason(parse(json!([1]))).contains("invalid events[0]"));
    }

    #[test]
    fn rejects_missing_or_empty_type_naming_the_position() {
        let r = reason(parse(json!([{"type": "A"}, {"data": {}}])));
        assert_eq!(r, "invalid events[1].type: is required");
        let r = reason(parse(json!([{"type": "  "}])));
        assert_eq!(r, "invalid events[0].type: must not be empty");
        let r = reason(parse(json!([{"type": 5}])));
        assert!(r.contains("events[0].type: must be a string"), "{r}");
    }

    #[test]
    fn rejects_bad_ids_metadata_and_unknown_keys() {
        let r = reason(parse(json!([{"type": "A", "id": "nope"}])));
        assert!(r.starts_with("invalid events[0].id: \"nope\" is not a valid UUID"), "{r}");
        let r = reason(parse(json!([{"type": "A", "metadata": [1]}])));
        assert_eq!(r, "invalid events[0].metadata: must be a JSON object, got an array");
        let r = reason(parse(json!([{"type": "A", "payload": {}}])));
        assert!(r.contains("unknown key \"payload\""), "{r}");
        let id = "5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10";
        let r = reason(parse(json!([{"type": "A", "id": id}, {"type": "B", "id": id}])));
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
