//! A target connection prepared for one role (live, catch-up, shadow build): the projections it
//! applies, their checkpoints, and how a projection joins the live stream. Applying batches is
//! in `batch.rs`.

use std::collections::HashMap;

use tokio_postgres::{Client, Statement};

use crate::apply::apply_function::Applier;
use crate::apply::failure::{setup_error, Failure};
use crate::apply::prepare::{check_in_scratch_schema, prepare, ApplyFunctions, ProjectionState};
use crate::config::{Config, Projection};
use crate::model::{Lsn, ProjectionStatus, SourceTxn, WorkerError};
use crate::store::coordination;
use crate::store::ensure_schema;
use crate::store::projections::{self, FailedEvent, Table};

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
    /// The one projection a catch-up or a build applies; `None`: every configured one.
    fn only(&self) -> Option<&str> {
        match self {
            Role::Live => None,
            Role::CatchUp(name) | Role::Shadow(name) => Some(name),
        }
    }

    /// The status of a row (see `progress`) whose projection this role applies.
    fn applies(&self) -> ProjectionStatus {
        match self {
            Role::Live => ProjectionStatus::Running,
            Role::CatchUp(_) => ProjectionStatus::CatchingUp,
            Role::Shadow(_) => ProjectionStatus::Building,
        }
    }

    /// Where progress is recorded: a build's in its row in `rebuilds`, the others' in
    /// `projections`.
    fn progress(&self) -> Table {
        match self {
            Role::Shadow(_) => Table::Rebuilds,
            Role::Live | Role::CatchUp(_) => Table::Projections,
        }
    }

    /// The checkpoint statement ($1 name, $2 LSN, $3 events applied, $4 source time). The live
    /// path's also sets the projection running, clearing any error.
    fn checkpoint_sql(&self) -> String {
        match self {
            Role::Live => format!(
                "UPDATE eventstore_worker.projections
                    SET status = '{}', checkpoint_lsn = $2, checkpoint_time = $4,
                        events_applied = events_applied + $3, last_error = NULL, failed_event = NULL,
                        updated_at = now()
                  WHERE name = $1",
                ProjectionStatus::Running
            ),
            Role::CatchUp(_) | Role::Shadow(_) => format!(
                "UPDATE {}
                    SET checkpoint_lsn = $2, checkpoint_time = $4, events_applied = events_applied + $3,
                        updated_at = now()
                  WHERE name = $1",
                self.progress().name()
            ),
        }
    }

    /// The apply functions this role compiles handlers into.
    pub fn applier(&self) -> Applier {
        match self {
            Role::Live => Applier::Live,
            Role::CatchUp(_) => Applier::CatchUp,
            Role::Shadow(_) => Applier::Build,
        }
    }
}

pub struct Target {
    pub(super) client: Client,
    pub(super) projections: Vec<ProjectionState>,
    pub(super) checkpoint: Statement,
    /// Where progress (and a failure) is recorded.
    pub(super) progress: Table,
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
    pub(super) apply_functions: ApplyFunctions,
    /// Prepared `apply_function::call_together` statements, by the projections they call.
    pub(super) together: HashMap<Vec<usize>, Statement>,
}

impl Target {
    /// Prepares the target for `role`: worker schema, projection rows, setup SQL, handler
    /// statements. Projections this target does not apply yet (live role: not `running`) are
    /// only checked, in a scratch schema, so a broken configuration still fails at start.
    pub async fn open(client: Client, config: &Config, role: Role) -> Result<Target, WorkerError> {
        client.batch_execute("SET synchronous_commit TO on").await?;
        ensure_schema(&client).await?;
        let file = config.file.display().to_string();
        let defs: Vec<&Projection> = match role.only() {
            None => config.projections.iter().collect(),
            Some(name) => config.projection(name).into_iter().collect(),
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
        projections::register(&client, &names).await?;
        let rows = match (role.progress(), role.only()) {
            (Table::Rebuilds, Some(name)) => projections::rebuild_rows(&client, name).await?,
            _ => projections::projection_rows(&client, &names).await?,
        };
        let mut projections = Vec::new();
        for p in defs {
            let row = rows.iter().find(|r| r.name == p.name);
            let active = row.is_some_and(|r| r.status == role.applies());
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
        let checkpoint = client.prepare(&role.checkpoint_sql()).await?;
        let live = role == Role::Live;
        let mut apply_locks: Vec<i64> = match live {
            true => projections.iter().map(|p| coordination::apply_lock(&p.name)).collect(),
            false => Vec::new(),
        };
        apply_locks.sort_unstable();
        let live_batch = match live {
            true => Some(coordination::LiveBatch::prepare(&client).await?),
            false => None,
        };
        Ok(Target {
            client,
            projections,
            checkpoint,
            progress: role.progress(),
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
    pub(super) async fn begin_batch(
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
            let running = row.status == ProjectionStatus::Running;
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
            Err(WorkerError::Database(e)) => Err(e),
            Err(e) => {
                self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_join").await?;
                let error = e.to_string();
                self.mark_failed(&name, &error, None).await?;
                Ok(Some(Failure { projection: name, checkpoint, error }))
            }
        }
    }

    /// Records projection `name` failed with `error` at the event `envelope` (where progress
    /// goes for this role).
    pub(super) async fn mark_failed(
        &self,
        name: &str,
        error: &str,
        envelope: Option<&str>,
    ) -> Result<u64, tokio_postgres::Error> {
        let event = FailedEvent::Is(envelope);
        projections::mark_failed(&self.client, self.progress, name, None, error, event).await
    }

    pub fn checkpoints(&self) -> impl Iterator<Item = (&str, Option<Lsn>)> {
        self.projections.iter().map(|p| (p.name.as_str(), p.checkpoint))
    }
}
