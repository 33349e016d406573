//! `eventstore.merge`, the built-in reducer: its logic lives in eventstore-core
//! (`eventstore_core::jsonb::apply`, plain Rust, unit-tested there). `replay` recognises it and
//! folds in Rust; this is the same step for callers who use it directly.
//!
//! Both read jsonb from its binary form with depth bounded by [`READ_DEPTH_LIMIT`] and numbers
//! kept as `numeric` prints them: never through text and serde's own parser, whose recursion
//! limit and floats lost digits and failed on deep documents.

use pgrx::pg_sys::Datum;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::append::RawJsonb;
use crate::error::{raise, EsError};
use crate::jsonb::{JsonError, READ_DEPTH_LIMIT};

/// A non-null jsonb datum as a `serde_json::Value`; `what` names it in errors.
///
/// # Safety
/// `datum` must be a non-null jsonb datum, alive for the call.
pub unsafe fn read_jsonb(datum: Datum, what: impl Fn() -> String) -> Result<Value, EsError> {
    // SAFETY: the caller guarantees a non-null jsonb datum alive for the call.
    let container = unsafe { crate::jsonb::from_datum(datum) }
        .ok_or_else(|| EsError::json(JsonError::Malformed, what()))?;
    container.to_value(READ_DEPTH_LIMIT).map_err(|e| EsError::json(e, what()))
}

/// `eventstore.merge(state, event)`: event data that is an object is merged into the state key
/// by key, recursively; any other event data leaves the state as it is.
#[pg_extern(immutable, parallel_safe)]
fn merge(
    state: Option<RawJsonb>,
    event: Option<pgrx::composite_type!("eventstore.events")>,
) -> Option<JsonB> {
    let merged = (|| {
        let mut value = match &state {
            // SAFETY: a non-null jsonb argument, alive for the whole call.
            Some(s) => Some(unsafe { read_jsonb(s.datum(), || "the state".into()) }?),
            None => None,
        };
        let data = event.as_ref().and_then(|e| e.get_by_name::<RawJsonb>("data").ok().flatten());
        if let Some(data) = data {
            // SAFETY: a non-null jsonb attribute of the event row, which lives as long as the
            // `event` argument (dropped only below, after the last use).
            let container = unsafe { crate::jsonb::from_datum(data.datum()) }
                .ok_or_else(|| EsError::json(JsonError::Malformed, "the event's data"))?;
            crate::jsonb::apply(&mut value, container, READ_DEPTH_LIMIT)
                .map_err(|e| EsError::json(e, "the merged state"))?;
        }
        Ok::<_, EsError>(value)
    })();
    match merged {
        Ok(value) => value.map(JsonB),
        Err(e) => {
            drop((state, event));
            raise(e)
        }
    }
}
