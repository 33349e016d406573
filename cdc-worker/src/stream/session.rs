//! One replication session after another: connect, stream, apply, acknowledge; on any
//! connection failure reconnect with backoff and resume from durable state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use postgres_protocol::escape::escape_identifier;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::apply::{Role, Target};
use crate::config::Config;
use crate::lifecycle;
use crate::model::SourceTxn;
use crate::model::{ErrorKind, Lsn};
use crate::ops::metrics;
use crate::pg::connect::connect_sql;
use crate::replication::{ReplicationConnection, Streaming};
use crate::stream::ack::{lock, AckTracker};
use crate::stream::batcher::{next_batch, Queued};
use crate::stream::feedback::send_feedback;
use crate::stream::queue::{ByteBudget, Reservation};
use crate::stream::reader::{reader_error, spawn_reader};

/// How long a shutdown waits for an in-flight batch before abandoning it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Source transactions buffered between the socket reader and the apply path, at most; their
/// bytes are bounded too, by `[stream] max_queued_bytes` (see `queue.rs`).
const CHANNEL_TRANSACTIONS: usize = 4096;

enum SessionEnd {
    Shutdown,
    Failed { error: anyhow::Error, fatal: bool, progressed: bool },
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Catch-ups and rebuilds run beside the sessions, against the database state only.
    let stop_lifecycle = shutdown.child_token();
    let wake_lifecycle = Arc::new(Notify::new());
    let lifecycle = tokio::spawn(lifecycle::manage(
        config.clone(),
        stop_lifecycle.clone(),
        wake_lifecycle.clone(),
    ));
    let result = sessions(&config, &shutdown, &wake_lifecycle).await;
    stop_lifecycle.cancel();
    let _ = lifecycle.await;
    result
}

async fn sessions(
    config: &Config,
    shutdown: &CancellationToken,
    wake_lifecycle: &Notify,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    let mut first = true;
    // Definitions as the projections follow the stream now: one that joined after a retry or
    // a rebuild came with its definition reloaded from the file, and keeps it on reconnect.
    let mut config = config.clone();
    loop {
        metrics::get().connecting();
        match session(&mut config, shutdown, first, wake_lifecycle).await {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Failed { error, fatal: true, .. } => return Err(error),
            SessionEnd::Failed { error, progressed, .. } => {
                if progressed {
                    backoff = Duration::from_millis(200);
                }
                warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "session ended; reconnecting"
                );
                metrics::get().reconnecting(backoff, &error);
            }
        }
        first = false;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn failed(error: anyhow::Error, progressed: bool) -> SessionEnd {
    SessionEnd::Failed { error, fatal: false, progressed }
}

async fn session(
    config: &mut Config,
    shutdown: &CancellationToken,
    first: bool,
    wake_lifecycle: &Notify,
) -> SessionEnd {
    // Target first: setup errors in the configuration should surface before streaming starts.
    let target_client = match connect_sql(config.target_config(), "target", "").await {
        Ok(c) => c,
        Err(e) => return failed(e, false),
    };
    if let Err(e) = lifecycle::start_session(&target_client, config, first).await {
        let fatal = first && !ErrorKind::of_postgres(&e).is_transient();
        return SessionEnd::Failed {
            error: anyhow!(e).context("preparing the target database"),
            fatal,
            progressed: false,
        };
    }
    let mut target = match Target::open(target_client, config, Role::Live).await {
        Ok(t) => t,
        Err(e) => {
            let fatal = first && !e.kind().is_transient();
            return SessionEnd::Failed { error: anyhow::Error::new(e), fatal, progressed: false };
        }
    };
    let end = stream_session(config, &mut target, shutdown, wake_lifecycle).await;
    for def in target.take_joined() {
        if let Some(p) = config.projections.iter_mut().find(|p| p.name == def.name) {
            *p = def;
        }
    }
    end
}

/// Streams into an open live target until shutdown or a failure.
async fn stream_session(
    config: &Config,
    target: &mut Target,
    shutdown: &CancellationToken,
    wake_lifecycle: &Notify,
) -> SessionEnd {
    let (stream, start, slot_created) = match start_stream(config).await {
        Ok(s) => s,
        Err(e) => return failed(e, false),
    };
    info!(slot = %config.slot, lsn = %start, "streaming started");
    match lifecycle::streaming_started(target.client(), config, start, slot_created).await {
        Ok(behind) => behind.iter().for_each(|name| target.park(name)),
        Err(e) => return failed(anyhow!(e).context("recording the stream start"), false),
    }
    wake_lifecycle.notify_one();
    for (name, checkpoint) in target.checkpoints() {
        if target.is_active(name) {
            info!(projection = %name, checkpoint = %checkpoint.unwrap_or_default(), "projection follows the stream");
        } else {
            info!(projection = %name, "projection does not follow the stream yet (failed, catching up or rebuilding)");
        }
    }
    metrics::get().streaming();

    let tracker = Arc::new(Mutex::new(AckTracker::new(start)));
    let wake_feedback = Arc::new(Notify::new());
    let stop_feedback = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<Queued>(CHANNEL_TRANSACTIONS);
    let budget = ByteBudget::new(config.stream.max_queued_bytes);

    let stop_reader = CancellationToken::new();
    let (reader, feedback) = match spawn_reader(
        stream,
        tx,
        budget,
        tracker.clone(),
        wake_feedback.clone(),
        stop_reader.clone(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return failed(e, false),
    };
    let feedback: JoinHandle<anyhow::Result<()>> = tokio::spawn(send_feedback(
        feedback,
        tracker.clone(),
        wake_feedback.clone(),
        stop_feedback.clone(),
    ));

    let mut progressed = false;
    let end = loop {
        let Some(queued) = (tokio::select! {
            _ = shutdown.cancelled() => None,
            b = next_batch(&mut rx, &config.batch) => b,
        }) else {
            if shutdown.is_cancelled() {
                break SessionEnd::Shutdown;
            }
            break failed(reader_error(reader).await, progressed);
        };
        // The reservations are given back once the batch is done with (end of this iteration).
        let (batch, _held): (Vec<SourceTxn>, Vec<Reservation>) =
            queued.into_iter().map(|q| (q.txn, q.held)).unzip();

        let events: usize = batch.iter().map(|t| t.events.len()).sum();
        let last = batch.last().map(|t| t.end_lsn).unwrap_or_default();
        let started = Instant::now();
        metrics::get().apply_started();
        let apply = target.apply(&batch);
        tokio::pin!(apply);
        let result = tokio::select! {
            r = &mut apply => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                warn!(lsn = %last, "abandoning the open batch on shutdown; it will be redelivered");
                break SessionEnd::Shutdown;
            }
        };
        match result {
            Ok(failures) => {
                metrics::get().batch_applied(&batch, started.elapsed(), &failures);
                for f in failures {
                    error!(projection = %f.projection, checkpoint = %f.checkpoint.unwrap_or_default(), error = %f.error,
                           "projection failed; it stops here, the others go on");
                }
                lock(&tracker).durable(last);
                wake_feedback.notify_one();
                progressed = true;
                debug!(lsn = %last, transactions = batch.len(), events, elapsed_ms = started.elapsed().as_millis() as u64, "batch applied");
            }
            Err(e) => {
                break failed(
                    anyhow!(e).context("applying a batch to the target database"),
                    progressed,
                )
            }
        }
    };

    // Report the last durable position before leaving, whatever the reason; then stop the
    // reader, whose runtime the socket is registered with.
    stop_feedback.cancel();
    match tokio::time::timeout(Duration::from_secs(5), feedback).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => debug!(error = format!("{e:#}"), "final status update failed"),
        _ => {}
    }
    stop_reader.cancel();
    if matches!(end, SessionEnd::Shutdown) {
        let acked = lock(&tracker).acknowledge();
        info!(lsn = %acked, "stopped; acknowledged the last durable position");
    }
    end
}

/// Ensures publication and slot exist, and starts streaming at the slot's confirmed position.
/// Also says whether the slot was created now.
async fn start_stream(config: &Config) -> anyhow::Result<(Streaming, Lsn, bool)> {
    let source = connect_sql(&config.source, "source", "").await?;
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
    let created = repl.create_slot_if_missing(&config.slot).await?;
    if created {
        info!(slot = %config.slot, "created replication slot");
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
    let stream = repl.start_replication(&config.slot, Lsn::ZERO, &config.publication).await?;
    Ok((stream, confirmed, created))
}
