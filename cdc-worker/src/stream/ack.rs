//! What may be acknowledged to the replication slot, and when.
//!
//! The slot's confirmed flush position tells the server which WAL it may recycle and where to
//! resume after a reconnect. Acknowledging a position before the read models containing every
//! transaction up to it are durable would lose events on a crash; never acknowledging would
//! make WAL pile up. This tracker is the single place that decides, fed by:
//!
//! - the stream reader: transaction begins/commits and keepalive positions, in stream order;
//! - the apply path: "every transaction ending at or before `lsn` is durable in the target".
//!
//! Nothing else holds it back: a projection that is not following the stream (failed, catching
//! up, rebuilding) resumes from the commit-order map and `eventstore.events`, not from the slot,
//! so the WAL kept is bounded by the projections that are healthy.
//!
//! It is deliberately free of I/O so that it can be tested with injected faults.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::model::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A received transaction ending here; may be acknowledged once durable.
    Commit(Lsn),
    /// The server said all WAL up to here was sent and we were between transactions: nothing
    /// relevant lies between the previous mark and this one.
    Idle(Lsn),
}

#[derive(Debug, Clone)]
pub struct AckTracker {
    marks: VecDeque<Mark>,
    in_transaction: bool,
    durable: Lsn,
    /// Highest position safe to acknowledge. Never decreases.
    safe: Lsn,
    /// Highest position received from the server (reported as the write position).
    received: Lsn,
    /// Highest position already acknowledged; acknowledgements never go backwards.
    acknowledged: Lsn,
}

impl AckTracker {
    /// `start` is the slot's confirmed flush position when streaming starts.
    pub fn new(start: Lsn) -> Self {
        AckTracker {
            marks: VecDeque::new(),
            in_transaction: false,
            durable: start,
            safe: start,
            received: start,
            acknowledged: start,
        }
    }

    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    pub fn commit_received(&mut self, end_lsn: Lsn) {
        self.in_transaction = false;
        self.received = self.received.max(end_lsn);
        self.marks.push_back(Mark::Commit(end_lsn));
        self.advance();
    }

    /// A keepalive (or XLogData header) reporting the server's WAL end. Ignored inside a
    /// transaction: the server may already have read past that transaction's commit.
    pub fn server_position(&mut self, wal_end: Lsn) {
        if self.in_transaction || wal_end == Lsn::ZERO {
            return;
        }
        self.received = self.received.max(wal_end);
        self.marks.push_back(Mark::Idle(wal_end));
        self.advance();
    }

    /// Every transaction ending at or before `lsn` has committed durably in the target.
    pub fn durable(&mut self, lsn: Lsn) {
        self.durable = self.durable.max(lsn);
        self.advance();
    }

    fn advance(&mut self) {
        while let Some(&mark) = self.marks.front() {
            match mark {
                Mark::Commit(lsn) if lsn <= self.durable => self.safe = self.safe.max(lsn),
                Mark::Commit(_) => break,
                Mark::Idle(lsn) => self.safe = self.safe.max(lsn),
            }
            self.marks.pop_front();
        }
    }

    /// The flush position to report now; also records it as acknowledged.
    pub fn acknowledge(&mut self) -> Lsn {
        self.acknowledged = self.acknowledged.max(self.safe);
        self.acknowledged
    }

    /// The write position to report: everything received so far.
    pub fn received(&self) -> Lsn {
        self.received
    }
}

/// The tracker behind its mutex, shared by the reader, the feedback task and the apply loop.
pub fn lock(tracker: &Mutex<AckTracker>) -> MutexGuard<'_, AckTracker> {
    // A panic while holding this lock would be a bug in AckTracker; its state is still usable.
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commit_is_acknowledged_only_once_durable() {
        let mut t = AckTracker::new(Lsn(10));
        t.begin();
        t.commit_received(Lsn(20));
        assert_eq!(t.acknowledge(), Lsn(10));
        t.durable(Lsn(20));
        assert_eq!(t.acknowledge(), Lsn(20));
    }

    #[test]
    fn idle_keepalive_advances_past_unrelated_wal() {
        let mut t = AckTracker::new(Lsn(10));
        t.server_position(Lsn(500));
        assert_eq!(t.acknowledge(), Lsn(500));
    }

    #[test]
    fn keepalive_waits_behind_pending_commits() {
        let mut t = AckTracker::new(Lsn(10));
        t.begin();
        t.commit_received(Lsn(20));
        t.server_position(Lsn(500));
        assert_eq!(t.acknowledge(), Lsn(10));
        t.durable(Lsn(20));
        assert_eq!(t.acknowledge(), Lsn(500));
    }

    #[test]
    fn keepalive_inside_a_transaction_is_ignored() {
        let mut t = AckTracker::new(Lsn(10));
        t.begin();
        t.server_position(Lsn(900)); // the server may have read past our commit already
        assert_eq!(t.acknowledge(), Lsn(10));
        t.commit_received(Lsn(800));
        assert_eq!(t.acknowledge(), Lsn(10));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Txn,
        Keepalive,
        /// The apply path commits the oldest `n` pending transactions.
        Apply(usize),
        /// Worker crash: everything not durable is lost; restart from the acknowledged position.
        Crash,
        Ack,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Txn),
            2 => Just(Step::Keepalive),
            3 => (0usize..4).prop_map(Step::Apply),
            1 => Just(Step::Crash),
            3 => Just(Step::Ack),
        ]
    }

    proptest! {
        /// Simulates a server producing transactions and idle WAL, an apply path that makes a
        /// prefix of them durable, and crashes at any point. Invariants: acknowledgements never
        /// pass a non-durable transaction, never go backwards, and after a crash the server
        /// resends (everything after the acknowledged position) plus what is durable covers
        /// every transaction: nothing is lost.
        #[test]
        fn acknowledgement_never_loses_a_transaction(steps in proptest::collection::vec(step(), 1..80)) {
            let mut wal = 100u64;
            let mut all_txns: Vec<u64> = Vec::new();
            let mut durable: Vec<u64> = Vec::new();
            let mut acked = 0u64;
            let mut tracker = AckTracker::new(Lsn(acked));
            // Transactions the current session has received but not yet made durable.
            let mut pending: VecDeque<u64> = VecDeque::new();
            for s in steps {
                match s {
                    Step::Txn => {
                        wal += 10;
                        all_txns.push(wal);
                        tracker.begin();
                        tracker.commit_received(Lsn(wal));
                        pending.push_back(wal);
                    }
                    Step::Keepalive => {
                        wal += 5; // unrelated WAL
                        tracker.server_position(Lsn(wal));
                    }
                    Step::Apply(n) => {
                        let mut last = None;
                        for _ in 0..n {
                            if let Some(t) = pending.pop_front() {
                                durable.push(t);
                                last = Some(t);
                            }
                        }
                        if let Some(t) = last {
                            tracker.durable(Lsn(t));
                        }
                    }
                    Step::Ack => {
                        let a = tracker.acknowledge().0;
                        prop_assert!(a >= acked, "acknowledgement went backwards");
                        for t in &all_txns {
                            prop_assert!(*t > a || durable.contains(t), "acked {a} past non-durable txn {t}");
                        }
                        acked = a;
                    }
                    Step::Crash => {
                        // The server resends every transaction ending after `acked`.
                        pending = all_txns.iter().copied().filter(|t| *t > acked && !durable.contains(t)).collect();
                        tracker = AckTracker::new(Lsn(acked));
                        for t in &pending {
                            tracker.begin();
                            tracker.commit_received(Lsn(*t));
                        }
                    }
                }
            }
            // Drain: apply everything, then an idle keepalive must acknowledge the WAL end.
            while let Some(t) = pending.pop_front() {
                durable.push(t);
                tracker.durable(Lsn(t));
            }
            wal += 1;
            tracker.server_position(Lsn(wal));
            prop_assert_eq!(tracker.acknowledge(), Lsn(wal));
            for t in &all_txns {
                prop_assert!(durable.contains(t), "transaction {} lost", t);
            }
        }
    }
}
