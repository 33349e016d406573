//! `append` and `append_event`: optimistic concurrency per stream, idempotent retries by
//! event id, and nothing written when anything is wrong.
//!
//! Concurrency: every append locks its stream's row in `eventstore.streams` (by upserting
//! it), so writers of one stream serialize and writers of different streams never meet. A
//! writer that loses a race on the same expected version waits for the winner's row lock and
//! then sees the winner's version: it fails with ES001, never with a unique violation.

use std::cell::OnceCell;

use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{JsonB, PgBuiltInOids, PgOid};
use serde_json::Value;

use crate::append_only::ApiWrite;
use crate::envelope::{
    parse_events, validate_event_type, validate_metadata, validate_stream_id, NewEvent,
};
use crate::error::{raise, EsError, ExpectedVersion};
use crate::idempotency::{classify, IdCheck, StoredEvent};

/// One appended (or, on an idempotent retry, previously appended) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub event_id: uuid::Uuid,
    pub stream_version: i64,
    pub global_position: i64,
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

/// Append a batch of events (a JSON array of `{"type", "data", "metadata", "id"}`) to a stream.
#[pg_extern(volatile, parallel_unsafe)]
fn append(
    stream_id: Option<&str>,
    events: Option<JsonB>,
    expected_version: default!(Option<i64>, "NULL"),
) -> TableIterator<'static, (name!(event_id, pgrx::Uuid), name!(stream_version, i64), name!(global_position, i64))> {
    to_rows((|| {
        let stream_id = validate_stream_id(stream_id)?;
        let expected = ExpectedVersion::from_sql(expected_version)?;
        let events = parse_events(events.map(|j| j.0))?;
        append_to_stream(stream_id, &events, expected)
    })())
}

/// Append one event, without building a JSON array.
#[pg_extern(volatile, parallel_unsafe)]
fn append_event(
    stream_id: Option<&str>,
    event_type: Option<&str>,
    data: Option<JsonB>,
    metadata: default!(Option<JsonB>, "'{}'"),
    expected_version: default!(Option<i64>, "NULL"),
    event_id: default!(Option<pgrx::Uuid>, "NULL"),
) -> TableIterator<'static, (name!(event_id, pgrx::Uuid), name!(stream_version, i64), name!(global_position, i64))> {
    to_rows((|| {
        let stream_id = validate_stream_id(stream_id)?;
        let event_type = validate_event_type("event_type", event_type)?;
        let data = data
            .ok_or_else(|| {
                EsError::invalid("data", "must not be NULL (use '{}' or 'null'::jsonb for none)")
            })?
            .0;
        let metadata = match metadata {
            None => Value::Object(Default::default()),
            Some(m) => validate_metadata("metadata", m.0)?,
        };
        let expected = ExpectedVersion::from_sql(expected_version)?;
        let id = event_id.map(|u| uuid::Uuid::from_bytes(*u.as_bytes()));
        append_to_stream(stream_id, &[NewEvent { id, event_type, data, metadata }], expected)
    })())
}

/// The statements an append runs, prepared once per backend.
struct Plans {
    /// Create or lock the stream row and move its version by $2; returns the new version.
    bump: OwnedPreparedStatement,
    /// Lock an existing stream row; returns its version.
    lock: OwnedPreparedStatement,
    /// Create a stream row at version 0 unless it exists; returns 0 if it created it.
    create: OwnedPreparedStatement,
    set_version: OwnedPreparedStatement,
    find_ids: OwnedPreparedStatement,
    insert_one: OwnedPreparedStatement,
    insert_many: OwnedPreparedStatement,
    /// As insert_many, but an id taken meanwhile by another stream's writer is skipped (and
    /// then reported as ES004) instead of failing with a unique violation.
    insert_many_ids: OwnedPreparedStatement,
}

const INSERT_MANY: &str = "INSERT INTO eventstore.events \
       (stream_id, stream_version, event_id, event_type, data, metadata) \
     SELECT $1, $2 + t.n, t.id, t.type, t.data, t.metadata \
     FROM unnest($3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[]) \
          WITH ORDINALITY AS t(id, type, data, metadata, n)";
const RETURNING: &str = " RETURNING event_id, stream_version, global_position";

impl Plans {
    fn prepare(client: &SpiClient<'_>) -> Plans {
        use PgBuiltInOids as O;
        let oid = |o: PgBuiltInOids| PgOid::BuiltIn(o);
        let prep = |sql: &str, args: &[PgOid]| {
            client.prepare_mut(sql, args).expect("pg_eventstore statement prepares").keep()
        };
        let text = oid(O::TEXTOID);
        let int8 = oid(O::INT8OID);
        let many = [text, int8, oid(O::UUIDARRAYOID), oid(O::TEXTARRAYOID), oid(O::JSONBARRAYOID), oid(O::JSONBARRAYOID)];
        Plans {
            bump: prep(
                "INSERT INTO eventstore.streams AS s (stream_id, category, version) \
                 VALUES ($1, eventstore.category($1), $2) \
                 ON CONFLICT (stream_id) DO UPDATE \
                   SET version = s.version + EXCLUDED.version, updated_at = now() \
                 RETURNING s.version",
                &[text, int8],
            ),
            lock: prep(
                "SELECT version FROM eventstore.streams WHERE stream_id = $1 FOR UPDATE",
                &[text],
            ),
            create: prep(
                "INSERT INTO eventstore.streams (stream_id, category, version) \
                 VALUES ($1, eventstore.category($1), 0) \
                 ON CONFLICT (stream_id) DO NOTHING RETURNING version",
                &[text],
            ),
            set_version: prep(
                "UPDATE eventstore.streams SET version = $2, updated_at = now() \
                 WHERE stream_id = $1",
                &[text, int8],
            ),
            find_ids: prep(
                "SELECT event_id, stream_id, stream_version, event_type, global_position \
                 FROM eventstore.events WHERE event_id = ANY($1)",
                &[oid(O::UUIDARRAYOID)],
            ),
            insert_one: prep(
                &format!(
                    "INSERT INTO eventstore.events \
                       (stream_id, stream_version, event_id, event_type, data, metadata) \
                     VALUES ($1, $2, $3, $4, $5, $6){RETURNING}"
                ),
                &[text, int8, oid(O::UUIDOID), text, oid(O::JSONBOID), oid(O::JSONBOID)],
            ),
            insert_many: prep(&format!("{INSERT_MANY}{RETURNING}"), &many),
            insert_many_ids: prep(
                &format!("{INSERT_MANY} ON CONFLICT (event_id) DO NOTHING{RETURNING}"),
                &many,
            ),
        }
    }
}

thread_local! {
    static PLANS: OnceCell<Plans> = const { OnceCell::new() };
}

fn with_plans<R>(client: &mut SpiClient<'_>, f: impl FnOnce(&mut SpiClient<'_>, &Plans) -> R) -> R {
    PLANS.with(|cell| {
        let plans = cell.get_or_init(|| Plans::prepare(client));
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
    expected: ExpectedVersion,
) -> Result<Vec<Appended>, EsError> {
    let count = events.len() as i64;
    let given_ids: Vec<pgrx::Uuid> = events.iter().filter_map(|e| e.id).map(pg_uuid).collect();
    Spi::connect_mut(|client| {
        with_plans(client, |client, plans| {
            if given_ids.is_empty() {
                // Generated ids cannot collide: lock, move the version and check in one step.
                let _api = ApiWrite::begin();
                let new_version: i64 = spi(spi(client.update(
                    &plans.bump,
                    None,
                    &[stream_id.into(), count.into()],
                ))
                .first()
                .get_one())
                .expect("bump returns the version");
                let actual = new_version - count;
                check_expected(stream_id, expected, actual)?;
                return Ok(insert(client, plans, stream_id, actual, events, false));
            }

            // A retry of a batch that is already stored returns it and writes nothing.
            if let IdCheck::Retry(rows) = classify(stream_id, events, find_ids(client, plans, &given_ids))? {
                return Ok(retry_rows(rows));
            }
            let _api = ApiWrite::begin();
            let actual = lock_stream(client, plans, stream_id);
            // Look again under the lock: a concurrent identical retry may have committed while
            // we waited for it.
            if let IdCheck::Retry(rows) = classify(stream_id, events, find_ids(client, plans, &given_ids))? {
                return Ok(retry_rows(rows));
            }
            check_expected(stream_id, expected, actual)?;
            spi(client.update(
                &plans.set_version,
                None,
                &[stream_id.into(), (actual + count).into()],
            ));
            let appended = insert(client, plans, stream_id, actual, events, true);
            if appended.len() < events.len() {
                // Another stream's writer took one of our ids after we looked.
                classify(stream_id, events, find_ids(client, plans, &given_ids))?;
                unreachable!("an id taken by another stream is always a conflict");
            }
            Ok(appended)
        })
    })
}

fn check_expected(stream: &str, expected: ExpectedVersion, actual: i64) -> Result<(), EsError> {
    if expected.admits(actual) {
        Ok(())
    } else {
        Err(EsError::WrongExpectedVersion { stream: stream.to_owned(), expected, actual })
    }
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

/// Insert `events` after version `after`; returns the rows written, in version order.
fn insert(
    client: &mut SpiClient<'_>,
    plans: &Plans,
    stream_id: &str,
    after: i64,
    events: &[NewEvent],
    ids_may_collide: bool,
) -> Vec<Appended> {
    let id_of = |e: &NewEvent| pg_uuid(e.id.unwrap_or_else(uuid::Uuid::now_v7));
    let table = if let ([event], false) = (events, ids_may_collide) {
        spi(client.update(
            &plans.insert_one,
            None,
            &[
                stream_id.into(),
                (after + 1).into(),
                id_of(event).into(),
                event.event_type.as_str().into(),
                JsonB(event.data.clone()).into(),
                JsonB(event.metadata.clone()).into(),
            ],
        ))
    } else {
        let plan = if ids_may_collide { &plans.insert_many_ids } else { &plans.insert_many };
        spi(client.update(
            plan,
            None,
            &[
                stream_id.into(),
                after.into(),
                events.iter().map(id_of).collect::<Vec<_>>().into(),
                events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>().into(),
                events.iter().map(|e| JsonB(e.data.clone())).collect::<Vec<_>>().into(),
                events.iter().map(|e| JsonB(e.metadata.clone())).collect::<Vec<_>>().into(),
            ],
        ))
    };
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
