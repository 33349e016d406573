//! `append_multi`'s argument: `[{"stream_id": text, "expected_version": null|0|-1|N,
//! "events": [...]}, ...]`, validated before anything is locked or written.

use std::collections::HashMap;

use uuid::Uuid;

use crate::envelope::{parse_events, validate_stream_id, JsonView, NewEvent};
use crate::error::{EsError, ExpectedVersion};

/// At most this many streams in one `append_multi` (each is locked until commit).
pub const MAX_STREAMS: usize = 1000;

const APPEND_KEYS: &str = "\"stream_id\", \"expected_version\" and \"events\"";

/// One stream's part of an `append_multi`; `events` is its events array, still as given.
#[derive(Debug, Clone)]
pub struct StreamBatch<V> {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub heads: Vec<NewEvent>,
    pub events: V,
}

/// Validate `appends`: a non-empty array of stream batches, each stream at most once, each
/// batch valid as `append`'s `events` argument (errors name `appends[k].events[i]...`), event
/// ids unique across the whole call, and at most `max_events` events in all (54000 beyond).
pub fn parse_appends<'a, V: JsonView<'a>>(
    appends: Option<V>,
    max_depth: usize,
    max_events: usize,
) -> Result<Vec<StreamBatch<V>>, EsError> {
    let Some(appends) = appends else {
        return Err(EsError::invalid("appends", "must not be NULL"));
    };
    let Some(items) = appends.elements().map_err(|e| EsError::json(e, "appends"))? else {
        return Err(EsError::invalid(
            "appends",
            format!("must be a JSON array of {{{APPEND_KEYS}}} objects, got {}", appends.kind()),
        ));
    };
    if items.is_empty() {
        return Err(EsError::invalid("appends", "must contain at least one stream"));
    }
    if items.len() > MAX_STREAMS {
        return Err(EsError::invalid(
            "appends",
            format!("has {} streams; the limit is {MAX_STREAMS}", items.len()),
        ));
    }
    let mut batches: Vec<StreamBatch<V>> = Vec::with_capacity(items.len());
    let mut streams: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<Uuid, (usize, usize)> = HashMap::new();
    let mut total = 0usize;
    for (k, item) in items.into_iter().enumerate() {
        let at = format!("appends[{k}]");
        let Some(members) = item.members().map_err(|e| EsError::json(e, &at))? else {
            return Err(EsError::invalid(
                &at,
                format!("must be an object with {APPEND_KEYS}, got {}", item.kind()),
            ));
        };
        let (mut stream, mut expected, mut events) = (None, None, None);
        for (key, v) in members {
            match key {
                "stream_id" => stream = Some(v),
                "expected_version" => expected = Some(v),
                "events" => events = Some(v),
                other => {
                    return Err(EsError::invalid(
                        &at,
                        format!("unknown key \"{other}\" (a stream's append has {APPEND_KEYS})"),
                    ))
                }
            }
        }
        let field = |f: &str| format!("{at}.{f}");
        let stream_id = match stream {
            None => return Err(EsError::invalid(field("stream_id"), "is required")),
            Some(s) => match s.as_str().map_err(|e| EsError::json(e, field("stream_id")))? {
                Some(s) => {
                    validate_stream_id(Some(s)).map_err(|e| renamed(e, &field("stream_id")))?
                }
                None => {
                    return Err(EsError::invalid(
                        field("stream_id"),
                        format!("must be a string, got {}", s.kind()),
                    ))
                }
            },
        };
        if let Some(first) = streams.insert(stream_id.to_owned(), k) {
            return Err(EsError::invalid(
                field("stream_id"),
                format!(
                    "\"{stream_id}\" is also the stream of appends[{first}]; list each stream once \
                     (put all its events in one batch)"
                ),
            ));
        }
        let expected = match expected {
            None => ExpectedVersion::Any,
            Some(v) if v.is_null() => ExpectedVersion::Any,
            Some(v) => {
                let n = v.number_text().and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
                    EsError::invalid(
                        field("expected_version"),
                        format!("must be null or an integer, got {}", v.kind()),
                    )
                })?;
                ExpectedVersion::from_sql(Some(n))
                    .map_err(|e| renamed(e, &field("expected_version")))?
            }
        };
        let Some(events) = events else {
            return Err(EsError::invalid(field("events"), "is required"));
        };
        if let Some(n) = events.elements().ok().flatten().map(|e| e.len()) {
            total = total.saturating_add(n);
            if total > max_events {
                return Err(EsError::TooManyEvents { count: total, limit: max_events });
            }
        }
        let heads = parse_events(Some(events), max_depth).map_err(|e| prefixed(e, &at))?;
        for (i, e) in heads.iter().enumerate() {
            if let Some(id) = e.id {
                if let Some((k0, i0)) = ids.insert(id, (k, i)) {
                    return Err(EsError::invalid(
                        format!("{at}.events[{i}].id"),
                        format!(
                            "{id} is also the id of appends[{k0}].events[{i0}]; ids must be unique"
                        ),
                    ));
                }
            }
        }
        batches.push(StreamBatch { stream_id: stream_id.to_owned(), expected, heads, events });
    }
    Ok(batches)
}

/// An argument error of a single-stream rule, renamed to the place in `appends` it is about.
fn renamed(e: EsError, argument: &str) -> EsError {
    match e {
        EsError::InvalidArgument { reason, .. } => EsError::invalid(argument, reason),
        other => other,
    }
}

/// `events...` errors of one batch, as `appends[k].events...`.
pub fn prefixed(e: EsError, at: &str) -> EsError {
    match e {
        EsError::InvalidArgument { argument, reason } => {
            EsError::invalid(format!("{at}.{argument}"), reason)
        }
        EsError::UnreadableJson { what, problem } => {
            EsError::UnreadableJson { what: format!("{at}.{what}"), problem }
        }
        other => other,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(v: Value) -> Result<Vec<(String, ExpectedVersion, usize)>, EsError> {
        parse_appends(Some(&v), 64, 10)
            .map(|b| b.into_iter().map(|b| (b.stream_id, b.expected, b.heads.len())).collect())
    }

    fn reason(r: Result<impl std::fmt::Debug, EsError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.sqlstate(), "22023", "{e}");
        e.to_string()
    }

    #[test]
    fn streams_in_order_with_their_expectations() {
        let got = parse(json!([
            {"stream_id": "a-1", "expected_version": 3, "events": [{"type": "X"}, {"type": "Y"}]},
            {"stream_id": "b-1", "events": [{"type": "X", "tags": ["t"]}]},
            {"stream_id": "c-1", "expected_version": null, "events": [{"type": "X"}]},
            {"stream_id": "d-1", "expected_version": -1, "events": [{"type": "X"}]},
        ]))
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("a-1".into(), ExpectedVersion::Exact(3), 2),
                ("b-1".into(), ExpectedVersion::Any, 1),
                ("c-1".into(), ExpectedVersion::Any, 1),
                ("d-1".into(), ExpectedVersion::StreamExists, 1),
            ]
        );
    }

    #[test]
    fn refuses_naming_the_place() {
        assert!(reason(parse_appends::<&Value>(None, 64, 10)).contains("appends: must not be NULL"));
        assert!(reason(parse(json!({}))).contains("must be a JSON array"));
        assert!(reason(parse(json!([]))).contains("at least one stream"));
        assert!(reason(parse(json!([1]))).contains("appends[0]: must be an object"));
        let r = reason(parse(json!([{"stream_id": "a", "events": [{"type": "X"}]},
                                     {"stream_id": "a", "events": [{"type": "Y"}]}])));
        assert!(r.contains("appends[1].stream_id") && r.contains("appends[0]"), "{r}");
        let r = reason(parse(json!([{"stream_id": " ", "events": [{"type": "X"}]}])));
        assert_eq!(r, "invalid appends[0].stream_id: must not be empty");
        let r = reason(parse(json!([{"stream_id": 5, "events": [{"type": "X"}]}])));
        assert!(r.contains("appends[0].stream_id: must be a string"), "{r}");
        let r = reason(parse(json!([{"events": [{"type": "X"}]}])));
        assert!(r.contains("appends[0].stream_id: is required"), "{r}");
        let r = reason(parse(json!([{"stream_id": "a"}])));
        assert!(r.contains("appends[0].events: is required"), "{r}");
        let r = reason(parse(
            json!([{"stream_id": "a", "expected_version": -2, "events": [{"type": "X"}]}]),
        ));
        assert!(r.starts_with("invalid appends[0].expected_version: -2 is not a valid"), "{r}");
        let r = reason(parse(
            json!([{"stream_id": "a", "expected_version": 1.5, "events": [{"type": "X"}]}]),
        ));
        assert!(r.contains("must be null or an integer, got a number"), "{r}");
        let r = reason(parse(
            json!([{"stream_id": "a", "expected_version": "1", "events": [{"type": "X"}]}]),
        ));
        assert!(r.contains("got a string"), "{r}");
        let r = reason(parse(json!([{"stream_id": "a", "events": [{"type": "X"}, {}]}])));
        assert_eq!(r, "invalid appends[0].events[1].type: is required");
        let r = reason(parse(json!([{"stream_id": "a", "events": [{"type": "X", "tags": [""]}]}])));
        assert!(r.contains("appends[0].events[0].tags[0]"), "{r}");
        let r = reason(parse(json!([{"stream_id": "a", "events": [{"type": "X"}], "version": 1}])));
        assert!(r.contains("unknown key \"version\""), "{r}");
        let id = "5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10";
        let r = reason(parse(json!([{"stream_id": "a", "events": [{"type": "X", "id": id}]},
                                     {"stream_id": "b", "events": [{"type": "X", "id": id}]}])));
        assert!(r.contains("appends[1].events[0].id") && r.contains("appends[0].events[0]"), "{r}");
    }

    #[test]
    fn counts_events_across_streams() {
        let batch: Vec<Value> = (0..6).map(|_| json!({"type": "X"})).collect();
        let e = parse(
            json!([{"stream_id": "a", "events": batch}, {"stream_id": "b", "events": batch}]),
        )
        .unwrap_err();
        assert_eq!(e.sqlstate(), "54000");
    }
}
