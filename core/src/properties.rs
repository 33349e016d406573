//! Property tests of the pure input paths (envelope parsing, binary jsonb reading, merge), the
//! way the worker's pgoutput decoder is tested: the reader agrees with the writer
//! ([`crate::encode`], as PostgreSQL's convertToJsonb), both merges agree with a reference, and
//! no input — arbitrary bytes, mangled jsonb, any JSON value, any depth — panics, loops or
//! recurses past its limit. core/fuzz runs the same paths under libFuzzer.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

use crate::encode::{encode, nested, numeric_out, numeric_varlena, Header};
use crate::envelope::{check_depth, parse_events};
use crate::json::{drop_iteratively, value_depth, JsonError, READ_DEPTH_LIMIT};
use crate::jsonb::{self, depth_within, numeric_text, Container, Entry};
use crate::merge;

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,40})",
        "-?(0|[1-9][0-9]{0,20})\\.[0-9]{1,25}",
        "-?[1-9](\\.[0-9]{1,10})?[eE][+-]?[0-9]{1,2}",
        Just("1e400".to_owned()),
        Just("-0.000".to_owned()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number_text().prop_map(|t| Value::Number(t.parse().expect("JSON number"))),
        "[a-zé\"\\\\ ]{0,12}".prop_map(Value::String),
    ]
}

/// Keys from a small alphabet, so merges meet the same keys often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c]{0,2}", "[a-z]{1,8}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec((key(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    vec((key(), json_value()), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// `v` with every number as numeric_out would print it after a trip through jsonb.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::Number(numeric_out(&n.to_string()).parse::<Number>().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalized(v))).collect())
        }
        other => other.clone(),
    }
}

/// The reducer, written as plainly as possible.
fn reference_merge(state: Value, patch: Value) -> Value {
    match (state, patch) {
        (Value::Object(mut s), Value::Object(p)) => {
            for (k, v) in p {
                let merged = match s.remove(&k) {
                    Some(old) => reference_merge(old, v),
                    None => v,
                };
                s.insert(k, merged);
            }
            Value::Object(s)
        }
        (_, patch) => patch,
    }
}

fn reference_apply(state: Option<Value>, data: Value) -> Option<Value> {
    if !data.is_object() {
        return state;
    }
    Some(match state {
        Some(s) => reference_merge(s, data),
        None => data,
    })
}

fn root(bytes: &[u8]) -> Entry<'_> {
    Container::new(bytes).and_then(Container::root).expect("the encoder's jsonb reads back")
}

/// Every reading path over `bytes`; none may panic, whatever the bytes.
fn exercise(bytes: &[u8]) {
    let _ = numeric_text(bytes);
    let Some(c) = Container::new(bytes) else { return };
    let (_, _, _) = (c.len(), c.is_empty(), c.is_object());
    for limit in [0, 3, READ_DEPTH_LIMIT] {
        if let Ok(v) = c.to_value(limit) {
            let d = value_depth(&v, limit).expect("to_value kept to its limit");
            // (a malformed object may repeat a key, which the Value then holds once)
            let walked = c.root().map(|r| depth_within(r, limit));
            assert!(matches!(walked, Some(Ok(w)) if w >= d), "{walked:?} {d}");
            drop_iteratively(v);
        }
    }
    if let Some(r) = c.root() {
        let _ = depth_within(r, 4);
        let _ = r.to_value(8);
        let _ = parse_events(Some(r), 8);
        let _ = check_depth("data", r, 8);
        let _ = r.kind();
    }
    for e in c.elements().into_iter().flatten().flatten() {
        let _ = e.to_value(4);
    }
    for (_, v) in c.pairs().flatten() {
        let _ = v.to_value(4);
    }
    let mut state = Some(json!({"a": {"b": 1}, "": "s", "aa": [1]}));
    let _ = jsonb::apply(&mut state, c, 6);
    let mut none = None;
    let _ = jsonb::apply(&mut none, c, 6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn jsonb_reads_back_what_postgres_writes(v in json_value()) {
        let bytes = encode(&v);
        let expected = normalized(&v);
        prop_assert_eq!(root(&bytes).to_value(64), Ok(expected.clone()));
        prop_assert_eq!(Container::new(&bytes).unwrap().to_value(64), Ok(expected));
        let depth = value_depth(&v, 64).unwrap();
        prop_assert_eq!(depth_within(root(&bytes), 64), Ok(depth));
        prop_assert_eq!(depth_within(root(&bytes), depth), Ok(depth));
        if depth > 0 {
            let too_deep = JsonError::TooDeep { limit: depth - 1 };
            prop_assert_eq!(depth_within(root(&bytes), depth - 1), Err(too_deep));
            prop_assert_eq!(root(&bytes).to_value(depth - 1), Err(too_deep));
        }
    }

    #[test]
    fn wide_containers_follow_the_offset_stride(items in vec(leaf(), 0..120), keys in vec(key(), 0..120)) {
        let array = Value::Array(items.clone());
        let object = Value::Object(keys.into_iter().zip(items).collect());
        for v in [array, object] {
            prop_assert_eq!(root(&encode(&v)).to_value(2), Ok(normalized(&v)));
        }
    }

    #[test]
    fn merges_agree_with_the_reference(state in proptest::option::of(json_value()), data in prop_oneof![json_object(), json_value()], limit in 0usize..8) {
        let state = state.map(|s| normalized(&s));
        let data = normalized(&data);
        let expected = reference_apply(state.clone(), data.clone());
        let fits = expected.as_ref().map_or(0, |e| value_depth(e, 64).unwrap()) <= limit;
        let state_fits = state.as_ref().map_or(0, |s| value_depth(s, 64).unwrap()) <= limit;

        let mut serde = state.clone();
        let serde_result = merge::apply(&mut serde, data.clone(), limit);
        let bytes = encode(&data);
        let mut binary = state.clone();
        let binary_result = jsonb::apply(&mut binary, Container::new(&bytes).unwrap(), limit);
        // Ok exactly when the state it builds fits (unless the old state alone did not)
        for result in [&serde_result, &binary_result] {
            if fits {
                prop_assert_eq!(result, &Ok(()));
            } else if state_fits {
                prop_assert_eq!(result, &Err(JsonError::TooDeep { limit }));
            }
        }
        if serde_result.is_ok() {
            prop_assert_eq!(&serde, &expected);
        }
        if binary_result.is_ok() {
            prop_assert_eq!(&binary, &expected);
        }
        // and with room to spare both are the reference
        let mut serde = state.clone();
        merge::apply(&mut serde, data, 64).unwrap();
        let mut binary = state;
        jsonb::apply(&mut binary, Container::new(&bytes).unwrap(), 64).unwrap();
        prop_assert_eq!(&serde, &expected);
        prop_assert_eq!(&binary, &expected);
    }

    #[test]
    fn numbers_read_as_numeric_out_prints_them(text in number_text()) {
        let expected = numeric_out(&text);
        for header in [Header::Pg, Header::Long, Header::OneByteVarlena] {
            let varlena = numeric_varlena(&text, header);
            if header == Header::OneByteVarlena && varlena.len() > 127 {
                continue;
            }
            prop_assert_eq!(numeric_text(&varlena), Some(expected.clone()));
        }
        // and the number prints back as that text
        let v = root(&encode(&json!([Value::Number(text.parse().unwrap())]))).to_value(2).unwrap();
        prop_assert_eq!(serde_json::to_string(&v).unwrap(), format!("[{expected}]"));
    }

    #[test]
    fn deep_nesting_of_any_shape_is_measured_and_refused(shape in vec(any::<bool>(), 0..3000), limit in 0usize..2000) {
        let bytes = nested(&shape);
        let depth = shape.len() + 1;
        let expected = if depth <= limit { Ok(depth) } else { Err(JsonError::TooDeep { limit }) };
        prop_assert_eq!(depth_within(root(&bytes), limit), expected);
        match root(&bytes).to_value(limit) {
            Ok(v) => {
                prop_assert_eq!(value_depth(&v, limit), Ok(depth));
                drop_iteratively(v);
            }
            Err(e) => prop_assert_eq!(e, JsonError::TooDeep { limit }),
        }
        let mut state = Some(json!({"a": {"a": [1]}}));
        let merged = jsonb::apply(&mut state, Container::new(&bytes).unwrap(), limit);
        let refused = Err(JsonError::TooDeep { limit });
        prop_assert!(merged.is_ok() || merged == refused, "{:?}", merged);
        drop_iteratively(state.unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }

    /// Real jsonb with some bytes changed or cut off: much closer to valid than random bytes.
    #[test]
    fn mangled_jsonb_never_panics(v in json_value(), edits in vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut bytes = encode(&v);
        for (at, byte) in edits {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        exercise(&bytes);
        let keep = cut % (bytes.len() + 1);
        exercise(&bytes[..keep]);
    }
}

fn event() -> impl Strategy<Value = Value> {
    let event_type = prop_oneof![
        Just(json!("OrderPlaced")),
        Just(json!("")),
        Just(json!("  ")),
        Just(json!(null)),
        leaf(),
    ];
    let id = prop_oneof![
        Just(json!("5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10")),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(Value::String),
        Just(json!(null)),
        leaf(),
    ];
    let extra = ("[a-z]{1,6}", json_value());
    let members = (
        proptest::option::of(event_type),
        proptest::option::of(json_value()),
        proptest::option::of(prop_oneof![json_object(), json_value()]),
        proptest::option::of(id),
        proptest::option::weighted(0.1, extra),
    );
    members.prop_map(|(t, data, metadata, id, extra)| {
        let mut e = Map::new();
        let named = [("type", t), ("data", data), ("metadata", metadata), ("id", id)];
        for (k, v) in named {
            if let Some(v) = v {
                e.insert(k.into(), v);
            }
        }
        if let Some((k, v)) = extra {
            e.insert(k, v);
        }
        Value::Object(e)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any JSON value gives either the events or a 22023 error naming `events` or one of its
    /// members — the same from serde_json and from binary jsonb.
    #[test]
    fn parse_events_gives_events_or_names_the_argument(
        batch in prop_oneof![4 => vec(event(), 0..5).prop_map(Value::Array), 1 => json_value()],
        max_depth in 0usize..6,
    ) {
        let parsed = parse_events(Some(&batch), max_depth);
        match &parsed {
            Ok(events) => {
                let items = batch.as_array().expect("only an array is a batch");
                prop_assert_eq!(events.len(), items.len());
                for (e, item) in events.iter().zip(items) {
                    prop_assert_eq!(Some(e.event_type.as_str()), item["type"].as_str());
                    for key in ["data", "metadata"] {
                        prop_assert!(value_depth(&item[key], max_depth).is_ok());
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.sqlstate(), "22023");
                let message = e.to_string();
                prop_assert!(message.starts_with("invalid events"), "{}", message);
            }
        }
        let bytes = encode(&batch);
        let binary = parse_events(Some(root(&bytes)), max_depth);
        match (&parsed, &binary) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            // which of several bad members is named first may differ: jsonb sorts keys by length
            (Err(a), Err(b)) => prop_assert_eq!(a.sqlstate(), b.sqlstate()),
            _ => prop_assert!(false, "serde {:?} vs binary {:?}", parsed, binary),
        }
    }
}
