//! The target side: projection state, handler statements and the batch transaction that
//! applies events and records checkpoints atomically.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use futures_util::future::join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::config::{Config, OnUnknown, Projection};
use crate::envelope::Event;
use crate::lsn::Lsn;

const SCHEMA: &str = include_str!("schema.sql");

/// A source transaction as the apply path sees it: never split across target transactions.
/// One without events is an idle position (see `idle.rs`): it only moves checkpoints.
#[derive(Debug, Clone)]
pub struct SourceTxn {
    pub end_lsn: Lsn,
    /// Source server time at `end_lsn` (commit time), recorded with the checkpoint for lag.
    pub source_time: SystemTime,
    pub events: Vec<Event>,
    pub bytes: usize,
}

/// JSON text bound as a `jsonb` (or `json`) parameter without reparsing it in the worker.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]); // jsonb binary format version
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// Errors that say "try again later" rather than "this handler is broken".
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else { return true };
    if matches!(db.severity(), "FATAL" | "PANIC") {
        return true;
    }
    let code = db.code().code();
    ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)) || *db.code() == SqlState::IN_FAILED_SQL_TRANSACTION
}

/// The PostgreSQL error text recorded in `last_error`.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; DETAIL: {d}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("; CONTEXT: {w}"));
            }
            s
        }
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{file}: projection {projection:?}: {key}: {message}")]
    Projection { file: String, projection: String, key: String, message: String },
    #[error("target database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl SetupError {
    /// A broken configuration will not fix itself by retrying.
    pub fn is_fatal(&self) -> bool {
        match self {
            SetupError::Projection { .. } => true,
            SetupError::Database(e) => !is_transient(e),
        }
    }
}

struct ProjectionState {
    name: String,
    on_unknown: OnUnknown,
    handlers: HashMap<String, Statement>,
    checkpoint: Option<Lsn>,
    failed: bool,
}

/// A projection that failed in a batch; its checkpoint stays where it was.
#[derive(Debug, Clone)]
pub struct Failure {
    pub projection: String,
    pub checkpoint: Option<Lsn>,
    pub error: String,
}

pub struct Target {
    client: Client,
    projections: Vec<ProjectionState>,
    checkpoint: Statement,
    mark_failed: Statement,
}

impl Target {
    /// Prepares the target: worker schema, projection rows, setup SQL, handler statements.
    /// With `retry_failed`, projections left failed by an earlier run are given another go.
    pub async fn open(client: Client, config: &Config, retry_failed: bool) -> Result<Target, SetupError> {
        client.batch_execute("SET synchronous_commit TO on").await?;
        client.batch_execute(SCHEMA).await?;
        let file = config.file.display().to_string();
        let mut projections = Vec::new();
        for p in &config.projections {
            let err = |key: &str, e: &tokio_postgres::Error| SetupError::Projection {
                file: file.clone(),
                projection: p.name.clone(),
                key: key.to_owned(),
                message: error_text(e),
            };
            client
                .execute(
                    "INSERT INTO eventstore_worker.projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                    &[&p.name],
                )
                .await?;
            if retry_failed {
                client
                    .execute(
                        "UPDATE eventstore_worker.projections SET status = 'running', updated_at = now()
                          WHERE name = $1 AND status = 'failed'",
                        &[&p.name],
                    )
                    .await?;
            }
            if let Some(setup) = &p.setup {
                client.batch_execute(setup).await.map_err(|e| if is_transient(&e) { e.into() } else { err("setup", &e) })?;
            }
            projections.push(prepare(&client, p, &file).await?);
        }
        let rows = client
            .query("SELECT name, status, checkpoint_lsn::text FROM eventstore_worker.projections", &[])
            .await?;
        for row in rows {
            let name: String = row.get(0);
            if let Some(p) = projections.iter_mut().find(|p| p.name == name) {
                p.failed = row.get::<_, String>(1) == "failed";
                p.checkpoint = row.get::<_, Option<String>>(2).and_then(|s| s.parse().ok());
            }
        }
        let checkpoint = client
            .prepare(
                "UPDATE eventstore_worker.projections
                    SET status = 'running', checkpoint_lsn = $2::text::pg_lsn, checkpoint_time = $4,
                        events_applied = events_applied + $3, last_error = NULL, failed_event = NULL,
                        updated_at = now()
                  WHERE name = $1",
            )
            .await?;
        let mark_failed = client
            .prepare(
                "UPDATE eventstore_worker.projections
                    SET status = 'failed', last_error = $2, failed_event = $3::text::jsonb, updated_at = now()
                  WHERE name = $1",
            )
            .await?;
        Ok(Target { client, projections, checkpoint, mark_failed })
    }

    /// `(name, checkpoint)` of every projection that is currently failed.
    pub fn failed(&self) -> impl Iterator<Item = (&str, Option<Lsn>)> {
        self.projections.iter().filter(|p| p.failed).map(|p| (p.name.as_str(), p.checkpoint))
    }

    pub fn checkpoints(&self) -> impl Iterator<Item = (&str, Option<Lsn>)> {
        self.projections.iter().map(|p| (p.name.as_str(), p.checkpoint))
    }

    /// Applies a batch in one target transaction. On return `Ok`, the transaction committed:
    /// every running projection's changes and checkpoints, and any new failures, are durable.
    /// `Err` means nothing of the batch may be assumed applied (the caller reconnects).
    pub async fn apply(&mut self, batch: &[SourceTxn]) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let Some(last) = batch.last().map(|t| t.end_lsn) else { return Ok(Vec::new()) };
        self.client.batch_execute("BEGIN").await?;
        let result = self.apply_in_transaction(batch, last).await;
        match result {
            Ok(failures) => {
                self.client.batch_execute("COMMIT").await?;
                for p in &mut self.projections {
                    if !p.failed && p.checkpoint.is_none_or(|c| c < last) {
                        p.checkpoint = Some(last);
                    }
                }
                Ok(failures)
            }
            Err(e) => {
                // The connection may be gone; the rollback is best effort. In-memory state may
                // now disagree with the database, so the caller must discard this Target.
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn apply_in_transaction(&mut self, batch: &[SourceTxn], last: Lsn) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let mut failures = Vec::new();
        let mut start = 0;
        // Happy path: every projection's statements go out in one pipeline, each projection
        // inside its own savepoint. When a handler fails, that projection is rolled back to its
        // savepoint, re-applied up to the source transaction before the failing one, and
        // marked failed; the projections after it are pipelined again.
        while start < self.projections.len() {
            let client = &self.client;
            let mut futures: Pipeline<'_> = Vec::new();
            let mut owners: Vec<(usize, Option<(Lsn, &Event)>)> = Vec::new();
            let mut unknown_failure: Option<(usize, Lsn, &Event)> = None;
            for (i, p) in self.projections.iter().enumerate().skip(start) {
                if p.failed || p.checkpoint.is_some_and(|c| c >= last) {
                    continue;
                }
                let (work, unknown) = p.work(batch, None);
                if let Some((lsn, ev)) = unknown {
                    // Stop the pipeline here: earlier projections still run, this one fails.
                    unknown_failure = Some((i, lsn, ev));
                    break;
                }
                queue(client, p, &work, (last, source_time(batch, last)), &self.checkpoint, &mut futures, &mut owners, i);
            }

            let results = join_all(futures).await;
            let first_error =
                results.into_iter().zip(owners.iter()).find_map(|(r, (i, event))| r.err().map(|e| (*i, *event, e)));
            match first_error {
                None => match unknown_failure {
                    Some((i, lsn, ev)) => {
                        let error = format!("no handler for event type {:?} and on_unknown = \"fail\"", ev.event_type);
                        failures.push(self.fail(i, batch, lsn, error, &ev.envelope).await?);
                        start = i + 1;
                    }
                    None => start = self.projections.len(),
                },
                Some((i, Some((lsn, ev)), e)) if !is_transient(&e) => {
                    self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection").await?;
                    failures.push(self.fail(i, batch, lsn, error_text(&e), &ev.envelope).await?);
                    start = i + 1;
                }
                Some((_, _, e)) => return Err(e),
            }
        }
        Ok(failures)
    }

    /// Marks projection `i` failed at the source transaction ending at `failed_txn`, after
    /// applying the transactions of the batch that precede it (so its checkpoint is exact).
    async fn fail(
        &mut self,
        i: usize,
        batch: &[SourceTxn],
        failed_txn: Lsn,
        error: String,
        envelope: &str,
    ) -> Result<Failure, tokio_postgres::Error> {
        let p = &self.projections[i];
        let prefix_end = batch.iter().map(|t| t.end_lsn).filter(|l| *l < failed_txn && p.checkpoint.is_none_or(|c| *l > c)).max();
        let mut checkpoint = p.checkpoint;
        if let Some(prefix_end) = prefix_end {
            let (work, _) = p.work(batch, Some(prefix_end));
            let mut futures: Pipeline<'_> = Vec::new();
            let mut owners = Vec::new();
            let to = (prefix_end, source_time(batch, prefix_end));
            queue(&self.client, p, &work, to, &self.checkpoint, &mut futures, &mut owners, i);
            match join_all(futures).await.into_iter().find_map(Result::err) {
                None => checkpoint = Some(prefix_end),
                Some(e) if is_transient(&e) => return Err(e),
                // Failed differently the second time: keep the old checkpoint.
                Some(_) => self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection").await?,
            }
        }
        let p = &mut self.projections[i];
        self.client.execute(&self.mark_failed, &[&p.name, &error, &envelope]).await?;
        p.failed = true;
        p.checkpoint = checkpoint;
        Ok(Failure { projection: p.name.clone(), checkpoint, error })
    }
}

impl ProjectionState {
    /// Handler executions for the batch's transactions after this projection's checkpoint (and
    /// up to `until`), in order; stops at the first event without handler when
    /// `on_unknown = "fail"`, returning it with its transaction's end LSN.
    #[allow(clippy::type_complexity)]
    fn work<'s, 'b>(
        &'s self,
        batch: &'b [SourceTxn],
        until: Option<Lsn>,
    ) -> (Vec<(&'s Statement, Lsn, &'b Event)>, Option<(Lsn, &'b Event)>) {
        let mut work = Vec::new();
        let txns = batch
            .iter()
            .filter(|t| self.checkpoint.is_none_or(|c| t.end_lsn > c) && until.is_none_or(|u| t.end_lsn <= u));
        for txn in txns {
            for ev in &txn.events {
                match self.handlers.get(&ev.event_type) {
                    Some(stmt) => work.push((stmt, txn.end_lsn, ev)),
                    None if self.on_unknown == OnUnknown::Fail => return (work, Some((txn.end_lsn, ev))),
                    None => {}
                }
            }
        }
        (work, None)
    }
}

/// Source time of the batch's transaction ending at `lsn`.
fn source_time(batch: &[SourceTxn], lsn: Lsn) -> SystemTime {
    batch.iter().find(|t| t.end_lsn == lsn).map_or(SystemTime::UNIX_EPOCH, |t| t.source_time)
}

type Pipeline<'a> = Vec<Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>>;

/// Queues one projection's part of a batch: savepoint, handler executions, checkpoint, release.
#[allow(clippy::too_many_arguments)]
fn queue<'a, 'b: 'a>(
    client: &'a Client,
    p: &'a ProjectionState,
    work: &[(&'a Statement, Lsn, &'b Event)],
    (checkpoint_to, checkpoint_time): (Lsn, SystemTime),
    checkpoint: &'a Statement,
    futures: &mut Pipeline<'a>,
    owners: &mut Vec<(usize, Option<(Lsn, &'b Event)>)>,
    i: usize,
) {
    futures.push(Box::pin(async move { client.batch_execute("SAVEPOINT eventstore_projection").await.map(|_| 0) }));
    owners.push((i, None));
    for &(stmt, lsn, ev) in work {
        futures.push(Box::pin(async move { client.execute(stmt, &[&JsonText(&ev.envelope)]).await }));
        owners.push((i, Some((lsn, ev))));
    }
    let name = p.name.as_str();
    let lsn = checkpoint_to.to_string();
    let count = work.len() as i64;
    futures.push(Box::pin(async move { client.execute(checkpoint, &[&name, &lsn, &count, &checkpoint_time]).await }));
    owners.push((i, None));
    futures.push(Box::pin(async move { client.batch_execute("RELEASE SAVEPOINT eventstore_projection").await.map(|_| 0) }));
    owners.push((i, None));
}

async fn prepare(client: &Client, p: &Projection, file: &str) -> Result<ProjectionState, SetupError> {
    let mut handlers = HashMap::new();
    for (event_type, sql) in &p.handlers {
        let key = format!("handlers.{event_type}");
        let stmt = client.prepare_typed(sql, &[Type::JSONB]).await.map_err(|e| {
            if is_transient(&e) {
                SetupError::Database(e)
            } else {
                SetupError::Projection { file: file.into(), projection: p.name.clone(), key: key.clone(), message: error_text(&e) }
            }
        })?;
        if stmt.params().len() != 1 {
            return Err(SetupError::Projection {
                file: file.into(),
                projection: p.name.clone(),
                key,
                message: format!("must have exactly one parameter ($1, the event envelope); it has {}", stmt.params().len()),
            });
        }
        handlers.insert(event_type.clone(), stmt);
    }
    Ok(ProjectionState { name: p.name.clone(), on_unknown: p.on_unknown, handlers, checkpoint: None, failed: false })
}
