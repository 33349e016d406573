//! The stream reader: its own thread and runtime, reading the replication stream, assembling
//! source transactions (`decode::assembly`) and queueing them, within the byte budget, for
//! the apply path.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::decode::assembly::{Assembler, Step};
use crate::decode::pgoutput;
use crate::model::SourceTxn;
use crate::replication::{Feedback, ReplicationStream, StreamMessage, Streaming};
use crate::stream::ack::{lock, AckTracker};
use crate::stream::batcher::Queued;
use crate::stream::idle::{self, IdlePacer};
use crate::stream::queue::{ByteBudget, Reservation};

/// With at least this many source transactions waiting for the apply path, the reader paces
/// its reads (see `ReplicationStream::next`): the queue takes far longer to apply than a pause.
const PACE_FROM: usize = 256;
const PACE: Duration = Duration::from_millis(1);

pub async fn reader_error(reader: oneshot::Receiver<anyhow::Error>) -> anyhow::Error {
    reader.await.unwrap_or_else(|_| anyhow!("stream reader thread failed"))
}

/// Starts the stream reader on a thread of its own, with a runtime of its own that the socket
/// is registered with, so that it can pace its reads (see `ReplicationStream::next`) without
/// holding up anything else. Returns where its error will come and the sending half of the
/// connection (usable from any runtime).
pub async fn spawn_reader(
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
    let mut assembler = Assembler::default();
    // Keepalive positions between transactions become idle positions (see idle.rs).
    let mut idle = IdlePacer::new(lock(&tracker).received());
    let mut paced = false;
    loop {
        let due = if assembler.in_transaction() { None } else { idle.due_at(Instant::now()) };
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
                if !assembler.in_transaction() {
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
        match assembler.push(decoded) {
            Err(e) => return e.into(),
            Ok(Step::Nothing) => {}
            Ok(Step::Began) => lock(&tracker).begin(),
            Ok(Step::Committed(txn)) => {
                let end_lsn = txn.end_lsn;
                lock(&tracker).commit_received(end_lsn);
                // Waits while the queue holds too many bytes: the socket then fills and the
                // walsender waits; status updates go on from the feedback task meanwhile.
                let held = tokio::select! {
                    () = stop.cancelled() => return anyhow!("stream reader stopped"),
                    held = budget.reserve(txn.bytes) => held,
                };
                if tx.send(Queued { txn, held }).await.is_err() {
                    return anyhow!("apply path stopped");
                }
                idle.transaction_sent(end_lsn);
            }
        }
    }
}
