//! How the live apply path, catch-ups and rebuilds share the target database safely.
//!
//! Two advisory locks per projection, on keys derived from its name:
//!
//! - the **apply lock**, taken (transaction-level, in sorted key order) by every batch
//!   transaction of the live path before anything else, and (session-level, briefly) by
//!   whoever changes what the live path must apply: a catch-up joining the stream, a rebuild
//!   swapping its shadow tables in. While it is held elsewhere, the live path waits, so the
//!   commit-order map cannot grow and the tables cannot be half swapped under it;
//! - the **owner lock**, held (session-level) for its whole life by the one process working on
//!   a projection outside the live path (a catch-up or a rebuild), so two never overlap.
//!
//! Every batch transaction of the live path re-reads the projections' rows after taking the
//! apply locks, so a projection that joined or a checkpoint a swap moved is picked up exactly
//! at a batch boundary.

use std::path::Path;

use tokio_postgres::{Client, Row, Statement};

use crate::config::{Config, Projection};
use crate::model::Lsn;
use crate::model::SourceTxn;
use crate::store::source_map;

/// FNV-1a, 64 bit: stable across processes, builds and platforms (the keys must agree between
/// a worker and a `rebuild` run by another binary).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub fn apply_lock(projection: &str) -> i64 {
    fnv1a(&["eventstore_worker apply", projection]) as i64
}

pub fn owner_lock(projection: &str) -> i64 {
    fnv1a(&["eventstore_worker owner", projection]) as i64
}

/// Tries [`owner_lock`] (session level) on `client`: true when this session now owns the
/// projection's catch-up or rebuild, false when another session holds it.
pub async fn try_own(client: &Client, projection: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1::pg_catalog.int8)",
            &[&owner_lock(projection)],
        )
        .await?;
    Ok(row.get(0))
}

/// The schema a projection is rebuilt in: unique per projection, at most 63 bytes.
pub fn shadow_schema(projection: &str) -> String {
    format!("eventstore_shadow_{:016x}", fnv1a(&[projection]))
}

pub(crate) fn scratch_schema(projection: &str) -> String {
    format!("eventstore_check_{:016x}", fnv1a(&[projection]))
}

/// A projection's row as the coordination needs it (from `projections` or `rebuilds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionRow {
    pub name: String,
    pub status: String,
    pub checkpoint: Option<Lsn>,
    pub version: Option<String>,
}

fn lsn(text: Option<String>) -> Option<Lsn> {
    text.and_then(|s| s.parse().ok())
}

const PROJECTION_ROWS: &str =
    "SELECT name, status, checkpoint_lsn::text, version FROM eventstore_worker.projections WHERE name = ANY($1)";

fn projection_row(r: &Row) -> ProjectionRow {
    ProjectionRow { name: r.get(0), status: r.get(1), checkpoint: lsn(r.get(2)), version: r.get(3) }
}

pub async fn projection_rows(
    client: &Client,
    names: &[&str],
) -> Result<Vec<ProjectionRow>, tokio_postgres::Error> {
    Ok(client.query(PROJECTION_ROWS, &[&names]).await?.iter().map(projection_row).collect())
}

pub async fn rebuild_rows(
    client: &Client,
    name: &str,
) -> Result<Vec<ProjectionRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, status, checkpoint_lsn::text, version FROM eventstore_worker.rebuilds WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(rows.iter().map(projection_row).collect())
}

/// The statements that open every live batch transaction, prepared once per connection.
pub struct LiveBatch {
    lock: Statement,
    read: Statement,
    record: Statement,
}

impl LiveBatch {
    pub async fn prepare(client: &Client) -> Result<LiveBatch, tokio_postgres::Error> {
        Ok(LiveBatch {
            lock: client.prepare("SELECT pg_catalog.pg_advisory_xact_lock(k) FROM pg_catalog.unnest($1::pg_catalog.int8[]) AS k").await?,
            read: client.prepare(PROJECTION_ROWS).await?,
            record: client.prepare(source_map::RECORD).await?,
        })
    }

    /// Takes the apply locks (in the order given, which must be sorted), then reads the
    /// projections' rows as committed by others up to now and records the batch's map rows.
    /// The lock statement completes before the others are sent: their snapshots must not
    /// predate it (pipelined futures are not polled in a guaranteed order).
    pub async fn begin(
        &self,
        client: &Client,
        locks: &[i64],
        names: &[&str],
        batch: &[SourceTxn],
    ) -> Result<Vec<ProjectionRow>, tokio_postgres::Error> {
        client.execute(&self.lock, &[&locks]).await?;
        let (end_lsns, xids) = source_map::rows_of(batch);
        let read = async { client.query(&self.read, &[&names]).await };
        let record = async {
            if end_lsns.is_empty() {
                Ok(0)
            } else {
                client.execute(&self.record, &[&end_lsns, &xids, &source_map::RUN]).await
            }
        };
        let (rows, _) = tokio::try_join!(read, record)?;
        Ok(rows.iter().map(projection_row).collect())
    }
}

/// The projection's definition as the configuration file has it now (a `retry` or `rebuild`
/// is run after fixing the file); `None` if the file no longer defines it or does not load.
pub fn current_definition(file: &Path, name: &str) -> Option<Projection> {
    match Config::load(file) {
        Ok(config) => {
            let def = config.projection(name).cloned();
            if def.is_none() {
                tracing::warn!(projection = %name, "projection no longer in the configuration file; keeping its definition");
            }
            def
        }
        Err(e) => {
            tracing::warn!(error = %e, projection = %name, "cannot reload the configuration; keeping the definition loaded before");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        // Fixed values: a worker and a rebuild run by another build of the binary must agree.
        assert_eq!(apply_lock("order_summary"), apply_lock("order_summary"));
        assert_ne!(apply_lock("order_summary"), owner_lock("order_summary"));
        assert_ne!(apply_lock("a"), apply_lock("b"));
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&["a"]), 0x089b_e207_b544_f1e4); // FNV-1a of "a\0"
    }

    #[test]
    fn shadow_schema_names_fit_an_identifier() {
        let s = shadow_schema(&"x".repeat(500));
        assert!(s.len() <= 63 && s.starts_with("eventstore_shadow_"), "{s}");
        assert_ne!(shadow_schema("a"), shadow_schema("b"));
    }
}
