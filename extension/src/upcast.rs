//! Schema evolution: the upcaster registry (`eventstore.upcasters`), and upcasting on every read
//! path. The rules are [`eventstore_core::upcast`]'s; docs/schema-evolution.md is the user's view.
//!
//! Every read (the SQL read functions, `events_current`, replay's fold) builds its rows with
//! three per-row functions, `_upcast_type`, `_upcast_version` and `_upcast_data`. Each looks the
//! event's stored `(type, version)` up in the registry, cached per backend; an event with no
//! route (every event, when nothing is registered) is returned as stored with one hash probe
//! and no copy. Only `_upcast_data` runs upcasters.
//!
//! The cache is reloaded when PostgreSQL's invalidation messages say the registry table or any
//! function changed (a statement trigger on the table sends them; other backends get them at
//! their next transaction or lock, as for DDL). It is read under the latest snapshot, so a
//! reload after an invalidation always sees the commit that sent it.
//!
//! Security: upcasters are user code. They run as the caller of the read, with its rights
//! (EXECUTE on the upcaster is checked), never inside the extension's write scope and never as
//! the owner: the read functions are SECURITY INVOKER, and `append` (SECURITY DEFINER) only
//! reads the registry, it never upcasts. An upcaster's error reaches the caller unchanged (its
//! SQLSTATE, message and context) plus a context line naming the event: it is called through its
//! bare `fn_addr`, as replay calls reducers, so only `Copy` values live on the frames it may
//! longjmp over.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, JsonB};

use eventstore_core::envelope::NewEvent;
use eventstore_core::upcast::{Registry, Step};

use crate::error::{raise, raise_with, EsError, OrRaise};
use crate::snapshot;
use crate::spi;

extension_sql_file!(
    "sql/upcast.sql",
    name = "upcast",
    requires = ["bootstrap", registry_changed, event_types, register_upcaster_sql]
);

/// One step as the backend calls it.
struct StepCall {
    /// InvalidOid when the registered function no longer exists.
    fn_oid: Oid,
    /// Set up on the step's first call (in the caller's rights), in [`Loaded::cxt`].
    flinfo: Cell<*mut pg_sys::FmgrInfo>,
    upcaster: CString,
    from_type: CString,
    to_type: CString,
    from_version: i32,
    /// Still IMMUTABLE (a CREATE OR REPLACE may have changed that since it was registered).
    immutable: bool,
}

/// A declared type's validator.
struct Validator {
    /// InvalidOid when the function no longer exists.
    fn_oid: Oid,
    name: CString,
    returns_boolean: bool,
    flinfo: Cell<*mut pg_sys::FmgrInfo>,
}

/// The registry as loaded, with a memory context for the steps' call set-up. Freed when
/// replaced, never while an upcaster runs (see [`Active`]).
struct Loaded {
    registry: Registry,
    calls: Vec<StepCall>,
    /// Declared event types, with their validators (see [`check_declared`]).
    declared: std::collections::HashMap<String, Option<Validator>>,
    cxt: pg_sys::MemoryContext,
    /// type -> chain fingerprint, for every type with a chain (see [`chain_fingerprints`]).
    fingerprints: serde_json::Value,
}

thread_local! {
    static LOADED: Cell<*mut Loaded> = const { Cell::new(ptr::null_mut()) };
    /// Invalidations received (see the callbacks), and how many the loaded registry has seen.
    static INVALIDATIONS: Cell<u64> = const { Cell::new(0) };
    static LOADED_AT: Cell<u64> = const { Cell::new(u64::MAX) };
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
    static REGISTRY_RELIDS: Cell<[Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
    /// Upcaster calls in progress: (depth, local transaction id), as in append_only.rs.
    static ACTIVE: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    static REGISTRY_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
    /// The local transaction that last accepted invalidations.
    static ACCEPTED_IN: Cell<u32> = const { Cell::new(0) };
    /// Bumped at every reload: what [`MEMO`] was computed against.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// The last lookup (generation, version, type, route): a row's three per-row functions ask
    /// the same question, and so do runs of events of one type.
    static MEMO: std::cell::RefCell<(u64, i32, String, Option<*const eventstore_core::upcast::Route>)> =
        const { std::cell::RefCell::new((u64::MAX, 0, String::new(), None)) };
    static DECLARATIONS_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(ptr::null_mut()) };
}

/// The registry rows, read as the owner with a pinned search_path (sql/upcast.sql): any role
/// that may read events sees them upcast, without rights on the table.
const REGISTRY_SQL: &std::ffi::CStr = c"
    SELECT r.event_type, r.from_version, r.new_type, r.upcaster, r.upcaster_oid, r.definition,
           r.immutable
    FROM eventstore._registry() r";
const DECLARATIONS_SQL: &std::ffi::CStr = c"
    SELECT d.event_type, d.validator, d.validator_oid, d.returns_boolean
    FROM eventstore._declarations() d";

unsafe extern "C-unwind" fn relcache_changed(_arg: Datum, relid: Oid) {
    if relid == pg_sys::InvalidOid || REGISTRY_RELIDS.with(Cell::get).contains(&relid) {
        INVALIDATIONS.with(|c| c.set(c.get().wrapping_add(1)));
    }
}

unsafe extern "C-unwind" fn proc_changed(_arg: Datum, _cache: c_int, _hash: u32) {
    INVALIDATIONS.with(|c| c.set(c.get().wrapping_add(1)));
}

fn local_xid() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, valid for the backend's life; one field is read.
    let proc_ = unsafe { &*pg_sys::MyProc };
    #[cfg(feature = "pg15")]
    let lxid = proc_.lxid;
    #[cfg(not(feature = "pg15"))]
    let lxid = proc_.vxid.lxid;
    lxid
}

/// Upcaster calls in progress in this transaction. A call that an error longjmped out of is
/// forgotten at the next transaction.
fn active() -> bool {
    let lxid = local_xid();
    ACTIVE.with(|c| {
        let (depth, owner) = c.get();
        depth > 0 && owner == lxid
    })
}

fn enter() {
    let lxid = local_xid();
    ACTIVE.with(|c| {
        let (depth, owner) = c.get();
        c.set((if owner == lxid { depth } else { 0 } + 1, lxid));
    });
}

fn leave() {
    ACTIVE.with(|c| {
        let (depth, owner) = c.get();
        c.set((depth.saturating_sub(1), owner));
    });
}

/// The registry, reloaded first if it changed. The reference is valid until the next call of
/// this function (which may free it), except while an upcaster runs: then no reload happens
/// and a nested read uses the registry the outer one does.
unsafe fn registry<'a>() -> &'a Loaded {
    // SAFETY: the callbacks only count; LOADED points to a live Loaded (or is null), replaced
    // only here and freed only when no upcaster call can be using it.
    unsafe {
        if !CALLBACKS.with(Cell::get) {
            pg_sys::CacheRegisterRelcacheCallback(Some(relcache_changed), Datum::from(0));
            pg_sys::CacheRegisterSyscacheCallback(
                pg_sys::SysCacheIdentifier::PROCOID as c_int,
                Some(proc_changed),
                Datum::from(0),
            );
            CALLBACKS.with(|c| c.set(true));
        }
        let current = LOADED.with(Cell::get);
        if !current.is_null() && active() {
            return &*current;
        }
        // Other sessions' changes: at least once per transaction, as for DDL (PostgreSQL also
        // takes them at every new lock); this session's own arrive through the callbacks at
        // each command's end. Not per row: the hot path makes no call into PostgreSQL.
        let lxid = local_xid();
        if ACCEPTED_IN.with(Cell::get) != lxid {
            pg_sys::AcceptInvalidationMessages();
            ACCEPTED_IN.with(|c| c.set(lxid));
        }
        let seen = INVALIDATIONS.with(Cell::get);
        if current.is_null() || LOADED_AT.with(Cell::get) != seen {
            let fresh = Box::into_raw(Box::new(load()));
            LOADED.with(|c| c.set(fresh));
            LOADED_AT.with(|c| c.set(seen));
            GENERATION.with(|c| c.set(c.get().wrapping_add(1)));
            if !current.is_null() {
                let old = Box::from_raw(current);
                pg_sys::MemoryContextDelete(old.cxt);
            }
            return &*fresh;
        }
        &*current
    }
}

/// Read the registry table. Connects to SPI itself.
unsafe fn load() -> Loaded {
    // SAFETY: SPI is connected here and finished on every path that returns; the result table
    // is read before SPI_finish, its values copied into Rust strings.
    unsafe {
        assert_eq!(pg_sys::SPI_connect(), pg_sys::SPI_OK_CONNECT as i32);
        if let Err(e) = snapshot::catalog_current() {
            pg_sys::SPI_finish();
            raise(e);
        }
        let namespace = pg_sys::get_namespace_oid(c"eventstore".as_ptr(), false);
        let relid = |name: &std::ffi::CStr| pg_sys::get_relname_relid(name.as_ptr(), namespace);
        REGISTRY_RELIDS.with(|c| c.set([relid(c"upcasters"), relid(c"event_declarations")]));
        // The latest snapshot, not the statement's: a reload after an invalidation must see
        // the commit that sent it.
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        let plan = spi::plan(&REGISTRY_PLAN, REGISTRY_SQL, &[]);
        let (t, n) = spi::execute(plan, &[], true, 0);
        let mut steps = Vec::with_capacity(n as usize);
        let mut calls = Vec::with_capacity(n as usize);
        let cstring = |s: &str| CString::new(s.replace('\0', "")).expect("NULs removed");
        for row in 0..n {
            let step = Step {
                event_type: spi::get_string(t, row, 1),
                from_version: spi::get(t, row, 2).map_or(0, |d| d.value() as i32),
                new_type: spi::get(t, row, 3).and_then(|d| String::from_datum(d, false)),
                upcaster: spi::get_string(t, row, 4),
                definition: spi::get_string(t, row, 6),
            };
            calls.push(StepCall {
                fn_oid: spi::get(t, row, 5)
                    .map_or(pg_sys::InvalidOid, |d| Oid::from(d.value() as u32)),
                flinfo: Cell::new(ptr::null_mut()),
                upcaster: cstring(&step.upcaster),
                from_type: cstring(&step.event_type),
                to_type: cstring(step.to_type()),
                from_version: step.from_version,
                immutable: spi::get_bool(t, row, 7),
            });
            steps.push(step);
        }
        let plan = spi::plan(&DECLARATIONS_PLAN, DECLARATIONS_SQL, &[]);
        let (t, n) = spi::execute(plan, &[], true, 0);
        let mut declared = std::collections::HashMap::with_capacity(n as usize);
        for row in 0..n {
            let validator = spi::get(t, row, 2).and_then(|d| String::from_datum(d, false));
            let validator = validator.map(|name| Validator {
                fn_oid: spi::get(t, row, 3)
                    .map_or(pg_sys::InvalidOid, |d| Oid::from(d.value() as u32)),
                name: cstring(&name),
                returns_boolean: spi::get_bool(t, row, 4),
                flinfo: Cell::new(ptr::null_mut()),
            });
            declared.insert(spi::get_string(t, row, 1), validator);
        }
        pg_sys::PopActiveSnapshot();
        pg_sys::SPI_finish();
        let cxt = pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"eventstore upcasters".as_ptr(),
            pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
            pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
            pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
        );
        let registry = Registry::new(steps);
        let fingerprints = registry
            .types()
            .into_iter()
            .map(|t| (t.to_owned(), serde_json::Value::String(registry.fingerprint(t))))
            .filter(|(_, f)| f.as_str() != Some(""))
            .collect::<serde_json::Map<_, _>>()
            .into();
        Loaded { registry, calls, declared, cxt, fingerprints }
    }
}

/// Registry changes reach every backend's cache: this statement trigger on
/// `eventstore.upcasters` sends a relcache invalidation of the table, delivered at commit.
#[pg_trigger]
fn registry_changed<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    // SAFETY: the trigger's relation is open for the trigger's whole call.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(trigger.relation()?.oid()) };
    Ok(None)
}

/// How each stored type is read today, as snapshots record it: a jsonb object from every type
/// with a chain to its fingerprint (a type it does not name reads as stored). With `upcast`
/// false nothing is upcast: `{}`. In the current memory context.
pub(crate) unsafe fn chain_fingerprints(upcast: bool) -> Datum {
    let value = if upcast {
        // SAFETY: the registry reference is used at once.
        unsafe { registry() }.fingerprints.clone()
    } else {
        serde_json::Value::Object(Default::default())
    };
    JsonB(value).into_datum().expect("jsonb")
}

// ---------------------------------------------------------------------------------------------
// Append: the version each new event is stored at.

/// Fill in every event's `schema_version`: the one given, checked against its type's chain, or
/// the type's current version. `index`: name events as `events[i]` (append) or not
/// (append_event). Reads the registry only: no user code runs.
pub fn resolve_versions(events: &mut [NewEvent], indexed: bool) -> Result<(), EsError> {
    let empty = Registry::default();
    // SAFETY: the reference is used before anything else can reload the registry.
    let registry = match unsafe { registry_if_updated() } {
        Some(loaded) => &loaded.registry,
        // Between installing this library and ALTER EXTENSION UPDATE, appends go on: there is
        // no registry yet, so every type is at version 1.
        None => &empty,
    };
    for (i, e) in events.iter_mut().enumerate() {
        let index = indexed.then_some(i);
        e.schema_version = Some(registry.append_version(index, &e.event_type, e.schema_version)?);
    }
    Ok(())
}

/// [`registry`], or None while the database's extension is older than this library.
unsafe fn registry_if_updated<'a>() -> Option<&'a Loaded> {
    // SAFETY: as for registry(); SPI is connected and finished around the version check.
    unsafe {
        if LOADED.with(Cell::get).is_null() {
            assert_eq!(pg_sys::SPI_connect(), pg_sys::SPI_OK_CONNECT as i32);
            let current = snapshot::catalog_current().is_ok();
            pg_sys::SPI_finish();
            if !current {
                return None;
            }
        }
        Some(registry())
    }
}

/// With `eventstore.require_declared_types` on: every event's type must be declared, and its
/// validator, if any, must accept the event. `payload(i)` gives event i's data and metadata
/// (jsonb datums). Called by append before it writes anything, outside its write scope.
///
/// Validators are user code and append runs as the extension's owner: they run as the role
/// that called append (the outer user, as SET ROLE left it), in a restricted security context,
/// with EXECUTE on the validator checked for that role.
pub fn check_declared(
    events: &[NewEvent],
    indexed: bool,
    mut payload: impl FnMut(usize) -> (Datum, Datum),
) -> Result<(), EsError> {
    if !crate::settings::REQUIRE_DECLARED_TYPES.get() {
        return Ok(());
    }
    let argument = |i: usize, member: &str| match indexed {
        true => format!("events[{i}].{member}"),
        false if member == "type" => "event_type".to_owned(),
        false => member.to_owned(),
    };
    // SAFETY: the registry reference is not held across a reload: validators run in the
    // caller's rights but no read of the store happens in between.
    let loaded = unsafe { registry() };
    for (i, e) in events.iter().enumerate() {
        let Some(declared) = loaded.declared.get(&e.event_type) else {
            return Err(EsError::invalid(
                argument(i, "type"),
                format!(
                    "{} is not a declared event type (eventstore.require_declared_types is on; \
                     declare it with eventstore.declare_event_type)",
                    e.event_type
                ),
            ));
        };
        if let Some(validator) = declared {
            let (data, metadata) = payload(i);
            // SAFETY: the datums are jsonb values alive for the append.
            if let Some(reason) = unsafe { run_validator(loaded, validator, data, metadata) } {
                return Err(EsError::invalid(
                    argument(i, "data"),
                    format!(
                        "rejected by {}'s validator {}: {reason}",
                        e.event_type,
                        validator.name.to_string_lossy()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Run a validator as the outer user. Returns the reason it rejects the event, if it does (its
/// error message, if it raises).
unsafe fn run_validator(
    loaded: &Loaded,
    v: &Validator,
    data: Datum,
    metadata: Datum,
) -> Option<String> {
    // SAFETY: the FmgrInfo lives in loaded.cxt; the call frame is palloc'd; the user id and
    // security context are restored on both paths of the PgTry.
    unsafe {
        let name = v.name.to_string_lossy().into_owned();
        if v.fn_oid == pg_sys::InvalidOid {
            return Some(format!("the validator {name} no longer exists"));
        }
        let outer = pg_sys::GetOuterUserId();
        #[cfg(feature = "pg15")]
        let allowed = pg_sys::pg_proc_aclcheck(v.fn_oid, outer, pg_sys::ACL_EXECUTE as _);
        #[cfg(not(feature = "pg15"))]
        let allowed = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            v.fn_oid,
            outer,
            pg_sys::ACL_EXECUTE as _,
        );
        if allowed != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(allowed, pg_sys::ObjectType::OBJECT_FUNCTION, v.name.as_ptr());
        }
        let mut flinfo = v.flinfo.get();
        if flinfo.is_null() {
            flinfo = pg_sys::MemoryContextAllocZero(loaded.cxt, size_of::<pg_sys::FmgrInfo>())
                as *mut pg_sys::FmgrInfo;
            pg_sys::fmgr_info_cxt(v.fn_oid, flinfo, loaded.cxt);
            v.flinfo.set(flinfo);
        }
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        let restricted =
            (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as c_int;
        pg_sys::SetUserIdAndSecContext(outer, context | restricted);
        // As for an upcaster: no reload (which would free `loaded`) while the validator runs.
        enter();
        let returns_boolean = v.returns_boolean;
        let outcome = pgrx::PgTryBuilder::new(|| {
            let size = size_of::<pg_sys::FunctionCallInfoBaseData>()
                + 2 * size_of::<pg_sys::NullableDatum>();
            let fcinfo = pg_sys::palloc0(size) as pg_sys::FunctionCallInfo;
            (*fcinfo).flinfo = flinfo;
            (*fcinfo).nargs = 2;
            let args = ptr::addr_of_mut!((*fcinfo).args) as *mut pg_sys::NullableDatum;
            *args.add(0) = pg_sys::NullableDatum { value: data, isnull: false };
            *args.add(1) = pg_sys::NullableDatum { value: metadata, isnull: false };
            let call = (*flinfo).fn_addr.expect("fmgr_info sets fn_addr");
            // Guarded: a validator's error becomes a panic this PgTry catches, to be reported
            // as the append's 22023 (raised before anything touches the database again).
            let result = pg_sys::ffi::pg_guard_ffi_boundary(|| call(fcinfo));
            match ((*fcinfo).isnull, returns_boolean) {
                (true, true) => Some("it returned NULL".to_owned()),
                (true, false) => None,
                (false, true) => (result.value() == 0).then(|| "it returned false".to_owned()),
                (false, false) => String::from_datum(result, false),
            }
        })
        .catch_others(|e| match e {
            pgrx::pg_sys::panic::CaughtError::PostgresError(report)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(report)
            | pgrx::pg_sys::panic::CaughtError::RustPanic { ereport: report, .. } => {
                Some(report.message().to_owned())
            }
        })
        .execute();
        leave();
        pg_sys::SetUserIdAndSecContext(user, context);
        outcome
    }
}

// ---------------------------------------------------------------------------------------------
// The per-row functions (declared in sql/upcast.sql).

/// The text of a text datum, without copying; None for NULL or non-UTF-8.
unsafe fn text<'a>(d: Option<Datum>) -> Option<&'a str> {
    // SAFETY: the caller passes a text datum alive for 'a; a packed copy is palloc'd in the
    // current (per-row) context when the value is compressed or external.
    unsafe {
        let raw = d?.cast_mut_ptr::<pg_sys::varlena>();
        // Short and plain values (every event type in practice) are read in place.
        let plain = (pgrx::varlena::varatt_is_1b(raw) && !pgrx::varlena::varatt_is_1b_e(raw))
            || pgrx::varlena::varatt_is_4b_u(raw);
        let v = if plain { raw } else { pg_sys::pg_detoast_datum_packed(raw) };
        let len = pgrx::varlena::varsize_any_exhdr(v);
        let bytes = std::slice::from_raw_parts(pgrx::varlena::vardata_any(v) as *const u8, len);
        std::str::from_utf8(bytes).ok()
    }
}

/// The route of the event in arguments `type_arg` (text), `type_arg + 1` (integer), unless the
/// `upcast` argument is false.
unsafe fn lookup<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    type_arg: usize,
    upcast_arg: usize,
) -> Option<(&'a Loaded, &'a eventstore_core::upcast::Route)> {
    use pgrx::fcinfo::pg_getarg_datum as arg;
    // SAFETY: the caller's fcinfo has these arguments with these types.
    unsafe {
        if arg(fcinfo, upcast_arg).is_some_and(|d| d.value() == 0) {
            return None;
        }
        let loaded = registry();
        if loaded.registry.is_empty() {
            return None;
        }
        let t = text(arg(fcinfo, type_arg))?;
        let v = arg(fcinfo, type_arg + 1)?.value() as i32;
        let generation = GENERATION.with(Cell::get);
        let route = MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            if memo.0 == generation && memo.1 == v && memo.2 == t {
                return memo.3;
            }
            let route = loaded.registry.route(t, v).map(|r| r as *const _);
            memo.2.clear();
            memo.2.push_str(t);
            (memo.0, memo.1, memo.3) = (generation, v, route);
            route
        });
        // SAFETY: the route lives in `loaded`, the registry of this generation.
        route.map(|r| (loaded, &*r))
    }
}

unsafe fn return_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Datum {
    // SAFETY: the caller's fcinfo has argument n.
    unsafe {
        match pgrx::fcinfo::pg_getarg_datum(fcinfo, n) {
            Some(d) => d,
            None => {
                (*fcinfo).isnull = true;
                Datum::from(0)
            }
        }
    }
}

macro_rules! v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

v1!(pg_finfo_eventstore_upcast_type);
v1!(pg_finfo_eventstore_upcast_version);
v1!(pg_finfo_eventstore_upcast_data);

/// `eventstore._upcast_type(event_type text, schema_version integer, upcast boolean)`: the type
/// the event is read as.
///
/// # Safety
/// Called by PostgreSQL's function manager only, with that signature.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn eventstore_upcast_type(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: fcinfo is a call of _upcast_type (see the contract).
    unsafe {
        match lookup(fcinfo, 0, 2) {
            Some((_, route)) => route.event_type.as_str().into_datum().expect("text"),
            None => return_arg(fcinfo, 0),
        }
    }
}

/// `eventstore._upcast_version(event_type text, schema_version integer, upcast boolean)`: the
/// version the event is read at.
///
/// # Safety
/// Called by PostgreSQL's function manager only, with that signature.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn eventstore_upcast_version(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Datum {
    // SAFETY: fcinfo is a call of _upcast_version (see the contract).
    unsafe {
        match lookup(fcinfo, 0, 2) {
            Some((_, route)) => Datum::from(route.version),
            None => return_arg(fcinfo, 1),
        }
    }
}

/// What the error context of a failing upcaster names. Only `Copy` data.
#[derive(Clone, Copy)]
struct CallContext {
    stream_id: Option<Datum>,
    stream_version: i64,
    global_position: i64,
    step: *const StepCall,
}

unsafe extern "C-unwind" fn upcast_context(arg: *mut c_void) {
    // SAFETY: arg is the CallContext pushed with this callback, alive while it is on the stack;
    // its step lives in the loaded registry, not freed while an upcaster runs.
    unsafe {
        let c = &*(arg as *const CallContext);
        let step = &*c.step;
        let stream = c.stream_id.and_then(|d| String::from_datum(d, false)).unwrap_or_default();
        let message = format!(
            "upcasting event {} of stream \"{}\" (global position {}) from {} version {} to {} \
             version {} with {}",
            c.stream_version,
            stream,
            c.global_position,
            step.from_type.to_string_lossy(),
            step.from_version,
            step.to_type.to_string_lossy(),
            step.from_version.saturating_add(1),
            step.upcaster.to_string_lossy(),
        );
        let message = CString::new(message.replace('\0', "")).expect("NULs removed");
        set_errcontext_domain(ptr::null());
        errcontext_msg(c"%s".as_ptr(), message.as_ptr());
    }
}

unsafe extern "C-unwind" {
    fn set_errcontext_domain(domain: *const c_char) -> c_int;
    fn errcontext_msg(fmt: *const c_char, ...) -> c_int;
}

/// May the current user run the step's function? Raises 42501 if not.
unsafe fn check_execute(step: &StepCall) {
    // SAFETY: plain catalog lookups; aclcheck_error raises.
    unsafe {
        let user = pg_sys::GetUserId();
        #[cfg(feature = "pg15")]
        let result = pg_sys::pg_proc_aclcheck(step.fn_oid, user, pg_sys::ACL_EXECUTE as _);
        #[cfg(not(feature = "pg15"))]
        let result = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            step.fn_oid,
            user,
            pg_sys::ACL_EXECUTE as _,
        );
        if result != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                result,
                pg_sys::ObjectType::OBJECT_FUNCTION,
                step.upcaster.as_ptr(),
            );
        }
    }
}

/// Run one step on `data`: the upcaster's result. Its errors longjmp from here with their own
/// SQLSTATE and context, plus ours naming the event.
unsafe fn call_step(
    loaded: &Loaded,
    step: &StepCall,
    data: Datum,
    metadata: Option<Datum>,
    context: CallContext,
) -> Datum {
    // SAFETY: the step's FmgrInfo is set up in loaded.cxt (which outlives the call: no reload
    // while an upcaster runs); the call frame is palloc'd in the per-row context; only Copy
    // values live in this frame when the upcaster raises.
    unsafe {
        if step.fn_oid == pg_sys::InvalidOid {
            raise_with(
                "42883",
                format!(
                    "upcaster {} of {} version {} no longer exists",
                    step.upcaster.to_string_lossy(),
                    step.from_type.to_string_lossy(),
                    step.from_version
                ),
                Some("Register the step again with eventstore.register_upcaster.".into()),
            );
        }
        if !step.immutable {
            raise_with(
                "55000",
                format!(
                    "upcaster {} of {} version {} is no longer IMMUTABLE",
                    step.upcaster.to_string_lossy(),
                    step.from_type.to_string_lossy(),
                    step.from_version
                ),
                Some(
                    "An event must read the same every time: make the function IMMUTABLE again."
                        .into(),
                ),
            );
        }
        check_execute(step);
        let mut flinfo = step.flinfo.get();
        if flinfo.is_null() {
            flinfo = pg_sys::MemoryContextAllocZero(loaded.cxt, size_of::<pg_sys::FmgrInfo>())
                as *mut pg_sys::FmgrInfo;
            pg_sys::fmgr_info_cxt(step.fn_oid, flinfo, loaded.cxt);
            step.flinfo.set(flinfo);
        }
        let size =
            size_of::<pg_sys::FunctionCallInfoBaseData>() + 2 * size_of::<pg_sys::NullableDatum>();
        let fcinfo = pg_sys::palloc0(size) as pg_sys::FunctionCallInfo;
        (*fcinfo).flinfo = flinfo;
        (*fcinfo).nargs = 2;
        (*fcinfo).fncollation = pg_sys::InvalidOid;
        let args = ptr::addr_of_mut!((*fcinfo).args) as *mut pg_sys::NullableDatum;
        *args.add(0) = pg_sys::NullableDatum { value: data, isnull: false };
        *args.add(1) = pg_sys::NullableDatum {
            value: metadata.unwrap_or(Datum::from(0)),
            isnull: metadata.is_none(),
        };
        if (*flinfo).fn_strict && metadata.is_none() {
            return data;
        }
        let call = (*flinfo).fn_addr.expect("fmgr_info sets fn_addr");
        let mut context = context;
        let mut callback = pg_sys::ErrorContextCallback {
            previous: pg_sys::error_context_stack,
            callback: Some(upcast_context),
            arg: ptr::addr_of_mut!(context) as *mut c_void,
        };
        pg_sys::error_context_stack = &mut callback;
        enter();
        // Unguarded on purpose: the upcaster's error keeps its SQLSTATE and context.
        let result = call(fcinfo);
        leave();
        pg_sys::error_context_stack = callback.previous;
        if (*fcinfo).isnull {
            let stream = context.stream_id.and_then(|d| String::from_datum(d, false));
            raise_with(
                "22004",
                format!(
                    "upcaster {} returned NULL for event {} of stream \"{}\" (global position {})",
                    step.upcaster.to_string_lossy(),
                    context.stream_version,
                    stream.unwrap_or_default(),
                    context.global_position
                ),
                Some("An upcaster returns the event's new data: a jsonb value, never NULL.".into()),
            );
        }
        result
    }
}

/// `eventstore._upcast_data(event_type text, schema_version integer, data jsonb, metadata jsonb,
/// upcast boolean, stream_id text, stream_version bigint, global_position bigint)`: the data the
/// event is read with, through every step of its route.
///
/// # Safety
/// Called by PostgreSQL's function manager only, with that signature.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn eventstore_upcast_data(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    use pgrx::fcinfo::pg_getarg_datum as arg;
    // SAFETY: fcinfo is a call of _upcast_data (see the contract); see call_step.
    unsafe {
        let Some((loaded, route)) = lookup(fcinfo, 0, 4) else {
            return return_arg(fcinfo, 2);
        };
        let Some(mut data) = arg(fcinfo, 2) else {
            return return_arg(fcinfo, 2);
        };
        let metadata = arg(fcinfo, 3);
        let mut context = CallContext {
            stream_id: arg(fcinfo, 5),
            stream_version: arg(fcinfo, 6).map_or(0, |d| d.value() as i64),
            global_position: arg(fcinfo, 7).map_or(0, |d| d.value() as i64),
            step: ptr::null(),
        };
        for &i in &route.steps {
            let step = &loaded.calls[i];
            context.step = step;
            data = call_step(loaded, step, data, metadata, context);
        }
        data
    }
}

// ---------------------------------------------------------------------------------------------
// The registry's SQL surface.

/// The rows of `eventstore.event_types`: every type the registry names, with the version new
/// events of it are stored at and the steps its events go through.
#[pg_extern(stable, parallel_restricted, name = "_event_types")]
fn event_types() -> TableIterator<
    'static,
    (name!(event_type, String), name!(current_version, i32), name!(chain, JsonB)),
> {
    // SAFETY: the registry is read at once, before anything can reload it.
    let loaded = unsafe { registry() };
    let r = &loaded.registry;
    let rows: Vec<_> = r
        .types()
        .into_iter()
        .map(|t| (t.to_owned(), r.current_version(t), JsonB(r.chain_json(t))))
        .collect();
    TableIterator::new(rows)
}

/// The step's function must be `(data jsonb, metadata jsonb) RETURNS jsonb` and IMMUTABLE.
const UPCASTER_SQL: &str = "
    SELECT p.prokind OPERATOR(pg_catalog.=) 'f' AND NOT p.proretset
           AND p.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype
           AND p.pronargs OPERATOR(pg_catalog.=) 2
           AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype
           AND p.proargtypes[1] OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype,
           p.provolatile::pg_catalog.text,
           p.oid::pg_catalog.regprocedure::pg_catalog.text
    FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) $1";

const LOCK_SQL: &str = "LOCK TABLE eventstore.upcasters IN SHARE ROW EXCLUSIVE MODE";

/// `register_upcaster`'s work (the SQL wrapper in sql/upcast.sql passes the regprocedure as an
/// oid). Owner and superusers only: nothing grants it.
#[pg_extern(volatile, parallel_unsafe, name = "_register_upcaster")]
#[search_path(pg_catalog, pg_temp)]
fn register_upcaster_sql(
    event_type: Option<&str>,
    from_version: Option<i32>,
    upcaster: Option<pg_sys::Oid>,
    new_type: Option<&str>,
) {
    let event_type = EsError::required("event_type", event_type).or_raise();
    let from_version =
        from_version.ok_or_else(|| EsError::invalid("from_version", "must not be NULL")).or_raise();
    let upcaster =
        upcaster.ok_or_else(|| EsError::invalid("upcaster", "must not be NULL")).or_raise();
    let checked: Result<(), EsError> = Spi::connect_mut(|client| {
        client.update(LOCK_SQL, None, &[]).expect("pg_eventstore: locking the registry");
        let row = client
            .select(UPCASTER_SQL, Some(1), &[upcaster.into()])
            .expect("pg_eventstore: reading pg_proc");
        let Some(row) = row.into_iter().next() else {
            return Err(EsError::invalid(
                "upcaster",
                format!("no function has OID {}", upcaster.to_u32()),
            ));
        };
        let fits: bool = row.get(1).ok().flatten().unwrap_or(false);
        let volatility: String = row.get(2).ok().flatten().unwrap_or_default();
        let name: String = row.get(3).ok().flatten().unwrap_or_default();
        if !fits {
            return Err(EsError::invalid(
                "upcaster",
                format!(
                    "{name} does not fit: an upcaster is a function (data jsonb, metadata jsonb) \
                     RETURNS jsonb"
                ),
            ));
        }
        if volatility != "i" {
            let is = if volatility == "s" { "STABLE" } else { "VOLATILE" };
            return Err(EsError::invalid(
                "upcaster",
                format!(
                    "{name} must be IMMUTABLE (it is {is}): an event must read the same every time"
                ),
            ));
        }
        // SAFETY: the reference is used before anything can reload the registry.
        let loaded = unsafe { registry() };
        loaded.registry.check_register(event_type, from_version, new_type)?;
        if let Some(new_type) = new_type {
            let to_version = from_version + 1;
            let older = client
                .select(
                    "SELECT EXISTS (SELECT FROM eventstore.events e
                                    WHERE e.event_type OPERATOR(pg_catalog.=) $1
                                      AND e.schema_version OPERATOR(pg_catalog.<) $2)",
                    Some(1),
                    &[new_type.into(), to_version.into()],
                )
                .and_then(|t| t.first().get_one::<bool>())
                .expect("pg_eventstore: reading events");
            if older == Some(true) {
                return Err(EsError::invalid(
                    "new_type",
                    format!(
                        "events of type {new_type} are already stored at versions below \
                         {to_version}, where the rename would bring {event_type} in"
                    ),
                ));
            }
        }
        client
            .update(
                "INSERT INTO eventstore.upcasters (event_type, from_version, upcaster, new_type)
                 VALUES ($1, $2, $3, $4)",
                None,
                &[event_type.into(), from_version.into(), name.as_str().into(), new_type.into()],
            )
            .expect("pg_eventstore: registering the upcaster");
        Ok(())
    });
    checked.or_raise();
}

/// `declare_event_type`'s work (the SQL wrapper in sql/upcast.sql passes the regprocedure as an
/// oid, or NULL). Owner and superusers only: nothing grants it.
#[pg_extern(volatile, parallel_unsafe, name = "_declare_event_type")]
#[search_path(pg_catalog, pg_temp)]
fn declare_event_type_sql(event_type: Option<&str>, validator: Option<pg_sys::Oid>) {
    let event_type = EsError::required("event_type", event_type).or_raise();
    let checked: Result<(), EsError> = Spi::connect_mut(|client| {
        let name = match validator {
            None => None,
            Some(f) => {
                let row = client
                    .select(
                        "SELECT p.prokind OPERATOR(pg_catalog.=) 'f' AND NOT p.proretset
                                AND p.prorettype OPERATOR(pg_catalog.=) ANY
                                    ('{pg_catalog.bool,pg_catalog.text}'::pg_catalog.regtype[])
                                AND p.pronargs OPERATOR(pg_catalog.=) 2
                                AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype
                                AND p.proargtypes[1] OPERATOR(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype,
                                p.oid::pg_catalog.regprocedure::pg_catalog.text
                         FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) $1",
                        Some(1),
                        &[f.into()],
                    )
                    .expect("pg_eventstore: reading pg_proc");
                let Some(row) = row.into_iter().next() else {
                    return Err(EsError::invalid(
                        "validator",
                        format!("no function has OID {}", f.to_u32()),
                    ));
                };
                let fits: bool = row.get(1).ok().flatten().unwrap_or(false);
                let name: String = row.get(2).ok().flatten().unwrap_or_default();
                if !fits {
                    return Err(EsError::invalid(
                        "validator",
                        format!(
                            "{name} does not fit: a validator is a function (data jsonb, \
                             metadata jsonb) RETURNS boolean or text"
                        ),
                    ));
                }
                Some(name)
            }
        };
        client
            .update(
                "INSERT INTO eventstore.event_declarations AS d (event_type, validator)
                 VALUES ($1, $2)
                 ON CONFLICT (event_type) DO UPDATE
                 SET validator = EXCLUDED.validator, declared_at = pg_catalog.now()",
                None,
                &[event_type.into(), name.as_deref().into()],
            )
            .expect("pg_eventstore: declaring the event type");
        Ok(())
    });
    checked.or_raise();
}

/// Remove the last step of a chain. Refused while events are stored at the version the step
/// leads to (they would be above their type's current version). Owner and superusers only.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn unregister_upcaster(event_type: Option<&str>, from_version: Option<i32>) {
    let event_type = EsError::required("event_type", event_type).or_raise();
    let from_version =
        from_version.ok_or_else(|| EsError::invalid("from_version", "must not be NULL")).or_raise();
    let checked: Result<(), EsError> = Spi::connect_mut(|client| {
        client.update(LOCK_SQL, None, &[]).expect("pg_eventstore: locking the registry");
        // SAFETY: the reference is used before anything can reload the registry.
        let loaded = unsafe { registry() };
        let (to_type, to_version) = loaded.registry.check_unregister(event_type, from_version)?;
        let stored = client
            .select(
                "SELECT EXISTS (SELECT FROM eventstore.events e
                                WHERE e.event_type OPERATOR(pg_catalog.=) $1
                                  AND e.schema_version OPERATOR(pg_catalog.>=) $2)",
                Some(1),
                &[to_type.as_str().into(), to_version.into()],
            )
            .and_then(|t| t.first().get_one::<bool>())
            .expect("pg_eventstore: reading events");
        if stored == Some(true) {
            return Err(EsError::invalid(
                "from_version",
                format!(
                    "events of type {to_type} are stored at version {to_version}, which this \
                     step leads to; they would be above their type's current version"
                ),
            ));
        }
        client
            .update(
                "DELETE FROM eventstore.upcasters u
                 WHERE u.event_type OPERATOR(pg_catalog.=) $1
                   AND u.from_version OPERATOR(pg_catalog.=) $2",
                None,
                &[event_type.into(), from_version.into()],
            )
            .expect("pg_eventstore: unregistering the upcaster");
        Ok(())
    });
    checked.or_raise();
}
