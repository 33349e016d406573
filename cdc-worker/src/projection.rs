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
use crate::coordination;
use crate::envelope::Event;
use crate::lsn::Lsn;

const SCHEMA: &str = include_str!("schema.sql");

/// Creates or upgrades the worker's own tables (idempotent; its "already exists" notices are
/// not worth a log line).
pub(crate) async fn ensure_schema(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SET client_min_messages TO warning").await?;
    let result = client.batch_execute(SCHEMA).await;
    client.batch_execute("RESET client_min_messages").await?;
    result
}

/// A source transaction as the apply path sees it: never split across target transactions.
/// One without events is an idle position (see `idle.rs`): it only moves checkpoints.
#[derive(Debug, Clone)]
pub struct SourceTxn {
    pub end_lsn: Lsn,
    /// Source server time at `end_lsn`: the commit time from the stream, the server clock of an
    /// idle position; recorded with the checkpoint for lag. Transactions read back from
    /// `eventstore.events` (catch-ups, builds) do not know their commit time: they carry the
    /// latest `recorded_at` of their events (see `source_map::fetch`).
    pub source_time: SystemTime,
    /// `transaction_id` (xid8) of its events: the key of the commit-order map. `None` for a
    /// transaction without events (an idle position among them), which is not recorded there.
    pub transaction_id: Option<u64>,
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

pub(crate) struct ProjectionState {
    name: String,
    on_unknown: OnUnknown,
    handlers: HashMap<String, Statement>,
    checkpoint: Option<Lsn>,
    /// Not applied by this target: failed, or (live role) caught up or rebuilt elsewhere.
    failed: bool,
}

/// A projection that failed in a batch; its checkpoint stays where it was.
#[derive(Debug, Clone)]
pub struct Failure {
    pub projection: String,
    pub checkpoint: Option<Lsn>,
    pub error: String,
}

/// What a target applies and where it records progress (see `docs/worker.md`, lifecycle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The replication stream's apply path: every configured projection whose status is
    /// `running`. Each batch transaction also takes every projection's apply lock, picks up
    /// projections that joined or moved meanwhile, and records the commit-order map.
    Live,
    /// One projection resuming from its checkpoint through `eventstore.events` into its tables.
    CatchUp(String),
    /// One projection being built afresh; the connection's `search_path` leads with its shadow
    /// schema, and progress goes to `eventstore_worker.rebuilds`.
    Shadow(String),
}

pub struct Target {
    client: Client,
    projections: Vec<ProjectionState>,
    checkpoint: Statement,
    mark_failed: Statement,
    file: std::path::PathBuf,
    /// Live role: every projection's apply lock, sorted (the order they are taken in).
    apply_locks: Vec<i64>,
    live_batch: Option<coordination::LiveBatch>,
    /// Definitions reloaded from the file when projections joined the stream.
    joined: Vec<Projection>,
    /// Definitions this target was opened with (used when the file cannot be reloaded).
    definitions: Vec<Projection>,
}

impl Target {
    /// Prepares the target for `role`: worker schema, projection rows, setup SQL, handler
    /// statements. Projections this target does not apply yet (live role: not `running`) are
    /// only checked, in a scratch schema, so a broken configuration still fails at start.
    pub async fn open(client: Client, config: &Config, role: Role) -> Result<Target, SetupError> {
        client.batch_execute("SET synchronous_commit TO on").await?;
        ensure_schema(&client).await?;
        let file = config.file.display().to_string();
        let defs: Vec<&Projection> = match &role {
            Role::Live => config.projections.iter().collect(),
            Role::CatchUp(name) | Role::Shadow(name) => config.projection(name).into_iter().collect(),
        };
        let defs_owned: Vec<Projection> = defs.iter().map(|p| (*p).clone()).collect();
        let names: Vec<&str> = defs.iter().map(|p| p.name.as_str()).collect();
        client
            .execute(
                "INSERT INTO eventstore_worker.projections (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
                &[&names],
            )
            .await?;
        let rows = match &role {
            Role::Shadow(name) => coordination::rebuild_rows(&client, name).await?,
            _ => coordination::projection_rows(&client, &names).await?,
        };
        let mut projections = Vec::new();
        for p in defs {
            let row = rows.iter().find(|r| r.name == p.name);
            let active = row.is_some_and(|r| match &role {
                Role::Live => r.status == "running",
                Role::CatchUp(_) => r.status == "catching_up",
                Role::Shadow(_) => r.status == "building",
            });
            let mut state = if active {
                if let Some(setup) = &p.setup {
                    client.batch_execute(setup).await.map_err(|e| setup_error(&file, p, "setup", e))?;
                }
                prepare(&client, p, &file).await?
            } else {
                coordination::check_in_scratch_schema(&client, p, &file).await?;
                ProjectionState { name: p.name.clone(), on_unknown: p.on_unknown, handlers: HashMap::new(), checkpoint: None, failed: true }
            };
            state.checkpoint = row.and_then(|r| r.checkpoint);
            projections.push(state);
        }
        let (checkpoint, mark_failed) = match &role {
            Role::Live => (
                "UPDATE eventstore_worker.projections
                    SET status = 'running', checkpoint_lsn = $2::text::pg_lsn, checkpoint_time = $4,
                        events_applied = events_applied + $3, last_error = NULL, failed_event = NULL,
                        updated_at = now()
                  WHERE name = $1",
                "UPDATE eventstore_worker.projections
                    SET status = 'failed', last_error = $2, failed_event = $3::text::jsonb, updated_at = now()
                  WHERE name = $1",
            ),
            Role::CatchUp(_) => (
                "UPDATE eventstore_worker.projections
                    SET checkpoint_lsn = $2::text::pg_lsn, checkpoint_time = $4, events_applied = events_applied + $3,
                        updated_at = now()
                  WHERE name = $1",
                "UPDATE eventstore_worker.projections
                    SET status = 'failed', last_error = $2, failed_event = $3::text::jsonb, updated_at = now()
                  WHERE name = $1",
            ),
            Role::Shadow(_) => (
                "UPDATE eventstore_worker.rebuilds
                    SET checkpoint_lsn = $2::text::pg_lsn, checkpoint_time = $4, events_applied = events_applied + $3,
                        updated_at = now()
                  WHERE name = $1",
                "UPDATE eventstore_worker.rebuilds
                    SET status = 'failed', last_error = $2, failed_event = $3::text::jsonb, updated_at = now()
                  WHERE name = $1",
            ),
        };
        let checkpoint = client.prepare(checkpoint).await?;
        let mark_failed = client.prepare(mark_failed).await?;
        let mut apply_locks: Vec<i64> = match &role {
            Role::Live => projections.iter().map(|p| coordination::apply_lock(&p.name)).collect(),
            _ => Vec::new(),
        };
        apply_locks.sort_unstable();
        let live_batch = match role {
            Role::Live => Some(coordination::LiveBatch::prepare(&client).await?),
            _ => None,
        };
        Ok(Target {
            client,
            projections,
            checkpoint,
            mark_failed,
            file: config.file.clone(),
            apply_locks,
            live_batch,
            joined: Vec::new(),
            definitions: defs_owned,
        })
    }

    /// Whether this target applies `name` (live role: it is `running`).
    pub fn is_active(&self, name: &str) -> bool {
        self.projections.iter().any(|p| p.name == name && !p.failed)
    }

    pub fn checkpoint(&self, name: &str) -> Option<Lsn> {
        self.projections.iter().find(|p| p.name == name).and_then(|p| p.checkpoint)
    }

    /// Sets the in-memory checkpoint (the caller wrote it to the database).
    pub fn set_checkpoint(&mut self, name: &str, lsn: Lsn) {
        if let Some(p) = self.projections.iter_mut().find(|p| p.name == name) {
            p.checkpoint = Some(lsn);
        }
    }

    /// Stops applying `name` here (live role: it is resumed or rebuilt elsewhere).
    pub fn park(&mut self, name: &str) {
        if let Some(p) = self.projections.iter_mut().find(|p| p.name == name) {
            p.failed = true;
        }
    }

    /// The definitions projections joined the stream with since the last call.
    pub fn take_joined(&mut self) -> Vec<Projection> {
        std::mem::take(&mut self.joined)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Live role, inside the batch transaction: takes the apply locks, brings the in-memory
    /// state in line with what other transactions committed (a projection that joined the
    /// stream, a swap that moved a checkpoint) and records the batch in the commit-order map.
    async fn begin_batch(&mut self, batch: &[SourceTxn]) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let Some(live_batch) = &self.live_batch else { return Ok(Vec::new()) };
        let names: Vec<&str> = self.projections.iter().map(|p| p.name.as_str()).collect();
        let rows = live_batch.begin(&self.client, &self.apply_locks, &names, batch).await?;
        let mut failures = Vec::new();
        for row in rows {
            let Some(i) = self.projections.iter().position(|p| p.name == row.name) else { continue };
            let running = row.status == "running";
            let p = &mut self.projections[i];
            match (p.failed, running) {
                (false, true) => {
                    if row.checkpoint > p.checkpoint {
                        tracing::info!(projection = %p.name, checkpoint = %row.checkpoint.unwrap_or_default(), "checkpoint moved by a rebuild");
                        p.checkpoint = row.checkpoint;
                    }
                }
                (false, false) => {
                    tracing::info!(projection = %p.name, status = %row.status, "projection left the stream");
                    p.failed = true;
                }
                (true, true) => {
                    if let Some(f) = self.join(i, row.checkpoint).await? {
                        failures.push(f);
                    }
                }
                (true, false) => {}
            }
        }
        Ok(failures)
    }

    /// A projection that caught up or was rebuilt elsewhere joins the stream at `checkpoint`,
    /// with its definition as the configuration file has it now.
    async fn join(&mut self, i: usize, checkpoint: Option<Lsn>) -> Result<Option<Failure>, tokio_postgres::Error> {
        let name = self.projections[i].name.clone();
        let Some(def) = coordination::current_definition(&self.file, &name)
            .or_else(|| self.definitions.iter().find(|d| d.name == name).cloned())
        else {
            return Ok(None);
        };
        self.client.batch_execute("SAVEPOINT eventstore_join").await?;
        let file = self.file.display().to_string();
        match prepare(&self.client, &def, &file).await {
            Ok(mut state) => {
                self.client.batch_execute("RELEASE SAVEPOINT eventstore_join").await?;
                state.checkpoint = checkpoint;
                tracing::info!(projection = %name, checkpoint = %checkpoint.unwrap_or_default(), "projection joined the stream");
                self.projections[i] = state;
                self.joined.push(def);
                Ok(None)
            }
            Err(SetupError::Database(e)) => Err(e),
            Err(e) => {
                self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_join").await?;
                let error = e.to_string();
                self.client.execute(&self.mark_failed, &[&name, &error, &None::<String>]).await?;
                Ok(Some(Failure { projection: name, checkpoint, error }))
            }
        }
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
        let result = match self.begin_batch(batch).await {
            Ok(mut failures) => self.apply_in_transaction(batch, last).await.map(|f| {
                failures.extend(f);
                failures
            }),
            Err(e) => Err(e),
        };
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

pub(crate) fn setup_error(file: &str, p: &Projection, key: &str, e: tokio_postgres::Error) -> SetupError {
    if is_transient(&e) {
        SetupError::Database(e)
    } else {
        SetupError::Projection { file: file.into(), projection: p.name.clone(), key: key.into(), message: error_text(&e) }
    }
}

pub(crate) async fn prepare(client: &Client, p: &Projection, file: &str) -> Result<ProjectionState, SetupError> {
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
