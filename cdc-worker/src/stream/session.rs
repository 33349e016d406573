//! One replication session after another: connect, stream, apply, acknowledge; on any
//! connection failure reconnect with backoff and resume from durable state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::apply::{Role, Target};
use crate::config::{Batch, Config};
use crate::decode::envelope;
use crate::decode::pgoutput::{self, Message, RelationCache};
use crate::lifecycle;
use crate::model::Lsn;
use crate::model::SourceTxn;
use crate::ops::metrics;
use crate::pg::connect::connect_sql;
use crate::replication::{
    pg_time, quote_ident, Feedback, ReplicationConnection, ReplicationStream, StreamMessage,
    Streaming,
};
use crate::stream::ack::AckTracker;
use crate::stream::idle::{self, IdlePacer};
use crate::stream::queue::{ByteBudget, Reservation};

/// How often a standby status update is sent even when nothing changed. Well below the
/// server's default wal_sender_timeout (60 s).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a shutdown waits for an in-flight batch before abandoning it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Source transactions buffered between the socket reader and the apply path, at most; their
/// bytes are bounded too, by `[stream] max_queued_bytes` (see `queue.rs`).
const CHANNEL_TRANSACTIONS: usize = 4096;
/// With at least this many source transactions waiting for the apply path, the reader paces
/// its reads (see `ReplicationStream::next`): the queue takes far longer to apply than a pause.
const PACE_FROM: usize = 256;
const PACE: Duration = Duration::from_millis(1);

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
        let fatal = first && !crate::apply::is_transient(&e);
        return SessionEnd::Failed {
            error: anyhow!(e).context("preparing the target database"),
            fatal,
            progressed: false,
        };
    }
    let mut target = match Target::open(target_client, config, Role::Live).await {
        Ok(t) => t,
        Err(e) => {
            let fatal = first && e.is_fatal();
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

fn lock(tracker: &Mutex<AckTracker>) -> std::sync::MutexGuard<'_, AckTracker> {
    // A panic while holding this lock would be a bug in AckTracker; its state is still usable.
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

async fn reader_error(reader: oneshot::Receiver<anyhow::Error>) -> anyhow::Error {
    reader.await.unwrap_or_else(|_| anyhow!("stream reader thread failed"))
}

/// Starts the stream reader on a thread of its own, with a runtime of its own that the socket
/// is registered with, so that it can pace its reads (see `ReplicationStream::next`) without
/// holding up anything else. Returns where its error will come and the sending half of the
/// connection (usable from any runtime).
async fn spawn_reader(
    streaming: Streaming,
    tx: mpsc::Sender<Queued>,
    budget: Arc<ByteBudget>,
    tracker: Arc<Mutex<AckTracker>>,
    wake_feedback: Arc<Notify>,
    stop: CancellationToken,
) -> anyhow::Result<(oneshot::Receiver<anyhow::Error>, Feedback)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the stream reader's runtime")?;
    let (started, feedback) = oneshot::channel();
    let (ended, error) = oneshot::channel();
    std::thread::Builder::new()
        .name("stream-reader".into())
        .spawn(move || {
            runtime.block_on(async move {
                match streaming.split() {
                    Ok((stream, feedback)) => {
                        if started.send(Ok(feedback)).is_ok() {
                            let _ = ended.send(
                                read_stream(stream, tx, budget, tracker, wake_feedback, stop).await,
                            );
                        }
                    }
                    Err(e) => {
                        let _ = started.send(Err(anyhow!(e)));
                    }
                }
            });
        })
        .context("starting the stream reader's thread")?;
    let feedback = feedback.await.map_err(|_| anyhow!("stream reader thread failed"))??;
    Ok((error, feedback))
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
            quote_ident(&config.publication)
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
            "SELECT confirmed_flush_lsn::text, plugin, database = current_database()
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
    let confirmed: Lsn = row.get::<_, Option<String>>(0).as_deref().unwrap_or("0/0").parse()?;
    let stream = repl.start_replication(&config.slot, Lsn::ZERO, &config.publication).await?;
    Ok((stream, confirmed, created))
}

/// Reads the stream, decodes it and hands complete source transactions to the apply path.
/// Returns the error that ended it.
async fn read_stream(
    mut stream: ReplicationStream,
    tx: mpsc::Sender<Queued>,
    budget: Arc<ByteBudget>,
    tracker: Arc<Mutex<AckTracker>>,
    wake_feedback: Arc<Notify>,
    stop: CancellationToken,
) -> anyhow::Error {
    let mut relations = RelationCache::default();
    let mut events_relation: Option<u32> = None;
    let mut open: Option<SourceTxn> = None;
    // Keepalive positions between transactions become idle positions (see idle.rs).
    let mut idle = IdlePacer::new(lock(&tracker).received());
    let mut paced = false;
    loop {
        let due = if open.is_none() { idle.due_at(Instant::now()) } else { None };
        let queued = tx.max_capacity() - tx.capacity();
        if paced != (queued >= PACE_FROM) {
            paced = !paced;
            debug!(queued, paced, "stream reads paced while the apply path has work queued");
        }
        let pace = paced.then_some(PACE);
        let next = tokio::select! {
            () = stop.cancelled() => return anyhow!("stream reader stopped"),
            // Cancel-safe: a partly received frame stays in the reader's buffer.
            m = stream.next(pace) => m,
            () = idle::sleep_until(due) => {
                if let Some((end_lsn, source_time)) = idle.take_due(Instant::now()) {
                    debug!(lsn = %end_lsn, "idle position");
                    let position = SourceTxn { end_lsn, source_time, transaction_id: None, events: Vec::new(), bytes: 0 };
                    if tx.send(Queued { txn: position, held: Reservation::none() }).await.is_err() {
                        return anyhow!("apply path stopped");
                    }
                }
                continue;
            }
        };
        let msg = match next {
            Ok(m) => m,
            Err(e) => return e.into(),
        };
        let data = match msg {
            StreamMessage::Keepalive { wal_end, server_time, reply_requested } => {
                lock(&tracker).server_position(wal_end);
                if open.is_none() {
                    idle.keepalive(wal_end, server_time, Instant::now());
                }
                if reply_requested {
                    wake_feedback.notify_one();
                }
                continue;
            }
            StreamMessage::XLogData { data, .. } => data,
        };
        let decoded = match pgoutput::decode(&data) {
            Ok(m) => m,
            Err(e) => return e.into(),
        };
        match decoded {
            Message::Begin(_) => {
                if open.is_some() {
                    return anyhow!("pgoutput: Begin inside an open transaction");
                }
                lock(&tracker).begin();
                open = Some(SourceTxn {
                    end_lsn: Lsn::ZERO,
                    source_time: SystemTime::UNIX_EPOCH,
                    transaction_id: None,
                    events: Vec::new(),
                    bytes: 0,
                });
            }
            Message::Commit(c) => {
                let Some(mut txn) = open.take() else {
                    return anyhow!("pgoutput: Commit without Begin");
                };
                txn.end_lsn = c.end_lsn;
                txn.source_time = pg_time(c.commit_time);
                lock(&tracker).commit_received(c.end_lsn);
                // Waits while the queue holds too many bytes: the socket then fills and the
                // walsender waits; status updates go on from the feedback task meanwhile.
                let held = tokio::select! {
                    () = stop.cancelled() => return anyhow!("stream reader stopped"),
                    held = budget.reserve(txn.bytes) => held,
                };
                if tx.send(Queued { txn, held }).await.is_err() {
                    return anyhow!("apply path stopped");
                }
                idle.transaction_sent(c.end_lsn);
            }
            Message::Relation(r) => {
                if r.namespace == "eventstore" && r.name == "events" {
                    events_relation = Some(r.oid);
                }
                relations.update(r);
            }
            Message::Insert { relation, new } => {
                let Some(txn) = open.as_mut() else {
                    return anyhow!("pgoutput: Insert outside a transaction");
                };
                if Some(relation) != events_relation {
                    continue; // another table in the publication: not ours
                }
                let Some(rel) = relations.get(relation) else {
                    return anyhow!(
                        "pgoutput: Insert for relation {relation} before its Relation message"
                    );
                };
                if txn.transaction_id.is_none() {
                    match envelope::transaction_id(rel, &new) {
                        Ok(xid) => txn.transaction_id = Some(xid),
                        Err(e) => return e.into(),
                    }
                }
                match envelope::from_insert(rel, &new) {
                    Ok(ev) => {
                        txn.bytes += ev.envelope.len();
                        txn.events.push(ev);
                    }
                    Err(e) => return e.into(),
                }
            }
            Message::Update { relation, .. } | Message::Delete { relation, .. }
                if Some(relation) == events_relation =>
            {
                // The event log is append-only; a change here means someone bypassed its triggers.
                error!("eventstore.events row updated or deleted; read models cannot follow and ignore it");
            }
            Message::Truncate { relations: truncated, .. }
                if truncated.iter().any(|r| Some(*r) == events_relation) =>
            {
                error!("eventstore.events truncated; read models cannot follow and ignore it");
            }
            Message::Update { .. } | Message::Delete { .. } | Message::Truncate { .. } => {}
            Message::Origin { .. } | Message::Type { .. } | Message::Message { .. } => {}
        }
    }
}

/// Sends standby status updates: periodically, when woken (durable progress or a reply
/// request) and once more when stopped. Runs apart from the apply path so a slow handler never
/// delays the replies the server's wal_sender_timeout waits for.
async fn send_feedback(
    mut feedback: Feedback,
    tracker: Arc<Mutex<AckTracker>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    let mut last_sent = None;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
            _ = wake.notified() => false,
        };
        let (write, flush) = {
            let mut t = lock(&tracker);
            (t.received(), t.acknowledge())
        };
        if last_sent != Some(flush) {
            debug!(lsn = %flush, "acknowledging");
        }
        feedback.send_status(write, flush, false).await?;
        metrics::get().acknowledged(write, flush);
        last_sent = Some(flush);
        if stopping {
            feedback.finish().await?;
            return Ok(());
        }
    }
}

/// A source transaction on its way to the apply path, with the queue bytes it holds.
struct Queued {
    txn: SourceTxn,
    held: Reservation,
}

/// Waits for one source transaction, then gathers more while the batch bounds allow.
async fn next_batch(rx: &mut mpsc::Receiver<Queued>, limits: &Batch) -> Option<Vec<Queued>> {
    let first = rx.recv().await?;
    let mut events = first.txn.events.len();
    let mut bytes = first.txn.bytes;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + limits.linger();
    while batch.len() < limits.max_transactions
        && events < limits.max_events
        && bytes < limits.max_bytes
    {
        let next = match rx.try_recv() {
            Ok(t) => t,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(t)) => t,
                    _ => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        events += next.txn.events.len();
        bytes += next.txn.bytes;
        batch.push(next);
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;

    /// Source transaction `n` with `events` events of `bytes_each` bytes of envelope.
    fn txn(n: u64, events: usize, bytes_each: usize) -> SourceTxn {
        let events: Vec<Event> = (0..events)
            .map(|i| Event {
                event_type: "T".into(),
                global_position: (n * 100 + i as u64) as i64,
                envelope: "x".repeat(bytes_each),
            })
            .collect();
        let bytes = events.iter().map(|e| e.envelope.len()).sum();
        SourceTxn {
            end_lsn: Lsn(n),
            source_time: SystemTime::UNIX_EPOCH,
            transaction_id: Some(n),
            events,
            bytes,
        }
    }

    fn q(txn: SourceTxn) -> Queued {
        Queued { txn, held: Reservation::none() }
    }

    const UNBOUNDED: Batch = Batch {
        max_transactions: usize::MAX,
        max_events: usize::MAX,
        max_bytes: usize::MAX,
        linger_ms: 2,
    };

    /// Queues `txns`, then takes batches until the queue is empty: each batch as the ends of
    /// its source transactions, and the events of each transaction, to show none was split.
    async fn batches(limits: &Batch, txns: Vec<SourceTxn>) -> Vec<Vec<(u64, usize)>> {
        let (tx, mut rx) = mpsc::channel(txns.len() + 1);
        for t in txns {
            tx.send(q(t)).await.unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        while let Some(batch) = next_batch(&mut rx, limits).await {
            out.push(batch.iter().map(|q| (q.txn.end_lsn.0, q.txn.events.len())).collect());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_bounded_by_transactions() {
        let limits = Batch { max_transactions: 2, ..UNBOUNDED };
        let got = batches(&limits, (1..=5).map(|n| txn(n, 1, 10)).collect()).await;
        assert_eq!(got, vec![vec![(1, 1), (2, 1)], vec![(3, 1), (4, 1)], vec![(5, 1)]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_bounded_by_events_and_bytes_without_splitting_a_transaction() {
        // 3 events each: the second transaction takes the batch past 4 events, and is whole.
        let limits = Batch { max_events: 4, ..UNBOUNDED };
        let got = batches(&limits, (1..=3).map(|n| txn(n, 3, 10)).collect()).await;
        assert_eq!(got, vec![vec![(1, 3), (2, 3)], vec![(3, 3)]]);
        // 100 bytes each: a batch closes once it holds 250 bytes or more.
        let limits = Batch { max_bytes: 250, ..UNBOUNDED };
        let got = batches(&limits, (1..=4).map(|n| txn(n, 2, 50)).collect()).await;
        assert_eq!(got, vec![vec![(1, 2), (2, 2), (3, 2)], vec![(4, 2)]]);
        // One transaction larger than every bound is a batch of its own.
        let limits = Batch { max_transactions: 1, max_events: 1, max_bytes: 1, linger_ms: 2 };
        let got = batches(&limits, vec![txn(1, 500, 1000), txn(2, 1, 1)]).await;
        assert_eq!(got, vec![vec![(1, 500)], vec![(2, 1)]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_more_only_as_long_as_the_linger() {
        let limits = Batch { linger_ms: 50, ..UNBOUNDED };
        let (tx, mut rx) = mpsc::channel(8);
        let sender = tokio::spawn(async move {
            tx.send(q(txn(1, 1, 10))).await.unwrap();
            // Within the linger of the first: same batch.
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(q(txn(2, 1, 10))).await.unwrap();
            // After it (50 ms from the first): the next batch.
            tokio::time::sleep(Duration::from_millis(40)).await;
            tx.send(q(txn(3, 1, 10))).await.unwrap();
        });
        let first = next_batch(&mut rx, &limits).await.unwrap();
        assert_eq!(first.iter().map(|q| q.txn.end_lsn.0).collect::<Vec<_>>(), vec![1, 2]);
        let second = next_batch(&mut rx, &limits).await.unwrap();
        assert_eq!(second.iter().map(|q| q.txn.end_lsn.0).collect::<Vec<_>>(), vec![3]);
        sender.await.unwrap();
        assert!(next_batch(&mut rx, &limits).await.is_none(), "no batch once the reader is gone");
    }
}
