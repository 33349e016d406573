//! The `eventstore.merge` reducer's logic lives in eventstore-core (`eventstore_core::merge`,
//! plain Rust, unit-tested there).

use eventstore_core::json::READ_DEPTH_LIMIT;
use serde_json::Value;

// Adapters with the signatures replay.rs was written against, until it handles the core's
// `Result`s itself (TooDeep -> 54001 naming the event). Until then too deep is a panic
// (XX000), no longer a stack overflow.

/// [`eventstore_core::merge::deep_merge`] at [`READ_DEPTH_LIMIT`], panicking past it.
pub fn deep_merge(target: &mut Value, patch: Value) {
    eventstore_core::merge::deep_merge(target, patch, READ_DEPTH_LIMIT)
        .unwrap_or_else(|e| panic!("pg_eventstore: merged state {e}"))
}

/// [`eventstore_core::merge::apply`] at [`READ_DEPTH_LIMIT`], panicking past it.
pub fn apply(state: &mut Option<Value>, data: Value) {
    eventstore_core::merge::apply(state, data, READ_DEPTH_LIMIT)
        .unwrap_or_else(|e| panic!("pg_eventstore: merged state {e}"))
}
