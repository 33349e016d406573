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

use tokio_postgres::{Client, Statement};

use crate::config::{Config, Projection};
use crate::model::SourceTxn;
use crate::store::projections::{projection_row, ProjectionRow, PROJECTION_ROWS};
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

/// Tries [`owner_lock`] (session level) on `client`: the lock when this session now owns the
/// projection's catch-up or rebuild, `None` when another session holds it.
pub async fn try_own(
    client: &Client,
    projection: &str,
) -> Result<Option<SessionLock>, tokio_postgres::Error> {
    SessionLock::try_acquire(client, owner_lock(projection)).await
}

/// A session-level advisory lock this process holds on one connection. Give it back with
/// [`SessionLock::release`] on the connection that took it; async `Drop` does not exist, so a
/// guard dropped unreleased (an early return on an error) leaves the lock to its session, which
/// releases it when that connection closes. [`SessionLock::until_session_ends`] says so where
/// that is the intent. (The live path's apply locks are transaction-level and need no guard:
/// see [`LiveBatch`].)
#[must_use = "release the lock, or leave it to the session with until_session_ends"]
#[derive(Debug)]
pub struct SessionLock {
    key: i64,
    held: bool,
}

impl SessionLock {
    /// Waits for the lock.
    pub async fn acquire(client: &Client, key: i64) -> Result<SessionLock, tokio_postgres::Error> {
        client.execute("SELECT pg_catalog.pg_advisory_lock($1::pg_catalog.int8)", &[&key]).await?;
        Ok(SessionLock { key, held: true })
    }

    /// The lock if no other session holds it.
    pub async fn try_acquire(
        client: &Client,
        key: i64,
    ) -> Result<Option<SessionLock>, tokio_postgres::Error> {
        let row = client
            .query_one("SELECT pg_catalog.pg_try_advisory_lock($1::pg_catalog.int8)", &[&key])
            .await?;
        Ok(row.get::<_, bool>(0).then_some(SessionLock { key, held: true }))
    }

    /// Unlocks on `client`, which must be the connection that took the lock.
    pub async fn release(mut self, client: &Client) -> Result<(), tokio_postgres::Error> {
        self.held = false;
        client
            .execute("SELECT pg_catalog.pg_advisory_unlock($1::pg_catalog.int8)", &[&self.key])
            .await
            .map(drop)
    }

    /// Keeps the lock until the connection that took it closes.
    pub fn until_session_ends(mut self) {
        self.held = false;
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if self.held {
            tracing::debug!(key = self.key, "advisory lock left to its session");
        }
    }
}

/// The schema a projection is rebuilt in: unique per projection, at most 63 bytes.
pub fn shadow_schema(projection: &str) -> String {
    format!("eventstore_shadow_{:016x}", fnv1a(&[projection]))
}

pub(crate) fn scratch_schema(projection: &str) -> String {
    format!("eventstore_check_{:016x}", fnv1a(&[projection]))
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
