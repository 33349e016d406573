//! pg_eventstore: an append-only event log with per-stream optimistic concurrency, reads,
//! replay and snapshots, as SQL functions in schema `eventstore`.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

pub mod append;
pub mod append_only;
pub mod dcb;
pub mod envelope;
pub mod error;
pub mod idempotency;
pub mod jsonb;
pub mod merge;
pub mod read;
pub mod replay;
pub mod settings;
pub mod snapshot;
mod spi;
pub mod upcast;

extension_sql_file!("sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("sql/finalize.sql", name = "finalize", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;
#[cfg(any(test, feature = "pg_test"))]
mod tests_replay;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
