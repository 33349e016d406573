//! Which projections follow the stream, and getting the others there.
//!
//! A projection is `running` (applied by the live path from the replication stream),
//! `catching_up` (resuming from its checkpoint through the commit-order map and
//! `eventstore.events`, see `catchup.rs`), `rebuilding` (being built afresh in shadow tables
//! from a snapshot of `eventstore.events`, see `rebuild.rs`) or `failed`. Only running
//! projections count for the slot's acknowledged position; the others never hold it back.
//!
//! At each session start the worker decides, per projection, from its row, the configured
//! version and the map's horizon (`at_start`). While the worker runs, the manager (`manage`)
//! polls the rows and starts a catch-up or a build for every projection that needs one; these
//! join the stream on their own (see `store/coordination.rs`).

pub mod catchup;
pub mod rebuild;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::model::{Lsn, ProjectionStatus};
use crate::store::projections::{self, set_status, ProjectionRow};
use crate::store::source_map;

/// How often the manager looks for projections to catch up or rebuild.
const POLL: Duration = Duration::from_secs(1);
/// How often map rows no projection needs are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Wait before starting again a catch-up or build that ended with an error.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether a projection's tables must be built afresh rather than resumed: it never applied
/// anything, its tables were built for another version, or the map no longer reaches back to
/// its checkpoint.
pub fn needs_rebuild(row: &ProjectionRow, version: Option<&str>, horizon: Option<Lsn>) -> bool {
    match row.checkpoint {
        None => true,
        Some(c) => row.version.as_deref() != version || horizon.is_some_and(|h| c < h),
    }
}

/// The status a projection gets at a session start, if it changes. `first` is the first
/// session of this process: a start is how an operator retries failed projections.
pub fn at_start(
    row: &ProjectionRow,
    version: Option<&str>,
    horizon: Option<Lsn>,
    first: bool,
) -> Option<ProjectionStatus> {
    match row.status {
        ProjectionStatus::Running if needs_rebuild(row, version, horizon) => {
            Some(ProjectionStatus::Rebuilding)
        }
        ProjectionStatus::Failed if first => Some(ProjectionStatus::CatchingUp),
        _ => None,
    }
}

/// Session start, before the live target opens: records which projections will not follow
/// the stream from the start.
pub async fn start_session(
    client: &Client,
    config: &Config,
    first: bool,
) -> Result<(), tokio_postgres::Error> {
    crate::store::ensure_schema(client).await?;
    // One transaction: a new row must not be seen as `running` (the column's default) before
    // it is given the status it starts with.
    client.batch_execute("BEGIN").await?;
    let result = mark_at_start(client, config, first).await;
    client.batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }).await?;
    result
}

async fn mark_at_start(
    client: &Client,
    config: &Config,
    first: bool,
) -> Result<(), tokio_postgres::Error> {
    let names: Vec<&str> = config.projections.iter().map(|p| p.name.as_str()).collect();
    projections::register(client, &names).await?;
    let horizon = source_map::horizon(client).await?;
    for row in projections::projection_rows(client, &names).await? {
        let version = config.projection(&row.name).and_then(|p| p.version.as_deref());
        if let Some(status) = at_start(&row, version, horizon, first) {
            info!(projection = %row.name, from = %row.status, to = %status, "projection will not follow the stream yet");
            set_status(client, &row.name, row.status, status).await?;
        }
    }
    Ok(())
}

/// Once streaming started from the slot's `confirmed` position: the map is complete from
/// there on (on the first start ever, this is where it begins), and a running projection
/// whose checkpoint is behind it (it was out of the configuration for a while) must resume
/// through the map. Returns the projections that no longer follow the stream.
///
/// `rebuild_all`: the slot was recreated where the transactions it missed cannot be told (a
/// map from an earlier version, without a guard, see `slot_recovery`): the map starts afresh
/// and every projection is rebuilt from the event log.
pub async fn streaming_started(
    client: &Client,
    config: &Config,
    confirmed: Lsn,
    rebuild_all: bool,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let names: Vec<&str> = config.projections.iter().map(|p| p.name.as_str()).collect();
    if rebuild_all && source_map::horizon(client).await?.is_some() {
        warn!(slot = %config.slot, "the replication slot is new but the worker has followed an earlier one; rebuilding every projection from eventstore.events");
        client
            .execute(
                "WITH restart AS (DELETE FROM eventstore_worker.source_transaction_runs)
                 UPDATE eventstore_worker.source_horizon SET horizon = $1",
                &[&confirmed],
            )
            .await?;
        client
            .execute(
                "UPDATE eventstore_worker.projections SET status = $2, updated_at = now() WHERE name = ANY($1)",
                &[&names, &ProjectionStatus::Rebuilding],
            )
            .await?;
        return Ok(names.iter().map(|n| n.to_string()).collect());
    }
    source_map::start_horizon(client, confirmed).await?;
    let mut behind = Vec::new();
    for row in projections::projection_rows(client, &names).await? {
        let Some(checkpoint) =
            row.checkpoint.filter(|c| *c < confirmed && row.status == ProjectionStatus::Running)
        else {
            continue;
        };
        // Behind the slot's position only matters if events committed in between (an idle
        // stream moves the slot along too).
        if source_map::any_between(client, checkpoint, confirmed).await? {
            info!(projection = %row.name, checkpoint = %row.checkpoint.unwrap_or_default(), slot = %confirmed, "projection is behind the slot; resuming it through the table");
            set_status(client, &row.name, ProjectionStatus::Running, ProjectionStatus::CatchingUp)
                .await?;
            behind.push(row.name);
        }
    }
    Ok(behind)
}

/// The configuration with each projection's definition as the file has it now (so that a
/// `retry` after fixing a handler takes effect); the connection settings stay as started.
fn current(config: &Config) -> Config {
    let mut now = config.clone();
    match Config::load(&config.file) {
        Ok(loaded) => {
            for p in &mut now.projections {
                if let Some(def) = loaded.projection(&p.name) {
                    *p = def.clone();
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot reload the configuration; using the definitions loaded at start")
        }
    }
    now
}

struct Task {
    names: Vec<String>,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Runs until `shutdown`: starts catch-ups and builds, prunes the map, and clears builds
/// whose process died.
pub async fn manage(config: Config, shutdown: CancellationToken, wake: Arc<Notify>) {
    let mut client: Option<Client> = None;
    let mut source: Option<Client> = None;
    let mut tasks: Vec<Task> = Vec::new();
    let mut not_before: HashMap<String, Instant> = HashMap::new();
    let mut last_prune = Instant::now();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        // Finished tasks: an error means "try again a little later".
        let mut i = 0;
        while i < tasks.len() {
            if tasks[i].handle.is_finished() {
                let task = tasks.swap_remove(i);
                let outcome = task.handle.await.map_err(anyhow::Error::from).and_then(|r| r);
                if let Err(e) = outcome {
                    warn!(projections = ?task.names, error = format!("{e:#}"), "catch-up or rebuild stopped; trying again");
                    for n in task.names {
                        not_before.insert(n, Instant::now() + RETRY_AFTER);
                    }
                }
            } else {
                i += 1;
            }
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match crate::pg::connect::connect_sql(
                config.target_internal(),
                "target",
                "lifecycle",
            )
            .await
            {
                Ok(c) if c.batch_execute("SET client_min_messages TO warning").await.is_ok() => {
                    Some(c)
                }
                Ok(_) => None,
                Err(e) => {
                    debug!(error = format!("{e:#}"), "lifecycle manager cannot connect yet");
                    continue;
                }
            };
        }
        let Some(c) = client.as_mut() else { continue };
        let started = start_work(c, &config, &shutdown, &mut tasks, &not_before).await;
        if let Err(e) = started {
            warn!(error = format!("{e:#}"), "lifecycle manager: reading projections failed");
            client = None;
            continue;
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            let names: Vec<&str> = config.projections.iter().map(|p| p.name.as_str()).collect();
            if let Err(e) = rebuild::clear_abandoned(c).await {
                warn!(error = format!("{e:#}"), "clearing abandoned rebuilds failed");
            }
            match source_map::prune(c, &names).await {
                Ok((horizon, floor, deleted)) => {
                    if horizon.is_some() || deleted > 0 {
                        debug!(horizon = ?horizon, deleted, "pruned the commit-order map");
                    }
                    if let Some(floor) = floor {
                        if let Err(e) = advance_guard(c, &config, &mut source, floor).await {
                            debug!(error = format!("{e:#}"), "moving the map's guard failed");
                            source = None;
                        }
                    }
                }
                Err(e) => warn!(error = format!("{e:#}"), "pruning the commit-order map failed"),
            }
        }
    }
    for t in tasks {
        t.handle.abort();
    }
}

/// Moves the map's guard on (`slot_recovery::advance_guard`), on a source connection kept
/// between calls.
async fn advance_guard(
    target: &Client,
    config: &Config,
    source: &mut Option<Client>,
    floor: Lsn,
) -> anyhow::Result<()> {
    if source.as_ref().is_none_or(|c| c.is_closed()) {
        *source =
            Some(crate::pg::connect::connect_sql(&config.source, "source", "lifecycle").await?);
    }
    let Some(s) = source.as_ref() else { return Ok(()) };
    crate::store::slot_recovery::advance_guard(target, s, floor).await?;
    Ok(())
}

async fn start_work(
    client: &Client,
    config: &Config,
    shutdown: &CancellationToken,
    tasks: &mut Vec<Task>,
    not_before: &HashMap<String, Instant>,
) -> anyhow::Result<()> {
    let busy = |name: &str, tasks: &[Task]| tasks.iter().any(|t| t.names.iter().any(|n| n == name));
    // Nothing before the stream has started once: the map begins then.
    let horizon = match source_map::horizon(client).await {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(()),
        // The first session has not created the worker's tables yet.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(())
        }
        Err(e) => return Err(e.into()),
    };
    let names: Vec<&str> = config.projections.iter().map(|p| p.name.as_str()).collect();
    let rows = projections::projection_rows(client, &names).await?;
    let waiting: Vec<&ProjectionRow> = rows
        .iter()
        .filter(|row| {
            matches!(row.status, ProjectionStatus::CatchingUp | ProjectionStatus::Rebuilding)
                && !busy(&row.name, tasks)
                && not_before.get(&row.name).is_none_or(|t| Instant::now() >= *t)
        })
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let config = current(config);
    let mut to_build = Vec::new();
    for row in waiting {
        let version = config.projection(&row.name).and_then(|p| p.version.as_deref());
        if row.status == ProjectionStatus::Rebuilding {
            to_build.push(row.name.clone());
        } else if needs_rebuild(row, version, Some(horizon)) {
            info!(projection = %row.name, "projection cannot resume from its checkpoint; rebuilding it");
            set_status(
                client,
                &row.name,
                ProjectionStatus::CatchingUp,
                ProjectionStatus::Rebuilding,
            )
            .await
            .context("marking a projection for rebuild")?;
        } else {
            info!(projection = %row.name, checkpoint = %row.checkpoint.unwrap_or_default(), "resuming through eventstore.events");
            let (config, name, stop) = (config.clone(), row.name.clone(), shutdown.clone());
            let handle = tokio::spawn(async move { catchup::run(&config, &name, &stop).await });
            tasks.push(Task { names: vec![row.name.clone()], handle });
        }
    }
    if !to_build.is_empty() {
        info!(projections = ?to_build, "building from eventstore.events");
        let (names, stop) = (to_build.clone(), shutdown.clone());
        let handle = tokio::spawn(async move {
            rebuild::run(&config, &names, rebuild::Mode::Worker, &stop).await.map(drop)
        });
        tasks.push(Task { names: to_build, handle });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, checkpoint: Option<u64>, version: Option<&str>) -> ProjectionRow {
        ProjectionRow {
            name: "p".into(),
            status: ProjectionStatus::parse(status).expect("a status of the table"),
            checkpoint: checkpoint.map(Lsn),
            version: version.map(str::to_owned),
        }
    }

    /// `super::at_start`, its status as the table's text.
    fn at_start(
        row: &ProjectionRow,
        version: Option<&str>,
        horizon: Option<Lsn>,
        first: bool,
    ) -> Option<&'static str> {
        super::at_start(row, version, horizon, first).map(ProjectionStatus::as_str)
    }

    #[test]
    fn new_projections_and_changed_versions_are_rebuilt() {
        assert_eq!(at_start(&row("running", None, None), None, None, true), Some("rebuilding"));
        assert_eq!(
            at_start(&row("running", Some(50), Some("1")), Some("2"), None, false),
            Some("rebuilding")
        );
        assert_eq!(
            at_start(&row("running", Some(50), None), Some("1"), None, false),
            Some("rebuilding")
        );
        assert_eq!(
            at_start(&row("running", Some(50), Some("2")), Some("2"), Some(Lsn(10)), true),
            None
        );
    }

    #[test]
    fn a_checkpoint_the_map_no_longer_reaches_means_rebuild() {
        assert_eq!(
            at_start(&row("running", Some(50), None), None, Some(Lsn(60)), false),
            Some("rebuilding")
        );
        assert_eq!(at_start(&row("running", Some(60), None), None, Some(Lsn(60)), false), None);
        assert!(needs_rebuild(&row("catching_up", Some(5), None), None, Some(Lsn(6))));
        assert!(!needs_rebuild(&row("catching_up", Some(6), None), None, Some(Lsn(6))));
    }

    #[test]
    fn failed_projections_are_retried_only_on_the_first_start() {
        assert_eq!(at_start(&row("failed", Some(50), None), None, None, true), Some("catching_up"));
        assert_eq!(at_start(&row("failed", Some(50), None), None, None, false), None);
        // Catching up and rebuilding carry on where they were (the manager decides how).
        assert_eq!(at_start(&row("catching_up", None, None), None, None, true), None);
        assert_eq!(at_start(&row("rebuilding", Some(1), None), None, None, true), None);
    }
}
