//! Where a session's stream starts: the publication and the slot ensured, a lost,
//! invalidated or promoted-away slot recreated with the transactions it missed put into the
//! commit-order map (`store::slot_recovery`), then `START_REPLICATION`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::model::Lsn;
use crate::pg::connect::connect_sql;
use postgres_protocol::escape::escape_identifier;

use crate::replication::{ReplicationConnection, Streaming};
use crate::store::slot_recovery;

/// Ensures publication and slot exist (recreating a lost one, see `slot_recovery`), and starts
/// streaming at the slot's confirmed position. Also says whether every projection must be
/// rebuilt (a slot recreated where the missed transactions cannot be told).
pub async fn start_stream(config: &Config) -> anyhow::Result<(Streaming, Lsn, bool)> {
    let mut source = connect_sql(&config.source, "source", "").await?;
    // The publication must exist before the slot: pgoutput looks it up as of each decoded
    // transaction, and would fail on WAL older than the publication.
    let exists = source
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&config.publication])
        .await
        .context("checking the publication")?
        .is_some();
    if !exists {
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE eventstore.events",
            escape_identifier(&config.publication)
        );
        match source.batch_execute(&sql).await {
            Ok(()) => info!(publication = %config.publication, "created publication"),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => {
                return Err(
                    anyhow!(e).context(format!("creating publication {:?}", config.publication))
                )
            }
        }
    }

    let mut repl = ReplicationConnection::connect(&config.source).await?;
    let system = repl.identify_system().await?;
    debug!(system_id = %system.system_id, timeline = %system.timeline, lsn = %system.xlogpos, dbname = ?system.dbname, "identified system");
    let timeline = format!("{}/{}", system.system_id, system.timeline);
    let version: i32 = source
        .query_one("SELECT pg_catalog.current_setting('server_version_num')::int4", &[])
        .await?
        .get(0);
    // Failover slots exist from PostgreSQL 17 on.
    let failover = config.failover && version >= 170000;
    let mut target = connect_sql(config.target_internal(), "target", "slot").await?;
    let state = slot_recovery::map_state(&target).await.context("reading the map's state")?;
    let slot = slot_info(&source, &config.slot).await?;
    let recreate = match &slot {
        None => state.horizon.map(|_| "the replication slot is gone".to_owned()),
        Some(s) if s.lost.is_some() => Some(format!(
            "the replication slot was invalidated ({})",
            s.lost.as_deref().unwrap_or_default()
        )),
        Some(_) if state.recovering => Some("recreating the slot was interrupted".to_owned()),
        // After a promotion, a synchronized slot may have confirmed what the target, replicated
        // asynchronously, lost: positions it reflects no more.
        Some(s)
            if state.horizon.is_some()
                && state.timeline.as_deref().is_some_and(|t| t != timeline)
                && s.confirmed > state.known =>
        {
            Some(format!(
                "the source was promoted and its slot has confirmed {} beyond what the target reflects ({})",
                s.confirmed, state.known
            ))
        }
        Some(_) => None,
    };
    let mut rebuild_all = false;
    match (&slot, recreate) {
        (Some(s), None) => {
            if failover && s.failover == Some(false) {
                repl.alter_slot_failover(&config.slot, true).await?;
                info!(slot = %config.slot, "made the replication slot a failover slot");
            }
        }
        (None, None) => {
            // The first start: the slot's snapshot is the map's first guard.
            let (point, name) = repl.create_slot(&config.slot, failover).await?;
            let snapshot = slot_recovery::exported_snapshot(&mut source, &name).await?;
            slot_recovery::first_guard(&target, point, &snapshot).await?;
            info!(slot = %config.slot, failover, consistent_point = %point, "created replication slot");
        }
        (existing, Some(why)) => {
            warn!(slot = %config.slot, reason = %why, "recreating the replication slot; catching up from the checkpoints through eventstore.events");
            let guard = slot_recovery::begin(&target).await?;
            if existing.is_some() {
                drop_slot(&source, &config.slot).await?;
            }
            let (point, name) = repl.create_slot(&config.slot, failover).await?;
            match guard {
                Some(guard) => {
                    let (snapshot, missed) =
                        slot_recovery::missed_since(&mut source, &name, &guard).await?;
                    let known = slot_recovery::map_state(&target).await?.known;
                    let recovered =
                        slot_recovery::record(&mut target, &missed, known, point, &snapshot)
                            .await?;
                    slot_recovery::report(&config.slot, recovered, point);
                }
                None => {
                    // A map kept by an earlier version of the worker has no guard yet.
                    warn!(slot = %config.slot, "the commit-order map has no guard yet (kept by an earlier version); rebuilding instead");
                    slot_recovery::abandon(&target).await?;
                    rebuild_all = true;
                }
            }
        }
    }
    let row = source
        .query_one(
            "SELECT confirmed_flush_lsn, plugin, database = current_database()
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .context("reading the replication slot")?;
    let plugin: Option<String> = row.get(1);
    if plugin.as_deref() != Some("pgoutput") || !row.get::<_, bool>(2) {
        anyhow::bail!(
            "replication slot {:?} exists but is not a pgoutput slot of this database",
            config.slot
        );
    }
    let confirmed: Lsn = row.get::<_, Option<Lsn>>(0).unwrap_or(Lsn::ZERO);
    slot_recovery::started_on(&target, &timeline).await?;
    let stream = repl.start_replication(&config.slot, Lsn::ZERO, &config.publication).await?;
    Ok((stream, confirmed, rebuild_all))
}

/// The worker's slot as `pg_replication_slots` shows it.
struct SlotInfo {
    confirmed: Lsn,
    /// Why it can no longer stream, when it was invalidated.
    lost: Option<String>,
    /// `None` before PostgreSQL 17.
    failover: Option<bool>,
}

async fn slot_info(
    source: &tokio_postgres::Client,
    slot: &str,
) -> anyhow::Result<Option<SlotInfo>> {
    // to_jsonb: the columns differ between majors (invalidation_reason and failover are 17+).
    let row = source
        .query_opt(
            "SELECT confirmed_flush_lsn,
                    CASE WHEN s.j ->> 'invalidation_reason' IS NOT NULL THEN s.j ->> 'invalidation_reason'
                         WHEN s.j ->> 'wal_status' = 'lost' THEN 'wal_removed' END,
                    (s.j ->> 'failover')::bool
               FROM (SELECT pg_catalog.to_jsonb(r) AS j, r.confirmed_flush_lsn
                       FROM pg_catalog.pg_replication_slots r WHERE r.slot_name = $1) AS s",
            &[&slot],
        )
        .await
        .context("reading the replication slot")?;
    Ok(row.map(|r| SlotInfo {
        confirmed: r.get::<_, Option<Lsn>>(0).unwrap_or_default(),
        lost: r.get(1),
        failover: r.get(2),
    }))
}

/// Drops the worker's slot, waiting for a walsender that still holds it to let go.
async fn drop_slot(source: &tokio_postgres::Client, slot: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = source
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await
            .context("dropping the replication slot")?;
        let left = source
            .query_opt(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        match left {
            None => return Ok(()),
            Some(_) if Instant::now() >= deadline => {
                anyhow::bail!("replication slot {slot:?} is still in use by another process")
            }
            Some(row) => {
                if dropped == 0 {
                    // A walsender of ours from before a lost connection may still hold it.
                    let pid: Option<i32> = row.get(0);
                    debug!(slot, pid, "waiting for the replication slot to be released");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
