//! Argument validation for `append` lives in eventstore-core (plain Rust, unit-tested there).

pub use eventstore_core::envelope::*;

use eventstore_core::error::EsError;
use eventstore_core::json::DEFAULT_MAX_JSON_DEPTH;

/// Adapter with the signature append.rs was written against, until it passes
/// `eventstore.max_json_depth` to [`eventstore_core::envelope::parse_events`] itself.
pub fn parse_events<'a, V: JsonView<'a>>(events: Option<V>) -> Result<Vec<NewEvent>, EsError> {
    eventstore_core::envelope::parse_events(events, DEFAULT_MAX_JSON_DEPTH)
}
