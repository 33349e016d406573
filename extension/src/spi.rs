//! Thin, unsafe helpers over PostgreSQL's SPI, for code that must not hold pgrx's SPI guards
//! (replay's fold and snapshot's save). Every call goes through pgrx's guarded bindings: an
//! error in one becomes a Rust panic.

use std::cell::Cell;
use std::ffi::CStr;
use std::thread::LocalKey;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{FromDatum, PgBuiltInOids};

pub(crate) fn oid(o: PgBuiltInOids) -> Oid {
    o.value()
}

/// The plan in `cache`, prepared (and kept) on first use. Must be connected.
pub unsafe fn plan(
    cache: &'static LocalKey<Cell<pg_sys::SPIPlanPtr>>,
    sql: &CStr,
    types: &[Oid],
) -> pg_sys::SPIPlanPtr {
    // SAFETY: the caller is connected to SPI.
    unsafe { plan_with_options(cache, sql, types, 0) }
}

/// As [`plan`], for a cursor that reads a stream in order. FAST_PLAN (what PL/pgSQL's FOR
/// loops use) keeps the planner on the ordered index scan that streams rows, even when one
/// stream is most of the table and a sort of everything would look cheaper in total.
pub unsafe fn cursor_plan(
    cache: &'static LocalKey<Cell<pg_sys::SPIPlanPtr>>,
    sql: &CStr,
    types: &[Oid],
) -> pg_sys::SPIPlanPtr {
    let options = pg_sys::CURSOR_OPT_FAST_PLAN | pg_sys::CURSOR_OPT_NO_SCROLL;
    // SAFETY: the caller is connected to SPI.
    unsafe { plan_with_options(cache, sql, types, options as i32) }
}

unsafe fn plan_with_options(
    cache: &'static LocalKey<Cell<pg_sys::SPIPlanPtr>>,
    sql: &CStr,
    types: &[Oid],
    options: i32,
) -> pg_sys::SPIPlanPtr {
    let cached = cache.with(Cell::get);
    if !cached.is_null() {
        return cached;
    }
    // SAFETY: the caller is connected to SPI; `types` has one OID per parameter of `sql`, and
    // the kept plan lives in the backend's cache context, so caching its pointer is sound.
    unsafe {
        let mut types = types.to_vec();
        let plan = pg_sys::SPI_prepare_cursor(
            sql.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            options,
        );
        assert!(!plan.is_null(), "pg_eventstore: SPI_prepare failed: {sql:?}");
        assert_eq!(pg_sys::SPI_keepplan(plan), 0, "pg_eventstore: SPI_keepplan failed");
        cache.with(|c| c.set(plan));
        plan
    }
}

pub fn nulls(args: &[Option<Datum>]) -> Vec<std::ffi::c_char> {
    args.iter().map(|a| if a.is_some() { b' ' } else { b'n' } as std::ffi::c_char).collect()
}

pub fn values(args: &[Option<Datum>]) -> Vec<Datum> {
    args.iter().map(|a| a.unwrap_or(Datum::from(0))).collect()
}

/// Run `plan`; returns the result table (valid until the next execute or `SPI_finish`).
pub unsafe fn execute(
    plan: pg_sys::SPIPlanPtr,
    args: &[Option<Datum>],
    read_only: bool,
    limit: i64,
) -> (*mut pg_sys::SPITupleTable, u64) {
    let mut values = values(args);
    let nulls = nulls(args);
    // SAFETY: the caller is connected to SPI and passes a plan from [`plan`] with one datum of
    // its parameter types per argument; `values` and `nulls` have that length.
    unsafe {
        let rc =
            pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), read_only, limit);
        assert!(rc >= 0, "pg_eventstore: SPI_execute_plan failed ({rc})");
        (pg_sys::SPI_tuptable, pg_sys::SPI_processed)
    }
}

/// Column `col` (1-based) of row `row`, or None for NULL.
pub unsafe fn get(table: *mut pg_sys::SPITupleTable, row: u64, col: i32) -> Option<Datum> {
    // SAFETY: the caller passes the current result table, a row below its count and a
    // column of its descriptor.
    unsafe {
        let tuple = *(*table).vals.add(row as usize);
        let mut isnull = false;
        let d = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, col, &mut isnull);
        (!isnull).then_some(d)
    }
}

pub unsafe fn get_i64(table: *mut pg_sys::SPITupleTable, row: u64, col: i32) -> Option<i64> {
    // SAFETY: as for [`get`]; the caller names a bigint column.
    unsafe { get(table, row, col).map(|d| d.value() as i64) }
}

pub unsafe fn get_bool(table: *mut pg_sys::SPITupleTable, row: u64, col: i32) -> bool {
    // SAFETY: as for [`get`]; the caller names a boolean column.
    unsafe { get(table, row, col).is_some_and(|d| d.value() != 0) }
}

pub unsafe fn get_string(table: *mut pg_sys::SPITupleTable, row: u64, col: i32) -> String {
    // SAFETY: as for [`get`]; the caller names a text column, copied into a String at once.
    unsafe { get(table, row, col).and_then(|d| String::from_datum(d, false)).unwrap_or_default() }
}
