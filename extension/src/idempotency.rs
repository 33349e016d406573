//! Retry-or-conflict classification lives in eventstore-core (plain Rust, unit-tested there).

pub use eventstore_core::idempotency::*;
