//! The commit-order map, `eventstore_worker.source_transaction_runs`: which source transaction
//! (by `transaction_id`) committed at which end LSN, stored in runs of up to `RUN` consecutive
//! transactions per row. The live path records every transaction
//! of a batch in the batch's own target transaction, so for a projection at checkpoint L the
//! transactions it has not applied are exactly the map rows after L, in commit order, and their
//! events can be read back from `eventstore.events` (index `events_by_transaction`). That is
//! how a projection that is not following the stream resumes without the slot keeping WAL for
//! it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, GenericClient, Row};
use tracing::info;

use crate::decode::envelope::{self, Columns};
use crate::model::Lsn;
use crate::model::{Event, ProjectionStatus, SourceTxn};

/// One row of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRow {
    pub end_lsn: Lsn,
    pub transaction_id: u64,
}

/// The batch's map rows as arrays of end LSNs and of transaction ids (as text: xid8 has no
/// binding of its own here); transactions without events have no transaction id and nothing
/// to replay, and are left out.
pub fn rows_of(batch: &[SourceTxn]) -> (Vec<Lsn>, Vec<String>) {
    batch.iter().filter_map(|t| t.transaction_id.map(|x| (t.end_lsn, x.to_string()))).unzip()
}

/// Source transactions per row of the map: the arrays of a full run take about 1.6 kB, below
/// the size from which PostgreSQL compresses a row or moves values out of line (2 kB).
pub const RUN: i64 = 100;

/// Records map rows ($1 end LSNs, $2 transaction ids as text, in commit order) as runs of up
/// to $3 (`RUN`) transactions. Only the live path records,
/// batch after batch in commit order, so a transaction the stream resends after a reconnect
/// ends at or below the highest recorded end LSN (or below the horizon, when pruning took it),
/// and anything above is new. Filtering on that costs one index probe per batch instead of a
/// speculative insertion per row, which `ON CONFLICT DO NOTHING` would take; it also keeps
/// runs from overlapping.
pub const RECORD: &str = "INSERT INTO eventstore_worker.source_transaction_runs (last_end_lsn, end_lsns, transaction_ids)
     SELECT pg_catalog.max(l), pg_catalog.array_agg(l ORDER BY n), pg_catalog.array_agg(x ORDER BY n)
       FROM (SELECT l, x::xid8 AS x, n
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.pg_lsn[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS t(l, x, n)
              WHERE l > greatest((SELECT max(last_end_lsn) FROM eventstore_worker.source_transaction_runs),
                                         (SELECT horizon FROM eventstore_worker.source_horizon), '0/0'::pg_lsn)) AS s
      GROUP BY (n - 1) / $3::int8";

/// The position above which the map is complete; `None` until the stream was first started.
pub async fn horizon(client: &impl GenericClient) -> Result<Option<Lsn>, tokio_postgres::Error> {
    let row = client.query_opt("SELECT horizon FROM eventstore_worker.source_horizon", &[]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// Sets the horizon when the map starts: the slot's confirmed position, from which the stream
/// delivers (and the live path records) every later transaction. Never moves it back.
pub async fn start_horizon(client: &Client, confirmed: Lsn) -> Result<Lsn, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO eventstore_worker.source_horizon (horizon) VALUES ($1) ON CONFLICT (single) DO NOTHING",
            &[&confirmed],
        )
        .await?;
    Ok(horizon(client).await?.unwrap_or(confirmed))
}

/// Whether any source transaction ended in (after, until].
pub async fn any_between(
    client: &Client,
    after: Lsn,
    until: Lsn,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM eventstore_worker.source_transaction_runs r, pg_catalog.unnest(r.end_lsns) AS l
                             WHERE r.last_end_lsn > $1::pg_lsn AND r.end_lsns[1] <= $2::pg_lsn
                               AND l > $1::pg_lsn AND l <= $2::pg_lsn)",
            &[&after, &until],
        )
        .await?;
    Ok(row.get(0))
}

/// Up to `limit` map rows after `after`, in commit order. Runs are read in order and only as
/// far as the limit needs (an incremental sort on the runs' index order).
pub async fn after(client: &Client, after: Lsn, limit: i64) -> anyhow::Result<Vec<MapRow>> {
    let rows = client
        .query(
            "SELECT t.l, t.x::text
               FROM eventstore_worker.source_transaction_runs r,
                    ROWS FROM (pg_catalog.unnest(r.end_lsns), pg_catalog.unnest(r.transaction_ids)) WITH ORDINALITY AS t(l, x, n)
              WHERE r.last_end_lsn > $1::pg_lsn AND t.l > $1::pg_lsn
              ORDER BY r.last_end_lsn, t.n LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(MapRow { end_lsn: r.get(0), transaction_id: r.get::<_, String>(1).parse()? }))
        .collect()
}

/// Session settings under which `eventstore.events` columns print exactly as pgoutput sends
/// them to the worker (see `replication/mod.rs`), so envelopes are identical either way.
pub const EVENT_SESSION: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'";

/// The select list every reader of `eventstore.events` uses; `event_from_row` reads it.
pub const EVENT_COLUMNS: &str =
    "stream_id, stream_version, global_position, event_id::text, event_type, \
     data::text, metadata::text, recorded_at::text, schema_version::int8, tags::text";
/// How many columns `EVENT_COLUMNS` selects.
pub const EVENT_COLUMN_COUNT: usize = 10;

/// Builds an event from the `EVENT_COLUMNS` of `row`, starting at column `at`.
pub fn event_from_row(row: &Row, at: usize) -> Event {
    envelope::build(&Columns {
        stream_id: row.get(at),
        stream_version: row.get(at + 1),
        global_position: row.get(at + 2),
        event_id: row.get(at + 3),
        event_type: row.get(at + 4),
        data: row.get(at + 5),
        metadata: row.get(at + 6),
        recorded_at: row.get(at + 7),
        schema_version: row.get(at + 8),
        tags: row.get(at + 9),
    })
}

/// `recorded_at` as Unix seconds, selected after `EVENT_COLUMNS` by readers that need a
/// source time for their checkpoints.
pub const RECORDED_AT_EPOCH: &str = "extract(epoch FROM recorded_at)::float8";

/// A point in time from Unix seconds (as `RECORDED_AT_EPOCH` gives them).
pub fn epoch_time(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::try_from_secs_f64(seconds).unwrap_or_default()
}

/// Longest wait for a transaction of the map to become visible (see `fetch`).
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// Reads the events of the given map rows from the source, as source transactions in map
/// order with their events in `global_position` order (commit order within a transaction).
///
/// The stream can deliver a transaction, and the live path record it, before other sessions
/// see it: its commit is in the WAL before it leaves the server's list of running
/// transactions (for as long as a synchronous standby takes to confirm it, or while the
/// committing backend waits for a CPU). Read then, its events would be missing, and the reader
/// would step past them. So a map row whose events are not there is waited for until its
/// transaction is visible, then read again; one that is visible and still has no events is an
/// error, since the map records only transactions that wrote events.
///
/// The table does not record commit times: each transaction's `source_time` is the latest
/// `recorded_at` of its events (the appending transaction's start time, so a little before
/// its commit), or now if it has none. A checkpoint a catch-up or a build records therefore
/// makes `status` report a lag in seconds that is, if anything, slightly too high.
pub async fn fetch(source: &Client, rows: &[MapRow]) -> anyhow::Result<Vec<SourceTxn>> {
    let xids: Vec<String> = rows.iter().map(|r| r.transaction_id.to_string()).collect();
    let mut by_xid = read_events(source, &xids).await?;
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let missing: Vec<String> = rows
            .iter()
            .filter(|r| !by_xid.contains_key(&r.transaction_id))
            .map(|r| r.transaction_id.to_string())
            .collect();
        if missing.is_empty() {
            break;
        }
        let invisible: Vec<String> = source
            .query(
                "SELECT x::text FROM pg_catalog.unnest($1::pg_catalog.text[]::pg_catalog.xid8[]) AS x WHERE NOT pg_catalog.pg_visible_in_snapshot(x, pg_catalog.pg_current_snapshot())",
                &[&missing],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if invisible.is_empty() {
            // Visible now, so this read sees every event they wrote.
            by_xid.extend(read_events(source, &missing).await?);
            if let Some(x) = rows.iter().find(|r| !by_xid.contains_key(&r.transaction_id)) {
                anyhow::bail!(
                    "the commit-order map names transaction {} (ending at {}), which has no events in eventstore.events",
                    x.transaction_id,
                    x.end_lsn
                );
            }
            break;
        }
        anyhow::ensure!(
            started.elapsed() < VISIBLE_WITHIN,
            "source transactions {} committed but are still not visible after {} s",
            invisible.join(", "),
            VISIBLE_WITHIN.as_secs()
        );
        if pause == Duration::from_millis(1) {
            info!(transactions = ?invisible, "waiting for source transactions the stream delivered to become visible");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    Ok(group(rows, by_xid))
}

/// The events of the given transactions, by transaction, with the latest `recorded_at`.
async fn read_events(
    source: &Client,
    xids: &[String],
) -> anyhow::Result<HashMap<u64, (Vec<Event>, f64)>> {
    let events = source
        .query(
            &format!(
                "SELECT transaction_id::text, {EVENT_COLUMNS}, {RECORDED_AT_EPOCH} FROM eventstore.events
                  WHERE transaction_id = ANY($1::text[]::xid8[]) ORDER BY transaction_id, global_position"
            ),
            &[&xids],
        )
        .await?;
    let mut by_xid: HashMap<u64, (Vec<Event>, f64)> = HashMap::new();
    for row in &events {
        let xid: u64 = row.get::<_, String>(0).parse()?;
        let entry = by_xid.entry(xid).or_insert_with(|| (Vec::new(), f64::MIN));
        entry.0.push(event_from_row(row, 1));
        entry.1 = entry.1.max(row.get(1 + EVENT_COLUMN_COUNT));
    }
    Ok(by_xid)
}

fn group(rows: &[MapRow], mut by_xid: HashMap<u64, (Vec<Event>, f64)>) -> Vec<SourceTxn> {
    rows.iter()
        .map(|r| {
            let (events, source_time) = match by_xid.remove(&r.transaction_id) {
                Some((events, recorded)) => (events, epoch_time(recorded)),
                None => (Vec::new(), SystemTime::now()),
            };
            let bytes = events.iter().map(|e| e.envelope.len()).sum();
            SourceTxn {
                end_lsn: r.end_lsn,
                source_time,
                transaction_id: Some(r.transaction_id),
                events,
                bytes,
            }
        })
        .collect()
}

/// Map rows (runs) one pruning statement deletes at most.
const PRUNE_CHUNK: i64 = 5000;

/// Deletes the map rows no projection can need any more: runs ending at or below the lowest checkpoint of
/// the configured projections (`names`) and of builds in progress. A projection or build
/// without a checkpoint yet holds pruning off entirely. Moves the horizon up accordingly first,
/// then deletes the rows at or below the horizon in chunks of `PRUNE_CHUNK`, each in its own
/// transaction: the map lives in the target database, which is often the source one, and the
/// walsender decodes a transaction's changes in full before it sends the next commit, so one
/// delete of a long drain's worth of rows would hold every event behind it for as long as that
/// takes. Rows a pruning left behind (the worker stopped midway) go at the next one.
/// A run goes only once every transaction in it is visible in the guard (see
/// `slot_recovery`), and nothing goes while a slot is being recreated.
/// Returns the new horizon when it moved, the lowest checkpoint, and the number of rows
/// deleted.
pub async fn prune(
    client: &mut Client,
    names: &[&str],
) -> Result<(Option<Lsn>, Option<Lsn>, u64), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let floor: Option<Lsn> = tx
        .query_one(
            "SELECT CASE WHEN bool_or(lsn IS NULL) THEN NULL ELSE min(lsn) END
               FROM (SELECT checkpoint_lsn FROM eventstore_worker.projections
                      WHERE name = ANY($1) AND status <> $2
                     UNION ALL
                     SELECT checkpoint_lsn FROM eventstore_worker.rebuilds) AS c(lsn)",
            &[&names, &ProjectionStatus::Rebuilding],
        )
        .await?
        .get(0);
    let Some(floor) = floor else { return Ok((None, None, 0)) };
    let moved = tx
        .execute(
            "UPDATE eventstore_worker.source_horizon SET horizon = $1 WHERE horizon < $1",
            &[&floor],
        )
        .await?;
    tx.commit().await?;
    let mut deleted = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM eventstore_worker.source_transaction_runs
                  WHERE last_end_lsn IN (SELECT r.last_end_lsn FROM eventstore_worker.source_transaction_runs r, eventstore_worker.source_horizon h
                                          WHERE r.last_end_lsn <= h.horizon AND NOT h.recovering AND h.guard IS NOT NULL
                                            AND NOT EXISTS (SELECT FROM pg_catalog.unnest(r.transaction_ids) AS x
                                                             WHERE NOT pg_catalog.pg_visible_in_snapshot(x, h.guard))
                                          ORDER BY r.last_end_lsn LIMIT $1)",
                &[&PRUNE_CHUNK],
            )
            .await?;
        deleted += n;
        if n < PRUNE_CHUNK.unsigned_abs() {
            break;
        }
    }
    Ok((if moved == 0 { None } else { Some(floor) }, Some(floor), deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pos: i64) -> Event {
        Event { event_type: "T".into(), global_position: pos, envelope: format!("{{\"p\":{pos}}}") }
    }

    #[test]
    fn groups_events_in_map_order() {
        let rows = [
            MapRow { end_lsn: Lsn(30), transaction_id: 9 },
            MapRow { end_lsn: Lsn(40), transaction_id: 7 },
            MapRow { end_lsn: Lsn(50), transaction_id: 8 },
        ];
        let by_xid = HashMap::from([(7, (vec![ev(1), ev(2)], 20.5)), (9, (vec![ev(5)], 10.0))]);
        let txns = group(&rows, by_xid);
        let shape: Vec<(u64, Vec<i64>)> = txns
            .iter()
            .map(|t| (t.end_lsn.0, t.events.iter().map(|e| e.global_position).collect()))
            .collect();
        assert_eq!(shape, [(30, vec![5]), (40, vec![1, 2]), (50, vec![])]);
        assert_eq!(txns[1].bytes, 14);
        assert_eq!(txns[1].source_time, UNIX_EPOCH + Duration::from_millis(20_500));
    }

    #[test]
    fn map_rows_of_a_batch_skip_transactions_without_events() {
        let batch = [
            SourceTxn {
                end_lsn: Lsn(0x10),
                source_time: UNIX_EPOCH,
                transaction_id: Some(742),
                events: vec![ev(1)],
                bytes: 7,
            },
            // An idle position: nothing to replay, so nothing to record.
            SourceTxn {
                end_lsn: Lsn(0x20),
                source_time: UNIX_EPOCH,
                transaction_id: None,
                events: vec![],
                bytes: 0,
            },
        ];
        assert_eq!(rows_of(&batch), (vec![Lsn(0x10)], vec!["742".to_owned()]));
    }
}
