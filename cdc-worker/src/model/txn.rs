//! Types every layer shares: what a source transaction is to the apply path.
//!
//! At the bottom of the module graph, so the apply core, the coordination protocol and the
//! commit-order map can all name a transaction without importing each other.

use std::time::SystemTime;

use crate::model::Lsn;

/// A source transaction as the apply path sees it: never split across target transactions.
/// One without events is an idle position (see `stream/idle.rs`): it only moves checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTxn {
    pub end_lsn: Lsn,
    /// Source server time at `end_lsn`: the commit time from the stream, the server clock of an
    /// idle position; recorded with the checkpoint for lag. Transactions read back from
    /// `eventstore.events` (catch-ups, builds) do not know their commit time: they carry the
    /// latest `recorded_at` of their events (see `source_map::fetch`).
    pub source_time: SystemTime,
    /// `transaction_id` (xid8) of its events: the key of the commit-order map. `None` for a
    /// transaction without events (an idle position among them), which is not recorded there.
    pub transaction_id: Option<u64>,
    pub events: Vec<Event>,
    pub bytes: usize,
}

/// One event of a source transaction, as its handlers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_type: String,
    pub global_position: i64,
    /// The envelope as JSON text: stream_id, stream_version, global_position, event_id, type,
    /// data, metadata, recorded_at.
    pub envelope: String,
}
