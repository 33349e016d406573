//! `replay` and `aggregate`: fold a stream's events into state with any reducer
//! `(state jsonb, event eventstore.events) RETURNS jsonb`, optionally starting from a snapshot.
//!
//! The fold is the hot path. It reads the stream through one SPI cursor on a plan prepared
//! once per backend, fetched in chunks, and calls the reducer through the function manager
//! with an `FmgrInfo` set up once per replay: no SQL round trip per event. When the reducer is
//! `eventstore.merge`, the state stays a `serde_json::Value` between events and only each
//! event's `data` is converted.
//!
//! Why these are raw V1 functions rather than `#[pg_extern]`s: a reducer's error must reach the
//! caller with its own SQLSTATE (say `AB123` from a PL/pgSQL `RAISE`). pgrx catches a
//! PostgreSQL error that crosses one of its guarded calls and re-raises it with a code it knows
//! (or XX000) and without CONTEXT, so the reducer is invoked through its bare `fn_addr`
//! pointer, the way `FunctionCallInvoke` does, and its error longjmps straight to the caller's
//! handler. Nothing on the frames it skips needs dropping: the generic fold only holds the
//! `Copy` struct [`Fold`] (raw pointers, datums, integers) — the compiler checks that — and
//! its memory lives in PostgreSQL memory contexts, which the error handler cleans up along
//! with the SPI connection and the cursor.

use std::cell::Cell;
use std::ffi::CStr;
use std::ptr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, JsonB, PgBuiltInOids};
use serde_json::Value;

use crate::append_only::ApiWrite;
use crate::envelope::validate_stream_id;
use crate::error::{raise, EsError};
use crate::jsonb::{JsonError, READ_DEPTH_LIMIT};
use crate::spi::{self, oid};
use crate::{merge, snapshot, upcast};
use eventstore_core::replay::{check_snapshot_every, check_snapshot_name, check_until_version};

extension_sql_file!("sql/replay.sql", name = "replay", requires = ["finalize"]);

/// Rows fetched from the cursor per round. Small enough that a chunk's memory stays in
/// malloc's reusable arenas instead of being mapped and unmapped each round.
const CHUNK: std::ffi::c_long = 128;

// ---------------------------------------------------------------------------------------------
// Plans, prepared on first use and kept for the life of the backend.

thread_local! {
    static REDUCER_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static LATE_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static SNAPSHOT_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static CHAINS_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static EVENTS_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    static DATA_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
}

// replay and aggregate run the caller's reducer, so they cannot pin search_path for it: every
// function, operator and type in the statements below is schema-qualified instead, and they
// mean the same whatever path the caller set (docs/security.md).

/// What the reducer is: does it fit ($2 is jsonb's type OID), may the caller run
/// it, what are its names, and its fingerprint: a snapshot is used only under the reducer
/// definition that folded it. `merge`'s logic is the extension's, so its fingerprint is the
/// extension's version; any other reducer's is its definition (`_definition`: no OIDs, so
/// snapshots survive pg_dump and pg_upgrade).
const REDUCER_SQL: &CStr = c"
    SELECT p.pronargs OPERATOR(pg_catalog.=) 2 AND p.prokind OPERATOR(pg_catalog.=) 'f'
           AND NOT p.proretset AND p.prorettype OPERATOR(pg_catalog.=) $2
           AND p.proargtypes[0] OPERATOR(pg_catalog.=) $2
           AND p.proargtypes[1] OPERATOR(pg_catalog.=)
               (SELECT c.reltype FROM pg_catalog.pg_class c
                WHERE c.oid OPERATOR(pg_catalog.=)
                      'eventstore.events'::pg_catalog.regclass::pg_catalog.oid),
           p.oid::pg_catalog.regprocedure::pg_catalog.text,
           pg_catalog.concat(pg_catalog.quote_ident(n.nspname), '.',
                             pg_catalog.quote_ident(p.proname)),
           m.is_merge,
           pg_catalog.has_function_privilege(p.oid, 'EXECUTE'),
           pg_catalog.md5(CASE WHEN m.is_merge
               THEN (SELECT pg_catalog.concat('pg_eventstore ', x.extversion)
                     FROM pg_catalog.pg_extension x
                     WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore')
               ELSE eventstore._definition(p.oid::pg_catalog.regprocedure) END)
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace,
    LATERAL (SELECT n.nspname OPERATOR(pg_catalog.=) 'eventstore'
                    AND p.proname OPERATOR(pg_catalog.=) 'merge' AS is_merge) m
    WHERE p.oid OPERATOR(pg_catalog.=) $1";

/// The first version recorded after `as_of`: the fold stops before it.
const LATE_SQL: &CStr = c"
    SELECT pg_catalog.min(e.stream_version) FROM eventstore.events e
    WHERE e.stream_id OPERATOR(pg_catalog.=) $1 AND e.recorded_at OPERATOR(pg_catalog.>) $2";

/// The newest snapshot at or below $3 folded by this reducer definition ($4) under today's
/// upcaster chains ($5: type -> fingerprint, types without a chain left out) for every type it
/// folded, or saved by an administrator (no fingerprint).
const SNAPSHOT_SQL: &CStr = c"
    SELECT s.stream_version, s.state, s.chains FROM eventstore.snapshots s
    WHERE s.stream_id OPERATOR(pg_catalog.=) $1 AND s.snapshot_name OPERATOR(pg_catalog.=) $2
      AND s.stream_version OPERATOR(pg_catalog.<=) $3
      AND (s.fingerprint IS NULL
           OR (s.fingerprint OPERATOR(pg_catalog.=) $4 AND s.chains IS NOT NULL
               AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_each_text(s.chains) c
                               WHERE c.value OPERATOR(pg_catalog.<>)
                                     coalesce($5 OPERATOR(pg_catalog.->>) c.key, ''))))
    ORDER BY s.stream_version DESC LIMIT 1";

/// The chains a new snapshot at $3 was folded under: those of the snapshot the fold started
/// from ($5, at $2), and today's ($4) for every type stored in the events folded since.
const CHAINS_SQL: &CStr = c"
    SELECT coalesce($5, '{}'::pg_catalog.jsonb) OPERATOR(pg_catalog.||)
           coalesce((SELECT pg_catalog.jsonb_object_agg(t.event_type,
                                coalesce($4 OPERATOR(pg_catalog.->>) t.event_type, ''))
                     FROM (SELECT DISTINCT e.event_type FROM eventstore.events e
                           WHERE e.stream_id OPERATOR(pg_catalog.=) $1
                             AND e.stream_version OPERATOR(pg_catalog.>) $2
                             AND e.stream_version OPERATOR(pg_catalog.<=) $3) t),
                    '{}'::pg_catalog.jsonb)";

/// Events after version $2 up to $3, as whole rows, upcast unless $4 is false (see upcast.rs).
const EVENTS_SQL: &CStr = c"
    SELECT e.stream_version,
           ROW(e.global_position, e.stream_id, e.stream_version, e.event_id,
               eventstore._upcast_type(e.event_type, e.schema_version, $4),
               eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, $4,
                                       e.stream_id, e.stream_version, e.global_position),
               e.metadata, e.recorded_at, e.transaction_id,
               eventstore._upcast_version(e.event_type, e.schema_version, $4),
               e.tags)::eventstore.events
    FROM eventstore.events e
    WHERE e.stream_id OPERATOR(pg_catalog.=) $1 AND e.stream_version OPERATOR(pg_catalog.>) $2
      AND e.stream_version OPERATOR(pg_catalog.<=) $3
    ORDER BY e.stream_version";

/// The same events, only their data (and position, for errors): all `merge` needs.
const DATA_SQL: &CStr = c"
    SELECT e.stream_version,
           eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, $4,
                                   e.stream_id, e.stream_version, e.global_position),
           e.global_position
    FROM eventstore.events e
    WHERE e.stream_id OPERATOR(pg_catalog.=) $1 AND e.stream_version OPERATOR(pg_catalog.>) $2
      AND e.stream_version OPERATOR(pg_catalog.<=) $3
    ORDER BY e.stream_version";

unsafe extern "C-unwind" {
    /// SPI_cursor_fetch without pgrx's guard: the fetch runs upcasters (user code), and their
    /// errors must reach the caller with their own SQLSTATE and context, as a reducer's do.
    #[link_name = "SPI_cursor_fetch"]
    fn spi_cursor_fetch_unguarded(portal: pg_sys::Portal, forward: bool, count: std::ffi::c_long);
}

/// Fetch the next `count` rows. An upcaster's error longjmps from here: callers hold only
/// `Copy` values (see the module comment).
unsafe fn cursor_fetch(portal: pg_sys::Portal, count: std::ffi::c_long) {
    // SAFETY: the caller passes an open portal and is connected to SPI.
    unsafe { spi_cursor_fetch_unguarded(portal, true, count) }
}

/// A copy of the varlena `datum` in `cxt`, detoasted.
pub(crate) unsafe fn copy_varlena(cxt: pg_sys::MemoryContext, datum: Datum) -> Datum {
    // SAFETY: the caller passes a live varlena datum and a live context; the previous context
    // is switched back before returning (pg_detoast_datum_copy raises, never returns NULL).
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(cxt);
        let copy = pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr());
        pg_sys::MemoryContextSwitchTo(old);
        Datum::from(copy)
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments.

/// `replay`'s and `aggregate`'s arguments, as datums (all `Copy`).
#[derive(Clone, Copy)]
struct Request {
    stream_id: Datum,
    reducer: Oid,
    initial_state: Option<Datum>,
    until_version: Option<i64>,
    as_of: Option<Datum>,
    /// None: derived from the reducer.
    snapshot_name: Option<Datum>,
    /// aggregate: save a snapshot when at least this many events were folded (None: never).
    snapshot_every: Option<i64>,
    /// replay reads only; aggregate may write a snapshot.
    read_only: bool,
    /// Fold events upcast to their current version (false: as stored).
    upcast: bool,
}

unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<Datum> {
    // SAFETY: the caller passes the live fcinfo of replay or aggregate, which have arg n.
    unsafe { pgrx::fcinfo::pg_getarg_datum(fcinfo, n) }
}

/// The trailing `upcast` argument (NULL: true). An older release's declaration, called between
/// installing this library and ALTER EXTENSION UPDATE, has no such argument.
unsafe fn upcast_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> bool {
    // SAFETY: the argument is read only when the call has it.
    unsafe { (*fcinfo).nargs as usize <= n || arg(fcinfo, n).is_none_or(|d| d.value() != 0) }
}

unsafe fn text_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<&'a str> {
    // SAFETY: the caller names a text argument of the live call; 'a does not outlive it.
    unsafe { arg(fcinfo, n).and_then(|d| <&str>::from_datum(d, false)) }
}

unsafe fn replay_request(fcinfo: pg_sys::FunctionCallInfo) -> Result<Request, EsError> {
    // SAFETY: `fcinfo` is replay's call: (text, regprocedure, jsonb, bigint, timestamptz,
    // text, boolean), the types each argument is read as here.
    unsafe {
        validate_stream_id(text_arg(fcinfo, 0))?;
        let reducer = arg(fcinfo, 1)
            .map(|d| Oid::from(d.value() as u32))
            .ok_or_else(|| EsError::invalid("reducer", "must not be NULL"))?;
        let until_version = check_until_version(arg(fcinfo, 3).map(|d| d.value() as i64))?;
        check_snapshot_name(text_arg(fcinfo, 5))?;
        Ok(Request {
            stream_id: arg(fcinfo, 0).expect("checked"),
            reducer,
            initial_state: arg(fcinfo, 2),
            until_version,
            as_of: arg(fcinfo, 4),
            snapshot_name: arg(fcinfo, 5),
            snapshot_every: None,
            read_only: true,
            upcast: upcast_arg(fcinfo, 6),
        })
    }
}

unsafe fn aggregate_request(fcinfo: pg_sys::FunctionCallInfo) -> Result<Request, EsError> {
    // SAFETY: `fcinfo` is _aggregate's call: (text, regprocedure, jsonb, integer, boolean), the
    // types each argument is read as here.
    unsafe {
        validate_stream_id(text_arg(fcinfo, 0))?;
        let reducer = arg(fcinfo, 1)
            .map(|d| Oid::from(d.value() as u32))
            .ok_or_else(|| EsError::invalid("reducer", "must not be NULL"))?;
        let snapshot_every = check_snapshot_every(arg(fcinfo, 3).map(|d| d.value() as i32 as i64))?;
        Ok(Request {
            stream_id: arg(fcinfo, 0).expect("checked"),
            reducer,
            initial_state: arg(fcinfo, 2),
            until_version: None,
            as_of: None,
            snapshot_name: None,
            snapshot_every,
            read_only: false,
            upcast: upcast_arg(fcinfo, 4),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The fold.

/// Where a fold starts and how it calls the reducer. Only `Copy` data: see the module comment.
#[derive(Clone, Copy)]
struct Fold {
    portal: pg_sys::Portal,
    /// None when the reducer is `eventstore.merge` (folded in Rust).
    fcinfo: Option<pg_sys::FunctionCallInfo>,
    strict: bool,
    /// The state so far, a detoasted jsonb in `state_cxt` (or NULL).
    state: Option<Datum>,
    state_cxt: pg_sys::MemoryContext,
    /// Reset after every reducer call.
    call_cxt: pg_sys::MemoryContext,
    /// Version of the last event folded (or of the snapshot, or 0).
    version: i64,
    /// Events folded (past the snapshot, if any).
    folded: i64,
    /// The snapshot name used, in `state_cxt`.
    snapshot_name: Datum,
    /// The reducer's fingerprint (text), in `state_cxt`.
    fingerprint: Datum,
    /// Today's chain fingerprints (jsonb, see [`SNAPSHOT_SQL`]), in `state_cxt`.
    chains_now: Datum,
    /// The snapshot the fold started from: its version (or 0) and chains (jsonb, in `state_cxt`).
    from_version: i64,
    from_chains: Option<Datum>,
    /// The stream id, for errors.
    stream_id: Datum,
}

/// Look up the reducer, pick the snapshot and open the cursor. Connected to SPI.
unsafe fn start(req: &Request, state_cxt: pg_sys::MemoryContext) -> Result<Fold, EsError> {
    use PgBuiltInOids as O;
    // SAFETY: the caller is connected to SPI and `state_cxt` lives until the fold is done; each
    // result table is read before the next execute, and what must outlive it is copied into
    // `state_cxt`.
    unsafe {
        snapshot::catalog_current()?;
        let plan = spi::plan(&REDUCER_PLAN, REDUCER_SQL, &[oid(O::OIDOID), oid(O::OIDOID)]);
        let args = [Some(Datum::from(req.reducer)), Some(Datum::from(oid(O::JSONBOID)))];
        let (t, n) = spi::execute(plan, &args, true, 1);
        if n == 0 {
            return Err(EsError::invalid(
                "reducer",
                format!("no function has OID {}", req.reducer.to_u32()),
            ));
        }
        let fits = spi::get_bool(t, 0, 1);
        let display = spi::get_string(t, 0, 2);
        if !fits {
            return Err(EsError::invalid(
                "reducer",
                format!(
                    "{display} does not fit: a reducer is a function \
                     (state jsonb, event eventstore.events) RETURNS jsonb"
                ),
            ));
        }
        if !spi::get_bool(t, 0, 5) {
            // A built-in code pgrx knows, so its ereport keeps it.
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for function {display}")
            );
        }
        let is_merge = spi::get_bool(t, 0, 4);
        let fingerprint = copy_varlena(state_cxt, spi::get(t, 0, 6).expect("md5 is not NULL"));
        let snapshot_name = match req.snapshot_name {
            Some(name) => copy_varlena(state_cxt, name),
            None => copy_varlena(state_cxt, spi::get(t, 0, 3).expect("names are not NULL")),
        };

        // The last version folded, and the newest a snapshot may have: within until_version,
        // and before the first event recorded after as_of. `as_of` cuts the stream at one
        // point, so the state is always that of a prefix of the stream: one that existed.
        let mut bound = req.until_version.unwrap_or(i64::MAX);
        if let Some(as_of) = req.as_of {
            let plan = spi::plan(&LATE_PLAN, LATE_SQL, &[oid(O::TEXTOID), oid(O::TIMESTAMPTZOID)]);
            let (t, _) = spi::execute(plan, &[Some(req.stream_id), Some(as_of)], req.read_only, 1);
            if let Some(late) = spi::get_i64(t, 0, 1) {
                bound = bound.min(late - 1);
            }
        }

        let mut state = req.initial_state.map(|d| copy_varlena(state_cxt, d));
        let mut version = 0;
        let mut from_chains = None;
        let chains_now = {
            let old = pg_sys::MemoryContextSwitchTo(state_cxt);
            let chains = upcast::chain_fingerprints(req.upcast);
            pg_sys::MemoryContextSwitchTo(old);
            chains
        };
        if bound > 0 {
            let plan = spi::plan(
                &SNAPSHOT_PLAN,
                SNAPSHOT_SQL,
                &[
                    oid(O::TEXTOID),
                    oid(O::TEXTOID),
                    oid(O::INT8OID),
                    oid(O::TEXTOID),
                    oid(O::JSONBOID),
                ],
            );
            let args = [
                Some(req.stream_id),
                Some(snapshot_name),
                Some(Datum::from(bound)),
                Some(fingerprint),
                Some(chains_now),
            ];
            let (t, n) = spi::execute(plan, &args, req.read_only, 1);
            if n > 0 {
                version = spi::get_i64(t, 0, 1).expect("NOT NULL");
                state = Some(copy_varlena(state_cxt, spi::get(t, 0, 2).expect("NOT NULL")));
                from_chains = spi::get(t, 0, 3).map(|d| copy_varlena(state_cxt, d));
            }
        }

        let types = [oid(O::TEXTOID), oid(O::INT8OID), oid(O::INT8OID), oid(O::BOOLOID)];
        let plan = if is_merge {
            spi::cursor_plan(&DATA_PLAN, DATA_SQL, &types)
        } else {
            spi::cursor_plan(&EVENTS_PLAN, EVENTS_SQL, &types)
        };
        let args = [
            Some(req.stream_id),
            Some(Datum::from(version)),
            Some(Datum::from(bound)),
            Some(Datum::from(req.upcast)),
        ];
        let mut values = spi::values(&args);
        let nulls = spi::nulls(&args);
        let portal = pg_sys::SPI_cursor_open(
            ptr::null(),
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            req.read_only,
        );
        assert!(!portal.is_null(), "pg_eventstore: could not open the event cursor");

        let (fcinfo, strict) = if is_merge {
            (None, false)
        } else {
            // FmgrInfo and the call frame live as long as the fold; fmgr_info also sets up
            // SECURITY DEFINER and SET-clause reducers.
            let flinfo = pg_sys::MemoryContextAllocZero(state_cxt, size_of::<pg_sys::FmgrInfo>())
                as *mut pg_sys::FmgrInfo;
            pg_sys::fmgr_info_cxt(req.reducer, flinfo, state_cxt);
            let size = size_of::<pg_sys::FunctionCallInfoBaseData>()
                + 2 * size_of::<pg_sys::NullableDatum>();
            let fcinfo =
                pg_sys::MemoryContextAllocZero(state_cxt, size) as pg_sys::FunctionCallInfo;
            (*fcinfo).flinfo = flinfo;
            (*fcinfo).nargs = 2;
            (*fcinfo).fncollation = pg_sys::InvalidOid;
            (Some(fcinfo), (*flinfo).fn_strict)
        };

        let call_cxt = pg_sys::AllocSetContextCreateInternal(
            state_cxt,
            c"eventstore reducer call".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        Ok(Fold {
            portal,
            fcinfo,
            strict,
            state,
            state_cxt,
            call_cxt,
            version,
            folded: 0,
            snapshot_name,
            fingerprint,
            chains_now,
            from_version: version,
            from_chains,
            stream_id: req.stream_id,
        })
    }
}

/// Fold every event of the cursor through a reducer called via the function manager.
///
/// Only `Copy` values are alive here, so when the reducer raises an error and PostgreSQL
/// longjmps over this frame, nothing is left undropped.
unsafe fn fold_with_fmgr(mut f: Fold, fcinfo: pg_sys::FunctionCallInfo) -> Fold {
    // SAFETY: `fcinfo` was set up by start() for this reducer (two arguments, fmgr_info done),
    // the portal is open, and only Copy values live in this frame (see the module comment), so
    // a reducer's longjmp over it leaks nothing.
    unsafe {
        let call = (*(*fcinfo).flinfo).fn_addr.expect("fmgr_info sets fn_addr");
        let args = ptr::addr_of_mut!((*fcinfo).args) as *mut pg_sys::NullableDatum;
        loop {
            cursor_fetch(f.portal, CHUNK);
            let (table, rows) = (pg_sys::SPI_tuptable, pg_sys::SPI_processed);
            if rows == 0 {
                break;
            }
            for row in 0..rows {
                pg_sys::check_for_interrupts!();
                let version = spi::get_i64(table, row, 1).expect("NOT NULL");
                let event = spi::get(table, row, 2).expect("a row is never NULL");
                if !(f.strict && f.state.is_none()) {
                    *args.add(0) = pg_sys::NullableDatum {
                        value: f.state.unwrap_or(Datum::from(0)),
                        isnull: f.state.is_none(),
                    };
                    *args.add(1) = pg_sys::NullableDatum { value: event, isnull: false };
                    (*fcinfo).isnull = false;
                    let old = pg_sys::MemoryContextSwitchTo(f.call_cxt);
                    // Unguarded on purpose: the reducer's error keeps its SQLSTATE and context.
                    let result = call(fcinfo);
                    pg_sys::MemoryContextSwitchTo(old);
                    let next = if (*fcinfo).isnull {
                        None
                    } else if Some(result) == f.state {
                        f.state
                    } else {
                        Some(copy_varlena(f.state_cxt, result))
                    };
                    if let Some(previous) = f.state.filter(|p| Some(*p) != next) {
                        pg_sys::pfree(previous.cast_mut_ptr());
                    }
                    f.state = next;
                    pg_sys::MemoryContextReset(f.call_cxt);
                }
                f.version = version;
                f.folded += 1;
            }
            pg_sys::SPI_freetuptable(table);
        }
        f
    }
}

/// Fold with `eventstore.merge`, keeping the state in Rust between events. The state and each
/// event's data are read straight from their binary jsonb, with depth bounded by
/// [`READ_DEPTH_LIMIT`]; a stored document deeper than that (appended before the limit existed)
/// is an error naming the event, never a crash. Returns the error instead of raising it, so that
/// the caller raises once the Rust state is dropped.
unsafe fn fold_with_merge(mut f: Fold) -> Result<Fold, EsError> {
    // SAFETY: the portal is open and its rows are events; every jsonb read is a non-null datum
    // of the fetched chunk or of `state_cxt`, read before the next fetch. Upcasters run in the
    // fetch and may longjmp over this frame: the Rust state lives in `state_cxt` (see
    // context_owned), so the frame holds only Copy values.
    unsafe {
        let state = &mut *context_owned::<Option<Value>>(f.state_cxt);
        *state = match f.state {
            Some(d) => Some(merge::read_jsonb(d, || "the state to fold from".into())?),
            None => None,
        };
        loop {
            cursor_fetch(f.portal, CHUNK);
            let (table, rows) = (pg_sys::SPI_tuptable, pg_sys::SPI_processed);
            if rows == 0 {
                break;
            }
            for row in 0..rows {
                pg_sys::check_for_interrupts!();
                f.version = spi::get_i64(table, row, 1).expect("NOT NULL");
                if let Some(data) = spi::get(table, row, 2) {
                    let event = || {
                        format!(
                            "the data of event {} of stream {:?} (global position {})",
                            f.version,
                            String::from_datum(f.stream_id, false).unwrap_or_default(),
                            spi::get_i64(table, row, 3).unwrap_or(0)
                        )
                    };
                    let container = crate::jsonb::from_datum(data)
                        .ok_or_else(|| EsError::json(JsonError::Malformed, event()))?;
                    crate::jsonb::apply(state, container, READ_DEPTH_LIMIT)
                        .map_err(|e| EsError::json(e, event()))?;
                }
                f.folded += 1;
            }
            pg_sys::SPI_freetuptable(table);
        }
        if f.folded > 0 {
            let old = pg_sys::MemoryContextSwitchTo(f.state_cxt);
            f.state = state.take().and_then(|s| JsonB(s).into_datum());
            pg_sys::MemoryContextSwitchTo(old);
        }
        Ok(f)
    }
}

/// A `T::default()` owned by the memory context `cxt`: dropped when `cxt` is reset or deleted,
/// also when an error longjmps over its user and the context goes with the aborted call.
unsafe fn context_owned<T: Default>(cxt: pg_sys::MemoryContext) -> *mut T {
    unsafe extern "C-unwind" fn drop_it<T>(arg: *mut std::ffi::c_void) {
        // SAFETY: arg is the Box::into_raw below, dropped once, when its context goes.
        drop(unsafe { Box::from_raw(arg as *mut T) });
    }
    // SAFETY: the callback struct lives in `cxt` itself, as PostgreSQL requires.
    unsafe {
        let value = Box::into_raw(Box::<T>::default());
        let callback =
            pg_sys::MemoryContextAllocZero(cxt, size_of::<pg_sys::MemoryContextCallback>())
                as *mut pg_sys::MemoryContextCallback;
        (*callback).func = Some(drop_it::<T>);
        (*callback).arg = value as *mut std::ffi::c_void;
        pg_sys::MemoryContextRegisterResetCallback(cxt, callback);
        value
    }
}

/// The chains the fold's state was folded under (see [`CHAINS_SQL`]). Connected to SPI; the
/// datum lives in the SPI result, valid until the next execute.
unsafe fn folded_chains(f: &Fold) -> Option<Datum> {
    use PgBuiltInOids as O;
    // SAFETY: the caller is connected to SPI; every argument is a datum of the plan's types.
    unsafe {
        let types =
            [oid(O::TEXTOID), oid(O::INT8OID), oid(O::INT8OID), oid(O::JSONBOID), oid(O::JSONBOID)];
        let plan = spi::plan(&CHAINS_PLAN, CHAINS_SQL, &types);
        let args = [
            Some(f.stream_id),
            Some(Datum::from(f.from_version)),
            Some(Datum::from(f.version)),
            Some(f.chains_now),
            f.from_chains,
        ];
        let (t, _) = spi::execute(plan, &args, false, 1);
        spi::get(t, 0, 1).map(|d| copy_varlena(f.state_cxt, d))
    }
}

/// Replay per `req`: returns (state, version) with the state copied into the caller's memory
/// context. Saves a snapshot when `req.snapshot_every` says so.
unsafe fn run(req: Request) -> (Option<Datum>, i64) {
    // SAFETY: called from a V1 entry point with CurrentMemoryContext the caller's. SPI is
    // connected once and finished on every path that returns or raises from here; `state_cxt`
    // is deleted only after the state is copied out of it.
    unsafe {
        let caller_cxt = pg_sys::CurrentMemoryContext;
        let state_cxt = pg_sys::AllocSetContextCreateInternal(
            caller_cxt,
            c"eventstore replay".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        assert_eq!(pg_sys::SPI_connect(), pg_sys::SPI_OK_CONNECT as i32);
        let fold = match start(&req, state_cxt) {
            Ok(fold) => fold,
            Err(e) => {
                pg_sys::SPI_finish();
                raise(e)
            }
        };
        let fold = match fold.fcinfo {
            Some(fcinfo) => fold_with_fmgr(fold, fcinfo),
            None => match fold_with_merge(fold) {
                Ok(fold) => fold,
                Err(e) => {
                    pg_sys::SPI_finish();
                    raise(e)
                }
            },
        };
        pg_sys::SPI_cursor_close(fold.portal);

        if let (Some(every), Some(state)) = (req.snapshot_every, fold.state) {
            if fold.folded >= every && fold.version > 0 {
                // The caller may not write snapshots; the extension saves what it folded itself,
                // as the store's owner, after the reducer has run: no user code runs in here.
                let chains = folded_chains(&fold);
                let _owner = snapshot::AsOwner::begin();
                let _api = ApiWrite::begin();
                let name = fold.snapshot_name;
                let fingerprint = Some(fold.fingerprint);
                snapshot::save(req.stream_id, name, fold.version, state, fingerprint, chains);
            }
        }
        pg_sys::SPI_finish();
        let state = fold.state.map(|s| copy_varlena(caller_cxt, s));
        pg_sys::MemoryContextDelete(state_cxt);
        (state, fold.version)
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points (declared in sql/replay.sql).

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_eventstore_replay() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `eventstore.replay(stream_id, reducer, initial_state, until_version, as_of, snapshot_name)`
///
/// # Safety
/// Called by PostgreSQL's function manager only, with the fcinfo of `eventstore.replay`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn eventstore_replay(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: `fcinfo` is a valid call of eventstore.replay (see the function's contract).
    unsafe {
        let req = match replay_request(fcinfo) {
            Ok(r) => r,
            Err(e) => raise(e),
        };
        match run(req).0 {
            Some(state) => state,
            None => {
                (*fcinfo).isnull = true;
                Datum::from(0)
            }
        }
    }
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_eventstore_aggregate() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `eventstore._aggregate(stream_id, reducer, initial_state, snapshot_every,
///                        OUT stream_version bigint, OUT state jsonb)`
///
/// # Safety
/// Called by PostgreSQL's function manager only, with the fcinfo of `eventstore._aggregate`,
/// whose result type is the composite (stream_version bigint, state jsonb).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn eventstore_aggregate(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: `fcinfo` is a valid call of eventstore._aggregate (see the function's contract),
    // so get_call_result_type yields its two-column row type, matching `values` and `nulls`.
    unsafe {
        let req = match aggregate_request(fcinfo) {
            Ok(r) => r,
            Err(e) => raise(e),
        };
        let (state, version) = run(req);
        let mut tupdesc: pg_sys::TupleDesc = ptr::null_mut();
        let class = pg_sys::get_call_result_type(fcinfo, ptr::null_mut(), &mut tupdesc);
        assert_eq!(class, pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE, "returns a row");
        let tupdesc = pg_sys::BlessTupleDesc(tupdesc);
        let mut values = [Datum::from(version), state.unwrap_or(Datum::from(0))];
        let mut nulls = [false, state.is_none()];
        let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
    }
}
