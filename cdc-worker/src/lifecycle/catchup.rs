//! Resuming one projection from its checkpoint through the commit-order map and
//! `eventstore.events`, into its own tables, while the live path carries on without it; then
//! joining the stream.
//!
//! Chunks of map rows are applied in target transactions of their own (handlers + checkpoint,
//! the usual `Target::apply`). When the rest is short, the catch-up takes the projection's apply
//! lock: the live path, which takes it first in every batch transaction, now waits, so the map
//! cannot grow. It applies what is left, sets the projection `running`, and lets go; the live
//! path's next batch sees the new status and applies the projection from there.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::apply_function::{self, Applier};
use crate::apply::{Role, Target};
use crate::config::Config;
use crate::model::{Lsn, ProjectionStatus};
use crate::pg::connect::connect_sql;
use crate::store::coordination;
use crate::store::coordination::SessionLock;
use crate::store::projections::{self, FailedEvent, Table};
use crate::store::source_map;

/// Source transactions read from the map per target transaction.
pub const CHUNK: i64 = 2000;
/// Join the stream once fewer transactions than this are left: the live path waits while
/// they are applied.
pub const JOIN_BELOW: usize = 500;

pub async fn run(config: &Config, name: &str, stop: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        r = catch_up(config, name) => r,
        _ = stop.cancelled() => Ok(()),
    }
}

async fn catch_up(config: &Config, name: &str) -> anyhow::Result<()> {
    let control = connect_sql(config.target_internal(), "target", "catch-up").await?;
    let Some(owner) = coordination::try_own(&control, name).await? else {
        debug!(projection = %name, "another process works on this projection");
        return Ok(());
    };
    let result = resume(config, name, &control).await;
    // The catch-up's apply function is of no use once it is over (the next one installs it
    // afresh); one left behind by a crash is harmless. Dropped only by its owner, which holds
    // the owner lock until its connection goes.
    control.batch_execute(&apply_function::drop_function(name, Applier::CatchUp)).await?;
    owner.until_session_ends(); // `control` closes on return
    result
}

async fn resume(
    config: &Config,
    name: &str,
    control: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let source = connect_sql(&config.source, "source", "catch-up").await?;
    source.batch_execute(source_map::EVENT_SESSION).await?;
    let opened = Target::open(
        connect_sql(config.target_config(), "target", "catch-up").await?,
        config,
        Role::CatchUp(name.into()),
    )
    .await;
    let mut target = match opened {
        Ok(t) => t,
        Err(e) if !e.kind().is_transient() => {
            // The definition itself is broken (setup or a handler does not prepare): that is a
            // failure of the projection, recorded like one; retry after fixing it.
            let error = e.to_string();
            warn!(projection = %name, error = %error, "cannot resume the projection");
            let catching_up = Some(ProjectionStatus::CatchingUp);
            let kept = FailedEvent::Kept;
            projections::mark_failed(control, Table::Projections, name, catching_up, &error, kept)
                .await?;
            return Ok(());
        }
        Err(e) => return Err(anyhow::Error::new(e).context("preparing the projection")),
    };
    if !target.is_active(name) {
        return Ok(()); // no longer catching up (rebuilt or retried elsewhere)
    }
    let Some(mut at) = target.checkpoint(name) else {
        anyhow::bail!("projection {name:?} has no checkpoint to resume from");
    };
    let horizon = source_map::horizon(control).await?.unwrap_or_default();
    anyhow::ensure!(
        at >= horizon,
        "projection {name:?} is at {at}, before the commit-order map starts ({horizon})"
    );

    let started = at;
    let mut transactions = 0usize;
    loop {
        let rows = source_map::after(control, at, CHUNK).await?;
        if rows.len() < JOIN_BELOW {
            break;
        }
        match apply(&mut target, &source, name, &rows).await? {
            Some(next) => at = next,
            None => return Ok(()),
        }
        transactions += rows.len();
        debug!(projection = %name, checkpoint = %at, transactions, "catching up");
    }

    // Join: with the apply lock held, the map is complete up to its head.
    let lock = SessionLock::acquire(control, coordination::apply_lock(name)).await?;
    loop {
        let rows = source_map::after(control, at, CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        transactions += rows.len();
        match apply(&mut target, &source, name, &rows).await? {
            Some(next) => at = next,
            None => {
                lock.until_session_ends(); // failed; the lock goes with the connection
                return Ok(());
            }
        }
    }
    // Unless the map restarted meanwhile (a recreated slot): then it is rebuilt instead.
    let joined = control
        .execute(
            "UPDATE eventstore_worker.projections
                SET status = CASE WHEN $2::pg_lsn >= (SELECT horizon FROM eventstore_worker.source_horizon)
                                  THEN $3 ELSE $4 END,
                    last_error = NULL, failed_event = NULL, updated_at = now()
              WHERE name = $1 AND status = $5 AND checkpoint_lsn = $2::pg_lsn",
            &[
                &name,
                &at,
                &ProjectionStatus::Running,
                &ProjectionStatus::Rebuilding,
                &ProjectionStatus::CatchingUp,
            ],
        )
        .await?;
    lock.release(control).await?;
    if joined == 1 {
        info!(projection = %name, from = %started, checkpoint = %at, transactions, "caught up; following the stream again");
    } else {
        warn!(projection = %name, "projection changed while catching up; left as it is");
    }
    Ok(())
}

/// Applies map rows; returns the new checkpoint, or `None` when the projection failed (its
/// error and exact checkpoint are recorded).
async fn apply(
    target: &mut Target,
    source: &tokio_postgres::Client,
    name: &str,
    rows: &[source_map::MapRow],
) -> anyhow::Result<Option<Lsn>> {
    let txns = source_map::fetch(source, rows).await?;
    let failures = target.apply(&txns).await.context("applying to the target database")?;
    if let Some(f) = failures.into_iter().next() {
        warn!(projection = %name, error = %f.error, "projection failed while catching up");
        return Ok(None);
    }
    Ok(target.checkpoint(name))
}
