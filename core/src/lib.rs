//! The pure logic of the pg_eventstore extension, in plain Rust with no pgrx: validation of what
//! callers hand to `append`, reading PostgreSQL's binary jsonb, the `eventstore.merge` reducer
//! and the errors with their SQLSTATEs. The extension's `#[pg_extern]`s are thin shells over
//! these modules; everything here is unit- and property-tested with `cargo test -p
//! eventstore-core`, no database needed.

#[cfg(any(test, feature = "encoder"))]
pub mod encode;
pub mod envelope;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod jsonb;
pub mod merge;
pub mod multi;
#[cfg(test)]
mod properties;
pub mod query;
pub mod read;
pub mod replay;
pub mod snapshot;
pub mod upcast;
