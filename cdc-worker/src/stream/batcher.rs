//! Gathering queued source transactions into batches, within the `[batch]` limits.

use tokio::sync::mpsc;

use crate::config::Batch;
use crate::model::SourceTxn;
use crate::stream::queue::Reservation;

/// A source transaction on its way to the apply path, with the queue bytes it holds.
pub struct Queued {
    pub txn: SourceTxn,
    pub held: Reservation,
}

/// Waits for one source transaction, then gathers more while the batch bounds allow.
pub async fn next_batch(rx: &mut mpsc::Receiver<Queued>, limits: &Batch) -> Option<Vec<Queued>> {
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
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::{Event, Lsn};

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
