//! The `eventstore.merge` reducer's logic lives in eventstore-core (plain Rust, unit-tested
//! there).

pub use eventstore_core::merge::*;
