//! Consistency beyond one stream: `append_multi`, `read_query` and append conditions
//! (dynamic consistency boundaries). The rules (queries, tokens, lock keys) are plain Rust in
//! eventstore-core's `query` and `multi`; the argument that the protocol below is race-free is
//! docs/dcb.md.
//!
//! A conditional append (and every `append_multi`) runs in this order, all in the caller's
//! transaction:
//!
//! 1. validate everything; a batch whose ids already stand is a retry: its original rows, no
//!    lock, no condition;
//! 2. with a condition, the boundary's advisory locks (`query::boundary_locks`), in key order;
//! 3. the streams' rows, in stream-id order (so two calls never wait for each other in a
//!    cycle, whatever order they list streams in), and the retry check again;
//! 4. the expected versions, in the order the caller listed the streams (ES001 names the first
//!    wrong one);
//! 5. the condition, against a snapshot taken now (`GetLatestSnapshot`, also under REPEATABLE
//!    READ): ES005 names the first matching event the token did not see;
//! 6. the events, through `append::append_to_stream`.
//!
//! Appends without a condition take no advisory lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, PgBuiltInOids};

use eventstore_core::multi::{parse_appends, prefixed};
use eventstore_core::query::{
    boundary_locks, match_sql, parse_condition, parse_query, read_count, BoundaryLock, Condition,
    LOCK_CLASS,
};

use crate::append::{append_to_stream, batch_payload, Appended, Payload, RawJsonb};
use crate::envelope::NewEvent;
use crate::error::{raise, EsError, ExpectedVersion};
use crate::idempotency::{classify, IdCheck, StoredEvent};
use crate::jsonb::Entry;
use crate::settings;
use crate::spi;

/// A `jsonb` result handed back as the datum SPI produced (copied out of SPI's memory first):
/// `read_query`'s document is never turned into Rust values and back.
pub struct JsonbOut(Datum);

// SAFETY: the datum is a jsonb allocated in the function's own memory context (see
// `read_query`), which outlives the call.
unsafe impl pgrx::callconv::BoxRet for JsonbOut {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: returning a valid, non-null jsonb datum.
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

impl_sql_translatable!(JsonbOut, "jsonb");

/// The events matching `query`, in store order (global position), and the decision token of
/// the snapshot they were read in: `{"token": text, "events": [...]}`.
///
/// At most `max_count` events (NULL: 10,000): a read cut short puts its last position in the
/// token, so a later condition treats what it did not return as unseen.
///
/// The query matches events as stored (their stored type and tags, as conditions and boundary
/// locks do); the events come back as every read returns them: upcast to their type's current
/// version (type, data and `schema_version`) through the per-row `eventstore._upcast_*`
/// functions, in the caller's rights, unless `upcast` is false (as stored).
#[pg_extern(stable, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn read_query(
    query: Option<RawJsonb>,
    max_count: default!(Option<i64>, "NULL"),
    upcast: default!(bool, "true"),
) -> JsonbOut {
    let query = match query.as_ref() {
        None => Err(EsError::invalid("query", "must not be NULL")),
        Some(q) => parse_query("query", q.view()),
    };
    let (query, count) = match query.and_then(|q| Ok((q, read_count(max_count)?))) {
        Ok(v) => v,
        Err(e) => raise(e),
    };
    // $1 the count, $2 upcast, then the query's parameters.
    let (clause, _shape, params) = match_sql(&query, 3);
    let sql = format!(
        "SELECT pg_catalog.jsonb_build_object(\
           'token', 'v1:' OPERATOR(pg_catalog.||) \
             pg_catalog.pg_current_snapshot()::pg_catalog.text OPERATOR(pg_catalog.||) \
             CASE WHEN r.n OPERATOR(pg_catalog.=) $1 \
               THEN ':' OPERATOR(pg_catalog.||) r.last::pg_catalog.text ELSE '' END, \
           'events', r.events) \
         FROM (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(\
                 'global_position', e.global_position, 'stream_id', e.stream_id, \
                 'stream_version', e.stream_version, 'event_id', e.event_id, \
                 'type', eventstore._upcast_type(e.event_type, e.schema_version, $2), \
                 'schema_version', eventstore._upcast_version(e.event_type, e.schema_version, $2), \
                 'data', eventstore._upcast_data(e.event_type, e.schema_version, e.data, \
                   e.metadata, $2, e.stream_id, e.stream_version, e.global_position), \
                 'metadata', e.metadata, \
                 'tags', pg_catalog.to_jsonb(e.tags), 'recorded_at', e.recorded_at) \
                 ORDER BY e.global_position), '[]'::pg_catalog.jsonb) AS events, \
                 pg_catalog.count(*) AS n, pg_catalog.max(e.global_position) AS last \
               FROM (SELECT e.* FROM eventstore.events e WHERE {clause} \
                     ORDER BY e.global_position LIMIT $1) e) r"
    );
    let mut types = vec![spi::oid(PgBuiltInOids::INT8OID), spi::oid(PgBuiltInOids::BOOLOID)];
    types.extend(params.iter().map(|_| spi::oid(PgBuiltInOids::TEXTARRAYOID)));
    let datum = Spi::connect(|_| {
        let mut args = vec![count.into_datum(), upcast.into_datum()];
        args.extend(params.into_iter().map(IntoDatum::into_datum));
        // SAFETY: connected to SPI; one datum per declared parameter; the result is copied
        // into the function's memory context (the one current before SPI_connect) before
        // SPI_finish frees SPI's.
        unsafe {
            let plan = plan(&sql, &types);
            let (t, n) = spi::execute(plan, &args, true, 1);
            assert_eq!(n, 1, "an aggregate returns one row");
            let d = spi::get(t, 0, 1).expect("jsonb_build_object is not NULL");
            pg_sys::SPI_datumTransfer(d, false, -1)
        }
    });
    JsonbOut(datum)
}

/// Append to several streams atomically, each with its own expected version, and optionally
/// under an append condition. `appends`: `[{"stream_id", "expected_version", "events"}, ...]`,
/// each stream once. Rows come back in the order the streams were listed.
///
/// `SECURITY DEFINER` with a pinned `search_path`, as `append`.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn append_multi(
    appends: Option<RawJsonb>,
    condition: default!(Option<RawJsonb>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(stream_id, String),
        name!(event_id, pgrx::Uuid),
        name!(stream_version, i64),
        name!(global_position, i64),
    ),
> {
    crate::append::catalog_is_current();
    let result = (|| {
        let mut batches = parse_appends(
            appends.as_ref().map(RawJsonb::view),
            settings::max_json_depth(),
            settings::max_append_events(),
        )?;
        let condition = parse_condition(condition.as_ref().map(RawJsonb::view))?;
        let payloads: Vec<RawJsonb> = batches.iter().map(|b| own_jsonb(b.events)).collect();
        // Each stream's events at their versions, and declared, as `append` has them.
        for (k, (b, p)) in batches.iter_mut().zip(&payloads).enumerate() {
            let at = format!("appends[{k}]");
            crate::upcast::resolve_versions(&mut b.heads, true).map_err(|e| prefixed(e, &at))?;
            crate::upcast::check_declared(&b.heads, true, |i| batch_payload(p, i))
                .map_err(|e| prefixed(e, &at))?;
        }
        let streams: Vec<Stream<'_>> = batches
            .iter()
            .zip(&payloads)
            .map(|(b, p)| Stream {
                stream_id: &b.stream_id,
                expected: b.expected,
                heads: &b.heads,
                payload: Payload::Many(p),
            })
            .collect();
        let rows = run(&streams, condition.as_ref())?;
        Ok::<_, EsError>(
            streams
                .iter()
                .zip(rows)
                .flat_map(|(s, rows)| {
                    let stream = s.stream_id.to_owned();
                    rows.into_iter().map(move |a| {
                        (
                            stream.clone(),
                            pgrx::Uuid::from_bytes(*a.event_id.as_bytes()),
                            a.stream_version,
                            a.global_position,
                        )
                    })
                })
                .collect::<Vec<_>>(),
        )
    })();
    match result {
        Ok(rows) => TableIterator::new(rows),
        Err(e) => raise(e),
    }
}

/// `append`/`append_event` with a condition: one stream, through the same steps as
/// `append_multi`.
pub fn append_with_condition(
    stream_id: &str,
    heads: &[NewEvent],
    payload: Payload<'_>,
    expected: ExpectedVersion,
    condition: &Condition,
) -> Result<Vec<Appended>, EsError> {
    let stream = Stream { stream_id, expected, heads, payload };
    Ok(run(std::slice::from_ref(&stream), Some(condition))?.pop().unwrap_or_default())
}

/// An append's condition argument, parsed (SQL NULL: none).
pub fn condition(arg: Option<&RawJsonb>) -> Result<Option<Condition>, EsError> {
    parse_condition(arg.map(RawJsonb::view))
}

/// One stream's part of a call.
struct Stream<'a> {
    stream_id: &'a str,
    expected: ExpectedVersion,
    heads: &'a [NewEvent],
    payload: Payload<'a>,
}

/// Steps 1-6 of the module comment; the appended rows per stream, in the caller's order.
fn run(
    streams: &[Stream<'_>],
    condition: Option<&Condition>,
) -> Result<Vec<Vec<Appended>>, EsError> {
    // Computed (and its size checked) before anything is read or locked.
    let locks = match condition {
        Some(c) => boundary_locks(
            &c.query,
            streams
                .iter()
                .flat_map(|s| s.heads.iter().map(|e| (e.event_type.as_str(), e.tags.as_slice()))),
        )?,
        None => Vec::new(),
    };
    let ids: Vec<pgrx::Uuid> = streams
        .iter()
        .flat_map(|s| s.heads.iter().filter_map(|e| e.id))
        .map(|u| pgrx::Uuid::from_bytes(*u.as_bytes()))
        .collect();
    let checked = Spi::connect(|_| -> Result<Option<Vec<Vec<Appended>>>, EsError> {
        // SAFETY: connected to SPI for the whole closure; every result table is read before
        // the next statement runs.
        unsafe {
            if !ids.is_empty() {
                if let Some(rows) = retry(streams, &ids)? {
                    return Ok(Some(rows));
                }
            }
            lock_boundary(&locks);
            let mut order: Vec<usize> = (0..streams.len()).collect();
            order.sort_by(|&a, &b| streams[a].stream_id.cmp(streams[b].stream_id));
            let mut versions = vec![0i64; streams.len()];
            for i in order {
                versions[i] = lock_stream(streams[i].stream_id);
            }
            // A concurrent identical retry may have committed while we waited.
            if !ids.is_empty() {
                if let Some(rows) = retry(streams, &ids)? {
                    return Ok(Some(rows));
                }
            }
            for (s, &v) in streams.iter().zip(&versions) {
                s.expected.check(s.stream_id, v)?;
            }
            if let Some(c) = condition {
                check_condition(c)?;
            }
            Ok(None)
        }
    })?;
    if let Some(rows) = checked {
        return Ok(rows);
    }
    // Every stream row is ours now: these appends check, move and insert without waiting.
    streams.iter().map(|s| append_to_stream(s.stream_id, s.heads, s.payload, s.expected)).collect()
}

/// A stream's events array from `appends`, as a jsonb datum of its own in the current memory
/// context: the nested container's bytes behind a varlena header.
fn own_jsonb(events: Entry<'_>) -> RawJsonb {
    let Entry::Container(c) = events else {
        unreachable!("parse_appends accepted only arrays of events")
    };
    let bytes = c.bytes();
    let size = bytes.len() + pg_sys::VARHDRSZ;
    // SAFETY: a fresh palloc of header plus payload, the payload copied from a container
    // PostgreSQL wrote (jsonb's nested containers are valid root containers); the datum lives
    // in the function's memory context until the call ends.
    unsafe {
        let p = pg_sys::palloc(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(pg_sys::VARHDRSZ), bytes.len());
        RawJsonb::from_polymorphic_datum(Datum::from(p), false, PgBuiltInOids::JSONBOID.value())
            .expect("not null")
    }
}

// ---------------------------------------------------------------------------------------------
// The steps.

/// The boundary's advisory locks, transaction-level, in the (ascending key) order given: what
/// `pg_advisory_xact_lock(LOCK_CLASS, key)` and `pg_advisory_xact_lock_shared` take.
fn lock_boundary(locks: &[BoundaryLock]) {
    for l in locks {
        let tag = pg_sys::LOCKTAG {
            // SAFETY: MyDatabaseId is set before any SQL function runs.
            locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
            locktag_field2: LOCK_CLASS as u32,
            locktag_field3: l.key as u32,
            // SET_LOCKTAG_INT32: the two-int4 form of the advisory lock functions.
            locktag_field4: 2,
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        };
        let mode = if l.exclusive { pg_sys::ExclusiveLock } else { pg_sys::ShareLock };
        // SAFETY: a valid advisory lock tag; PostgreSQL's errors (deadlock, cancel) come back
        // as pgrx panics that keep their SQLSTATE.
        unsafe {
            pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, false);
        }
    }
}

const LOCK_SQL: &str = "SELECT version FROM eventstore.streams \
    WHERE stream_id OPERATOR(pg_catalog.=) $1 FOR UPDATE";
const CREATE_SQL: &str = "INSERT INTO eventstore.streams (stream_id, category, version) \
    VALUES ($1, eventstore.category($1), 0) ON CONFLICT (stream_id) DO NOTHING RETURNING version";

/// Lock the stream's row (creating it at version 0 if it is new) and return its version.
unsafe fn lock_stream(stream_id: &str) -> i64 {
    let text = [spi::oid(PgBuiltInOids::TEXTOID)];
    let args = [stream_id.into_datum()];
    // SAFETY: the caller is connected to SPI.
    unsafe {
        loop {
            let (t, n) = spi::execute(plan(LOCK_SQL, &text), &args, false, 0);
            if n > 0 {
                return spi::get_i64(t, 0, 1).expect("version is NOT NULL");
            }
            let (_, n) = spi::execute(plan(CREATE_SQL, &text), &args, false, 0);
            if n > 0 {
                return 0;
            }
            // Another writer created it between our two statements: lock that row.
        }
    }
}

const FIND_IDS_SQL: &str =
    "SELECT event_id, stream_id, stream_version, event_type, global_position \
    FROM eventstore.events WHERE event_id OPERATOR(pg_catalog.=) ANY ($1)";

/// The original rows when every stream's batch is already stored (a retry); `None` when none
/// of the ids is; ES004 for any other reuse (including a call of which only some streams'
/// batches are stored).
unsafe fn retry(
    streams: &[Stream<'_>],
    ids: &[pgrx::Uuid],
) -> Result<Option<Vec<Vec<Appended>>>, EsError> {
    // SAFETY: the caller is connected to SPI; the table is read before the next statement.
    let found: Vec<StoredEvent> = unsafe {
        let (t, n) = spi::execute(
            plan(FIND_IDS_SQL, &[spi::oid(PgBuiltInOids::UUIDARRAYOID)]),
            &[ids.to_vec().into_datum()],
            false,
            0,
        );
        (0..n)
            .map(|r| StoredEvent {
                event_id: uuid::Uuid::from_bytes(
                    *pgrx::Uuid::from_datum(spi::get(t, r, 1).expect("NOT NULL"), false)
                        .expect("NOT NULL")
                        .as_bytes(),
                ),
                stream_id: spi::get_string(t, r, 2),
                stream_version: spi::get_i64(t, r, 3).expect("NOT NULL"),
                event_type: spi::get_string(t, r, 4),
                global_position: spi::get_i64(t, r, 5).expect("NOT NULL"),
            })
            .collect()
    };
    if found.is_empty() {
        return Ok(None);
    }
    let mut rows = Vec::with_capacity(streams.len());
    let (mut fresh, mut stored) = (false, None);
    for s in streams {
        let mine: Vec<StoredEvent> = found
            .iter()
            .filter(|f| s.heads.iter().any(|e| e.id == Some(f.event_id)))
            .cloned()
            .collect();
        match classify(s.stream_id, s.heads, mine)? {
            IdCheck::Fresh => fresh = true,
            IdCheck::Retry(r) => {
                stored.get_or_insert_with(|| r[0].clone());
                rows.push(
                    r.into_iter()
                        .map(|e| Appended {
                            event_id: e.event_id,
                            stream_version: e.stream_version,
                            global_position: e.global_position,
                        })
                        .collect(),
                );
            }
        }
    }
    match (fresh, stored) {
        (false, Some(_)) => Ok(Some(rows)),
        (true, Some(s)) => Err(EsError::DuplicateEventId {
            id: s.event_id.to_string(),
            stream: s.stream_id,
            version: s.stream_version,
            position: s.global_position,
        }),
        (_, None) => Ok(None),
    }
}

/// ES005 if an event matching the condition's query exists that its token did not see (without
/// `after`: any matching event). Reads with a snapshot taken now, after every lock is held.
unsafe fn check_condition(c: &Condition) -> Result<(), EsError> {
    use PgBuiltInOids as O;
    let (clause, _shape, params) = match_sql(&c.query, 3);
    // When the token saw every transaction before its xmin, only later ones can hold unseen
    // events: the first range keeps the search on the recent end of events_by_transaction.
    let unseen = if c.after.is_some() {
        "AND (e.transaction_id OPERATOR(pg_catalog.>=) \
               pg_catalog.pg_snapshot_xmin($1::pg_catalog.pg_snapshot) \
             OR e.global_position OPERATOR(pg_catalog.>) $2) \
         AND NOT (pg_catalog.pg_visible_in_snapshot(e.transaction_id, $1::pg_catalog.pg_snapshot) \
                  AND e.global_position OPERATOR(pg_catalog.<=) \
                      coalesce($2, 9223372036854775807))"
    } else {
        ""
    };
    let sql = format!(
        "WITH m AS MATERIALIZED (\
           SELECT e.global_position, e.stream_id, e.event_type FROM eventstore.events e \
           WHERE {clause} {unseen}) \
         SELECT m.global_position, m.stream_id, m.event_type FROM m \
         ORDER BY m.global_position LIMIT 1"
    );
    let mut types = vec![spi::oid(O::TEXTOID), spi::oid(O::INT8OID)];
    types.extend(params.iter().map(|_| spi::oid(O::TEXTARRAYOID)));
    let (snapshot, last) = match &c.after {
        Some(t) => (t.snapshot_text().into_datum(), t.last_position.into_datum()),
        None => (None, None),
    };
    let mut args = vec![snapshot, last];
    args.extend(params.into_iter().map(IntoDatum::into_datum));
    // SAFETY: the caller is connected to SPI; one datum per declared parameter; the table is
    // read before anything else runs.
    unsafe {
        let plan = plan(&sql, &types);
        let mut values = spi::values(&args);
        let nulls = spi::nulls(&args);
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            false,
            false,
            1,
        );
        assert!(rc >= 0, "pg_eventstore: SPI_execute_snapshot failed ({rc})");
        let (t, n) = (pg_sys::SPI_tuptable, pg_sys::SPI_processed);
        if n == 0 {
            return Ok(());
        }
        Err(EsError::ConditionFailed {
            position: spi::get_i64(t, 0, 1).expect("NOT NULL"),
            stream: spi::get_string(t, 0, 2),
            event_type: spi::get_string(t, 0, 3),
            after: c.after.is_some(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plans, one per statement text (a query's shape decides the text), kept for the backend's life
// up to a bound; past it a plan lives until SPI_finish.

const MAX_KEPT_PLANS: usize = 256;

thread_local! {
    static PLANS: RefCell<HashMap<String, pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// # Safety
/// Connected to SPI; `types` has one OID per parameter of `sql`.
unsafe fn plan(sql: &str, types: &[pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    if let Some(p) = PLANS.with(|p| p.borrow().get(sql).copied()) {
        return p;
    }
    let text = CString::new(sql).expect("statements hold no NUL");
    let mut types = types.to_vec();
    // SAFETY: connected (the caller); kept plans live in the backend's cache context.
    unsafe {
        let plan = pg_sys::SPI_prepare(text.as_ptr(), types.len() as i32, types.as_mut_ptr());
        assert!(!plan.is_null(), "pg_eventstore: SPI_prepare failed: {sql}");
        PLANS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < MAX_KEPT_PLANS {
                assert_eq!(pg_sys::SPI_keepplan(plan), 0, "pg_eventstore: SPI_keepplan failed");
                p.insert(sql.to_owned(), plan);
            }
        });
        plan
    }
}
