//! The statements of one batch transaction, sent as one pipeline: each entry's future and what
//! it is for, so that the first error tells whose it is (a handler's event, an apply function's
//! call, or the worker's own savepoints and checkpoints).

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use futures_util::future::join_all;
use tokio_postgres::{Client, Statement};

use crate::apply::prepare::{Handler, ProjectionState};
use crate::model::{Event, Lsn, SourceTxn};
use crate::pg::types::JsonText;

/// Bounds of one call of an apply function. The server keeps every envelope it parsed for a call
/// until the call ends; calls of this size reuse that memory, where one call per batch faulted
/// in fresh pages every time (measured: 15 times fewer page faults than 6,000-event calls).
pub(super) const CALL_MAX_EVENTS: usize = 1000;
pub(super) const CALL_MAX_BYTES: usize = 1 << 20;

/// Splits envelopes into consecutive calls within the bounds above (at least one call, so that
/// an empty batch still runs the statement).
pub(super) fn call_ranges(envelopes: &[JsonText<'_>]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in envelopes.iter().enumerate() {
        if i > start && (i - start == CALL_MAX_EVENTS || bytes + e.0.len() > CALL_MAX_BYTES) {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += e.0.len();
    }
    ranges.push(start..envelopes.len());
    ranges
}

/// Source time of the batch's transaction ending at `lsn`.
pub(super) fn source_time(batch: &[SourceTxn], lsn: Lsn) -> SystemTime {
    batch.iter().find(|t| t.end_lsn == lsn).map_or(SystemTime::UNIX_EPOCH, |t| t.source_time)
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// What an entry of the pipeline is, to tell what its error means.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner<'b> {
    /// Savepoint, checkpoint or release: an error here is not a handler's.
    Control,
    /// One handler statement for one event of the source transaction ending at the LSN.
    Event(Lsn, &'b Event),
    /// One call of the projection's apply function for a run of events.
    Function,
}

/// Statements queued on one connection, each with the projection (by index) and the part it
/// belongs to. Nothing is sent until [`Pipeline::run`] polls them together.
pub(super) struct Pipeline<'a, 'b> {
    client: &'a Client,
    entries: Vec<(Pending<'a>, usize, Owner<'b>)>,
}

/// One projection's share of a batch for [`Pipeline::projection`]: its handler work, the
/// function its compiled handlers go through (if any), and the checkpoint to record.
pub(super) struct Part<'a, 'b, 'w> {
    pub index: usize,
    pub projection: &'a ProjectionState,
    pub function: Option<&'a Statement>,
    pub work: &'w [(&'a Handler, Lsn, &'b Event)],
    /// The checkpoint statement and the position and source time it records.
    pub checkpoint: (&'a Statement, Lsn, SystemTime),
}

impl<'a, 'b: 'a> Pipeline<'a, 'b> {
    pub fn new(client: &'a Client) -> Self {
        Pipeline { client, entries: Vec::new() }
    }

    pub fn push(
        &mut self,
        index: usize,
        owner: Owner<'b>,
        statement: impl Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a,
    ) {
        self.entries.push((Box::pin(statement), index, owner));
    }

    /// A statement of the worker's own (a savepoint, a release), for projection `index`.
    pub fn control(&mut self, index: usize, sql: &'static str) {
        let client = self.client;
        self.push(index, Owner::Control, async move { client.batch_execute(sql).await.map(|_| 0) });
    }

    /// Queues one projection's part of a batch: savepoint, handler work, checkpoint, release.
    /// With a function, consecutive events whose handlers are compiled into it go out as one
    /// call; the others (and all of them without a function) as one statement each.
    pub fn projection(&mut self, part: Part<'a, 'b, '_>) {
        let Part { index: i, projection: p, function, work, checkpoint } = part;
        let client = self.client;
        self.control(i, "SAVEPOINT eventstore_projection");
        let mut run = FunctionRun::default();
        for &(handler, lsn, ev) in work {
            match (function, handler.number) {
                (Some(f), Some(number)) => {
                    if run.numbers.len() == CALL_MAX_EVENTS
                        || run.bytes + ev.envelope.len() > CALL_MAX_BYTES
                    {
                        run.flush(self, f, i);
                    }
                    run.numbers.push(number);
                    run.envelopes.push(JsonText(&ev.envelope));
                    run.bytes += ev.envelope.len();
                }
                _ => {
                    if let Some(f) = function {
                        run.flush(self, f, i);
                    }
                    let statement = &handler.statement;
                    self.push(i, Owner::Event(lsn, ev), async move {
                        client.execute(statement, &[&JsonText(&ev.envelope)]).await
                    });
                }
            }
        }
        if let Some(f) = function {
            run.flush(self, f, i);
        }
        let (statement, to, time) = checkpoint;
        let name = p.name.as_str();
        let count = work.len() as i64;
        self.push(i, Owner::Control, async move {
            client.execute(statement, &[&name, &to, &count, &time]).await
        });
        self.control(i, "RELEASE SAVEPOINT eventstore_projection");
    }

    /// Sends everything queued and waits for all of it; the first error in queue order, with
    /// whose it is.
    pub async fn run(self) -> Option<(usize, Owner<'b>, tokio_postgres::Error)> {
        let (futures, owners): (Vec<_>, Vec<_>) =
            self.entries.into_iter().map(|(f, i, owner)| (f, (i, owner))).unzip();
        join_all(futures)
            .await
            .into_iter()
            .zip(owners)
            .find_map(|(r, (i, owner))| r.err().map(|e| (i, owner, e)))
    }
}

/// Consecutive events for one call of the apply function: handler numbers and envelopes, bound
/// as arrays.
#[derive(Default)]
struct FunctionRun<'b> {
    numbers: Vec<i32>,
    envelopes: Vec<JsonText<'b>>,
    bytes: usize,
}

impl<'b> FunctionRun<'b> {
    fn flush<'a>(&mut self, pipeline: &mut Pipeline<'a, 'b>, function: &'a Statement, i: usize)
    where
        'b: 'a,
    {
        if self.numbers.is_empty() {
            return;
        }
        let FunctionRun { numbers, envelopes, .. } = std::mem::take(self);
        let client = pipeline.client;
        pipeline.push(i, Owner::Function, async move {
            client.execute(function, &[&numbers, &envelopes]).await
        });
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_stay_within_their_bounds() {
        let small = "x".repeat(100);
        let envelopes: Vec<JsonText<'_>> = (0..2500).map(|_| JsonText(&small)).collect();
        assert_eq!(call_ranges(&envelopes), [0..1000, 1000..2000, 2000..2500]);
        let none = call_ranges(&[]);
        assert!(none.len() == 1 && none[0].is_empty(), "one call even for no events: {none:?}");

        let big = "x".repeat(CALL_MAX_BYTES / 2 + 1);
        let envelopes = [JsonText(&big), JsonText(&small), JsonText(&big), JsonText(&big)];
        assert_eq!(call_ranges(&envelopes), [0..2, 2..3, 3..4]);
        let huge = "x".repeat(CALL_MAX_BYTES * 2);
        assert_eq!(
            call_ranges(&[JsonText(&huge), JsonText(&small)]),
            [0..1, 1..2],
            "an oversized event goes alone"
        );
    }
}
