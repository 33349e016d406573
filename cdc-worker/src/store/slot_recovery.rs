//! A lost, invalidated or unsynchronized slot without a resync: the slot is recreated, and the
//! transactions it never delivered are put into the commit-order map, from which every
//! projection catches up through `eventstore.events` as it would after a pause.
//!
//! # The guard
//!
//! The map names every source transaction the stream delivered, except those pruning removed.
//! When a slot is recreated, the transactions committed while there was none (or that an
//! invalidated slot, or a failover that lost the target's last commits, never delivered) are
//! in the event table but in no map row. To tell them from the ones pruning removed, the map
//! keeps a *guard*: a snapshot of the source (`pg_snapshot`) with
//!
//! > every event transaction visible in the guard is in the map, or applied by every projection.
//!
//! Pruning removes a transaction only once every projection has applied it *and* it is visible
//! in the guard; guards only move forward (a later snapshot sees everything an earlier one
//! saw). So a transaction that is not visible in the guard and not in the map was never
//! applied by anyone. A recreated slot exports a snapshot that sees exactly the transactions
//! committed before its consistent point C, after which it streams. The missed transactions
//! are therefore those visible in that snapshot, not visible in the guard and not in the map:
//! they get map rows at positions between everything the target knows and C, in the order of
//! their first `global_position` (the order a rebuild reads them in, and per stream the order
//! of their versions), and that snapshot becomes the guard.
//!
//! A guard moves forward in two steps (`advance_guard`): a snapshot S is taken on the source
//! and then a WAL position X is read; every transaction visible in S had written its commit
//! record before S was taken, so before X. Once every checkpoint has passed X, every such
//! transaction that the stream delivered is applied everywhere, and S becomes the guard. The
//! first slot's exported snapshot is the first guard: everything before it was read by each
//! projection's first build.
//!
//! # Crash safety
//!
//! `recovering` is set, in the target, before the new slot is created, and cleared in the
//! transaction that writes the recovered map rows. A worker that finds it set drops the slot
//! (nothing was streamed from it yet) and starts over. While it is set, no guard is promoted
//! and nothing is pruned.

use std::collections::HashSet;

use anyhow::{bail, Context};
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::model::Lsn;
use crate::store::source_map;

/// What the target's state says about the slot.
#[derive(Debug, Clone, Default)]
pub struct MapState {
    /// `None` before the stream was first started.
    pub horizon: Option<Lsn>,
    pub recovering: bool,
    /// `system identifier/timeline` of the source when the stream last started.
    pub timeline: Option<String>,
    /// The highest source position the target reflects: the map's last row, a checkpoint or
    /// the horizon.
    pub known: Lsn,
}

pub async fn map_state(target: &Client) -> Result<MapState, tokio_postgres::Error> {
    let known: Option<Lsn> = target
        .query_one(
            "SELECT greatest((SELECT max(last_end_lsn) FROM eventstore_worker.source_transaction_runs),
                             (SELECT max(checkpoint_lsn) FROM eventstore_worker.projections),
                             (SELECT max(checkpoint_lsn) FROM eventstore_worker.rebuilds),
                             (SELECT horizon FROM eventstore_worker.source_horizon))",
            &[],
        )
        .await?
        .get(0);
    let known = known.unwrap_or_default();
    let row = target
        .query_opt(
            "SELECT horizon, recovering, source_timeline FROM eventstore_worker.source_horizon",
            &[],
        )
        .await?;
    Ok(match row {
        None => MapState { known, ..MapState::default() },
        Some(r) => MapState { horizon: r.get(0), recovering: r.get(1), timeline: r.get(2), known },
    })
}

/// Marks a recovery as begun and returns the guard it must use (read in the same statement:
/// no guard is promoted once the mark is set).
pub async fn begin(target: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let row = target
        .query_opt(
            "UPDATE eventstore_worker.source_horizon SET recovering = true RETURNING guard::text",
            &[],
        )
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Gives up a recovery that cannot be done (no guard yet: a map kept by an earlier version of
/// the worker): the caller rebuilds instead.
pub async fn abandon(target: &Client) -> Result<(), tokio_postgres::Error> {
    target.execute("UPDATE eventstore_worker.source_horizon SET recovering = false", &[]).await?;
    Ok(())
}

/// A source transaction a recreated slot did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub transaction_id: u64,
    pub first_position: i64,
}

/// Reads, in the exported snapshot `snapshot_name` (its slot's connection must stay idle
/// meanwhile), that snapshot as a `pg_snapshot` and the event transactions visible in it but
/// not in `guard`.
pub async fn missed_since(
    source: &mut Client,
    snapshot_name: &str,
    guard: &str,
) -> anyhow::Result<(String, Vec<Missed>)> {
    let (tx, snapshot) = import(source, snapshot_name).await?;
    let rows = tx
        .query(
            "SELECT e.transaction_id::text, pg_catalog.min(e.global_position)
               FROM eventstore.events e
              WHERE e.transaction_id OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmin($1::pg_catalog.text::pg_catalog.pg_snapshot)
                AND NOT pg_catalog.pg_visible_in_snapshot(e.transaction_id, $1::pg_catalog.text::pg_catalog.pg_snapshot)
              GROUP BY e.transaction_id",
            &[&guard],
        )
        .await
        .context("reading the transactions the slot did not deliver")?;
    tx.commit().await?;
    let mut missed = rows
        .iter()
        .map(|r| {
            Ok(Missed { transaction_id: r.get::<_, String>(0).parse()?, first_position: r.get(1) })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    missed.sort_by_key(|m| m.first_position);
    Ok((snapshot, missed))
}

/// Positions for `n` map rows strictly between `after` and `before`, increasing; `None` when
/// there is no room (each missed transaction wrote a commit record in between, so there is).
pub fn positions(after: Lsn, before: Lsn, n: usize) -> Option<Vec<Lsn>> {
    let room = u128::from(before.0.checked_sub(after.0)?);
    let n128 = n as u128;
    if room <= n128 {
        return if n == 0 { Some(Vec::new()) } else { None };
    }
    Some(
        (1..=n128)
            .map(|i| Lsn(after.0 + u64::try_from(room * i / (n128 + 1)).unwrap_or(u64::MAX)))
            .collect(),
    )
}

/// Writes map rows for the missed transactions that are not in the map, between `known` and
/// the new slot's consistent point, makes `snapshot` the guard and ends the recovery, in one
/// target transaction. Returns how many transactions were recovered.
pub async fn record(
    target: &mut Client,
    missed: &[Missed],
    known: Lsn,
    consistent_point: Lsn,
    snapshot: &str,
) -> anyhow::Result<usize> {
    let tx = target.transaction().await?;
    let mapped: HashSet<u64> = tx
        .query(
            "SELECT x::text FROM eventstore_worker.source_transaction_runs r, pg_catalog.unnest(r.transaction_ids) AS x",
            &[],
        )
        .await?
        .iter()
        .filter_map(|r| r.get::<_, String>(0).parse().ok())
        .collect();
    let todo: Vec<&Missed> =
        missed.iter().filter(|m| !mapped.contains(&m.transaction_id)).collect();
    let Some(at) = positions(known, consistent_point, todo.len()) else {
        bail!(
            "no room for {} recovered transactions between {known} and the new slot's {consistent_point}",
            todo.len()
        );
    };
    if !todo.is_empty() {
        let xids: Vec<String> = todo.iter().map(|m| m.transaction_id.to_string()).collect();
        tx.execute(source_map::RECORD, &[&at, &xids, &source_map::RUN]).await?;
    }
    tx.execute(
        "UPDATE eventstore_worker.source_horizon
            SET guard = $1::pg_catalog.text::pg_catalog.pg_snapshot, recovering = false,
                next_guard = NULL, next_guard_lsn = NULL",
        &[&snapshot],
    )
    .await?;
    tx.commit().await?;
    Ok(todo.len())
}

/// Records the first guard: the snapshot of the first slot, consistent with the horizon.
pub async fn first_guard(
    target: &Client,
    consistent_point: Lsn,
    snapshot: &str,
) -> Result<(), tokio_postgres::Error> {
    target
        .execute(
            "INSERT INTO eventstore_worker.source_horizon (horizon, guard)
             VALUES ($1, $2::pg_catalog.text::pg_catalog.pg_snapshot)
             ON CONFLICT (single) DO NOTHING",
            &[&consistent_point, &snapshot],
        )
        .await?;
    Ok(())
}

/// Reads a snapshot of the source in the exported snapshot `snapshot_name`.
pub async fn exported_snapshot(source: &mut Client, snapshot_name: &str) -> anyhow::Result<String> {
    let (tx, snapshot) = import(source, snapshot_name).await?;
    tx.commit().await?;
    Ok(snapshot)
}

/// A read-only REPEATABLE READ transaction on `source` in the exported snapshot
/// `snapshot_name`, and that snapshot as a `pg_snapshot`.
async fn import<'a>(
    source: &'a mut Client,
    snapshot_name: &str,
) -> anyhow::Result<(tokio_postgres::Transaction<'a>, String)> {
    let tx = source
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The snapshot's name comes from the server; it is a literal here because SET takes no
    // parameters.
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        postgres_protocol::escape::escape_literal(snapshot_name)
    ))
    .await
    .context("importing the new slot's snapshot")?;
    let snapshot: String =
        tx.query_one("SELECT pg_catalog.pg_current_snapshot()::text", &[]).await?.get(0);
    Ok((tx, snapshot))
}

/// One step of the guard (see the module documentation): promotes the pending snapshot once
/// `floor` (the lowest checkpoint) has passed its position, and takes a new pending one from
/// the source when there is none.
pub async fn advance_guard(
    target: &Client,
    source: &Client,
    floor: Lsn,
) -> Result<(), tokio_postgres::Error> {
    let promoted = target
        .execute(
            "UPDATE eventstore_worker.source_horizon
                SET guard = next_guard, next_guard = NULL, next_guard_lsn = NULL
              WHERE NOT recovering AND next_guard_lsn <= $1",
            &[&floor],
        )
        .await?;
    if promoted > 0 {
        tracing::debug!(floor = %floor, "the map's guard moved forward");
    }
    // The snapshot first, then the position, in one statement: everything the snapshot sees
    // had written its commit record before the position was read.
    let sample = source
        .query_opt(
            "SELECT s::text, CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                                  ELSE pg_catalog.pg_current_wal_insert_lsn() END
               FROM (SELECT pg_catalog.pg_current_snapshot()) AS t(s)",
            &[],
        )
        .await?;
    if let Some(row) = sample {
        let (snapshot, lsn): (String, Option<Lsn>) = (row.get(0), row.get(1));
        if let Some(lsn) = lsn {
            target
                .execute(
                    "UPDATE eventstore_worker.source_horizon
                        SET next_guard = $1::pg_catalog.text::pg_catalog.pg_snapshot,
                            next_guard_lsn = $2
                      WHERE next_guard IS NULL AND NOT recovering",
                    &[&snapshot, &lsn],
                )
                .await?;
        }
    }
    Ok(())
}

/// Records the source's system identifier and timeline the stream started on.
pub async fn started_on(target: &Client, timeline: &str) -> Result<(), tokio_postgres::Error> {
    target
        .execute(
            "UPDATE eventstore_worker.source_horizon SET source_timeline = $1
              WHERE source_timeline IS DISTINCT FROM $1",
            &[&timeline],
        )
        .await?;
    Ok(())
}

/// Logs what a recovery did.
pub fn report(slot: &str, recovered: usize, consistent_point: Lsn) {
    if recovered > 0 {
        warn!(slot, recovered, consistent_point = %consistent_point,
              "recreated the replication slot; the transactions it never delivered are read from eventstore.events (no rebuild)");
    } else {
        info!(slot, consistent_point = %consistent_point,
              "recreated the replication slot; no transaction was missed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_strictly_between_and_increasing() {
        let p = positions(Lsn(100), Lsn(110), 3).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
        assert!(p.iter().all(|l| *l > Lsn(100) && *l < Lsn(110)), "{p:?}");
        assert_eq!(positions(Lsn(100), Lsn(104), 3).unwrap(), vec![Lsn(101), Lsn(102), Lsn(103)]);
        assert_eq!(positions(Lsn(5), Lsn(5), 0), Some(vec![]));
    }

    #[test]
    fn positions_refuse_when_there_is_no_room() {
        assert_eq!(positions(Lsn(100), Lsn(103), 3), None);
        assert_eq!(positions(Lsn(100), Lsn(90), 1), None);
        let big = positions(Lsn(0), Lsn(u64::MAX), 2).unwrap();
        assert!(big[0] < big[1] && big[1] < Lsn(u64::MAX));
    }
}
