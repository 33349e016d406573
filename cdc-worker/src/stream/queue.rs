//! The bytes of source transactions between the stream reader and the apply path, bounded.
//!
//! The reader reserves a transaction's bytes before queueing it and the reservation is given
//! back once the batch holding it has been applied, so decoded transactions waiting for (or in)
//! the apply path never take more than the bound — except one transaction larger than the bound,
//! which is let through alone, when nothing else is held. A hostile producer appending a few
//! huge transactions therefore costs at most `max(bound, largest transaction)` of queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Whether `bytes` more may be held when `held` are: within the bound, or alone (nothing never
/// waits: an idle position holds no memory).
pub fn admits(held: usize, bytes: usize, bound: usize) -> bool {
    bytes == 0 || held == 0 || held.checked_add(bytes).is_some_and(|total| total <= bound)
}

#[derive(Debug)]
pub struct ByteBudget {
    bound: usize,
    held: Mutex<usize>,
    /// The most ever held at once (exposed as a metric).
    peak: AtomicUsize,
    released: Notify,
}

impl ByteBudget {
    pub fn new(bound: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            bound,
            held: Mutex::new(0),
            peak: AtomicUsize::new(0),
            released: Notify::new(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, usize> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `bytes` may be held, and holds them until the reservation is dropped.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> Reservation {
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut held = self.held();
                if admits(*held, bytes, self.bound) {
                    *held += bytes;
                    self.peak.fetch_max(*held, Ordering::Relaxed);
                    crate::ops::metrics::get()
                        .queued_bytes(*held, self.peak.load(Ordering::Relaxed));
                    return Reservation { budget: Some(self.clone()), bytes };
                }
            }
            released.await;
        }
    }

    #[cfg(test)]
    fn held_now(&self) -> usize {
        *self.held()
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes held in a [`ByteBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Option<Arc<ByteBudget>>,
    bytes: usize,
}

impl Reservation {
    /// Holds nothing (an idle position, or a test).
    pub fn none() -> Reservation {
        Reservation { budget: None, bytes: 0 }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            let held = {
                let mut held = budget.held();
                *held -= self.bytes;
                *held
            };
            crate::ops::metrics::get().queued_bytes(held, budget.peak());
            budget.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn admits_within_the_bound_or_alone() {
        assert!(admits(0, 10, 100));
        assert!(admits(90, 10, 100));
        assert!(!admits(91, 10, 100));
        assert!(admits(0, 1000, 100), "a transaction larger than the bound goes alone");
        assert!(!admits(1, 1000, 100), "but only alone");
        assert!(admits(5, 0, 1), "an idle position never waits");
        assert!(!admits(usize::MAX, 1, usize::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waits_for_room_and_the_peak_stays_within_bound_or_one() {
        let budget = ByteBudget::new(100);
        let a = budget.reserve(60).await;
        let b = budget.reserve(40).await;
        assert_eq!(budget.held_now(), 100);
        // 30 more must wait until `a` is given back.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(30).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "over the bound: waits");
        drop(a);
        let c = waiting.await.unwrap();
        assert_eq!(budget.held_now(), 70);
        drop((b, c));
        // A huge one goes alone, and nothing joins it.
        let huge = budget.reserve(5000).await;
        let small = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!small.is_finished());
        drop(huge);
        drop(small.await.unwrap());
        assert_eq!(budget.held_now(), 0);
        assert_eq!(budget.peak(), 5000);
        drop(Reservation::none());
    }
}
