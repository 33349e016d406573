//! Transaction assembly: decoded pgoutput messages in stream order (Begin, Relation, Insert …,
//! Commit) become whole source transactions of `eventstore.events` inserts. Pure: the stream
//! reader feeds it one message at a time and acts on what each one completes.

use std::time::SystemTime;

use tracing::error;

use crate::decode::envelope::{self, EnvelopeError};
use crate::decode::pgoutput::{Message, RelationCache};
use crate::model::{Lsn, SourceTxn};
use crate::replication::pg_time;

/// A message out of order, or an insert whose columns do not make an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssemblyError {
    #[error("pgoutput: Begin inside an open transaction")]
    NestedBegin,
    #[error("pgoutput: Commit without Begin")]
    CommitWithoutBegin,
    #[error("pgoutput: Insert outside a transaction")]
    InsertOutsideTransaction,
    #[error("pgoutput: Insert for relation {0} before its Relation message")]
    UnknownRelation(u32),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// What one message did.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing the reader acts on (a relation, another table's change, an event added).
    Nothing,
    /// A transaction opened.
    Began,
    /// A transaction committed: hand it to the apply path.
    Committed(SourceTxn),
}

/// The relations seen so far and the transaction being assembled.
#[derive(Debug, Default)]
pub struct Assembler {
    relations: RelationCache,
    /// The OID of `eventstore.events`, once its Relation message came.
    events_relation: Option<u32>,
    open: Option<SourceTxn>,
}

impl Assembler {
    /// Whether a transaction is open (between Begin and Commit).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    pub fn push(&mut self, message: Message) -> Result<Step, AssemblyError> {
        match message {
            Message::Begin(_) => {
                if self.open.is_some() {
                    return Err(AssemblyError::NestedBegin);
                }
                self.open = Some(SourceTxn {
                    end_lsn: Lsn::ZERO,
                    source_time: SystemTime::UNIX_EPOCH,
                    transaction_id: None,
                    events: Vec::new(),
                    bytes: 0,
                });
                Ok(Step::Began)
            }
            Message::Commit(c) => {
                let Some(mut txn) = self.open.take() else {
                    return Err(AssemblyError::CommitWithoutBegin);
                };
                txn.end_lsn = c.end_lsn;
                txn.source_time = pg_time(c.commit_time);
                Ok(Step::Committed(txn))
            }
            Message::Relation(r) => {
                if r.namespace == "eventstore" && r.name == "events" {
                    self.events_relation = Some(r.oid);
                }
                self.relations.update(r);
                Ok(Step::Nothing)
            }
            Message::Insert { relation, new } => {
                let Some(txn) = self.open.as_mut() else {
                    return Err(AssemblyError::InsertOutsideTransaction);
                };
                if Some(relation) != self.events_relation {
                    return Ok(Step::Nothing); // another table in the publication: not ours
                }
                let Some(rel) = self.relations.get(relation) else {
                    return Err(AssemblyError::UnknownRelation(relation));
                };
                if txn.transaction_id.is_none() {
                    txn.transaction_id = Some(envelope::transaction_id(rel, &new)?);
                }
                let ev = envelope::from_insert(rel, &new)?;
                txn.bytes += ev.envelope.len();
                txn.events.push(ev);
                Ok(Step::Nothing)
            }
            Message::Update { relation, .. } | Message::Delete { relation, .. }
                if Some(relation) == self.events_relation =>
            {
                // The event log is append-only; a change here means someone bypassed its triggers.
                error!("eventstore.events row updated or deleted; read models cannot follow and ignore it");
                Ok(Step::Nothing)
            }
            Message::Truncate { relations: truncated, .. }
                if truncated.iter().any(|r| Some(*r) == self.events_relation) =>
            {
                error!("eventstore.events truncated; read models cannot follow and ignore it");
                Ok(Step::Nothing)
            }
            Message::Update { .. } | Message::Delete { .. } | Message::Truncate { .. } => {
                Ok(Step::Nothing)
            }
            Message::Origin { .. } | Message::Type { .. } | Message::Message { .. } => {
                Ok(Step::Nothing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::pgoutput::{decode, fixtures};

    const COLUMNS: [&str; 11] = [
        "global_position",
        "stream_id",
        "stream_version",
        "event_id",
        "event_type",
        "data",
        "metadata",
        "recorded_at",
        "transaction_id",
        "schema_version",
        "tags",
    ];

    fn msg(bytes: Vec<u8>) -> Message {
        decode(&bytes).unwrap()
    }

    fn events_relation(oid: u32) -> Message {
        let cols: Vec<(&str, u32)> = COLUMNS.iter().map(|c| (*c, 25)).collect();
        msg(fixtures::relation(oid, "eventstore", "events", &cols))
    }

    fn insert(oid: u32, position: i64, xid: u64) -> Message {
        let (pos, xid) = (position.to_string(), xid.to_string());
        msg(fixtures::insert(
            oid,
            &[
                Some(&pos),
                Some("order-1"),
                Some("1"),
                Some("0190c1f2-0000-7000-8000-000000000001"),
                Some("OrderPlaced"),
                Some("{}"),
                Some("{}"),
                Some("2024-05-01 10:00:00+00"),
                Some(&xid),
                Some("1"),
                Some("{}"),
            ],
        ))
    }

    fn committed(step: Step) -> SourceTxn {
        match step {
            Step::Committed(txn) => txn,
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    #[test]
    fn inserts_between_begin_and_commit_make_one_transaction() {
        let mut a = Assembler::default();
        assert_eq!(a.push(events_relation(16)).unwrap(), Step::Nothing);
        assert!(!a.in_transaction());
        assert_eq!(a.push(msg(fixtures::begin(0x30, 9))).unwrap(), Step::Began);
        assert!(a.in_transaction());
        assert_eq!(a.push(insert(16, 1, 700)).unwrap(), Step::Nothing);
        assert_eq!(a.push(insert(16, 2, 700)).unwrap(), Step::Nothing);
        let txn = committed(a.push(msg(fixtures::commit(0x30, 0x38))).unwrap());
        assert!(!a.in_transaction());
        assert_eq!(txn.end_lsn, Lsn(0x38));
        assert_eq!(txn.source_time, pg_time(777));
        assert_eq!(txn.transaction_id, Some(700));
        assert_eq!(txn.events.iter().map(|e| e.global_position).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(txn.bytes, txn.events.iter().map(|e| e.envelope.len()).sum::<usize>());

        // The next transaction starts afresh.
        a.push(msg(fixtures::begin(0x40, 10))).unwrap();
        a.push(insert(16, 3, 701)).unwrap();
        let txn = committed(a.push(msg(fixtures::commit(0x40, 0x48))).unwrap());
        assert_eq!((txn.transaction_id, txn.events.len()), (Some(701), 1));
    }

    #[test]
    fn a_transaction_without_events_commits_empty() {
        let mut a = Assembler::default();
        a.push(events_relation(16)).unwrap();
        a.push(msg(fixtures::begin(0x30, 9))).unwrap();
        // Another table of the publication: not an event.
        let other = msg(fixtures::relation(17, "public", "orders", &[("id", 25)]));
        a.push(other).unwrap();
        a.push(msg(fixtures::insert(17, &[Some("x")]))).unwrap();
        let txn = committed(a.push(msg(fixtures::commit(0x30, 0x38))).unwrap());
        assert_eq!((txn.end_lsn, txn.transaction_id, txn.bytes), (Lsn(0x38), None, 0));
        assert!(txn.events.is_empty());
    }

    #[test]
    fn a_relation_message_mid_transaction_is_used_from_then_on() {
        let mut a = Assembler::default();
        a.push(msg(fixtures::begin(0x30, 9))).unwrap();
        // Before the events relation is announced an insert for its OID is not ours yet.
        assert_eq!(a.push(insert(16, 1, 700)).unwrap(), Step::Nothing);
        a.push(events_relation(16)).unwrap();
        a.push(insert(16, 2, 700)).unwrap();
        // Announced again (a definition change): replaces the cached one.
        a.push(events_relation(16)).unwrap();
        a.push(insert(16, 3, 700)).unwrap();
        let txn = committed(a.push(msg(fixtures::commit(0x30, 0x38))).unwrap());
        assert_eq!(txn.events.iter().map(|e| e.global_position).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn frames_out_of_order_are_errors() {
        let mut a = Assembler::default();
        assert_eq!(
            a.push(msg(fixtures::commit(0x30, 0x38))),
            Err(AssemblyError::CommitWithoutBegin)
        );
        a.push(events_relation(16)).unwrap();
        assert_eq!(a.push(insert(16, 1, 700)), Err(AssemblyError::InsertOutsideTransaction));
        a.push(msg(fixtures::begin(0x30, 9))).unwrap();
        assert_eq!(a.push(msg(fixtures::begin(0x40, 10))), Err(AssemblyError::NestedBegin));
        assert_eq!(
            AssemblyError::CommitWithoutBegin.to_string(),
            "pgoutput: Commit without Begin",
            "the messages the session log has always shown"
        );
    }

    #[test]
    fn an_insert_that_is_not_an_event_is_an_error() {
        let mut a = Assembler::default();
        a.push(events_relation(16)).unwrap();
        a.push(msg(fixtures::begin(0x30, 9))).unwrap();
        let bad = msg(fixtures::insert(16, &[Some("1")]));
        assert!(matches!(a.push(bad), Err(AssemblyError::Envelope(_))));
    }
}
