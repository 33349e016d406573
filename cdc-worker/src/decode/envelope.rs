//! Turns a decoded insert into `eventstore.events` into the event envelope handlers receive.
//!
//! pgoutput v1 sends every column as text, so the envelope is assembled as JSON text directly:
//! `data` and `metadata` are already JSON (jsonb's text output) and are embedded as they are.
//! Columns are looked up by name through the relation, never by position, so a column added to
//! the table (or reordered by a rewrite) does not shift values.

use std::fmt::Write as _;

use crate::decode::pgoutput::{Column, Relation};
use crate::model::Event;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("eventstore.events insert has no column {0:?} (relation has {1:?})")]
    MissingColumn(&'static str, Vec<String>),
    #[error("eventstore.events column {column:?} is {problem}")]
    BadValue { column: &'static str, problem: &'static str },
    #[error("eventstore.events insert has {values} values for {columns} columns")]
    Arity { values: usize, columns: usize },
}

fn text<'a>(
    rel: &Relation,
    values: &'a [Column],
    name: &'static str,
) -> Result<Option<&'a str>, EnvelopeError> {
    let idx = rel.columns.iter().position(|c| c.name == name).ok_or_else(|| {
        EnvelopeError::MissingColumn(name, rel.columns.iter().map(|c| c.name.clone()).collect())
    })?;
    match values.get(idx) {
        Some(Column::Null) => Ok(None),
        Some(Column::Text(bytes)) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| EnvelopeError::BadValue { column: name, problem: "not valid UTF-8" }),
        Some(Column::Binary(_)) => {
            Err(EnvelopeError::BadValue { column: name, problem: "in binary format" })
        }
        Some(Column::UnchangedToast) => {
            Err(EnvelopeError::BadValue { column: name, problem: "an unchanged TOAST value" })
        }
        None => Err(EnvelopeError::Arity { values: values.len(), columns: rel.columns.len() }),
    }
}

fn required<'a>(
    rel: &Relation,
    values: &'a [Column],
    name: &'static str,
) -> Result<&'a str, EnvelopeError> {
    text(rel, values, name)?.ok_or(EnvelopeError::BadValue { column: name, problem: "NULL" })
}

fn integer(rel: &Relation, values: &[Column], name: &'static str) -> Result<i64, EnvelopeError> {
    required(rel, values, name)?
        .parse()
        .map_err(|_| EnvelopeError::BadValue { column: name, problem: "not an integer" })
}

fn json_string(out: &mut String, s: &str) {
    // serde_json's string escaping cannot fail for a &str.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "null".to_owned()));
}

pub fn from_insert(rel: &Relation, values: &[Column]) -> Result<Event, EnvelopeError> {
    Ok(build(&Columns {
        stream_id: required(rel, values, "stream_id")?,
        stream_version: integer(rel, values, "stream_version")?,
        global_position: integer(rel, values, "global_position")?,
        event_id: required(rel, values, "event_id")?,
        event_type: required(rel, values, "event_type")?,
        data: text(rel, values, "data")?,
        metadata: text(rel, values, "metadata")?,
        recorded_at: text(rel, values, "recorded_at")?,
        schema_version: integer(rel, values, "schema_version")?,
        tags: text(rel, values, "tags")?,
    }))
}

/// Appends the JSON array of a `text[]` in PostgreSQL's text form (`{a,"b c","d\\"e"}`).
/// Elements are quoted when they hold a delimiter, a quote, a backslash or whitespace, or are
/// empty or `NULL`-like; an unquoted `NULL` is a null element. Anything that is not an array
/// literal gives `[]` — the column's type guarantees one.
fn tags_json(out: &mut String, text: &str) {
    let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        out.push_str("[]");
        return;
    };
    out.push('[');
    let mut chars = inner.chars().peekable();
    let mut first = true;
    while chars.peek().is_some() {
        if !first {
            out.push(',');
        }
        first = false;
        let mut element = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => element.extend(chars.next()),
                    '"' => break,
                    c => element.push(c),
                }
            }
            json_string(out, &element);
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                element.push(c);
                chars.next();
            }
            if element == "NULL" {
                out.push_str("null");
            } else {
                json_string(out, &element);
            }
        }
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out.push(']');
}

/// The `transaction_id` (xid8) of an inserted event: the key of the commit-order map.
pub fn transaction_id(rel: &Relation, values: &[Column]) -> Result<u64, EnvelopeError> {
    required(rel, values, "transaction_id")?
        .parse()
        .map_err(|_| EnvelopeError::BadValue { column: "transaction_id", problem: "not an xid8" })
}

/// One event's columns in their text forms (as pgoutput sends them, or as a SQL session with
/// `DateStyle = ISO` and `TimeZone = UTC` prints them): the single place the envelope is built,
/// so events read from the table and from the stream look alike to handlers.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub global_position: i64,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub data: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub recorded_at: Option<&'a str>,
    pub schema_version: i64,
    /// `text[]` in PostgreSQL's text form.
    pub tags: Option<&'a str>,
}

pub fn build(c: &Columns<'_>) -> Event {
    let data = c.data.unwrap_or("null");
    let metadata = c.metadata.unwrap_or("{}");
    let mut e = String::with_capacity(160 + c.stream_id.len() + data.len() + metadata.len());
    // Keys in the order jsonb keeps them (shorter first, then bytewise), so that the target's
    // jsonb input, which sorts every object's keys, finds them sorted already.
    e.push_str("{\"data\":");
    e.push_str(data);
    e.push_str(",\"tags\":");
    tags_json(&mut e, c.tags.unwrap_or("{}"));
    e.push_str(",\"type\":");
    json_string(&mut e, c.event_type);
    e.push_str(",\"event_id\":");
    json_string(&mut e, c.event_id);
    e.push_str(",\"metadata\":");
    e.push_str(metadata);
    e.push_str(",\"stream_id\":");
    json_string(&mut e, c.stream_id);
    e.push_str(",\"recorded_at\":");
    match c.recorded_at {
        // DateStyle=ISO prints "2024-05-01 10:00:00.123+00"; the envelope uses the T form.
        Some(ts) => json_string(&mut e, &ts.replacen(' ', "T", 1)),
        None => e.push_str("null"),
    }
    // Writing to a String cannot fail.
    let _ = write!(
        e,
        ",\"schema_version\":{},\"stream_version\":{},\"global_position\":{}",
        c.schema_version, c.stream_version, c.global_position
    );
    e.push('}');
    Event { event_type: c.event_type.to_owned(), global_position: c.global_position, envelope: e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::pgoutput::{decode, fixtures, Message};

    fn events_relation(cols: &[&str]) -> Relation {
        let cols: Vec<(&str, u32)> = cols.iter().map(|c| (*c, 25)).collect();
        match decode(&fixtures::relation(1, "eventstore", "events", &cols)).unwrap() {
            Message::Relation(r) => r,
            _ => unreachable!(),
        }
    }

    fn t(s: &str) -> Column {
        Column::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn builds_envelope_by_column_name() {
        // Deliberately not in table order.
        let rel = events_relation(&[
            "event_type",
            "global_position",
            "stream_id",
            "stream_version",
            "event_id",
            "data",
            "metadata",
            "recorded_at",
            "transaction_id",
            "schema_version",
            "tags",
        ]);
        let values = vec![
            t("OrderPlaced"),
            t("42"),
            t("order-\"1\""),
            t("3"),
            t("0190c1f2-0000-7000-8000-000000000001"),
            t(r#"{"total": 12.5, "order_id": "o1"}"#),
            t("{}"),
            t("2024-05-01 10:00:00.5+00"),
            t("777"),
            t("2"),
            t(r#"{course:c1,"student s1","q\"x\\y",NULL,"NULL"}"#),
        ];
        let ev = from_insert(&rel, &values).unwrap();
        assert_eq!(transaction_id(&rel, &values), Ok(777));
        assert_eq!(ev.event_type, "OrderPlaced");
        assert_eq!(ev.global_position, 42);
        let v: serde_json::Value = serde_json::from_str(&ev.envelope).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "stream_id": "order-\"1\"", "stream_version": 3, "global_position": 42,
                "event_id": "0190c1f2-0000-7000-8000-000000000001", "type": "OrderPlaced",
                "data": {"total": 12.5, "order_id": "o1"}, "metadata": {},
                "recorded_at": "2024-05-01T10:00:00.5+00", "schema_version": 2,
                "tags": ["course:c1", "student s1", "q\"x\\y", null, "NULL"]
            })
        );
    }

    #[test]
    fn envelope_keys_come_in_jsonb_order() {
        let ev = build(&Columns {
            stream_id: "order-1",
            stream_version: 1,
            global_position: 2,
            event_id: "0190c1f2-0000-7000-8000-000000000001",
            event_type: "OrderPlaced",
            data: Some("1"),
            metadata: Some("{}"),
            recorded_at: None,
            schema_version: 1,
            tags: Some("{}"),
        });
        let keys = [
            "tags",
            "schema_version",
            "stream_id",
            "stream_version",
            "global_position",
            "event_id",
            "type",
            "data",
            "metadata",
            "recorded_at",
        ];
        let mut found: Vec<(usize, &str)> = keys
            .iter()
            .map(|k| (ev.envelope.find(&format!("\"{k}\":")).expect("every key is there"), *k))
            .collect();
        found.sort();
        let in_text: Vec<&str> = found.iter().map(|(_, k)| *k).collect();
        let mut jsonb_order = keys.to_vec();
        jsonb_order.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
        assert_eq!(in_text, jsonb_order);
    }

    #[test]
    fn tags_become_a_json_array() {
        let json = |text: &str| {
            let mut out = String::new();
            tags_json(&mut out, text);
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        };
        assert_eq!(json("{}"), serde_json::json!([]));
        assert_eq!(json("{a}"), serde_json::json!(["a"]));
        assert_eq!(json(r#"{"",",","{}"}"#), serde_json::json!(["", ",", "{}"]));
        assert_eq!(json("{ü,日本}"), serde_json::json!(["ü", "日本"]));
        assert_eq!(json("not an array"), serde_json::json!([]));
    }

    #[test]
    fn reports_missing_columns_and_bad_values() {
        let rel = events_relation(&["stream_id"]);
        assert!(matches!(
            from_insert(&rel, &[t("s")]),
            Err(EnvelopeError::MissingColumn("stream_version", _))
        ));

        let rel = events_relation(&[
            "global_position",
            "stream_id",
            "stream_version",
            "event_id",
            "event_type",
            "data",
            "metadata",
            "recorded_at",
            "schema_version",
            "tags",
        ]);
        let mut values = vec![
            t("x"),
            t("s"),
            t("1"),
            t("id"),
            t("T"),
            t("{}"),
            t("{}"),
            Column::Null,
            t("1"),
            t("{}"),
        ];
        assert_eq!(
            from_insert(&rel, &values),
            Err(EnvelopeError::BadValue { column: "global_position", problem: "not an integer" })
        );
        values[0] = t("1");
        values.truncate(7);
        assert_eq!(
            from_insert(&rel, &values),
            Err(EnvelopeError::Arity { values: 7, columns: 10 })
        );
    }
}
