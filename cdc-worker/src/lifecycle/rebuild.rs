//! Building projections afresh from `eventstore.events` into shadow tables, then swapping them
//! in; the tables in use keep serving queries (and, for a running projection, keep being
//! updated by the live path) until the swap, which happens in one transaction.
//!
//! 1. Each projection's setup and handlers run on a connection whose `search_path` leads with
//!    its shadow schema, so the unqualified table names in them resolve to shadow tables.
//! 2. A temporary logical slot exports a snapshot and its consistent point C. Every event
//!    visible in that snapshot was committed before C, every other one arrives on the stream
//!    after C: the events read under the snapshot, in `global_position` order (commit order
//!    within each stream), make up the projection as of C exactly.
//! 3. From C the shadow catches up through the commit-order map (see `store/source_map.rs`),
//!    which the live path has been recording since before C.
//! 4. With the projection's apply lock held (the live path waits), the last map transactions
//!    are applied, the shadow tables replace the tables in use, and the projection is set
//!    `running` at the shadow's checkpoint (never behind the live one). The live path's next
//!    batch picks up the checkpoint; its statements re-resolve table names to the new tables.
//!
//! Over 500 lines: the four steps above are one protocol and read top to bottom here; split
//! apart, the reason each step is safe would sit far from the step that relies on it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::future::join_all;
use postgres_protocol::escape::escape_identifier;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::apply_function::{self, Applier};
use crate::apply::{Failure, Role, Target};
use crate::config::Config;
use crate::lifecycle::catchup::{CHUNK, JOIN_BELOW};
use crate::model::error::sqlstate;
use crate::model::{ErrorKind, Lsn, ProjectionStatus, SourceTxn};
use crate::pg::connect::connect_sql;
use crate::replication::ReplicationConnection;
use crate::store::coordination::{self, SessionLock};
use crate::store::projections::{self, FailedEvent, Table};
use crate::store::source_map;

/// Events read from the snapshot per target transaction.
const SNAPSHOT_CHUNK: i64 = 5000;
/// Attempts at the swap when readers hold the tables longer than the lock timeout.
const SWAP_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The worker builds projections it marked `rebuilding`; a failure marks them `failed`.
    Worker,
    /// `eventstore-worker rebuild`: on failure the tables in use stay as they are.
    Command,
}

/// What became of one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Swapped {
        checkpoint: Lsn,
        events: i64,
    },
    Failed(String),
    /// Another process owns it, or its status changed meanwhile.
    Skipped(String),
}

struct Shadow {
    name: String,
    schema: String,
    target: Target,
    outcome: Option<Outcome>,
    /// The owner lock, on the control connection, until the build is swapped in or dropped.
    owner: Option<SessionLock>,
}

impl Shadow {
    fn building(&self) -> bool {
        self.outcome.is_none()
    }
}

pub async fn run(
    config: &Config,
    names: &[String],
    mode: Mode,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<(String, Outcome)>> {
    tokio::select! {
        r = build(config, names, mode) => r,
        _ = stop.cancelled() => Ok(Vec::new()),
    }
}

async fn build(
    config: &Config,
    names: &[String],
    mode: Mode,
) -> anyhow::Result<Vec<(String, Outcome)>> {
    let started = Instant::now();
    let mut control = connect_sql(config.target_config(), "target", "build").await?;
    control.batch_execute("SET client_min_messages TO warning").await?;
    crate::store::ensure_schema(&control).await?;
    let Some(horizon) = source_map::horizon(&control).await? else {
        bail!(
            "the worker has not streamed from slot {:?} yet: start it once, then rebuild",
            config.slot
        );
    };
    debug!(horizon = %horizon, "commit-order map available");
    let mut outcomes = Vec::new();
    let mut shadows = Vec::new();
    for name in names {
        match claim(&control, config, name, mode).await? {
            Ok((schema, owner)) => match open_shadow(config, name, &schema).await {
                Ok(target) => shadows.push(Shadow {
                    name: name.clone(),
                    schema,
                    target,
                    outcome: None,
                    owner: Some(owner),
                }),
                Err(e) if !ErrorKind::of(&e).is_transient() => {
                    let error = format!("{e:#}");
                    abandon(&control, name, &schema, mode, Some(&error), None, Some(owner)).await?;
                    outcomes.push((name.clone(), Outcome::Failed(error)));
                }
                Err(e) => return Err(e),
            },
            Err(why) => outcomes.push((name.clone(), Outcome::Skipped(why))),
        }
    }
    if shadows.is_empty() {
        return Ok(outcomes);
    }

    // 2. The snapshot.
    let source = connect_sql(&config.source, "source", "build").await?;
    source.batch_execute(source_map::EVENT_SESSION).await?;
    let mut repl = ReplicationConnection::connect(&config.source.named("build")).await?;
    let slot = temporary_slot_name(&config.slot);
    let (consistent_point, snapshot) =
        repl.create_exporting_slot(&slot).await.context("creating a temporary slot")?;
    info!(projections = ?names, consistent_point = %consistent_point, "reading eventstore.events as of the consistent point");
    let reading = Instant::now();
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}';
             DECLARE history NO SCROLL CURSOR FOR SELECT {}, {} FROM eventstore.events ORDER BY global_position",
            source_map::EVENT_COLUMNS,
            source_map::RECORDED_AT_EPOCH
        ))
        .await
        .context("importing the snapshot")?;
    // The source's clock just after the consistent point: the checkpoint time of the snapshot.
    let snapshot_time: std::time::SystemTime = source.query_one("SELECT now()", &[]).await?.get(0);
    let fetch_sql = format!("FETCH {SNAPSHOT_CHUNK} FROM history");
    let mut chunk_no = 0u64;
    let mut events = 0usize;
    let mut next = fetch(&source, &fetch_sql, chunk_no).await?;
    while !next.events.is_empty() {
        chunk_no += 1;
        let chunk = next;
        events += chunk.events.len();
        // Read the next chunk while this one is applied.
        let (applied, fetched) = tokio::join!(
            apply_all(&mut shadows, std::slice::from_ref(&chunk)),
            fetch(&source, &fetch_sql, chunk_no)
        );
        applied?;
        next = fetched?;
        record_failures(&control, &mut shadows, mode, true).await?;
        if !shadows.iter().any(Shadow::building) {
            break;
        }
    }
    source.batch_execute("COMMIT").await?;
    drop(repl); // the temporary slot goes with its connection
    let elapsed_ms = reading.elapsed().as_millis() as u64;
    let per_second = (events as f64 / reading.elapsed().as_secs_f64().max(1e-9)) as u64;
    info!(events, elapsed_ms, per_second, "snapshot applied");

    for s in shadows.iter_mut().filter(|s| s.building()) {
        s.target
            .client()
            .execute(
                "UPDATE eventstore_worker.rebuilds
                    SET checkpoint_lsn = $2, checkpoint_time = $3, updated_at = now()
                  WHERE name = $1",
                &[&s.name, &consistent_point, &snapshot_time],
            )
            .await?;
        s.target.set_checkpoint(&s.name.clone(), consistent_point);
    }

    // 3. Catch up through the map until little is left.
    while let Some(at) =
        shadows.iter().filter(|s| s.building()).filter_map(|s| s.target.checkpoint(&s.name)).min()
    {
        let rows = source_map::after(&control, at, CHUNK).await?;
        if rows.len() < JOIN_BELOW {
            break;
        }
        let txns = source_map::fetch(&source, &rows).await?;
        apply_all(&mut shadows, &txns).await?;
        record_failures(&control, &mut shadows, mode, false).await?;
    }

    // 4. Swap, one projection at a time.
    for s in shadows.iter_mut().filter(|s| s.building()) {
        let outcome = swap(&mut control, &source, config, s, mode).await?;
        if let Outcome::Skipped(why) = &outcome {
            info!(projection = %s.name, why = %why, "build dropped");
            abandon(&control, &s.name, &s.schema, mode, None, None, s.owner.take()).await?;
        }
        s.outcome = Some(outcome);
    }
    // The builds' apply functions are of no use now (the next build installs them afresh; one
    // left behind by a crash is harmless).
    for s in &shadows {
        control.batch_execute(&apply_function::drop_function(&s.name, Applier::Build)).await?;
    }
    for s in shadows {
        let outcome = s.outcome.unwrap_or(Outcome::Skipped("not built".into()));
        if let Outcome::Swapped { checkpoint, events } = &outcome {
            info!(projection = %s.name, checkpoint = %checkpoint, events, elapsed_ms = started.elapsed().as_millis() as u64, "rebuilt and swapped in");
        }
        outcomes.push((s.name, outcome));
    }
    Ok(outcomes)
}

/// Takes ownership of the projection for the build and registers it, before the snapshot is
/// taken (so that pruning keeps the map rows the build will need): the shadow schema and the
/// owner lock. `Err` says why not.
async fn claim(
    control: &Client,
    config: &Config,
    name: &str,
    mode: Mode,
) -> anyhow::Result<Result<(String, SessionLock), String>> {
    let Some(owner) = coordination::try_own(control, name).await? else {
        return Ok(Err("another process is catching up or rebuilding it".into()));
    };
    control
        .execute("INSERT INTO eventstore_worker.projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", &[&name])
        .await?;
    let status: ProjectionStatus = control
        .query_one("SELECT status FROM eventstore_worker.projections WHERE name = $1", &[&name])
        .await?
        .get(0);
    if mode == Mode::Worker && status != ProjectionStatus::Rebuilding {
        owner.release(control).await?;
        return Ok(Err(format!("status is {status} now")));
    }
    let schema = coordination::shadow_schema(name);
    let version = config.projection(name).and_then(|p| p.version.clone());
    control
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        .await
        .context("creating the shadow schema")?;
    control
        .execute(
            "INSERT INTO eventstore_worker.rebuilds (name, shadow_schema, version) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                SET shadow_schema = EXCLUDED.shadow_schema, version = EXCLUDED.version, status = $4,
                    checkpoint_lsn = NULL, checkpoint_time = NULL, events_applied = 0, last_error = NULL, failed_event = NULL,
                    started_at = now(), updated_at = now()",
            &[&name, &schema, &version, &ProjectionStatus::Building],
        )
        .await?;
    Ok(Ok((schema, owner)))
}

/// A target connection whose unqualified names resolve to the shadow schema first.
async fn open_shadow(config: &Config, name: &str, schema: &str) -> anyhow::Result<Target> {
    let client = connect_sql(config.target_config(), "target", "build").await?;
    let path: String = client.query_one("SHOW search_path", &[]).await?.get(0);
    client.batch_execute(&format!("SET search_path TO {schema}, {path}")).await?;
    let target = Target::open(client, config, Role::Shadow(name.into())).await?;
    let tables: i64 = target
        .client()
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
            &[&schema],
        )
        .await?
        .get(0);
    if tables == 0 {
        bail!(
            "projection {name:?}: setup created no table in the shadow schema; the worker builds projections from \
             eventstore.events into shadow tables, so setup must create the projection's tables with unqualified names"
        );
    }
    Ok(target)
}

fn temporary_slot_name(slot: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let prefix: String = slot.chars().take(40).collect();
    format!("{prefix}_build_{}_{nanos:x}", std::process::id())
}

/// The next chunk of the snapshot, as one pseudo source transaction: its "end LSN" is the
/// chunk's number, far below any real position, so chunks apply in order and the consistent
/// point still lies after all of them. Its source time is the latest `recorded_at` in it
/// (replaced by the snapshot's time once the snapshot is read).
async fn fetch(source: &Client, sql: &str, chunk_no: u64) -> anyhow::Result<SourceTxn> {
    let rows = source.query(sql, &[]).await.context("reading eventstore.events")?;
    let events: Vec<_> = rows.iter().map(|r| source_map::event_from_row(r, 0)).collect();
    let recorded = rows
        .iter()
        .map(|r| r.get::<_, f64>(source_map::EVENT_COLUMN_COUNT))
        .fold(f64::MIN, f64::max);
    let source_time = if rows.is_empty() {
        std::time::SystemTime::now()
    } else {
        source_map::epoch_time(recorded)
    };
    let bytes = events.iter().map(|e| e.envelope.len()).sum();
    Ok(SourceTxn { end_lsn: Lsn(chunk_no + 1), source_time, transaction_id: None, events, bytes })
}

/// Applies source transactions to every shadow still building, concurrently (one connection
/// each); failures are left in the shadows for `record_failures`.
async fn apply_all(shadows: &mut [Shadow], txns: &[SourceTxn]) -> anyhow::Result<()> {
    let results = join_all(shadows.iter_mut().filter(|s| s.building()).map(|s| async move {
        let r = s.target.apply(txns).await;
        (s, r)
    }))
    .await;
    for (s, r) in results {
        let failures: Vec<Failure> =
            r.with_context(|| format!("building projection {:?}", s.name))?;
        if let Some(f) = failures.into_iter().next() {
            s.outcome = Some(Outcome::Failed(f.error));
        }
    }
    Ok(())
}

async fn record_failures(
    control: &Client,
    shadows: &mut [Shadow],
    mode: Mode,
    in_snapshot: bool,
) -> anyhow::Result<()> {
    for s in shadows.iter_mut() {
        let Some(Outcome::Failed(error)) = &s.outcome else { continue };
        if s.schema.is_empty() {
            continue; // already recorded
        }
        warn!(projection = %s.name, error = %error, in_snapshot, "build failed; the tables in use are left as they are");
        let failed_event: Option<String> = control
            .query_one(
                "SELECT failed_event::text FROM eventstore_worker.rebuilds WHERE name = $1",
                &[&s.name],
            )
            .await?
            .get(0);
        let owner = s.owner.take();
        abandon(control, &s.name, &s.schema, mode, Some(error), failed_event.as_deref(), owner)
            .await?;
        s.schema.clear();
    }
    Ok(())
}

/// Drops a build. If it failed (`error`), in worker mode the projection becomes `failed` with
/// the error (its tables, if it had any, are untouched; a retry builds it again).
async fn abandon(
    control: &Client,
    name: &str,
    schema: &str,
    mode: Mode,
    error: Option<&str>,
    failed_event: Option<&str>,
    owner: Option<SessionLock>,
) -> anyhow::Result<()> {
    control.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
    control.execute("DELETE FROM eventstore_worker.rebuilds WHERE name = $1", &[&name]).await?;
    if let (Mode::Worker, Some(error)) = (mode, error) {
        let rebuilding = Some(ProjectionStatus::Rebuilding);
        let event = FailedEvent::Is(failed_event);
        projections::mark_failed(control, Table::Projections, name, rebuilding, error, event)
            .await?;
    }
    if let Some(owner) = owner {
        owner.release(control).await?;
    }
    Ok(())
}

/// Step 4: last map transactions and the swap, with the apply lock held.
async fn swap(
    control: &mut Client,
    source: &Client,
    config: &Config,
    s: &mut Shadow,
    mode: Mode,
) -> anyhow::Result<Outcome> {
    let key = coordination::apply_lock(&s.name);
    let version = config.projection(&s.name).and_then(|p| p.version.clone());
    for attempt in 1..=SWAP_ATTEMPTS {
        let lock = SessionLock::acquire(control, key).await?;
        let result = async {
            loop {
                let at = s.target.checkpoint(&s.name).unwrap_or_default();
                let rows = source_map::after(control, at, CHUNK).await?;
                if rows.is_empty() {
                    break;
                }
                let txns = source_map::fetch(source, &rows).await?;
                let failures = s.target.apply(&txns).await?;
                if let Some(f) = failures.into_iter().next() {
                    return Ok(Err(f.error));
                }
            }
            swap_tables(control, s, mode, version.as_deref()).await.map(Ok)
        }
        .await;
        lock.release(control).await?;
        match result {
            Ok(Ok(outcome)) => return Ok(outcome),
            Ok(Err(error)) => {
                s.outcome = Some(Outcome::Failed(error.clone()));
                let failed_event: Option<String> = control
                    .query_one(
                        "SELECT failed_event::text FROM eventstore_worker.rebuilds WHERE name = $1",
                        &[&s.name],
                    )
                    .await?
                    .get(0);
                let (event, owner) = (failed_event.as_deref(), s.owner.take());
                abandon(control, &s.name, &s.schema, mode, Some(&error), event, owner).await?;
                return Ok(Outcome::Failed(error));
            }
            Err(e)
                if sqlstate(&e) == Some(&SqlState::LOCK_NOT_AVAILABLE)
                    && attempt < SWAP_ATTEMPTS =>
            {
                warn!(projection = %s.name, attempt, "readers held the tables too long for the swap; trying again");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) if !ErrorKind::of(&e).is_transient() => {
                let error = format!("{e:#}");
                let owner = s.owner.take();
                abandon(control, &s.name, &s.schema, mode, Some(&error), None, owner).await?;
                return Ok(Outcome::Failed(error));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

/// One transaction: the shadow tables replace the ones in use (same names, found through the
/// normal `search_path`), the shadow schema goes, the projection is `running` at the shadow's
/// checkpoint or the live one, whichever is later.
async fn swap_tables(
    control: &mut Client,
    s: &mut Shadow,
    mode: Mode,
    version: Option<&str>,
) -> anyhow::Result<Outcome> {
    let checkpoint = s.target.checkpoint(&s.name).unwrap_or_default();
    let tx = control.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
    let row = tx
        .query_one("SELECT status, events_applied FROM eventstore_worker.projections WHERE name = $1 FOR UPDATE", &[&s.name])
        .await?;
    let status: ProjectionStatus = row.get(0);
    if mode == Mode::Worker && status != ProjectionStatus::Rebuilding {
        return Ok(Outcome::Skipped(format!("status is {status} now")));
    }
    // The map restarted above the shadow's checkpoint (the slot was recreated meanwhile): the
    // shadow may lack transactions. The projection stays as it is; the worker builds it again.
    let horizon = source_map::horizon(&tx).await?.unwrap_or_default();
    if checkpoint < horizon {
        return Ok(Outcome::Skipped(format!(
            "the commit-order map restarted at {horizon}, after the build's {checkpoint}"
        )));
    }
    let tables = tx
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
            &[&s.schema],
        )
        .await?;
    for t in &tables {
        let table: String = t.get(0);
        let live = tx
            .query_opt(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(pg_catalog.quote_ident($1::pg_catalog.text))::pg_catalog.oid",
                &[&table],
            )
            .await?;
        let dest: String = match live {
            Some(row) => {
                let schema: String = row.get(0);
                tx.batch_execute(&format!(
                    "DROP TABLE {}.{}",
                    escape_identifier(&schema),
                    escape_identifier(&table)
                ))
                .await?;
                schema
            }
            None => match tx
                .query_one("SELECT pg_catalog.current_schema()", &[])
                .await?
                .get::<_, Option<String>>(0)
            {
                Some(schema) => schema,
                None => bail!("no schema in the search_path exists to move table {table:?} into"),
            },
        };
        move_table(&tx, &s.schema, &table, &dest).await?;
    }
    // Partitions move with nothing: move them too (their parent is in place now).
    let partitions = tx
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relispartition",
            &[&s.schema],
        )
        .await?;
    for t in &partitions {
        let table: String = t.get(0);
        let Some(dest) = tx
            .query_one("SELECT pg_catalog.current_schema()", &[])
            .await?
            .get::<_, Option<String>>(0)
        else {
            bail!("no schema in the search_path exists to move partition {table:?} into");
        };
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS {}.{}",
            escape_identifier(&dest),
            escape_identifier(&table)
        ))
        .await?;
        move_table(&tx, &s.schema, &table, &dest).await?;
    }
    // Anything else setup created there (types, views, functions) is not moved: say so.
    if let Err(e) = tx.batch_execute(&format!("DROP SCHEMA {}", s.schema)).await {
        bail!(
            "projection {:?}: setup created objects other than tables in the shadow schema; only tables (with their \
             indexes, constraints and owned sequences) are swapped in: {}",
            s.name,
            crate::apply::error_text(&e)
        );
    }
    let events: i64 = tx
        .query_one(
            "SELECT events_applied FROM eventstore_worker.rebuilds WHERE name = $1",
            &[&s.name],
        )
        .await?
        .get(0);
    // The checkpoint time goes with whichever checkpoint is kept.
    let row = tx
        .query_one(
            "UPDATE eventstore_worker.projections p
                SET status = $5, checkpoint_lsn = greatest(p.checkpoint_lsn, $2::pg_lsn),
                    checkpoint_time = CASE WHEN p.checkpoint_lsn >= $2::pg_lsn THEN p.checkpoint_time
                                           ELSE r.checkpoint_time END,
                    version = $3, events_applied = $4, last_error = NULL, failed_event = NULL, updated_at = now()
               FROM eventstore_worker.rebuilds r
              WHERE p.name = $1 AND r.name = $1
             RETURNING p.checkpoint_lsn",
            &[&s.name, &checkpoint, &version, &events, &ProjectionStatus::Running],
        )
        .await?;
    tx.execute("DELETE FROM eventstore_worker.rebuilds WHERE name = $1", &[&s.name]).await?;
    tx.commit().await?;
    if let Some(owner) = s.owner.take() {
        owner.release(control).await?;
    }
    let checkpoint = row.get::<_, Option<Lsn>>(0).unwrap_or(checkpoint);
    Ok(Outcome::Swapped { checkpoint, events })
}

/// Moves `table` from the shadow schema `shadow` (a generated name, no quoting needed) into
/// `dest`.
async fn move_table(
    tx: &tokio_postgres::Transaction<'_>,
    shadow: &str,
    table: &str,
    dest: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "ALTER TABLE {shadow}.{} SET SCHEMA {}",
        escape_identifier(table),
        escape_identifier(dest)
    ))
    .await
}

/// Clears builds whose process is gone (nobody holds their owner lock): their shadow schema
/// and row. Called now and then by the worker.
pub async fn clear_abandoned(control: &Client) -> anyhow::Result<()> {
    let rows =
        control.query("SELECT name, shadow_schema FROM eventstore_worker.rebuilds", &[]).await?;
    for row in rows {
        let (name, schema): (String, String) = (row.get(0), row.get(1));
        let Some(owner) = coordination::try_own(control, &name).await? else {
            continue;
        };
        info!(projection = %name, schema = %schema, "clearing a build whose process is gone");
        let cleared = async {
            control
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    escape_identifier(&schema)
                ))
                .await?;
            control
                .execute("DELETE FROM eventstore_worker.rebuilds WHERE name = $1", &[&name])
                .await
        }
        .await;
        owner.release(control).await?;
        cleared?;
    }
    Ok(())
}
