//! The extension's settings (GUCs) and the library's load-time set-up.
//!
//! Both limits are `SUSET`: only a superuser may raise them, since what they bound (stack depth
//! on every later read of an event, one backend's memory) is the whole cluster's concern, and a
//! writer must not lift them for its own session.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

/// Deepest nesting of arrays and objects an appended event's `data` or `metadata` may have.
/// Deeper documents cannot be re-read from text reliably (pg_dump and restore, the worker), and
/// every later read of the event would pay for them.
pub static MAX_JSON_DEPTH: GucSetting<i32> =
    GucSetting::<i32>::new(eventstore_core::json::DEFAULT_MAX_JSON_DEPTH as i32);
/// As deep as stored data is ever read (`READ_DEPTH_LIMIT`): an accepted event always folds.
pub const MAX_JSON_DEPTH_CEILING: i32 = eventstore_core::json::READ_DEPTH_LIMIT as i32;

/// Most events one `append` call may carry: a batch is validated and inserted in memory.
pub static MAX_APPEND_EVENTS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// Whether `append` refuses event types not declared with `eventstore.declare_event_type`, and
/// payloads a declared type's validator rejects.
pub static REQUIRE_DECLARED_TYPES: GucSetting<bool> = GucSetting::<bool>::new(false);

pub fn max_json_depth() -> usize {
    MAX_JSON_DEPTH.get().max(1) as usize
}

pub fn max_append_events() -> usize {
    MAX_APPEND_EVENTS.get().max(1) as usize
}

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // A Rust backtrace names the extension's internals and the server's layout; it must never
    // reach a client, whatever RUST_BACKTRACE the server was started with. Backtrace::capture
    // reads RUST_LIB_BACKTRACE before RUST_BACKTRACE. Backends are single-threaded here.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    GucRegistry::define_int_guc(
        c"eventstore.max_json_depth",
        c"Deepest nesting of arrays and objects an appended event's data or metadata may have.",
        c"Appends of deeper documents fail with SQLSTATE 22023. Only superusers may change it.",
        &MAX_JSON_DEPTH,
        1,
        MAX_JSON_DEPTH_CEILING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"eventstore.max_append_events",
        c"Most events one eventstore.append call may carry.",
        c"Larger batches fail with SQLSTATE 54000; split them into several appends in one \
          transaction. Only superusers may change it.",
        &MAX_APPEND_EVENTS,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"eventstore.require_declared_types",
        c"Whether append refuses undeclared event types and payloads their validator rejects.",
        c"Types are declared with eventstore.declare_event_type. Refused appends fail with \
          SQLSTATE 22023. Only superusers may change it.",
        &REQUIRE_DECLARED_TYPES,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: a NUL-terminated literal; reserving the prefix makes a misspelt eventstore.*
    // setting an error instead of a silent placeholder.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"eventstore".as_ptr()) };
}
