//! Raising the extension's errors ([`EsError`], defined with their SQLSTATEs in eventstore-core)
//! in PostgreSQL.
//!
//! pgrx's `ErrorReport` only knows PostgreSQL's built-in SQLSTATEs (a custom code such as
//! `ES001` would come out as `XX000`), so [`raise`] reports through `ereport` directly.

use std::ffi::{c_char, c_int, CString};

pub use eventstore_core::error::*;

/// Five-character SQLSTATE to PostgreSQL's packed integer (`MAKE_SQLSTATE`).
fn pack_sqlstate(code: &str) -> c_int {
    let b = code.as_bytes();
    assert_eq!(b.len(), 5, "a SQLSTATE has five characters");
    b.iter().enumerate().fold(0, |acc, (i, ch)| acc | ((((ch - b'0') & 0x3F) as c_int) << (6 * i)))
}

// The ereport primitives. pgrx keeps these out of its bindings; they are plain libpq-backend
// exports. `errfinish` at ERROR level longjmps to PostgreSQL's error handler.
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errdetail(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

const ERROR_LEVEL: c_int = 21; // elog.h: ERROR

fn cstring(s: String) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NULs were replaced")
}

/// Raise `err` as a PostgreSQL ERROR with its own SQLSTATE. Never returns.
///
/// Call it from the outermost frame of a `#[pg_extern]` or trigger function, once every Rust
/// value that needs dropping is gone: the longjmp skips the frames between here and
/// PostgreSQL's handler without unwinding them.
pub fn raise(err: EsError) -> ! {
    let code = err.sqlstate();
    let message = err.to_string();
    let detail = err.detail();
    let hint = err.hint();
    drop(err);
    report(code, message, detail, hint)
}

/// Raise an error of a built-in SQLSTATE that is no [`EsError`] (an upcaster's failure around
/// the event it failed on), keeping the error context callbacks in place. Never returns.
pub fn raise_with(sqlstate: &str, message: String, hint: Option<String>) -> ! {
    report(sqlstate, message, None, hint)
}

fn report(sqlstate: &str, message: String, detail: Option<String>, hint: Option<String>) -> ! {
    let code = pack_sqlstate(sqlstate);
    let message = cstring(message);
    let detail = detail.map(cstring);
    let hint = hint.map(cstring);
    // SAFETY: these are PostgreSQL's ereport primitives called in the order its macro uses;
    // errmsg/errdetail/errhint copy their arguments into ErrorContext before we free ours, and
    // the only frames skipped by errfinish's longjmp own nothing that must be dropped.
    unsafe {
        if errstart(ERROR_LEVEL, std::ptr::null()) {
            errcode(code);
            errmsg(c"%s".as_ptr(), message.as_ptr());
            if let Some(d) = &detail {
                errdetail(c"%s".as_ptr(), d.as_ptr());
            }
            if let Some(h) = &hint {
                errhint(c"%s".as_ptr(), h.as_ptr());
            }
            drop((message, detail, hint));
            errfinish(c"pg_eventstore".as_ptr(), 0, c"pg_eventstore".as_ptr());
        }
    }
    unreachable!("errfinish(ERROR) does not return")
}

/// Unwrap a result, raising the error in PostgreSQL if there is one.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, EsError> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e),
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn sqlstates_pack_like_make_sqlstate() {
        // MAKE_SQLSTATE('2','2','0','2','3') from errcodes.h
        let expected = 2 | (2 << 6) | (2 << 18) | (3 << 24); // '0' packs to 0
        assert_eq!(pack_sqlstate("22023"), expected);
        // letters pack with the same 6-bit arithmetic PostgreSQL uses
        assert_eq!(pack_sqlstate("ES001") & 0x3F, ((b'E' - b'0') & 0x3F) as c_int);
    }
}
