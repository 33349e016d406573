//! Idle positions: how checkpoints move past the last event while nothing happens.
//!
//! A client that wants to read its own write takes `pg_current_wal_lsn()` after its commit and
//! waits until a projection's checkpoint reaches it (`eventstore_worker.wait_for`). That token
//! is usually beyond the end of the last event transaction (other WAL: the worker's own
//! writes, other tables, other databases), so checkpoints that only moved with event
//! transactions would never reach it while the event table is quiet.
//!
//! Why a keepalive position may become a checkpoint: the walsender sends transactions in
//! commit order, and a keepalive reports the position W up to which it has read the WAL. A
//! keepalive that arrives between transactions therefore follows every transaction committed
//! at or before W. Once those are applied, every running projection reflects the source up to
//! W exactly, and on a redelivery after a crash a transaction ending at or before W was
//! necessarily applied already.
//!
//! The stream reader hands such a W to the apply path as an empty source transaction, so a
//! checkpoint still only moves inside a target transaction, in stream order, and never for a
//! failed projection. Each is a target transaction, so they are paced.
//!
//! When the read models live in the source cluster, applying an idle position is itself WAL,
//! which the next keepalive reports a few milliseconds later: an echo that would otherwise
//! keep the worker writing. The pacer tells it from new activity by timing alone. A keepalive
//! within [`ECHO_WINDOW`] of the last idle position handed over may be that echo: it waits a
//! gap that doubles with every idle position since the last event transaction, from
//! [`MIN_GAP`] up to [`MAX_GAP`], so the echo settles at one small write per `MAX_GAP`. A
//! keepalive later than that is new WAL from someone else (a client's barrier token, say) and
//! waits only `MIN_GAP`. If applying an idle position ever takes longer than the window, its
//! echo passes for activity, and the writes are still bounded by one per `ECHO_WINDOW`.

use std::time::{Duration, Instant, SystemTime};

use crate::model::Lsn;

/// Gap after an event transaction: keeps a token taken right after an append quick to reach.
pub const MIN_GAP: Duration = Duration::from_millis(10);
/// Longest gap between two idle positions while only their own echo moves the WAL.
pub const MAX_GAP: Duration = Duration::from_secs(1);
/// How soon after an idle position a keepalive may be its echo (hand-over, linger, apply,
/// commit, decode: normally well under this).
pub const ECHO_WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct IdlePacer {
    /// Highest end position handed to the apply path (transaction or idle position).
    sent: Lsn,
    /// Latest keepalive position beyond `sent`, with the server clock when it was sent.
    pending: Option<(Lsn, SystemTime)>,
    /// Some keepalive behind `pending` arrived outside the echo window: new activity.
    pending_activity: bool,
    last_idle: Option<Instant>,
    /// Idle positions handed over since the last event transaction.
    streak: u32,
}

impl IdlePacer {
    /// `start` is where streaming starts: nothing at or below it needs recording.
    pub fn new(start: Lsn) -> Self {
        IdlePacer {
            sent: start,
            pending: None,
            pending_activity: false,
            last_idle: None,
            streak: 0,
        }
    }

    /// A source transaction ending at `end_lsn` was handed to the apply path.
    pub fn transaction_sent(&mut self, end_lsn: Lsn) {
        self.sent = self.sent.max(end_lsn);
        if self.pending.is_some_and(|(w, _)| w <= end_lsn) {
            self.pending = None;
            self.pending_activity = false;
        }
        self.streak = 0;
    }

    /// A keepalive received (at `now`) between transactions (never inside one: the server may
    /// already have read past the open transaction's commit).
    pub fn keepalive(&mut self, wal_end: Lsn, server_time: SystemTime, now: Instant) {
        if wal_end > self.sent && self.pending.is_none_or(|(w, _)| wal_end > w) {
            self.pending = Some((wal_end, server_time));
            self.pending_activity |=
                self.last_idle.is_none_or(|t| now.saturating_duration_since(t) >= ECHO_WINDOW);
        }
    }

    fn gap(&self) -> Duration {
        if self.pending_activity {
            return MIN_GAP;
        }
        MIN_GAP.saturating_mul(1 << self.streak.min(16)).min(MAX_GAP)
    }

    /// When the pending idle position may be handed over; `None` when there is none.
    pub fn due_at(&self, now: Instant) -> Option<Instant> {
        self.pending?;
        Some(match self.last_idle {
            Some(last) => (last + self.gap()).max(now),
            None => now,
        })
    }

    /// The idle position to hand over now, if one is pending and its gap has passed.
    pub fn take_due(&mut self, now: Instant) -> Option<(Lsn, SystemTime)> {
        if self.due_at(now)? > now {
            return None;
        }
        let (lsn, at) = self.pending.take()?;
        self.pending_activity = false;
        self.sent = lsn;
        self.last_idle = Some(now);
        self.streak = self.streak.saturating_add(1);
        Some((lsn, at))
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn first_idle_position_goes_at_once() {
        let now = Instant::now();
        let mut p = IdlePacer::new(Lsn(100));
        assert_eq!(p.due_at(now), None);
        p.keepalive(Lsn(150), T, now);
        assert_eq!(p.due_at(now), Some(now));
        assert_eq!(p.take_due(now), Some((Lsn(150), T)));
        assert_eq!(p.take_due(now), None, "handed over once");
    }

    #[test]
    fn positions_already_covered_are_ignored() {
        let now = Instant::now();
        let mut p = IdlePacer::new(Lsn(100));
        p.keepalive(Lsn(100), T, now);
        assert_eq!(p.due_at(now), None, "the start position needs no record");
        p.transaction_sent(Lsn(300));
        p.keepalive(Lsn(250), T, now);
        assert_eq!(p.due_at(now), None, "a transaction already covers it");
        p.keepalive(Lsn(280), T, now);
        p.transaction_sent(Lsn(290));
        assert_eq!(p.due_at(now), None, "superseded by a later transaction");
    }

    #[test]
    fn later_keepalive_replaces_the_pending_one() {
        let now = Instant::now();
        let mut p = IdlePacer::new(Lsn(0));
        let later = T + Duration::from_secs(1);
        p.keepalive(Lsn(10), T, now);
        p.keepalive(Lsn(20), later, now);
        p.keepalive(Lsn(15), T, now); // stale, never goes backwards
        assert_eq!(p.take_due(now), Some((Lsn(20), later)));
    }

    #[test]
    fn echo_backs_off_to_the_max_gap_and_an_event_resets_it() {
        let start = Instant::now();
        let mut p = IdlePacer::new(Lsn(0));
        let mut now = start;
        let mut lsn = 1;
        let mut gaps = Vec::new();
        // Every idle position is answered by another keepalive (its own WAL), a few ms later.
        for _ in 0..10 {
            now += Duration::from_millis(5);
            p.keepalive(Lsn(lsn), T, now);
            lsn += 1;
            let due = p.due_at(now).unwrap();
            if due > now {
                assert_eq!(p.take_due(now), None, "not before it is due");
            }
            gaps.push(due - now);
            now = due;
            assert!(p.take_due(now).is_some());
        }
        // Measured from each echo's arrival, 5 ms after the idle position before it.
        let ms: Vec<u128> = gaps.iter().map(|g| g.as_millis()).collect();
        assert_eq!(ms, [0, 15, 35, 75, 155, 315, 635, 995, 995, 995]);

        // An event transaction brings the short gap back.
        p.transaction_sent(Lsn(lsn));
        lsn += 1;
        p.keepalive(Lsn(lsn), T, now);
        assert_eq!(p.due_at(now), Some(now + MIN_GAP));
    }

    #[test]
    fn activity_outside_the_echo_window_goes_after_the_short_gap() {
        let start = Instant::now();
        let mut p = IdlePacer::new(Lsn(0));
        let mut now = start;
        // Settle into the echo rhythm: the gap is at its maximum.
        for i in 1..=10 {
            now += Duration::from_millis(5);
            p.keepalive(Lsn(i), T, now);
            now = p.due_at(now).unwrap();
            p.take_due(now);
        }
        let last_idle = now;
        // The echo of the last one: waits the long gap.
        p.keepalive(Lsn(11), T, last_idle + Duration::from_millis(5));
        assert_eq!(p.due_at(last_idle + Duration::from_millis(5)), Some(last_idle + MAX_GAP));
        // Someone else's write 300 ms later: a barrier token is waiting, go now.
        let later = last_idle + Duration::from_millis(300);
        p.keepalive(Lsn(12), T, later);
        assert_eq!(p.due_at(later), Some(later));
        assert_eq!(p.take_due(later), Some((Lsn(12), T)));
        // Its own echo waits the long gap again.
        p.keepalive(Lsn(13), T, later + Duration::from_millis(5));
        assert_eq!(p.due_at(later + Duration::from_millis(5)), Some(later + MAX_GAP));
    }

    #[test]
    fn a_long_quiet_spell_needs_no_wait() {
        let start = Instant::now();
        let mut p = IdlePacer::new(Lsn(0));
        for i in 1..=8 {
            p.keepalive(Lsn(i), T, start);
            let due = p.due_at(start).unwrap();
            p.take_due(due);
        }
        let much_later = start + Duration::from_secs(60);
        p.keepalive(Lsn(100), T, much_later);
        assert_eq!(p.due_at(much_later), Some(much_later));
    }
}
