//! Preparing a projection on a target connection: its setup, its handler statements, and the
//! apply function its compilable handlers go into; or only checking them, in a scratch schema.

use std::collections::HashMap;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use tracing::{debug, info, warn};

use crate::apply::apply_function::{self, Applier};
use crate::apply::failure::{error_text, setup_error};
use crate::config::{OnUnknown, Projection};
use crate::model::{ErrorKind, Event, Lsn, SourceTxn, WorkerError};
use crate::store::coordination;

pub(super) struct Handler {
    pub(super) statement: Statement,
    /// Its number in the projection's apply function, when it is compiled into it.
    pub(super) number: Option<i32>,
}

pub(super) struct ProjectionState {
    pub(super) name: String,
    pub(super) on_unknown: OnUnknown,
    pub(super) handlers: HashMap<String, Handler>,
    /// The prepared call of the projection's apply function (see `apply_function`): `None` when
    /// no handler compiles into one, or once it failed where the statements did not.
    pub(super) function: Option<Statement>,
    pub(super) checkpoint: Option<Lsn>,
    /// Not applied by this target: failed, or (live role) caught up or rebuilt elsewhere.
    pub(super) failed: bool,
}

/// Whether handlers are compiled into per-projection apply functions (see `apply_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ApplyFunctions {
    /// Every handler runs as a statement per event.
    Off,
    /// Handlers that compile go into the function of `applier`, split into statements with the
    /// session's lexical rules for string literals (the function body is compiled with the same
    /// rules).
    On { standard_conforming_strings: bool, applier: Applier },
}

impl ApplyFunctions {
    /// Whose functions are used, when any.
    pub(super) fn applier(self) -> Option<Applier> {
        match self {
            ApplyFunctions::On { applier, .. } => Some(applier),
            ApplyFunctions::Off => None,
        }
    }
}

impl ProjectionState {
    /// Handler executions for the batch's transactions after this projection's checkpoint (and
    /// up to `until`), in order; stops at the first event without handler when
    /// `on_unknown = "fail"`, returning it with its transaction's end LSN.
    #[allow(clippy::type_complexity)]
    pub(super) fn work<'s, 'b>(
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

/// Runs a projection's setup and prepares its handlers in a scratch schema (first in the
/// `search_path`), then rolls everything back: the configuration is checked without touching
/// the projection's tables, which may be about to be rebuilt with a different shape.
pub async fn check_in_scratch_schema(
    client: &Client,
    p: &Projection,
    file: &str,
) -> Result<(), WorkerError> {
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

pub(super) async fn prepare(
    client: &Client,
    p: &Projection,
    file: &str,
    apply_functions: ApplyFunctions,
) -> Result<ProjectionState, WorkerError> {
    let mut handlers = HashMap::new();
    let mut compilable = Vec::new();
    for (event_type, sql) in &p.handlers {
        let key = format!("handlers.{event_type}");
        let stmt = client.prepare_typed(sql, &[Type::JSONB]).await.map_err(|e| {
            if ErrorKind::of_postgres(&e).is_transient() {
                WorkerError::Database(e)
            } else {
                WorkerError::Projection {
                    file: file.into(),
                    projection: p.name.clone(),
                    key: key.clone(),
                    message: error_text(&e),
                }
            }
        })?;
        if stmt.params().len() != 1 {
            return Err(WorkerError::Projection {
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
) -> Result<Vec<&'h str>, WorkerError> {
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
        if ErrorKind::of_postgres(e).is_transient() {
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
