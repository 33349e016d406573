//! Deciding whether a batch whose ids already exist is a retry or a conflict.

use uuid::Uuid;

use crate::envelope::NewEvent;
use crate::error::EsError;

/// An event already in the store that shares an id with the batch being appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub global_position: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum IdCheck {
    /// None of the batch's ids is stored: append it.
    Fresh,
    /// The batch is already stored exactly (same stream, ids, order and types): these are the
    /// original rows, in batch order.
    Retry(Vec<StoredEvent>),
}

/// Classify a batch against the stored events that share its ids.
pub fn classify(
    stream_id: &str,
    batch: &[NewEvent],
    mut found: Vec<StoredEvent>,
) -> Result<IdCheck, EsError> {
    if found.is_empty() {
        return Ok(IdCheck::Fresh);
    }
    found.sort_by_key(|e| e.stream_version);
    let is_retry = found.len() == batch.len()
        && found.iter().zip(batch).all(|(stored, new)| {
            new.id == Some(stored.event_id)
                && stored.stream_id == stream_id
                && stored.event_type == new.event_type
        })
        && found.windows(2).all(|w| w[1].stream_version == w[0].stream_version + 1);
    if is_retry {
        return Ok(IdCheck::Retry(found));
    }
    // Name the first id of the batch (in batch order) that is taken.
    let taken = batch
        .iter()
        .filter_map(|e| e.id)
        .find_map(|id| found.iter().find(|s| s.event_id == id))
        .unwrap_or(&found[0]);
    Err(EsError::DuplicateEventId {
        id: taken.event_id.to_string(),
        stream: taken.stream_id.clone(),
        version: taken.stream_version,
        position: taken.global_position,
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn new(n: u8, t: &str) -> NewEvent {
        NewEvent { id: Some(id(n)), event_type: t.into(), schema_version: None, tags: vec![] }
    }

    fn stored(n: u8, stream: &str, version: i64, t: &str) -> StoredEvent {
        StoredEvent {
            event_id: id(n),
            stream_id: stream.into(),
            stream_version: version,
            event_type: t.into(),
            global_position: 100 + version,
        }
    }

    #[test]
    fn nothing_stored_is_fresh() {
        assert_eq!(classify("s", &[new(1, "A")], vec![]), Ok(IdCheck::Fresh));
    }

    #[test]
    fn exact_repeat_is_a_retry_in_batch_order() {
        let batch = [new(1, "A"), new(2, "B")];
        let found = vec![stored(2, "s", 6, "B"), stored(1, "s", 5, "A")];
        match classify("s", &batch, found).unwrap() {
            IdCheck::Retry(rows) => {
                assert_eq!(rows.iter().map(|r| r.stream_version).collect::<Vec<_>>(), [5, 6])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_other_reuse_is_es004_naming_where_the_id_is() {
        let cases: Vec<(Vec<NewEvent>, Vec<StoredEvent>)> = vec![
            // other stream
            (vec![new(1, "A")], vec![stored(1, "t", 1, "A")]),
            // other type
            (vec![new(1, "A")], vec![stored(1, "s", 1, "X")]),
            // other order
            (vec![new(1, "A"), new(2, "A")], vec![stored(1, "s", 2, "A"), stored(2, "s", 1, "A")]),
            // only part of the batch stored
            (vec![new(1, "A"), new(2, "A")], vec![stored(2, "s", 4, "A")]),
            // an event without id in the batch cannot be a retry
            (vec![new(1, "A"), NewEvent { id: None, ..new(9, "B") }], vec![stored(1, "s", 1, "A")]),
        ];
        for (batch, found) in cases {
            let err = classify("s", &batch, found).unwrap_err();
            assert_eq!(err.sqlstate(), "ES004");
            assert!(err.to_string().contains("is already used by event"), "{err}");
        }
    }
}
