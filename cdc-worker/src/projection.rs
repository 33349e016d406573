//! The target side: projection state, handler statements and the batch transaction that
//! applies events and records checkpoints atomically.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::future::join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::config::{Config, OnUnknown, Projection};
use crate::envelope::Event;
use crate::lsn::Lsn;

const SCHEMA: &str = include_str!("schema.sql");

/// A source transaction as the apply path sees it: never split across target transactions.
#[derive(Debug, Clone)]
pub struct SourceTxn {
    pub end_lsn: Lsn,
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

enum Slot {
    Control,
    Event(usize),
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
                    SET status = 'running', checkpoint_lsn = $2::text::pg_lsn,
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
        // savepoint and marked failed, and the projections after it are pipelined again.
        while start < self.projections.len() {
            let client = &self.client;
            let mut futures: Vec<Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + '_>>> = Vec::new();
            let mut owners: Vec<(usize, Slot)> = Vec::new();
            let mut unknown_failure: Option<(usize, &Event)> = None;
            let mut counts = Vec::new();
            for (i, p) in self.projections.iter().enumerate().skip(start) {
                if p.failed || p.checkpoint.is_some_and(|c| c >= last) {
                    counts.push(0i64);
                    continue;
                }
                let mut work = Vec::new();
                let mut unknown = None;
                for txn in batch.iter().filter(|t| p.checkpoint.is_none_or(|c| t.end_lsn > c)) {
                    for ev in &txn.events {
                        match p.handlers.get(&ev.event_type) {
                            Some(stmt) => work.push((stmt, ev)),
                            None if p.on_unknown == OnUnknown::Fail => {
                                unknown = Some(ev);
                                break;
                            }
                            None => {}
                        }
                    }
                    if unknown.is_some() {
                        break;
                    }
                }
                if let Some(ev) = unknown {
                    // Stop the pipeline here; earlier projections still run and this one fails.
                    unknown_failure = Some((i, ev));
                    counts.push(0);
                    break;
                }
                counts.push(work.len() as i64);
                futures.push(Box::pin(async move { client.batch_execute("SAVEPOINT eventstore_projection").await.map(|_| 0) }));
                owners.push((i, Slot::Control));
                for (k, (stmt, ev)) in work.into_iter().enumerate() {
                    futures.push(Box::pin(async move { client.execute(stmt, &[&JsonText(&ev.envelope)]).await }));
                    owners.push((i, Slot::Event(k)));
                }
                let name = p.name.as_str();
                let lsn = last.to_string();
                let count = *counts.last().unwrap_or(&0);
                let checkpoint = &self.checkpoint;
                futures.push(Box::pin(async move { client.execute(checkpoint, &[&name, &lsn, &count]).await }));
                owners.push((i, Slot::Control));
                futures.push(Box::pin(async move {
                    client.batch_execute("RELEASE SAVEPOINT eventstore_projection").await.map(|_| 0)
                }));
                owners.push((i, Slot::Control));
            }

            let results = join_all(futures).await;
            let first_error = results.into_iter().zip(owners.iter()).find_map(|(r, (i, slot))| r.err().map(|e| (*i, slot, e)));
            match first_error {
                None => {
                    if let Some((i, ev)) = unknown_failure {
                        let error = format!("no handler for event type {:?} and on_unknown = \"fail\"", ev.event_type);
                        failures.push(self.fail(i, error, &ev.envelope).await?);
                        start = i + 1;
                    } else {
                        start = self.projections.len();
                    }
                }
                Some((i, Slot::Event(k), e)) if !is_transient(&e) => {
                    self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection").await?;
                    // Find the event that failed: the k-th handled event of projection i.
                    let p = &self.projections[i];
                    let envelope = batch
                        .iter()
                        .filter(|t| p.checkpoint.is_none_or(|c| t.end_lsn > c))
                        .flat_map(|t| t.events.iter())
                        .filter(|ev| p.handlers.contains_key(&ev.event_type))
                        .nth(*k)
                        .map(|ev| ev.envelope.clone())
                        .unwrap_or_else(|| "null".into());
                    failures.push(self.fail(i, error_text(&e), &envelope).await?);
                    start = i + 1;
                }
                Some((_, _, e)) => return Err(e),
            }
        }
        Ok(failures)
    }

    async fn fail(&mut self, i: usize, error: String, envelope: &str) -> Result<Failure, tokio_postgres::Error> {
        let p = &mut self.projections[i];
        self.client.execute(&self.mark_failed, &[&p.name, &error, &envelope]).await?;
        p.failed = true;
        Ok(Failure { projection: p.name.clone(), checkpoint: p.checkpoint, error })
    }
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
