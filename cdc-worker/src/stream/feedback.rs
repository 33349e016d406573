//! The feedback task: standby status updates with the acknowledged position.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::ops::metrics;
use crate::replication::Feedback;
use crate::stream::ack::{lock, AckTracker};

/// How often a standby status update is sent even when nothing changed. Well below the
/// server's default wal_sender_timeout (60 s).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Sends standby status updates: periodically, when woken (durable progress or a reply
/// request) and once more when stopped. Runs apart from the apply path so a slow handler never
/// delays the replies the server's wal_sender_timeout waits for.
pub async fn send_feedback(
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
