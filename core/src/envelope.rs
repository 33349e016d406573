//! Validation of what callers hand to `append`: stream ids, the JSON array of events, and how
//! deep an event's `data` and `metadata` may nest. The rules are written once against
//! [`JsonView`], which both `serde_json` values and PostgreSQL's binary jsonb implement: the
//! extension validates the jsonb it is given in place (the rows are then built from that same
//! jsonb in SQL, never printed and reparsed), and every rule is unit-tested in plain Rust.
//!
//! Any input gives either the events or an [`EsError`]: `22023` naming the argument for
//! everything a caller can get wrong; for binary jsonb that does not read as PostgreSQL writes
//! it (never the case for a real argument), the [`EsError::UnreadableJson`] of [`EsError::json`].

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::error::EsError;
use crate::json::{value_depth, JsonError, MAX_JSON_DEPTH_SETTING};
use crate::jsonb::{depth_within, Entry};

/// What `append` needs to know of one event of a batch; `data` and `metadata` stay in the
/// caller's jsonb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Caller-supplied id (the idempotency key), if any.
    pub id: Option<Uuid>,
    pub event_type: String,
    /// `"schema_version"`, if given: checked against the type's chain by the caller.
    pub schema_version: Option<i32>,
    /// Consistency-boundary tags (see [`crate::query`]), as given.
    pub tags: Vec<String>,
}

const EVENT_KEYS: &str =
    "\"type\", \"data\", \"metadata\", \"id\", \"schema_version\" and \"tags\"";

/// Read access to a JSON value, as much as validation needs. The `Err`s come only from binary
/// jsonb that cannot be read (never from a `serde_json::Value`).
pub trait JsonView<'a>: Copy {
    /// The JSON kind, as error messages name it ("an object", "null", ...).
    fn kind(&self) -> &'static str;
    /// The string, if this is one.
    fn as_str(&self) -> Result<Option<&'a str>, JsonError>;
    fn is_null(&self) -> bool;
    fn is_object(&self) -> bool;
    fn as_bool(&self) -> Option<bool>;
    /// A number's text as PostgreSQL prints it, if this is a number.
    fn number_text(&self) -> Option<String>;
    /// An array's elements; `None` if this is not an array.
    fn elements(&self) -> Result<Option<Vec<Self>>, JsonError>;
    /// An object's members; `None` if this is not an object.
    fn members(&self) -> Result<Option<Vec<(&'a str, Self)>>, JsonError>;
    /// The nesting depth (see [`crate::json`]) if at most `limit`, else `TooDeep`.
    fn depth_within(&self, limit: usize) -> Result<usize, JsonError>;
    /// The number, if this is an integer that fits an i64.
    fn as_i64(&self) -> Option<i64>;
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
    fn as_str(&self) -> Result<Option<&'a str>, JsonError> {
        Ok(Value::as_str(self))
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn number_text(&self) -> Option<String> {
        self.as_number().map(|n| n.to_string())
    }
    fn elements(&self) -> Result<Option<Vec<Self>>, JsonError> {
        Ok(self.as_array().map(|a| a.iter().collect()))
    }
    fn members(&self) -> Result<Option<Vec<(&'a str, Self)>>, JsonError> {
        Ok(self.as_object().map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect()))
    }
    fn depth_within(&self, limit: usize) -> Result<usize, JsonError> {
        value_depth(self, limit)
    }
    fn as_i64(&self) -> Option<i64> {
        // arbitrary_precision: the number's own text, so 2.0 stays a non-integer.
        self.as_number().and_then(|n| n.to_string().parse().ok())
    }
}

impl<'a> JsonView<'a> for Entry<'a> {
    fn kind(&self) -> &'static str {
        Entry::kind(self)
    }
    fn as_str(&self) -> Result<Option<&'a str>, JsonError> {
        match self {
            Entry::String(s) => std::str::from_utf8(s).map(Some).map_err(|_| JsonError::NotUtf8),
            _ => Ok(None),
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Entry::Null)
    }
    fn is_object(&self) -> bool {
        matches!(self, Entry::Container(c) if c.is_object())
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Entry::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn number_text(&self) -> Option<String> {
        match self {
            Entry::Number(n) => crate::jsonb::numeric_text(n),
            _ => None,
        }
    }
    fn elements(&self) -> Result<Option<Vec<Self>>, JsonError> {
        match self {
            Entry::Container(c) => match c.elements() {
                Some(items) => {
                    items.map(|e| e.ok_or(JsonError::Malformed)).collect::<Result<_, _>>().map(Some)
                }
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }
    fn members(&self) -> Result<Option<Vec<(&'a str, Self)>>, JsonError> {
        match self {
            Entry::Container(c) if c.is_object() => {
                let mut pairs = c.pairs();
                let mut members = Vec::with_capacity(c.len());
                while let Some(pair) = pairs.next_pair() {
                    members.push(pair?);
                }
                Ok(Some(members))
            }
            _ => Ok(None),
        }
    }
    fn depth_within(&self, limit: usize) -> Result<usize, JsonError> {
        depth_within(*self, limit)
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Entry::Number(n) => crate::jsonb::numeric_text(n)?.parse().ok(),
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

/// `value`, the argument or event member named `argument` (`data`, `events[3].metadata`),
/// must nest at most `max_depth` levels (see [`crate::json`]); else `22023` naming the
/// argument, the limit and the setting that holds it. Stops reading at `max_depth + 1` levels.
pub fn check_depth<'a>(
    argument: &str,
    value: impl JsonView<'a>,
    max_depth: usize,
) -> Result<(), EsError> {
    match value.depth_within(max_depth) {
        Ok(_) => Ok(()),
        Err(JsonError::TooDeep { limit }) => Err(EsError::invalid(
            argument,
            format!(
                "nests more than {limit} levels deep; the limit is {limit} \
                 ({MAX_JSON_DEPTH_SETTING})"
            ),
        )),
        Err(e) => Err(EsError::json(e, argument)),
    }
}

/// Validate `events` (the `append` argument): a non-empty array of event objects, in order,
/// whose `data` and `metadata` nest at most `max_depth` levels each.
pub fn parse_events<'a, V: JsonView<'a>>(
    events: Option<V>,
    max_depth: usize,
) -> Result<Vec<NewEvent>, EsError> {
    let Some(events) = events else {
        return Err(EsError::invalid("events", "must not be NULL"));
    };
    let Some(items) = events.elements().map_err(|e| EsError::json(e, "events"))? else {
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
        let event = parse_event(i, item, max_depth)?;
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

fn parse_event<'a, V: JsonView<'a>>(
    i: usize,
    item: V,
    max_depth: usize,
) -> Result<NewEvent, EsError> {
    let unreadable = |e| EsError::json(e, format!("events[{i}]"));
    let Some(members) = item.members().map_err(unreadable)? else {
        return Err(EsError::invalid(
            format!("events[{i}]"),
            format!("must be a JSON object with {EVENT_KEYS}, got {}", item.kind()),
        ));
    };
    let (mut event_type, mut data, mut metadata, mut id, mut version, mut tags, mut unknown) =
        (None, None, None, None, None, None, None);
    for (key, value) in members {
        match key {
            "type" => event_type = Some(value),
            "data" => data = Some(value),
            "metadata" => metadata = Some(value),
            "id" => id = Some(value),
            "schema_version" => version = Some(value),
            "tags" => tags = Some(value),
            other => unknown = unknown.or(Some(other)),
        }
    }
    let event_type = match event_type {
        Some(t) if !t.is_null() => match t.as_str().map_err(unreadable)? {
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
        Some(v) => match v.as_str().map_err(unreadable)? {
            Some(s) => Some(parse_uuid(&format!("events[{i}].id"), s)?),
            None => {
                return Err(EsError::invalid(
                    format!("events[{i}].id"),
                    format!("must be a UUID string, got {}", v.kind()),
                ))
            }
        },
    };
    let schema_version = match version {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => Some(parse_schema_version(&format!("events[{i}].schema_version"), v)?),
    };
    if let Some(unknown) = unknown {
        return Err(EsError::invalid(
            format!("events[{i}]"),
            format!("unknown key \"{unknown}\" (an event has {EVENT_KEYS})"),
        ));
    }
    let tags = match tags {
        Some(t) => crate::query::parse_tags(&format!("events[{i}].tags"), t)?,
        None => Vec::new(),
    };
    // Last: the only check that reads the whole payload.
    if let Some(d) = data {
        check_depth(&format!("events[{i}].data"), d, max_depth)?;
    }
    if let Some(m) = metadata {
        check_depth(&format!("events[{i}].metadata"), m, max_depth)?;
    }
    Ok(NewEvent { id, event_type, schema_version, tags })
}

/// An event's `"schema_version"`: an integer from 1 to 2147483647.
fn parse_schema_version<'a>(argument: &str, v: impl JsonView<'a>) -> Result<i32, EsError> {
    match v.as_i64() {
        Some(n) if n >= 1 && n <= i64::from(i32::MAX) => Ok(n as i32),
        Some(n) => Err(EsError::invalid(
            argument,
            format!("must be an integer from 1 to {}, got {n}", i32::MAX),
        )),
        None => Err(EsError::invalid(
            argument,
            format!("must be an integer from 1 to {}, got {}", i32::MAX, v.kind()),
        )),
    }
}

pub fn parse_uuid(argument: &str, s: &str) -> Result<Uuid, EsError> {
    Uuid::parse_str(s)
        .map_err(|e| EsError::invalid(argument, format!("\"{s}\" is not a valid UUID ({e})")))
}

/// At most `limit` events in an `append` batch: a batch is validated and inserted in memory.
/// Anything but an array is left to [`parse_events`] to refuse.
pub fn check_batch_size(events: Option<Entry<'_>>, limit: usize) -> Result<(), EsError> {
    match events {
        Some(Entry::Container(c)) if !c.is_object() && c.len() > limit => {
            Err(EsError::TooManyEvents { count: c.len(), limit })
        }
        _ => Ok(()),
    }
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
        parse_events(Some(&v), 100)
    }

    #[test]
    fn type_alone_is_an_event() {
        let events = parse(json!([{"type": "OrderPlaced"}])).unwrap();
        assert_eq!(
            events,
            vec![NewEvent {
                id: None,
                event_type: "OrderPlaced".into(),
                schema_version: None,
                tags: vec![]
            }]
        );
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
        assert_eq!(
            events[2],
            NewEvent { id: None, event_type: "C".into(), schema_version: None, tags: vec![] }
        );
    }

    #[test]
    fn rejects_what_is_not_an_array_of_events() {
        assert!(
            reason(parse_events::<&Value>(None, 100)).contains("invalid events: must not be NULL")
        );
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

    /// `levels` objects nested under "a", then 1.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |v, _| json!({"a": v}))
    }

    #[test]
    fn data_and_metadata_nest_at_most_max_depth() {
        let batch = json!([{"type": "A", "data": nested(4)}, {"type": "B", "data": nested(5)}]);
        let r = parse_events(Some(&batch), 4).unwrap_err();
        assert_eq!(r.sqlstate(), "22023");
        assert_eq!(
            r.to_string(),
            "invalid events[1].data: nests more than 4 levels deep; the limit is 4 \
             (eventstore.max_json_depth)"
        );
        assert!(parse_events(Some(&batch), 5).is_ok());
        let batch = json!([{"type": "A", "metadata": {"m": nested(4)}}]);
        let r = parse_events(Some(&batch), 4).unwrap_err().to_string();
        assert!(r.starts_with("invalid events[0].metadata: nests more than 4"), "{r}");

        // the same on binary jsonb, and the single-event form
        let batch = json!([{"type": "A", "data": nested(300)}]);
        let bytes = crate::encode::encode(&batch);
        let entry = crate::jsonb::Container::new(&bytes).unwrap().root().unwrap();
        let r = parse_events(Some(entry), 128).unwrap_err().to_string();
        assert!(r.starts_with("invalid events[0].data: nests more than 128 levels deep"), "{r}");
        let deep = crate::encode::nested_objects(100_000);
        let entry = crate::jsonb::Container::new(&deep).unwrap().root().unwrap();
        let r = check_depth("data", entry, 128).unwrap_err();
        assert_eq!(r.sqlstate(), "22023");
        assert!(r.to_string().starts_with("invalid data: nests more than 128"), "{r}");
        assert!(check_depth("metadata", &json!({}), 1).is_ok());
    }

    #[test]
    fn schema_versions_are_positive_integers() {
        let events = parse(json!([{"type": "A", "schema_version": 3}, {"type": "B"}])).unwrap();
        assert_eq!((events[0].schema_version, events[1].schema_version), (Some(3), None));
        for bad in [json!(0), json!(-1), json!(2.5), json!("2"), json!(4_000_000_000_i64)] {
            let r = reason(parse(json!([{"type": "A", "schema_version": bad}])));
            assert!(r.starts_with("invalid events[0].schema_version: must be an integer"), "{r}");
        }
        let batch =
            json!([{"type": "A", "schema_version": 7}, {"type": "A", "schema_version": 1.5}]);
        let bytes = crate::encode::encode(&batch);
        let entry = crate::jsonb::Container::new(&bytes).unwrap().root().unwrap();
        let r = parse_events(Some(entry), 10).unwrap_err().to_string();
        assert!(r.starts_with("invalid events[1].schema_version"), "{r}");
        let batch = json!([{"type": "A", "schema_version": 7}]);
        let bytes = crate::encode::encode(&batch);
        let entry = crate::jsonb::Container::new(&bytes).unwrap().root().unwrap();
        assert_eq!(parse_events(Some(entry), 10).unwrap()[0].schema_version, Some(7));
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

    #[test]
    fn batches_are_at_most_the_limit() {
        let three = crate::encode::encode(&serde_json::json!([{}, {}, {}]));
        let three = crate::jsonb::Container::new(&three).unwrap().root();
        assert!(check_batch_size(three, 3).is_ok());
        assert_eq!(check_batch_size(three, 2), Err(EsError::TooManyEvents { count: 3, limit: 2 }));
        // Not arrays: parse_events says what is wrong with them.
        let object = crate::encode::encode(&serde_json::json!({"a": 1, "b": 2, "c": 3}));
        let object = crate::jsonb::Container::new(&object).unwrap().root();
        assert!(check_batch_size(object, 1).is_ok());
        assert!(check_batch_size(None, 0).is_ok());
    }
}
