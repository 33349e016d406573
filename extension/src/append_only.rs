//! The store is append-only for everyone: a trigger rejects UPDATE, DELETE and TRUNCATE on
//! the event store tables with ES003. The extension's own functions maintain
//! `streams` and `snapshots` inside an [`ApiWrite`] scope, which the trigger lets through on
//! tables whose trigger says `'api'`; nothing may change `events`.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{pg_sys, PgTriggerOperation};

use crate::error::{raise, EsError, RejectedChange};

thread_local! {
    /// (open scopes, local transaction id they were opened in)
    static API_WRITE: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

fn local_xid() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, set before any SQL function can run and valid
    // for the whole life of the backend; we only read one field of it.
    let proc_ = unsafe { &*pg_sys::MyProc };
    // PostgreSQL 17 moved the local transaction id into the virtual transaction id.
    #[cfg(feature = "pg15")]
    let lxid = proc_.lxid;
    #[cfg(not(feature = "pg15"))]
    let lxid = proc_.vxid.lxid;
    lxid
}

/// While alive, the extension's own statements may update `streams` and `snapshots`.
///
/// Dropped on return and on unwinding (PostgreSQL errors inside SPI unwind through Rust). The
/// scope is also tied to the local transaction id, so a scope that an abort skipped over can
/// never leak into a later transaction.
pub struct ApiWrite(());

impl ApiWrite {
    pub fn begin() -> Self {
        let lxid = local_xid();
        API_WRITE.with(|c| {
            let (depth, owner) = c.get();
            let depth = if owner == lxid { depth } else { 0 };
            c.set((depth + 1, lxid));
        });
        ApiWrite(())
    }
}

impl Drop for ApiWrite {
    fn drop(&mut self) {
        API_WRITE.with(|c| {
            let (depth, owner) = c.get();
            c.set((depth.saturating_sub(1), owner));
        });
    }
}

fn api_write_active() -> bool {
    let lxid = local_xid();
    API_WRITE.with(|c| {
        let (depth, owner) = c.get();
        depth > 0 && owner == lxid
    })
}

#[pg_trigger]
fn append_only<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let op = trigger.op()?;
    if api_write_active() && trigger.extra_args()?.iter().any(|a| a == "api") {
        // A row-level BEFORE trigger lets a change through by returning the row it acts on;
        // for a statement-level one the result is ignored (and both rows are None).
        return Ok(match op {
            PgTriggerOperation::Update => trigger.new(),
            PgTriggerOperation::Delete => trigger.old(),
            _ => None,
        });
    }
    let operation = match op {
        PgTriggerOperation::Update => "UPDATE",
        PgTriggerOperation::Delete => "DELETE",
        PgTriggerOperation::Truncate => "TRUNCATE",
        PgTriggerOperation::Insert => "INSERT",
    };
    let table = format!("{}.{}", trigger.table_schema()?, trigger.table_name()?);
    raise(EsError::AppendOnly(RejectedChange { table, operation: operation.into() }))
}
