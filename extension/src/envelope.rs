//! Argument validation for `append` lives in eventstore-core (plain Rust, unit-tested there).

pub use eventstore_core::envelope::*;
