//! Every user-facing failure of the extension, with its SQLSTATE.
//!
//! pgrx's `ErrorReport` only knows PostgreSQL's built-in SQLSTATEs (a custom code such as
//! `ES001` would come out as `XX000`), so [`raise`] reports through `ereport` directly.

use std::ffi::{c_char, c_int, CString};
use std::fmt;

/// What the caller said about the stream's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// `NULL`: append whatever the current version is.
    Any,
    /// `0`: the stream must not exist yet.
    NoStream,
    /// `-1`: the stream must already exist.
    StreamExists,
    /// `N > 0`: the current version must be exactly `N`.
    Exact(i64),
}

impl ExpectedVersion {
    pub fn from_sql(value: Option<i64>) -> Result<Self, EsError> {
        match value {
            None => Ok(Self::Any),
            Some(0) => Ok(Self::NoStream),
            Some(-1) => Ok(Self::StreamExists),
            Some(n) if n > 0 => Ok(Self::Exact(n)),
            Some(n) => Err(EsError::invalid(
                "expected_version",
                format!(
                    "{n} is not a valid expected version (use NULL for any, 0 for no stream, \
                     -1 for an existing stream, or the exact current version)"
                ),
            )),
        }
    }

    /// The SQL value this expectation was given as (NULL = any).
    pub fn to_sql(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::NoStream => Some(0),
            Self::StreamExists => Some(-1),
            Self::Exact(n) => Some(n),
        }
    }

    /// Does a stream currently at `actual` (0 = absent) satisfy this expectation?
    pub fn admits(self, actual: i64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::StreamExists => actual > 0,
            Self::Exact(n) => actual == n,
        }
    }

    fn as_sql(self) -> String {
        self.to_sql().map_or_else(|| "NULL".into(), |n| n.to_string())
    }

    fn meaning(self) -> &'static str {
        match self {
            Self::Any => "any version",
            Self::NoStream => "the stream must not exist",
            Self::StreamExists => "the stream must already exist",
            Self::Exact(_) => "the stream must be at exactly this version",
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_sql())
    }
}

/// Which event store table a rejected statement targeted, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedChange {
    pub table: String,
    pub operation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EsError {
    #[error("wrong expected version for stream \"{stream}\": expected {expected}, actual {actual}")]
    WrongExpectedVersion { stream: String, expected: ExpectedVersion, actual: i64 },

    #[error("{} on {} is not allowed: the event store is append-only", .0.operation, .0.table)]
    AppendOnly(RejectedChange),

    #[error("event id {id} is already used by event {version} of stream \"{stream}\"")]
    DuplicateEventId { id: String, stream: String, version: i64, position: i64 },

    #[error("invalid {argument}: {reason}")]
    InvalidArgument { argument: String, reason: String },

    #[error("too many events in one append: {count}; the limit is {limit} (eventstore.max_append_events)")]
    TooManyEvents { count: usize, limit: usize },

    /// The library was updated but the database's extension objects were not yet.
    #[error("pg_eventstore's library is version {library} but this database's extension is at version {installed}")]
    CatalogBehind { library: &'static str, installed: String },

    /// A stored document nests deeper than the extension reads (stored before the append limit
    /// existed, or with the limit raised).
    #[error("event {version} of stream \"{stream}\" (global position {position}) nests its {what} deeper than {limit} levels, more than pg_eventstore can fold")]
    TooDeep { stream: String, version: i64, position: i64, what: &'static str, limit: usize },
}

impl EsError {
    pub fn invalid(argument: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { argument: argument.into(), reason: reason.into() }
    }

    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::WrongExpectedVersion { .. } => "ES001",
            Self::AppendOnly(_) => "ES003",
            Self::DuplicateEventId { .. } => "ES004",
            Self::InvalidArgument { .. } => "22023",
            Self::TooManyEvents { .. } => "54000",
            Self::CatalogBehind { .. } => "55000",
            Self::TooDeep { .. } => "54001",
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Self::WrongExpectedVersion { stream, expected, actual } => Some(format!(
                "stream \"{stream}\" is at version {actual}{}; expected_version {expected} means {}",
                if *actual == 0 { " (it does not exist)" } else { "" },
                expected.meaning()
            )),
            Self::DuplicateEventId { stream, version, position, .. } => Some(format!(
                "the id is stored at stream \"{stream}\" version {version}, global position \
                 {position}; only a retry of the same batch (same ids, same order, same types, \
                 same stream) may reuse ids"
            )),
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::WrongExpectedVersion { .. } => Some(
                "Another writer appended to the stream first: read the new events, decide \
                 again, and retry with the current version."
                    .into(),
            ),
            Self::AppendOnly(rejected) => Some(match rejected.table.as_str() {
                "eventstore.events" => "Events are immutable. Correct a mistake by appending a \
                    compensating event; remove a whole store with DROP EXTENSION pg_eventstore."
                    .into(),
                "eventstore.streams" => {
                    "Stream versions are maintained by eventstore.append() alone.".into()
                }
                "eventstore.snapshots" => "Snapshots are derived data: remove them with \
                    eventstore.delete_snapshots(snapshot_name)."
                    .into(),
                _ => "Use the eventstore functions to change the event store.".into(),
            }),
            Self::CatalogBehind { .. } => {
                Some("Run ALTER EXTENSION pg_eventstore UPDATE in this database.".into())
            }
            Self::TooManyEvents { .. } => Some(
                "Split the batch into several appends in one transaction: they commit or fail \
                 together."
                    .into(),
            ),
            Self::TooDeep { .. } => Some(
                "Fold this stream with a reducer written in SQL or PL/pgSQL, which PostgreSQL \
                 evaluates with its own stack checks."
                    .into(),
            ),
            _ => None,
        }
    }
}

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
    let code = pack_sqlstate(err.sqlstate());
    let message = cstring(err.to_string());
    let detail = err.detail().map(cstring);
    let hint = err.hint().map(cstring);
    drop(err);
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
        let expected = (2) | (2 << 6) | (0 << 12) | (2 << 18) | (3 << 24);
        assert_eq!(pack_sqlstate("22023"), expected);
        // letters pack with the same 6-bit arithmetic PostgreSQL uses
        assert_eq!(pack_sqlstate("ES001") & 0x3F, ((b'E' - b'0') & 0x3F) as c_int);
    }

    #[test]
    fn expected_version_modes() {
        assert_eq!(ExpectedVersion::from_sql(None), Ok(ExpectedVersion::Any));
        assert_eq!(ExpectedVersion::from_sql(Some(0)), Ok(ExpectedVersion::NoStream));
        assert_eq!(ExpectedVersion::from_sql(Some(-1)), Ok(ExpectedVersion::StreamExists));
        assert_eq!(ExpectedVersion::from_sql(Some(7)), Ok(ExpectedVersion::Exact(7)));
        let err = ExpectedVersion::from_sql(Some(-2)).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(err.to_string().contains("expected_version"), "{err}");

        assert!(ExpectedVersion::Any.admits(0) && ExpectedVersion::Any.admits(9));
        assert!(ExpectedVersion::NoStream.admits(0) && !ExpectedVersion::NoStream.admits(1));
        assert!(!ExpectedVersion::StreamExists.admits(0));
        assert!(ExpectedVersion::StreamExists.admits(3));
        assert!(ExpectedVersion::Exact(3).admits(3) && !ExpectedVersion::Exact(3).admits(4));
    }

    #[test]
    fn conflict_message_names_stream_expected_and_actual() {
        let err = EsError::WrongExpectedVersion {
            stream: "order-42".into(),
            expected: ExpectedVersion::Exact(3),
            actual: 5,
        };
        assert_eq!(err.sqlstate(), "ES001");
        assert_eq!(
            err.to_string(),
            "wrong expected version for stream \"order-42\": expected 3, actual 5"
        );
        assert!(err.detail().unwrap().contains("version 5"));
    }
}
