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
use tracing::{debug, info, warn};

use crate::apply::apply_function::{self, Applier};
use crate::config::{Config, OnUnknown, Projection};
use crate::model::Event;
use crate::model::Lsn;
use crate::model::SourceTxn;
use crate::store::coordination;
use crate::store::ensure_schema;

/// Bounds of one call of an apply function. The server keeps every envelope it parsed for a call
/// until the call ends; calls of this size reuse that memory, where one call per batch faulted
/// in fresh pages every time (measured: 15 times fewer page faults than 6,000-event calls).
const CALL_MAX_EVENTS: usize = 1000;
const CALL_MAX_BYTES: usize = 1 << 20;

/// Splits envelopes into consecutive calls within the bounds above (at least one call, so that
/// an empty batch still runs the statement).
fn call_ranges(envelopes: &[JsonText<'_>]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in envelopes.iter().enumerate() {
        if i > start && (i - start == CALL_MAX_EVENTS || bytes + e.0.len() > CALL_MAX_BYTES) {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += e.0.len();
    }
    ranges.push(start..envelopes.len());
    ranges
}

/// JSON text bound as a `jsonb` (or `json`) parameter without reparsing it in the worker.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
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
    ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class))
        || *db.code() == SqlState::IN_FAILED_SQL_TRANSACTION
}

/// The PostgreSQL error text recorded in `last_error`.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s =
                format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
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

struct Handler {
    statement: Statement,
    /// Its number in the projection's apply function, when it is compiled into it.
    number: Option<i32>,
}

pub(crate) struct ProjectionState {
    name: String,
    on_unknown: OnUnknown,
    handlers: HashMap<String, Handler>,
    /// The prepared call of the projection's apply function (see `apply_function`): `None` when
    /// no handler compiles into one, or once it failed where the statements did not.
    function: Option<Statement>,
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

impl Role {
    /// The apply functions this role compiles handlers into.
    pub fn applier(&self) -> Applier {
        match self {
            Role::Live => Applier::Live,
            Role::CatchUp(_) => Applier::CatchUp,
            Role::Shadow(_) => Applier::Build,
        }
    }
}

/// Whether handlers are compiled into per-projection apply functions (see `apply_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyFunctions {
    /// Every handler runs as a statement per event.
    Off,
    /// Handlers that compile go into the function of `applier`, split into statements with the
    /// session's lexical rules for string literals (the function body is compiled with the same
    /// rules).
    On { standard_conforming_strings: bool, applier: Applier },
}

impl ApplyFunctions {
    /// Whose functions are used, when any.
    fn applier(self) -> Option<Applier> {
        match self {
            ApplyFunctions::On { applier, .. } => Some(applier),
            ApplyFunctions::Off => None,
        }
    }
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
    /// Each role compiles the handlers into a function of its own (`Applier`): a catch-up or a
    /// build may run beside the live path, a build with another `search_path` and possibly
    /// another version of the handlers.
    apply_functions: ApplyFunctions,
    /// Prepared `apply_function::call_together` statements, by the projections they call.
    together: HashMap<Vec<usize>, Statement>,
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
            Role::CatchUp(name) | Role::Shadow(name) => {
                config.projection(name).into_iter().collect()
            }
        };
        let defs_owned: Vec<Projection> = defs.iter().map(|p| (*p).clone()).collect();
        let apply_functions = ApplyFunctions::On {
            standard_conforming_strings: client
                .query_one("SELECT current_setting('standard_conforming_strings') = 'on'", &[])
                .await?
                .get(0),
            applier: role.applier(),
        };
        let names: Vec<&str> = defs.iter().map(|p| p.name.as_str()).collect();
        client
            .execute(
                "INSERT INTO eventstore_worker.projections (name) SELECT pg_catalog.unnest($1::pg_catalog.text[]) ON CONFLICT (name) DO NOTHING",
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
                    client
                        .batch_execute(setup)
                        .await
                        .map_err(|e| setup_error(&file, p, "setup", e))?;
                }
                // In a transaction: installing the apply function tries handlers in savepoints.
                client.batch_execute("BEGIN").await?;
                match prepare(&client, p, &file, apply_functions).await {
                    Ok(state) => {
                        client.batch_execute("COMMIT").await?;
                        state
                    }
                    Err(e) => {
                        let _ = client.batch_execute("ROLLBACK").await;
                        return Err(e);
                    }
                }
            } else {
                check_in_scratch_schema(&client, p, &file).await?;
                ProjectionState {
                    name: p.name.clone(),
                    on_unknown: p.on_unknown,
                    handlers: HashMap::new(),
                    function: None,
                    checkpoint: None,
                    failed: true,
                }
            };
            state.checkpoint = row.and_then(|r| r.checkpoint);
            projections.push(state);
        }
        // A build's progress goes to its row in `rebuilds`; the other roles' to `projections`.
        let table = match &role {
            Role::Shadow(_) => "rebuilds",
            Role::Live | Role::CatchUp(_) => "projections",
        };
        let checkpoint = match &role {
            Role::Live => "UPDATE eventstore_worker.projections
                    SET status = 'running', checkpoint_lsn = $2::text::pg_lsn, checkpoint_time = $4,
                        events_applied = events_applied + $3, last_error = NULL, failed_event = NULL,
                        updated_at = now()
                  WHERE name = $1"
                .to_owned(),
            Role::CatchUp(_) | Role::Shadow(_) => format!(
                "UPDATE eventstore_worker.{table}
                    SET checkpoint_lsn = $2::text::pg_lsn, checkpoint_time = $4, events_applied = events_applied + $3,
                        updated_at = now()
                  WHERE name = $1"
            ),
        };
        let mark_failed = format!(
            "UPDATE eventstore_worker.{table}
                SET status = 'failed', last_error = $2, failed_event = $3::text::jsonb, updated_at = now()
              WHERE name = $1"
        );
        let checkpoint = client.prepare(&checkpoint).await?;
        let mark_failed = client.prepare(&mark_failed).await?;
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
            apply_functions,
            together: HashMap::new(),
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
    async fn begin_batch(
        &mut self,
        batch: &[SourceTxn],
    ) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let Some(live_batch) = &self.live_batch else { return Ok(Vec::new()) };
        let names: Vec<&str> = self.projections.iter().map(|p| p.name.as_str()).collect();
        let rows = live_batch.begin(&self.client, &self.apply_locks, &names, batch).await?;
        let mut failures = Vec::new();
        for row in rows {
            let Some(i) = self.projections.iter().position(|p| p.name == row.name) else {
                continue;
            };
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
    async fn join(
        &mut self,
        i: usize,
        checkpoint: Option<Lsn>,
    ) -> Result<Option<Failure>, tokio_postgres::Error> {
        let name = self.projections[i].name.clone();
        let Some(def) = coordination::current_definition(&self.file, &name)
            .or_else(|| self.definitions.iter().find(|d| d.name == name).cloned())
        else {
            return Ok(None);
        };
        self.client.batch_execute("SAVEPOINT eventstore_join").await?;
        let file = self.file.display().to_string();
        match prepare(&self.client, &def, &file, self.apply_functions).await {
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
    pub async fn apply(
        &mut self,
        batch: &[SourceTxn],
    ) -> Result<Vec<Failure>, tokio_postgres::Error> {
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
                let commit = std::time::Instant::now();
                self.client.batch_execute("COMMIT").await?;
                debug!(
                    commit_ms = commit.elapsed().as_millis() as u64,
                    "target transaction committed"
                );
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

    async fn apply_in_transaction(
        &mut self,
        batch: &[SourceTxn],
        last: Lsn,
    ) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let done = self.apply_together(batch, last).await?;
        let mut failures = Vec::new();
        let mut start = 0;
        // Projections that run statement by statement in this batch because their apply
        // function failed, with the function's error when it was not a transient one.
        let mut by_statement = vec![false; self.projections.len()];
        let mut function_errors: Vec<(usize, String)> = Vec::new();
        // Happy path: every projection's statements go out in one pipeline, each projection
        // inside its own savepoint; a projection with an apply function sends one call per run
        // of compiled handlers instead of one statement per event. When the function fails, the
        // projection is rolled back to its savepoint and applied again statement by statement,
        // which finds the failing event exactly. When a handler statement fails, that
        // projection is rolled back to its savepoint, re-applied up to the source transaction
        // before the failing one, and marked failed; the projections after it are pipelined
        // again.
        while start < self.projections.len() {
            let client = &self.client;
            let mut futures: Pipeline<'_> = Vec::new();
            let mut owners: Vec<(usize, Owner<'_>)> = Vec::new();
            let mut unknown_failure: Option<(usize, Lsn, &Event)> = None;
            for (i, p) in self.projections.iter().enumerate().skip(start) {
                if done[i] || p.failed || p.checkpoint.is_some_and(|c| c >= last) {
                    continue;
                }
                let (work, unknown) = p.work(batch, None);
                if let Some((lsn, ev)) = unknown {
                    // Stop the pipeline here: earlier projections still run, this one fails.
                    unknown_failure = Some((i, lsn, ev));
                    break;
                }
                let function = if by_statement[i] { None } else { p.function.as_ref() };
                let to = (last, source_time(batch, last));
                queue(
                    client,
                    p,
                    function,
                    &work,
                    to,
                    &self.checkpoint,
                    &mut futures,
                    &mut owners,
                    i,
                );
            }

            let results = join_all(futures).await;
            let first_error = results
                .into_iter()
                .zip(owners.iter())
                .find_map(|(r, (i, owner))| r.err().map(|e| (*i, *owner, e)));
            match first_error {
                None => match unknown_failure {
                    Some((i, lsn, ev)) => {
                        let error = format!(
                            "no handler for event type {:?} and on_unknown = \"fail\"",
                            ev.event_type
                        );
                        failures.push(self.fail(i, batch, lsn, error, &ev.envelope).await?);
                        start = i + 1;
                    }
                    None => start = self.projections.len(),
                },
                Some((i, Owner::Function, e)) if connection_alive(&e) => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection")
                        .await?;
                    if !is_transient(&e) {
                        function_errors.push((i, error_text(&e)));
                    }
                    by_statement[i] = true;
                    start = i;
                }
                Some((i, Owner::Event(lsn, ev), e)) if !is_transient(&e) => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection")
                        .await?;
                    failures.push(self.fail(i, batch, lsn, error_text(&e), &ev.envelope).await?);
                    start = i + 1;
                }
                Some((_, _, e)) => return Err(e),
            }
        }
        let applier = self.apply_functions.applier();
        for (i, error) in function_errors {
            let p = &mut self.projections[i];
            if !p.failed {
                // The statements went through where the function did not: the function is not
                // equivalent for some handler (PL/pgSQL's rules differ from top-level SQL in
                // corners). Stay on the exact path for this projection.
                warn!(projection = %p.name, ?applier, %error, "apply function failed where the handler statements did not; this projection now runs statement by statement");
                p.function = None;
            }
        }
        Ok(failures)
    }

    /// The fastest path: one statement for every projection whose whole part of the batch runs
    /// through its apply function, the envelopes bound once, inside one savepoint with their
    /// checkpoints. Returns which projections it applied. When it fails (any error that leaves
    /// the session usable), everything it did is rolled back and those projections take the
    /// per-projection path, which finds out which one failed and where.
    async fn apply_together(
        &mut self,
        batch: &[SourceTxn],
        last: Lsn,
    ) -> Result<Vec<bool>, tokio_postgres::Error> {
        let mut done = vec![false; self.projections.len()];
        let (members, works): (Vec<usize>, Vec<_>) = self
            .projections
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                !p.failed && p.checkpoint.is_none_or(|c| c < last) && p.function.is_some()
            })
            .map(|(i, p)| (i, p.work(batch, None)))
            .filter(|(_, (work, unknown))| {
                unknown.is_none() && work.iter().all(|(h, _, _)| h.number.is_some())
            })
            .map(|(i, (work, _))| (i, work))
            .unzip();
        if members.is_empty() {
            return Ok(done);
        }
        if !self.together.contains_key(&members) {
            let names: Vec<&str> =
                members.iter().map(|&i| self.projections[i].name.as_str()).collect();
            let mut types = vec![Type::INT4_ARRAY; members.len()];
            types.push(Type::JSONB_ARRAY);
            let applier = self
                .apply_functions
                .applier()
                .expect("a projection has a function only when functions are on");
            let statement = self
                .client
                .prepare_typed(&apply_function::call_together(&names, applier), &types)
                .await?;
            self.together.insert(members.clone(), statement);
        }

        // The envelopes of every event some member handles, in batch order, and per member its
        // handler number for each of them (NULL when it has none).
        let mut next = vec![0; members.len()];
        let mut numbers: Vec<Vec<Option<i32>>> = vec![Vec::new(); members.len()];
        let mut envelopes = Vec::new();
        for ev in batch.iter().flat_map(|t| &t.events) {
            let mut any = false;
            let row: Vec<Option<i32>> = works
                .iter()
                .zip(next.iter_mut())
                .map(|(work, n)| match work.get(*n) {
                    Some((h, _, e)) if std::ptr::eq(*e, ev) => {
                        *n += 1;
                        any = true;
                        h.number
                    }
                    _ => None,
                })
                .collect();
            if any {
                envelopes.push(JsonText(&ev.envelope));
                for (column, number) in numbers.iter_mut().zip(row) {
                    column.push(number);
                }
            }
        }
        let ranges = call_ranges(&envelopes);
        // Per call: each member's handler numbers and the envelopes, as slices to bind.
        let slices: Vec<CallSlices<'_>> = ranges
            .iter()
            .map(|r| (numbers.iter().map(|n| &n[r.clone()]).collect(), &envelopes[r.clone()]))
            .collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = slices
            .iter()
            .map(|(n, e)| {
                n.iter()
                    .map(|n| n as &(dyn ToSql + Sync))
                    .chain(std::iter::once(e as &(dyn ToSql + Sync)))
                    .collect()
            })
            .collect();

        let lsn = last.to_string();
        let time = source_time(batch, last);
        let client = &self.client;
        let statement = &self.together[&members];
        let mut futures: Pipeline<'_> = Vec::new();
        futures.push(Box::pin(async move {
            client.batch_execute("SAVEPOINT eventstore_batch").await.map(|_| 0)
        }));
        for params in &params {
            futures.push(Box::pin(client.execute(statement, params)));
        }
        for (&i, work) in members.iter().zip(&works) {
            let (name, lsn, count) =
                (self.projections[i].name.as_str(), lsn.as_str(), work.len() as i64);
            let checkpoint = &self.checkpoint;
            futures.push(Box::pin(async move {
                client.execute(checkpoint, &[&name, &lsn, &count, &time]).await
            }));
        }
        futures.push(Box::pin(async move {
            client.batch_execute("RELEASE SAVEPOINT eventstore_batch").await.map(|_| 0)
        }));
        match join_all(futures).await.into_iter().find_map(Result::err) {
            None => {
                for i in members {
                    done[i] = true;
                }
                Ok(done)
            }
            Some(e) if connection_alive(&e) => {
                debug!(error = %error_text(&e), "applying the batch through the apply functions together failed; applying per projection");
                self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_batch; RELEASE SAVEPOINT eventstore_batch").await?;
                Ok(done)
            }
            Some(e) => Err(e),
        }
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
        let prefix_end = batch
            .iter()
            .map(|t| t.end_lsn)
            .filter(|l| *l < failed_txn && p.checkpoint.is_none_or(|c| *l > c))
            .max();
        let mut checkpoint = p.checkpoint;
        if let Some(prefix_end) = prefix_end {
            let (work, _) = p.work(batch, Some(prefix_end));
            let mut futures: Pipeline<'_> = Vec::new();
            let mut owners = Vec::new();
            let to = (prefix_end, source_time(batch, prefix_end));
            // Statement by statement: this is the path that locates failures exactly.
            queue(&self.client, p, None, &work, to, &self.checkpoint, &mut futures, &mut owners, i);
            match join_all(futures).await.into_iter().find_map(Result::err) {
                None => checkpoint = Some(prefix_end),
                Some(e) if is_transient(&e) => return Err(e),
                // Failed differently the second time: keep the old checkpoint.
                Some(_) => {
                    self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection").await?
                }
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
    ) -> (Vec<(&'s Handler, Lsn, &'b Event)>, Option<(Lsn, &'b Event)>) {
        let mut work = Vec::new();
        let txns = batch.iter().filter(|t| {
            self.checkpoint.is_none_or(|c| t.end_lsn > c) && until.is_none_or(|u| t.end_lsn <= u)
        });
        for txn in txns {
            for ev in &txn.events {
                match self.handlers.get(&ev.event_type) {
                    Some(handler) => work.push((handler, txn.end_lsn, ev)),
                    None if self.on_unknown == OnUnknown::Fail => {
                        return (work, Some((txn.end_lsn, ev)))
                    }
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

type Pipeline<'a> =
    Vec<Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>>;

/// What an entry of the pipeline is, to tell what its error means.
#[derive(Debug, Clone, Copy)]
enum Owner<'b> {
    /// Savepoint, checkpoint or release: an error here is not a handler's.
    Control,
    /// One handler statement for one event of the source transaction ending at the LSN.
    Event(Lsn, &'b Event),
    /// One call of the projection's apply function for a run of events.
    Function,
}

/// Whether the session survived the error (an `ERROR`, not a lost connection or a `FATAL`).
fn connection_alive(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| !matches!(db.severity(), "FATAL" | "PANIC"))
}

/// Queues one projection's part of a batch: savepoint, handler work, checkpoint, release. With
/// `function`, consecutive events whose handlers are compiled into it go out as one call; the
/// others (and all of them without `function`) as one statement each.
#[allow(clippy::too_many_arguments)]
fn queue<'a, 'b: 'a>(
    client: &'a Client,
    p: &'a ProjectionState,
    function: Option<&'a Statement>,
    work: &[(&'a Handler, Lsn, &'b Event)],
    (checkpoint_to, checkpoint_time): (Lsn, SystemTime),
    checkpoint: &'a Statement,
    futures: &mut Pipeline<'a>,
    owners: &mut Vec<(usize, Owner<'b>)>,
    i: usize,
) {
    futures.push(Box::pin(async move {
        client.batch_execute("SAVEPOINT eventstore_projection").await.map(|_| 0)
    }));
    owners.push((i, Owner::Control));
    let mut run = FunctionRun::default();
    for &(handler, lsn, ev) in work {
        match (function, handler.number) {
            (Some(f), Some(number)) => {
                if run.numbers.len() == CALL_MAX_EVENTS
                    || run.bytes + ev.envelope.len() > CALL_MAX_BYTES
                {
                    run.flush(client, f, futures, owners, i);
                }
                run.numbers.push(number);
                run.envelopes.push(JsonText(&ev.envelope));
                run.bytes += ev.envelope.len();
            }
            _ => {
                if let Some(f) = function {
                    run.flush(client, f, futures, owners, i);
                }
                let statement = &handler.statement;
                futures.push(Box::pin(async move {
                    client.execute(statement, &[&JsonText(&ev.envelope)]).await
                }));
                owners.push((i, Owner::Event(lsn, ev)));
            }
        }
    }
    if let Some(f) = function {
        run.flush(client, f, futures, owners, i);
    }
    let name = p.name.as_str();
    let lsn = checkpoint_to.to_string();
    let count = work.len() as i64;
    futures.push(Box::pin(async move {
        client.execute(checkpoint, &[&name, &lsn, &count, &checkpoint_time]).await
    }));
    owners.push((i, Owner::Control));
    futures.push(Box::pin(async move {
        client.batch_execute("RELEASE SAVEPOINT eventstore_projection").await.map(|_| 0)
    }));
    owners.push((i, Owner::Control));
}

/// Runs a projection's setup and prepares its handlers in a scratch schema (first in the
/// `search_path`), then rolls everything back: the configuration is checked without touching
/// the projection's tables, which may be about to be rebuilt with a different shape.
pub async fn check_in_scratch_schema(
    client: &Client,
    p: &Projection,
    file: &str,
) -> Result<(), SetupError> {
    let path: String = client.query_one("SHOW search_path", &[]).await?.get(0);
    let scratch = coordination::scratch_schema(&p.name);
    client.batch_execute("BEGIN").await?;
    let result = async {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {scratch}; SET LOCAL search_path TO {scratch}, {path}"
            ))
            .await?;
        if let Some(setup) = &p.setup {
            client.batch_execute(setup).await.map_err(|e| setup_error(file, p, "setup", e))?;
        }
        prepare(client, p, file, ApplyFunctions::Off).await.map(drop)
    }
    .await;
    client.batch_execute("ROLLBACK").await?;
    result
}

pub(crate) fn setup_error(
    file: &str,
    p: &Projection,
    key: &str,
    e: tokio_postgres::Error,
) -> SetupError {
    if is_transient(&e) {
        SetupError::Database(e)
    } else {
        SetupError::Projection {
            file: file.into(),
            projection: p.name.clone(),
            key: key.into(),
            message: error_text(&e),
        }
    }
}

type CallSlices<'a> = (Vec<&'a [Option<i32>]>, &'a [JsonText<'a>]);

/// Consecutive events for one call of the apply function: handler numbers and envelopes, bound
/// as arrays.
#[derive(Default)]
struct FunctionRun<'b> {
    numbers: Vec<i32>,
    envelopes: Vec<JsonText<'b>>,
    bytes: usize,
}

impl<'b> FunctionRun<'b> {
    fn flush<'a>(
        &mut self,
        client: &'a Client,
        function: &'a Statement,
        futures: &mut Pipeline<'a>,
        owners: &mut Vec<(usize, Owner<'b>)>,
        i: usize,
    ) where
        'b: 'a,
    {
        if self.numbers.is_empty() {
            return;
        }
        let FunctionRun { numbers, envelopes, .. } = std::mem::take(self);
        futures
            .push(Box::pin(async move { client.execute(function, &[&numbers, &envelopes]).await }));
        owners.push((i, Owner::Function));
    }
}

pub(crate) async fn prepare(
    client: &Client,
    p: &Projection,
    file: &str,
    apply_functions: ApplyFunctions,
) -> Result<ProjectionState, SetupError> {
    let mut handlers = HashMap::new();
    let mut compilable = Vec::new();
    for (event_type, sql) in &p.handlers {
        let key = format!("handlers.{event_type}");
        let stmt = client.prepare_typed(sql, &[Type::JSONB]).await.map_err(|e| {
            if is_transient(&e) {
                SetupError::Database(e)
            } else {
                SetupError::Projection {
                    file: file.into(),
                    projection: p.name.clone(),
                    key: key.clone(),
                    message: error_text(&e),
                }
            }
        })?;
        if stmt.params().len() != 1 {
            return Err(SetupError::Projection {
                file: file.into(),
                projection: p.name.clone(),
                key,
                message: format!(
                    "must have exactly one parameter ($1, the event envelope); it has {}",
                    stmt.params().len()
                ),
            });
        }
        if let ApplyFunctions::On { standard_conforming_strings, .. } = apply_functions {
            let returns_rows = !stmt.columns().is_empty();
            match apply_function::compilable(sql, returns_rows, standard_conforming_strings) {
                Some(statement) => compilable.push((event_type.as_str(), statement)),
                None => {
                    debug!(projection = %p.name, event_type = %event_type, "handler runs as a statement per event (not a plain INSERT/UPDATE/DELETE/MERGE/WITH without RETURNING)")
                }
            }
        }
        handlers.insert(event_type.clone(), Handler { statement: stmt, number: None });
    }
    // Off: any function is left alone.
    let (compiled, function) = match apply_functions {
        ApplyFunctions::On { applier, .. } => {
            let compiled = install_function(client, &p.name, applier, &compilable).await?;
            let function = match compiled.is_empty() {
                true => None,
                false => Some(
                    client
                        .prepare_typed(
                            &apply_function::call(&p.name, applier),
                            &[Type::INT4_ARRAY, Type::JSONB_ARRAY],
                        )
                        .await?,
                ),
            };
            (compiled, function)
        }
        ApplyFunctions::Off => (Vec::new(), None),
    };
    for (number, event_type) in compiled.iter().enumerate() {
        if let Some(h) = handlers.get_mut(*event_type) {
            h.number = Some(number as i32);
        }
    }
    Ok(ProjectionState {
        name: p.name.clone(),
        on_unknown: p.on_unknown,
        handlers,
        function,
        checkpoint: None,
        failed: false,
    })
}

/// Creates (or replaces) the projection's apply function with the handlers that compile, and
/// returns their event types in the order of their numbers in it. PL/pgSQL rejects a few
/// statements that prepare fine at top level; when the function as a whole does not compile,
/// each handler is tried alone (and rolled back) and those that fail stay on the statement
/// path. With no handler left, any function of an earlier run is dropped. Runs inside a
/// transaction block (at start, or the live batch a projection joins in): every attempt is
/// made in a savepoint.
async fn install_function<'h>(
    client: &Client,
    projection: &str,
    applier: Applier,
    compilable: &[(&'h str, &str)],
) -> Result<Vec<&'h str>, SetupError> {
    let create = |handlers: &[(&str, &str)]| {
        apply_function::create_function(
            projection,
            applier,
            &handlers.iter().map(|(_, sql)| *sql).collect::<Vec<_>>(),
        )
    };
    let mut handlers = compilable.to_vec();
    if !handlers.is_empty() {
        client.batch_execute("SET check_function_bodies TO on").await?;
        if let Err(e) = try_create(client, &create(&handlers), true).await? {
            debug!(projection, error = %error_text(&e), "apply function does not compile as a whole; trying each handler");
            let mut alone = Vec::new();
            for h in handlers {
                match try_create(client, &create(&[h]), false).await? {
                    Ok(()) => alone.push(h),
                    Err(e) => {
                        info!(projection, event_type = h.0, error = %error_text(&e), "handler does not compile into the apply function; it runs as a statement per event")
                    }
                }
            }
            handlers = alone;
            if !handlers.is_empty() {
                if let Err(e) = try_create(client, &create(&handlers), true).await? {
                    warn!(projection, error = %error_text(&e), "apply function does not compile; every handler runs as a statement per event");
                    handlers.clear();
                }
            }
        }
    }
    if handlers.is_empty() {
        client.batch_execute(&apply_function::drop_function(projection, applier)).await?;
    }
    Ok(handlers.into_iter().map(|(event_type, _)| event_type).collect())
}

/// Runs `create` in a savepoint, kept when it succeeds and `keep` is set, rolled back otherwise.
/// The inner result is the statement's own (non-transient) error.
async fn try_create(
    client: &Client,
    create: &str,
    keep: bool,
) -> Result<Result<(), tokio_postgres::Error>, tokio_postgres::Error> {
    client.batch_execute("SAVEPOINT eventstore_apply_function").await?;
    let created = client.batch_execute(create).await;
    if let Err(e) = &created {
        if is_transient(e) {
            return created.map(Ok);
        }
    }
    let end = match (keep, &created) {
        (true, Ok(())) => "RELEASE SAVEPOINT eventstore_apply_function",
        _ => "ROLLBACK TO SAVEPOINT eventstore_apply_function; RELEASE SAVEPOINT eventstore_apply_function",
    };
    client.batch_execute(end).await?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_stay_within_their_bounds() {
        let small = "x".repeat(100);
        let envelopes: Vec<JsonText<'_>> = (0..2500).map(|_| JsonText(&small)).collect();
        assert_eq!(call_ranges(&envelopes), [0..1000, 1000..2000, 2000..2500]);
        let none = call_ranges(&[]);
        assert!(none.len() == 1 && none[0].is_empty(), "one call even for no events: {none:?}");

        let big = "x".repeat(CALL_MAX_BYTES / 2 + 1);
        let envelopes = [JsonText(&big), JsonText(&small), JsonText(&big), JsonText(&big)];
        assert_eq!(call_ranges(&envelopes), [0..2, 2..3, 3..4]);
        let huge = "x".repeat(CALL_MAX_BYTES * 2);
        assert_eq!(
            call_ranges(&[JsonText(&huge), JsonText(&small)]),
            [0..1, 1..2],
            "an oversized event goes alone"
        );
    }
}
