//! `append` and `append_event`: optimistic concurrency per stream, idempotent retries by
//! event id, and nothing written when anything is wrong.
//!
//! Concurrency: every append locks its stream's row in `eventstore.streams` (by upserting
//! it), so writers of one stream serialize and writers of different streams never meet. A
//! writer that loses a race on the same expected version waits for the winner's row lock and
//! then sees the winner's version: it fails with ES001, never with a unique violation.

use std::cell::{Cell, OnceCell};

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::DatumWithOid;
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::{PgBuiltInOids, PgOid};

use crate::append_only::ApiWrite;
use crate::envelope::{
    check_batch_size, check_depth, parse_events, validate_event_type, validate_metadata,
    validate_stream_id, NewEvent,
};
use crate::error::{raise, EsError, ExpectedVersion};
use crate::idempotency::{classify, IdCheck, StoredEvent};
use crate::settings;

/// One appended (or, on an idempotent retry, previously appended) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub event_id: uuid::Uuid,
    pub stream_version: i64,
    pub global_position: i64,
}

/// A `jsonb` argument kept as the datum PostgreSQL passed in: validated in place (see
/// [`crate::jsonb`]) and bound to the INSERT as it is, so event data is never printed as text
/// and parsed again on its way into the table.
pub struct RawJsonb(pg_sys::Datum);

impl FromDatum for RawJsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(RawJsonb(datum))
    }
}

// SAFETY: both methods unbox through FromDatum, which reads nothing and only keeps the datum
// pgrx hands over for this argument; a null argument is a panic or Nullable::Null, never read.
unsafe impl<'fcx> ArgAbi<'fcx> for RawJsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: pgrx's caller guarantees `arg` is an argument of the live call; RawJsonb's
        // FromDatum only wraps its datum.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: as in unbox_arg_unchecked; a NULL argument becomes Nullable::Null.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

impl_sql_translatable!(RawJsonb, arg_only = "jsonb");

// So a composite's jsonb attribute can be read as it is (`PgHeapTuple::get_by_name`).
// SAFETY: a jsonb datum is a pointer that stays valid as long as its source tuple; RawJsonb
// only carries it, and readers detoast it before looking inside.
unsafe impl pgrx::datum::UnboxDatum for RawJsonb {
    type As<'src> = RawJsonb;
    unsafe fn unbox<'src>(datum: pgrx::datum::Datum<'src>) -> Self::As<'src>
    where
        Self: 'src,
    {
        RawJsonb(datum.sans_lifetime())
    }
}

impl IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }
    fn type_oid() -> pg_sys::Oid {
        PgBuiltInOids::JSONBOID.value()
    }
}

impl RawJsonb {
    /// The datum PostgreSQL passed in.
    pub fn datum(&self) -> pg_sys::Datum {
        self.0
    }

    /// The value, for validation.
    pub(crate) fn view(&self) -> crate::jsonb::Entry<'_> {
        // SAFETY: a non-null jsonb argument, alive for the whole call.
        unsafe { crate::jsonb::from_datum(self.0) }
            .and_then(|c| c.root())
            .expect("pg_eventstore: unreadable jsonb argument")
    }

    fn arg(&self) -> DatumWithOid<'_> {
        // SAFETY: the datum is a jsonb, alive for the whole call.
        unsafe { DatumWithOid::new(self.0, PgBuiltInOids::JSONBOID.value()) }
    }
}

fn jsonb_arg(j: Option<&RawJsonb>) -> DatumWithOid<'_> {
    j.map_or_else(|| DatumWithOid::null_oid(PgBuiltInOids::JSONBOID.value()), RawJsonb::arg)
}

// pgrx resolves SQL types from the signature itself, so the #[pg_extern]s spell this out.
type AppendedRows = TableIterator<'static, (pgrx::Uuid, i64, i64)>;

fn to_rows(result: Result<Vec<Appended>, EsError>) -> AppendedRows {
    match result {
        Ok(rows) => TableIterator::new(rows.into_iter().map(|a| {
            (pgrx::Uuid::from_bytes(*a.event_id.as_bytes()), a.stream_version, a.global_position)
        })),
        Err(e) => raise(e),
    }
}

/// Append a batch of events (a JSON array of `{"type", "data", "metadata", "id", "tags"}`) to a
/// stream, optionally under an append condition (see [`crate::dcb`]).
///
/// `SECURITY DEFINER` with a pinned `search_path`: application roles hold no write privilege on
/// the store's tables, so the API is the only way in; no user code runs inside it.
#[pg_extern(name = "append", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn append_conditional(
    stream_id: Option<&str>,
    events: Option<RawJsonb>,
    expected_version: default!(Option<i64>, "NULL"),
    condition: default!(Option<RawJsonb>, "NULL"),
) -> TableIterator<
    'static,
    (name!(event_id, pgrx::Uuid), name!(stream_version, i64), name!(global_position, i64)),
> {
    BEFORE_0_3.with(|b| b.set(false));
    append_rows(stream_id, events, expected_version, condition)
}

fn append_rows(
    stream_id: Option<&str>,
    events: Option<RawJsonb>,
    expected_version: Option<i64>,
    condition: Option<RawJsonb>,
) -> AppendedRows {
    to_rows((|| {
        let stream_id = validate_stream_id(stream_id)?;
        let expected = ExpectedVersion::from_sql(expected_version)?;
        let events_jsonb = events.as_ref();
        // Counted from the array's header before anything is parsed or allocated per event.
        check_batch_size(events_jsonb.map(RawJsonb::view), settings::max_append_events())?;
        let mut heads = parse_events(events_jsonb.map(RawJsonb::view), settings::max_json_depth())?;
        crate::upcast::resolve_versions(&mut heads, true)?;
        let array = events_jsonb.expect("validated as not NULL");
        crate::upcast::check_declared(&heads, true, |i| batch_payload(array, i))?;
        let payload = Payload::Many(array);
        if let Some(c) = crate::dcb::condition(condition.as_ref())? {
            return crate::dcb::append_with_condition(stream_id, &heads, payload, expected, &c);
        }
        append_to_stream(stream_id, &heads, payload, expected)
    })())
}

/// Append one event, without building a JSON array. Runs as [`append_conditional`] does.
// The SQL signature has nine parameters.
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "append_event", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn append_event_conditional(
    stream_id: Option<&str>,
    event_type: Option<&str>,
    data: Option<RawJsonb>,
    metadata: default!(Option<RawJsonb>, "'{}'"),
    expected_version: default!(Option<i64>, "NULL"),
    event_id: default!(Option<pgrx::Uuid>, "NULL"),
    schema_version: default!(Option<i32>, "NULL"),
    tags: default!(Option<Vec<Option<String>>>, "NULL"),
    condition: default!(Option<RawJsonb>, "NULL"),
) -> TableIterator<
    'static,
    (name!(event_id, pgrx::Uuid), name!(stream_version, i64), name!(global_position, i64)),
> {
    BEFORE_0_3.with(|b| b.set(false));
    append_event_rows(
        stream_id,
        event_type,
        data,
        metadata,
        expected_version,
        event_id,
        schema_version,
        tags,
        condition,
    )
}

#[allow(clippy::too_many_arguments)]
fn append_event_rows(
    stream_id: Option<&str>,
    event_type: Option<&str>,
    data: Option<RawJsonb>,
    metadata: Option<RawJsonb>,
    expected_version: Option<i64>,
    event_id: Option<pgrx::Uuid>,
    schema_version: Option<i32>,
    tags: Option<Vec<Option<String>>>,
    condition: Option<RawJsonb>,
) -> AppendedRows {
    to_rows((|| {
        let stream_id = validate_stream_id(stream_id)?;
        let event_type = validate_event_type("event_type", event_type)?;
        let data = data.as_ref().ok_or_else(|| {
            EsError::invalid("data", "must not be NULL (use '{}' or 'null'::jsonb for none)")
        })?;
        let depth = settings::max_json_depth();
        check_depth("data", data.view(), depth)?;
        if let Some(m) = &metadata {
            // SQL NULL means {}; a JSON null is not an object.
            validate_metadata("metadata", m.view())?;
            check_depth("metadata", m.view(), depth)?;
        }
        let expected = ExpectedVersion::from_sql(expected_version)?;
        let id = event_id.map(|u| uuid::Uuid::from_bytes(*u.as_bytes()));
        let tags = eventstore_core::query::check_tag_array("tags", tags)?;
        let payload = Payload::One { data, metadata: metadata.as_ref(), tags: &tags };
        let mut heads = [NewEvent { id, event_type, schema_version, tags: tags.clone() }];
        crate::upcast::resolve_versions(&mut heads, false)?;
        crate::upcast::check_declared(&heads, false, |_| {
            let empty = || pgrx::JsonB(serde_json::json!({})).into_datum().expect("jsonb");
            (data.datum(), metadata.as_ref().map_or_else(empty, RawJsonb::datum))
        })?;
        if let Some(c) = crate::dcb::condition(condition.as_ref())? {
            return crate::dcb::append_with_condition(stream_id, &heads, payload, expected, &c);
        }
        append_to_stream(stream_id, &heads, payload, expected)
    })())
}

// The entry points of the 0.2.0 signatures (no schema_version, no tags, no condition): a
// database's catalog names these symbols until ALTER EXTENSION pg_eventstore UPDATE replaces its
// functions, and until then appends keep working with this library (every type at version 1, no
// tags column). No SQL is generated for them.
#[pg_extern(volatile, parallel_unsafe, security_definer, sql = false)]
fn append(
    stream_id: Option<&str>,
    events: Option<RawJsonb>,
    expected_version: Option<i64>,
) -> TableIterator<
    'static,
    (name!(event_id, pgrx::Uuid), name!(stream_version, i64), name!(global_position, i64)),
> {
    BEFORE_0_3.with(|b| b.set(true));
    append_rows(stream_id, events, expected_version, None)
}

#[pg_extern(volatile, parallel_unsafe, security_definer, sql = false)]
fn append_event(
    stream_id: Option<&str>,
    event_type: Option<&str>,
    data: Option<RawJsonb>,
    metadata: Option<RawJsonb>,
    expected_version: Option<i64>,
    event_id: Option<pgrx::Uuid>,
) -> TableIterator<
    'static,
    (name!(event_id, pgrx::Uuid), name!(stream_version, i64), name!(global_position, i64)),
> {
    BEFORE_0_3.with(|b| b.set(true));
    append_event_rows(
        stream_id,
        event_type,
        data,
        metadata,
        expected_version,
        event_id,
        None,
        None,
        None,
    )
}

/// Event `i` of a validated `append` array: its data and metadata as jsonb datums (for a
/// validator), `{}` for what is absent, as the insert stores them.
pub(crate) fn batch_payload(array: &RawJsonb, i: usize) -> (pg_sys::Datum, pg_sys::Datum) {
    use eventstore_core::envelope::JsonView;
    let member = |name: &str| {
        array
            .view()
            .elements()
            .ok()
            .flatten()
            .and_then(|items| items.into_iter().nth(i))
            .and_then(|e| e.members().ok().flatten())
            .and_then(|m| m.into_iter().find(|(k, _)| *k == name).map(|(_, v)| v))
            .filter(|v| name != "metadata" || v.is_object())
            .and_then(|v| v.to_value(eventstore_core::json::READ_DEPTH_LIMIT).ok())
            .unwrap_or_else(|| serde_json::json!({}))
    };
    let datum = |v| pgrx::JsonB(v).into_datum().expect("jsonb");
    (datum(member("data")), datum(member("metadata")))
}

/// Where the rows' `data` and `metadata` come from.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// `append_event`: one event's data, its metadata (NULL = `{}`) and tags.
    One { data: &'a RawJsonb, metadata: Option<&'a RawJsonb>, tags: &'a [String] },
    /// `append`: the validated array of events; element n is the event at version after + n.
    Many(&'a RawJsonb),
}

/// The statements an append runs, prepared once per backend.
struct Plans {
    /// Generated ids: create or lock the stream row, move its version and insert the events
    /// if the expected version admits the stream's version before the append, in one
    /// statement. Returns the inserted rows: none when the expected version was wrong.
    append_one: OwnedPreparedStatement,
    append_many: OwnedPreparedStatement,
    /// Lock an existing stream row; returns its version (at once when this transaction
    /// already holds it).
    lock: OwnedPreparedStatement,
    /// Create a stream row at version 0 unless it exists; returns 0 if it created it.
    create: OwnedPreparedStatement,
    set_version: OwnedPreparedStatement,
    find_ids: OwnedPreparedStatement,
    /// Caller-supplied ids: insert after the stream is locked and checked. An id taken
    /// meanwhile by another stream's writer is skipped (and then reported as ES004) instead
    /// of failing with a unique violation.
    insert_one_ids: OwnedPreparedStatement,
    insert_many_ids: OwnedPreparedStatement,
}

// Every function, operator and type below is schema-qualified, although append runs with a
// pinned search_path: these statements are the store's integrity, and must mean the same
// whatever path they are planned under (docs/security.md).
/// The insert's columns: from 0.3.0 on, events have tags (the statements for a database whose
/// catalog is current) and, for events at a schema version other than 1 (the column's default),
/// `schema_version` (see [`push_schema_versions`]).
fn columns(tags: bool, versioned: bool) -> String {
    format!(
        "INSERT INTO eventstore.events \
         (stream_id, stream_version, event_id, event_type, data, metadata, recorded_at{}{}) ",
        if tags { ", tags" } else { "" },
        if versioned { ", schema_version" } else { "" },
    )
}
/// Rows of a batch: ids $3, types $4 and the events array $5, zipped in order; `n` counts
/// from 1.
const BATCH_ROWS: &str = "ROWS FROM (pg_catalog.unnest($3::pg_catalog.uuid[]), \
    pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.jsonb_array_elements($5)) \
    WITH ORDINALITY AS t(id, type, e, n)";
const BATCH_DATA: &str = "coalesce(t.e OPERATOR(pg_catalog.->) 'data', '{}'), \
    CASE WHEN pg_catalog.jsonb_typeof(t.e OPERATOR(pg_catalog.->) 'metadata') \
    OPERATOR(pg_catalog.=) 'object' THEN t.e OPERATOR(pg_catalog.->) 'metadata' ELSE '{}' END";
/// An event's `"tags"` (validated: an array of strings, or null or absent for none).
const BATCH_TAGS: &str = "CASE WHEN pg_catalog.jsonb_typeof(t.e OPERATOR(pg_catalog.->) 'tags') \
    OPERATOR(pg_catalog.=) 'array' THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(\
    t.e OPERATOR(pg_catalog.->) 'tags')) ELSE '{}'::pg_catalog.text[] END";
const RETURNING: &str = " RETURNING event_id, stream_version, global_position";
/// Schema versions other than 1 go in as the statements' last argument: after the tags (`$8`)
/// for one event, the array `$7` for a batch, zipped with the batch's rows as `t.v` (see
/// [`push_schema_versions`]). Appends of version-1 events use the statements without them, which
/// also run on a database whose extension is not updated yet (no `schema_version` column).
const VERSIONED_BATCH_ROWS: &str = "ROWS FROM (pg_catalog.unnest($3::pg_catalog.uuid[]), \
    pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.jsonb_array_elements($5), \
    pg_catalog.unnest($7::pg_catalog.int4[])) WITH ORDINALITY AS t(id, type, e, v, n)";
/// A stream's time only moves forward: an append records the later of its transaction's time
/// and the stream's last append, so `recorded_at` never decreases within a stream and `as_of`
/// cuts a stream at one point (see replay).
const STREAM_TIME: &str = "GREATEST(pg_catalog.now(), s.updated_at)";

/// The one-statement append: `$1` stream, `$2` expected version (NULL = any), `$count` the
/// number of events; `rows` selects the rows to insert from `s` (with `s.before`). It inserts
/// nothing when the expected version does not admit `s.before`; the stream row has moved all
/// the same, and [`Plans::lock`] then reads it.
fn append_statement(columns: &str, rows: &str, count: &str) -> String {
    format!(
        "WITH s AS (\
           INSERT INTO eventstore.streams AS s (stream_id, category, version) \
           VALUES ($1, eventstore.category($1), {count}) \
           ON CONFLICT (stream_id) DO UPDATE \
             SET version = s.version OPERATOR(pg_catalog.+) EXCLUDED.version, \
                 updated_at = {STREAM_TIME} \
           RETURNING s.version OPERATOR(pg_catalog.-) {count} AS before, s.updated_at AS at) \
         {columns}{rows} \
           AND ($2::pg_catalog.int8 IS NULL OR $2 OPERATOR(pg_catalog.=) s.before \
                OR ($2 OPERATOR(pg_catalog.=) -1 AND s.before OPERATOR(pg_catalog.>) 0)){RETURNING}"
    )
}

impl Plans {
    /// `tags`: the catalog is 0.3.0's (an older one, until ALTER EXTENSION UPDATE, has no
    /// `tags` column; its appends come through the entry points of its own signatures).
    /// `versioned`: the statements store the events' schema versions.
    fn prepare(client: &SpiClient<'_>, tags: bool, versioned: bool) -> Plans {
        use PgBuiltInOids as O;
        let oid = |o: PgBuiltInOids| PgOid::BuiltIn(o);
        let prep = |sql: &str, args: &[PgOid]| {
            client.prepare_mut(sql, args).expect("pg_eventstore statement prepares").keep()
        };
        let text = oid(O::TEXTOID);
        let int8 = oid(O::INT8OID);
        let uuid = oid(O::UUIDOID);
        let jsonb = oid(O::JSONBOID);
        let tstz = oid(O::TIMESTAMPTZOID);
        let one = [text, int8, uuid, text, jsonb, jsonb];
        let many = [text, int8, oid(O::UUIDARRAYOID), oid(O::TEXTARRAYOID), jsonb];
        // A single event's tags are $8; a batch's come from its array.
        let (one_tags, many_tags, tags_type) = if tags {
            (", $8", format!(", {BATCH_TAGS}"), &[oid(O::TEXTARRAYOID)][..])
        } else {
            ("", String::new(), &[][..])
        };
        // A single event's version follows its tags; a batch's versions are the array $7.
        let (one_version, many_version, batch_rows, one_type, many_type) = if versioned {
            let one = if tags { ", $9" } else { ", $8" };
            (one, ", t.v", VERSIONED_BATCH_ROWS, vec![oid(O::INT4OID)], vec![oid(O::INT4ARRAYOID)])
        } else {
            ("", "", BATCH_ROWS, vec![], vec![])
        };
        let columns = &columns(tags, versioned);
        Plans {
            append_one: prep(
                &append_statement(
                    columns,
                    &format!(
                        "SELECT $1, s.before OPERATOR(pg_catalog.+) 1, $3, $4, $5, coalesce($6, '{{}}'), \
                         s.at{one_tags}{one_version} FROM s WHERE true"
                    ),
                    "$7",
                ),
                &[&one[..], &[int8], tags_type, &one_type].concat(),
            ),
            append_many: prep(
                &append_statement(
                    columns,
                    &format!(
                        "SELECT $1, s.before OPERATOR(pg_catalog.+) t.n, t.id, t.type, {BATCH_DATA}, \
                         s.at{many_tags}{many_version} FROM s, {batch_rows} WHERE true"
                    ),
                    "$6",
                ),
                &[&many[..], &[int8], &many_type].concat(),
            ),
            lock: prep(
                "SELECT version FROM eventstore.streams \
                 WHERE stream_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
                &[text],
            ),
            create: prep(
                "INSERT INTO eventstore.streams (stream_id, category, version) \
                 VALUES ($1, eventstore.category($1), 0) \
                 ON CONFLICT (stream_id) DO NOTHING RETURNING version",
                &[text],
            ),
            set_version: prep(
                &format!(
                    "UPDATE eventstore.streams AS s SET version = $2, updated_at = {STREAM_TIME} \
                     WHERE s.stream_id OPERATOR(pg_catalog.=) $1 RETURNING s.updated_at"
                ),
                &[text, int8],
            ),
            find_ids: prep(
                "SELECT event_id, stream_id, stream_version, event_type, global_position \
                 FROM eventstore.events WHERE event_id OPERATOR(pg_catalog.=) ANY($1)",
                &[oid(O::UUIDARRAYOID)],
            ),
            insert_one_ids: prep(
                &format!(
                    "{columns}VALUES ($1, $2 OPERATOR(pg_catalog.+) 1, $3, $4, $5, \
                     coalesce($6, '{{}}'), $7{one_tags}{one_version}) ON CONFLICT (event_id) DO NOTHING{RETURNING}"
                ),
                &[&one[..], &[tstz], tags_type, &one_type].concat(),
            ),
            insert_many_ids: prep(
                &format!(
                    "{columns}SELECT $1, $2 OPERATOR(pg_catalog.+) t.n, t.id, t.type, {BATCH_DATA}, \
                     $6{many_tags}{many_version} FROM {batch_rows} ON CONFLICT (event_id) DO NOTHING{RETURNING}"
                ),
                &[&many[..], &[tstz], &many_type].concat(),
            ),
        }
    }
}

thread_local! {
    static PLANS: OnceCell<Plans> = const { OnceCell::new() };
    /// With the events' schema versions (some event is at a version other than 1).
    static VERSIONED_PLANS: OnceCell<Plans> = const { OnceCell::new() };
    /// For a catalog older than 0.3.0 (no tags column), reached only through [`append`] and
    /// [`append_event`], the entry points such a catalog names. Every type is at version 1
    /// there (no registry yet): never versioned.
    static PLANS_BEFORE_0_3: OnceCell<Plans> = const { OnceCell::new() };
    /// Set by every entry point for its call: whether the catalog predates 0.3.0.
    static BEFORE_0_3: Cell<bool> = const { Cell::new(false) };
}

/// For an entry point of this version's catalog (`append_multi`): the statements with tags.
pub(crate) fn catalog_is_current() {
    BEFORE_0_3.with(|b| b.set(false));
}

fn with_plans<R>(
    client: &mut SpiClient<'_>,
    versioned: bool,
    f: impl FnOnce(&mut SpiClient<'_>, &Plans) -> R,
) -> R {
    let current = !BEFORE_0_3.with(Cell::get);
    let cache = match (current, versioned) {
        (true, false) => &PLANS,
        (true, true) => &VERSIONED_PLANS,
        (false, _) => &PLANS_BEFORE_0_3,
    };
    let versioned = current && versioned;
    cache.with(|cell| {
        let plans = cell.get_or_init(|| Plans::prepare(client, current, versioned));
        f(client, plans)
    })
}

fn pg_uuid(u: uuid::Uuid) -> pgrx::Uuid {
    pgrx::Uuid::from_bytes(*u.as_bytes())
}

fn std_uuid(u: pgrx::Uuid) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*u.as_bytes())
}

/// Run an SPI step; a failure here is a bug in the extension, not the caller's input.
fn spi<T>(r: Result<T, pgrx::spi::Error>) -> T {
    r.unwrap_or_else(|e| panic!("pg_eventstore: SPI failed: {e}"))
}

pub fn append_to_stream(
    stream_id: &str,
    events: &[NewEvent],
    payload: Payload<'_>,
    expected: ExpectedVersion,
) -> Result<Vec<Appended>, EsError> {
    let count = events.len() as i64;
    let given_ids: Vec<pgrx::Uuid> = events.iter().filter_map(|e| e.id).map(pg_uuid).collect();
    let versioned = !BEFORE_0_3.with(Cell::get)
        && events.iter().any(|e| e.schema_version.is_some_and(|v| v != 1));
    Spi::connect_mut(|client| {
        with_plans(client, versioned, |client, plans| {
            if given_ids.is_empty() {
                // Generated ids cannot collide: lock, move the version, check and insert in one
                // statement. When the check fails nothing is inserted, and the error raised
                // below rolls the version move back.
                let _api = ApiWrite::begin();
                let mut args = row_args(stream_id, expected.to_sql(), events, payload);
                args.push(count.into());
                push_tags(&mut args, payload);
                if versioned {
                    push_schema_versions(&mut args, events, payload);
                }
                let plan = match payload {
                    Payload::One { .. } => &plans.append_one,
                    Payload::Many(_) => &plans.append_many,
                };
                let appended = rows(spi(client.update(plan, None, &args)));
                if appended.is_empty() {
                    // Rejected. This transaction moved the row and still holds it (so locking it
                    // again does not wait), and the version before the append is the row's less
                    // our count.
                    let row = spi(client.update(&plans.lock, None, &[stream_id.into()]));
                    let after: i64 =
                        spi(row.first().get_one()).expect("the statement moved the stream row");
                    expected.check(stream_id, after - count)?;
                    unreachable!("an admitted append inserts its events");
                }
                return Ok(appended);
            }

            // A retry of a batch that is already stored returns it and writes nothing.
            if let IdCheck::Retry(rows) =
                classify(stream_id, events, find_ids(client, plans, &given_ids))?
            {
                return Ok(retry_rows(rows));
            }
            let _api = ApiWrite::begin();
            let actual = lock_stream(client, plans, stream_id);
            // Look again under the lock: a concurrent identical retry may have committed while
            // we waited for it.
            if let IdCheck::Retry(rows) =
                classify(stream_id, events, find_ids(client, plans, &given_ids))?
            {
                return Ok(retry_rows(rows));
            }
            expected.check(stream_id, actual)?;
            let moved = spi(client.update(
                &plans.set_version,
                None,
                &[stream_id.into(), (actual + count).into()],
            ));
            let at: pgrx::datum::TimestampWithTimeZone =
                spi(moved.first().get_one()).expect("the stream row is locked and NOT NULL");
            let mut args = row_args(stream_id, Some(actual), events, payload);
            args.push(at.into());
            push_tags(&mut args, payload);
            if versioned {
                push_schema_versions(&mut args, events, payload);
            }
            let plan = match payload {
                Payload::One { .. } => &plans.insert_one_ids,
                Payload::Many(_) => &plans.insert_many_ids,
            };
            let appended = rows(spi(client.update(plan, None, &args)));
            if appended.len() < events.len() {
                // Another stream's writer took one of our ids after we looked.
                classify(stream_id, events, find_ids(client, plans, &given_ids))?;
                unreachable!("an id taken by another stream is always a conflict");
            }
            Ok(appended)
        })
    })
}

/// The row arguments `$1`..`$5` (single event: `$1`..`$6`) shared by the insert statements:
/// stream, a version (`$2`), then ids (generated UUIDv7 where the caller gave none), types
/// and the jsonb payload.
fn row_args<'a>(
    stream_id: &'a str,
    version: Option<i64>,
    events: &'a [NewEvent],
    payload: Payload<'a>,
) -> Vec<DatumWithOid<'a>> {
    let id_of = |e: &NewEvent| pg_uuid(e.id.unwrap_or_else(uuid::Uuid::now_v7));
    let mut args: Vec<DatumWithOid<'a>> = vec![stream_id.into(), version.into()];
    match (payload, events) {
        (Payload::One { data, metadata, .. }, [event]) => {
            args.push(id_of(event).into());
            args.push(event.event_type.as_str().into());
            args.push(data.arg());
            args.push(jsonb_arg(metadata));
        }
        (Payload::Many(array), _) => {
            args.push(events.iter().map(id_of).collect::<Vec<_>>().into());
            args.push(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>().into());
            args.push(array.arg());
        }
        (Payload::One { .. }, _) => unreachable!("a single-event payload has one event"),
    }
    args
}

/// A single event's tags (`$8`); a batch's come from its array.
fn push_tags<'a>(args: &mut Vec<DatumWithOid<'a>>, payload: Payload<'a>) {
    if BEFORE_0_3.with(Cell::get) {
        return;
    }
    if let Payload::One { tags, .. } = payload {
        args.push(tags.to_vec().into());
    }
}

/// The last argument of a versioned insert: the schema version (single event) or versions
/// (batch) the events are stored at, as [`crate::upcast::resolve_versions`] set them.
fn push_schema_versions<'a>(
    args: &mut Vec<DatumWithOid<'a>>,
    events: &[NewEvent],
    payload: Payload<'_>,
) {
    let version = |e: &NewEvent| e.schema_version.unwrap_or(1);
    match (payload, events) {
        (Payload::One { .. }, [event]) => args.push(version(event).into()),
        _ => args.push(events.iter().map(version).collect::<Vec<i32>>().into()),
    }
}

/// The appended rows of an insert's result (`RETURNING`), in version order.
fn rows(table: SpiTupleTable<'_>) -> Vec<Appended> {
    let mut appended: Vec<Appended> = table
        .into_iter()
        .map(|row| Appended {
            event_id: std_uuid(spi(row.get(1)).expect("NOT NULL")),
            stream_version: spi(row.get(2)).expect("NOT NULL"),
            global_position: spi(row.get(3)).expect("NOT NULL"),
        })
        .collect();
    appended.sort_by_key(|a| a.stream_version);
    appended
}

/// Lock the stream's row (creating it at version 0 if it is new) and return its version.
fn lock_stream(client: &mut SpiClient<'_>, plans: &Plans, stream_id: &str) -> i64 {
    loop {
        let locked = spi(client.update(&plans.lock, None, &[stream_id.into()]));
        if let Some(version) = locked.into_iter().next() {
            return spi(version.get::<i64>(1)).expect("version is NOT NULL");
        }
        let created = spi(client.update(&plans.create, None, &[stream_id.into()]));
        if !created.is_empty() {
            return 0;
        }
        // Another writer created it between our two statements: lock that row.
    }
}

fn find_ids(client: &mut SpiClient<'_>, plans: &Plans, ids: &[pgrx::Uuid]) -> Vec<StoredEvent> {
    let rows = spi(client.update(&plans.find_ids, None, &[ids.to_vec().into()]));
    rows.into_iter()
        .map(|row| StoredEvent {
            event_id: std_uuid(spi(row.get(1)).expect("NOT NULL")),
            stream_id: spi(row.get(2)).expect("NOT NULL"),
            stream_version: spi(row.get(3)).expect("NOT NULL"),
            event_type: spi(row.get(4)).expect("NOT NULL"),
            global_position: spi(row.get(5)).expect("NOT NULL"),
        })
        .collect()
}

fn retry_rows(rows: Vec<StoredEvent>) -> Vec<Appended> {
    rows.into_iter()
        .map(|s| Appended {
            event_id: s.event_id,
            stream_version: s.stream_version,
            global_position: s.global_position,
        })
        .collect()
}
