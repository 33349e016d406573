//! Snapshots: folded state saved at a stream version, so a replay of a long stream starts there.
//! Derived data in `eventstore.snapshots`, written by these functions only (see
//! [`ApiWrite`]); `load_snapshot` is plain SQL (sql/replay.sql).
//!
//! `save_snapshot` is a raw V1 function so the state goes from its argument to the INSERT as
//! the jsonb datum it is, without a round trip through serde.

use std::cell::Cell;
use std::ffi::CStr;
use std::ptr;

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::{FromDatum, PgBuiltInOids};

use crate::append_only::ApiWrite;
use crate::envelope::validate_stream_id;
use crate::error::{raise, EsError, OrRaise};
use crate::spi::{self, oid};
use eventstore_core::snapshot::{check_name, check_version};

thread_local! {
    static VERSION_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static UPSERT_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static OWNER_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static VERSION_CHECK_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static CATALOG_CURRENT: Cell<bool> = const { Cell::new(false) };
}

const EXTVERSION_SQL: &CStr = c"
    SELECT x.extversion FROM pg_catalog.pg_extension x
    WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore'";

/// The database's extension objects are this library's version: the snapshot statements need
/// the tables as this version made them. Between installing a new library and `ALTER EXTENSION
/// pg_eventstore UPDATE`, replay, aggregate and save_snapshot refuse with 55000 instead of
/// failing on a missing column. Checked once per backend once it holds. Connected to SPI.
pub(crate) unsafe fn catalog_current() -> Result<(), EsError> {
    if CATALOG_CURRENT.with(Cell::get) {
        return Ok(());
    }
    let library = env!("CARGO_PKG_VERSION");
    // SAFETY: the caller is connected to SPI; the result table is read before the next execute.
    let installed = unsafe {
        let plan = spi::plan(&VERSION_CHECK_PLAN, EXTVERSION_SQL, &[]);
        let (t, n) = spi::execute(plan, &[], true, 1);
        if n == 0 {
            String::new()
        } else {
            spi::get_string(t, 0, 1)
        }
    };
    if installed == library {
        CATALOG_CURRENT.with(|c| c.set(true));
        Ok(())
    } else {
        Err(EsError::CatalogBehind { library, installed })
    }
}

// Schema-qualified throughout: these run inside the caller's search_path (see replay.rs).
const VERSION_SQL: &CStr = c"
    SELECT s.version FROM eventstore.streams s WHERE s.stream_id OPERATOR(pg_catalog.=) $1";

/// Saving the same snapshot again replaces its state (an UPDATE: needs [`ApiWrite`]).
const UPSERT_SQL: &CStr = c"
    INSERT INTO eventstore.snapshots AS s
        (stream_id, snapshot_name, stream_version, state, fingerprint, chains)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (stream_id, snapshot_name, stream_version)
    DO UPDATE SET state = EXCLUDED.state, fingerprint = EXCLUDED.fingerprint,
                  chains = EXCLUDED.chains, created_at = pg_catalog.now()";

const OWNER_SQL: &CStr = c"
    SELECT c.relowner FROM pg_catalog.pg_class c
    WHERE c.oid OPERATOR(pg_catalog.=) 'eventstore.snapshots'::pg_catalog.regclass::pg_catalog.oid";

/// Insert or replace a snapshot. Connected to SPI, inside an [`ApiWrite`] scope, by a role
/// that may write snapshots (the owner: see [`AsOwner`]). `fingerprint`: of the reducer that
/// folded `state`, and `chains`: the upcaster chains it was folded under (jsonb); None for an
/// administrator's snapshot.
pub(crate) unsafe fn save(
    stream_id: Datum,
    name: Datum,
    version: i64,
    state: Datum,
    fingerprint: Option<Datum>,
    chains: Option<Datum>,
) {
    use PgBuiltInOids as O;
    // SAFETY: the caller is connected to SPI, and the datums are of the plan's argument types.
    unsafe {
        let plan = spi::plan(
            &UPSERT_PLAN,
            UPSERT_SQL,
            &[
                oid(O::TEXTOID),
                oid(O::TEXTOID),
                oid(O::INT8OID),
                oid(O::JSONBOID),
                oid(O::TEXTOID),
                oid(O::JSONBOID),
            ],
        );
        let args = [
            Some(stream_id),
            Some(name),
            Some(Datum::from(version)),
            Some(state),
            fingerprint,
            chains,
        ];
        spi::execute(plan, &args, false, 0);
    }
}

/// While alive, the backend acts as the owner of the store's tables, in a restricted security
/// context (no SET ROLE, no temporary objects), as PostgreSQL does for maintenance commands.
/// `aggregate` runs the caller's reducer with the caller's rights and only then saves the state
/// it folded this way: callers cannot write snapshots themselves. Restored on drop; an error
/// in between is also undone by the transaction's abort, which resets the user id.
pub(crate) struct AsOwner {
    user: pg_sys::Oid,
    context: std::ffi::c_int,
}

impl AsOwner {
    /// Connected to SPI.
    pub(crate) unsafe fn begin() -> Self {
        // SAFETY: the caller is connected to SPI; the saved user and context are restored by
        // Drop (or by the transaction's abort), so the switch cannot outlive this value.
        unsafe {
            let plan = spi::plan(&OWNER_PLAN, OWNER_SQL, &[]);
            let (t, _) = spi::execute(plan, &[], true, 1);
            let owner = spi::get(t, 0, 1).map(|d| pg_sys::Oid::from(d.value() as u32));
            let owner = owner.expect("eventstore.snapshots has an owner");
            let (mut user, mut context) = (pg_sys::InvalidOid, 0);
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE
                | pg_sys::SECURITY_RESTRICTED_OPERATION)
                as std::ffi::c_int;
            pg_sys::SetUserIdAndSecContext(owner, context | restricted);
            AsOwner { user, context }
        }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: restores exactly what begin() read.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) }
    }
}

/// The current version of a stream (0 when absent). Connected to SPI.
unsafe fn current_version(stream_id: Datum) -> i64 {
    // SAFETY: the caller is connected to SPI and passes a text datum; the row is read at once.
    unsafe {
        let plan = spi::plan(&VERSION_PLAN, VERSION_SQL, &[oid(PgBuiltInOids::TEXTOID)]);
        let (t, n) = spi::execute(plan, &[Some(stream_id)], false, 1);
        if n == 0 {
            0
        } else {
            spi::get_i64(t, 0, 1).unwrap_or(0)
        }
    }
}

#[derive(Clone, Copy)]
struct SaveRequest {
    stream_id: Datum,
    name: Datum,
    version: i64,
    state: Datum,
}

unsafe fn save_request(fcinfo: pg_sys::FunctionCallInfo) -> Result<SaveRequest, EsError> {
    use pgrx::fcinfo::pg_getarg_datum as arg;
    // SAFETY: `fcinfo` is save_snapshot's call (text, text, bigint, jsonb), so every argument
    // read has that type; SPI is connected here and finished on the error path (on success the
    // caller finishes it).
    unsafe {
        let stream = arg(fcinfo, 0).and_then(|d| <&str>::from_datum(d, false));
        let stream = validate_stream_id(stream)?;
        check_name(arg(fcinfo, 1).and_then(|d| <&str>::from_datum(d, false)))?;
        let version = arg(fcinfo, 2)
            .map(|d| d.value() as i64)
            .ok_or_else(|| EsError::invalid("stream_version", "must not be NULL"))?;
        let state = arg(fcinfo, 3).ok_or_else(|| EsError::invalid("state", "must not be NULL"))?;
        let req = SaveRequest {
            stream_id: arg(fcinfo, 0).expect("checked"),
            name: arg(fcinfo, 1).expect("checked"),
            version,
            state,
        };
        assert_eq!(pg_sys::SPI_connect(), pg_sys::SPI_OK_CONNECT as i32);
        let checked = catalog_current()
            .and_then(|()| check_version(stream, version, current_version(req.stream_id)));
        if checked.is_err() {
            pg_sys::SPI_finish();
        }
        checked.map(|()| req)
    }
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_eventstore_save_snapshot() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `eventstore.save_snapshot(stream_id, snapshot_name, stream_version, state)`
///
/// # Safety
/// Called by PostgreSQL's function manager only, with the fcinfo of `eventstore.save_snapshot`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn eventstore_save_snapshot(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    // SAFETY: PostgreSQL calls this with a valid fcinfo for save_snapshot's signature. raise()
    // longjmps only while nothing here needs dropping; the ApiWrite guard is dropped before
    // SPI_finish.
    unsafe {
        // Connected to SPI once the request is valid.
        let req = match save_request(fcinfo) {
            Ok(r) => r,
            Err(e) => raise(e),
        };
        {
            let _api = ApiWrite::begin();
            save(req.stream_id, req.name, req.version, req.state, None, None);
        }
        pg_sys::SPI_finish();
        (*fcinfo).isnull = true;
        Datum::from(0)
    }
}

/// Remove every snapshot saved under `snapshot_name` (say, after the reducer changed);
/// returns how many were removed.
#[pg_extern(volatile, parallel_unsafe)]
fn delete_snapshots(snapshot_name: Option<&str>) -> i64 {
    let name = check_name(snapshot_name).or_raise();
    let _api = ApiWrite::begin();
    Spi::connect_mut(|client| {
        client
            .update(
                "WITH gone AS (DELETE FROM eventstore.snapshots
                               WHERE snapshot_name OPERATOR(pg_catalog.=) $1 RETURNING 1)
                 SELECT pg_catalog.count(*) FROM gone",
                Some(1),
                &[name.into()],
            )
            .and_then(|t| t.first().get_one::<i64>())
            .expect("pg_eventstore: deleting snapshots failed")
            .unwrap_or(0)
    })
}
