//! Every user-facing failure of the extension, with its SQLSTATE, DETAIL and HINT. The
//! extension's `error.rs` raises these through `ereport`.

use std::fmt;

use crate::json::JsonError;

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

    /// [`admits`](Self::admits), as the error `append` raises when the stream does not.
    pub fn check(self, stream: &str, actual: i64) -> Result<(), EsError> {
        if self.admits(actual) {
            Ok(())
        } else {
            Err(EsError::WrongExpectedVersion { stream: stream.to_owned(), expected: self, actual })
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
    #[error(
        "wrong expected version for stream \"{stream}\": expected {expected}, actual {actual}"
    )]
    WrongExpectedVersion { stream: String, expected: ExpectedVersion, actual: i64 },

    #[error("{} on {} is not allowed: the event store is append-only", .0.operation, .0.table)]
    AppendOnly(RejectedChange),

    #[error("event id {id} is already used by event {version} of stream \"{stream}\"")]
    DuplicateEventId { id: String, stream: String, version: i64, position: i64 },

    #[error("invalid {argument}: {reason}")]
    InvalidArgument { argument: String, reason: String },

    /// Stored JSON (an event's data, a state, a snapshot) nests deeper than the extension reads
    /// (`limit`, normally [`crate::json::READ_DEPTH_LIMIT`]). `what` names it: "the data of
    /// event 7 of stream \"order-1\"".
    #[error("{what} nests more than {limit} levels deep")]
    JsonTooDeep { what: String, limit: usize },

    /// Binary jsonb the reader does not understand: not UTF-8 (22021) or not as PostgreSQL
    /// writes it (XX001, data corrupted). `problem` is never `TooDeep`.
    #[error("{what} {problem}")]
    UnreadableJson { what: String, problem: JsonError },

    /// An append condition failed: an event matching its query exists that the decision's read
    /// did not see (or, without `after`, any matching event exists). Names the first one.
    #[error(
        "append condition failed: event at global position {position} (stream \"{stream}\", \
         type \"{event_type}\") matches the condition's query{}",
        if *.after { " and was not seen by the read its token comes from" } else { "" }
    )]
    ConditionFailed { position: i64, stream: String, event_type: String, after: bool },

    /// A batch larger than `eventstore.max_append_events`.
    #[error("too many events in one append: {count}; the limit is {limit} (eventstore.max_append_events)")]
    TooManyEvents { count: usize, limit: usize },

    /// The library was updated but the database's extension objects were not yet.
    #[error("pg_eventstore's library is version {library} but this database's extension is at version {installed}")]
    CatalogBehind { library: &'static str, installed: String },
}

impl EsError {
    pub fn invalid(argument: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { argument: argument.into(), reason: reason.into() }
    }

    /// A text argument that must be given and not be empty: the text, or 22023 naming it.
    pub fn required<'a>(argument: &str, value: Option<&'a str>) -> Result<&'a str, Self> {
        match value {
            None => Err(Self::invalid(argument, "must not be NULL")),
            Some("") => Err(Self::invalid(argument, "must not be empty")),
            Some(v) => Ok(v),
        }
    }

    /// A bounded JSON walk's error about `what`: `TooDeep` is [`Self::JsonTooDeep`] (54001),
    /// the rest [`Self::UnreadableJson`]. (Appends report too-deep arguments as `22023`
    /// instead: see [`crate::envelope::check_depth`].)
    pub fn json(error: JsonError, what: impl Into<String>) -> Self {
        match error {
            JsonError::TooDeep { limit } => Self::JsonTooDeep { what: what.into(), limit },
            problem => Self::UnreadableJson { what: what.into(), problem },
        }
    }

    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::WrongExpectedVersion { .. } => "ES001",
            Self::AppendOnly(_) => "ES003",
            Self::DuplicateEventId { .. } => "ES004",
            Self::ConditionFailed { .. } => "ES005",
            Self::InvalidArgument { .. } => "22023",
            // statement_too_complex, as PostgreSQL's own stack-depth check
            Self::JsonTooDeep { .. } => "54001",
            // character_not_in_repertoire
            Self::UnreadableJson { problem: JsonError::NotUtf8, .. } => "22021",
            // data_corrupted
            Self::UnreadableJson { .. } => "XX001",
            // program_limit_exceeded
            Self::TooManyEvents { .. } => "54000",
            // object_not_in_prerequisite_state
            Self::CatalogBehind { .. } => "55000",
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
            Self::ConditionFailed { after: true, .. } => Some(
                "Another writer appended an event inside this decision's consistency boundary: \
                 read the query again (eventstore.read_query), decide again, and retry with the \
                 new token."
                    .into(),
            ),
            Self::ConditionFailed { after: false, .. } => Some(
                "The condition has no \"after\": any matching event fails it. To allow the \
                 events a decision has seen, pass the token of its eventstore.read_query as \
                 \"after\"."
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
            Self::UnreadableJson { problem: JsonError::NotUtf8, .. } => {
                Some("pg_eventstore reads jsonb in place only in a UTF-8 database.".into())
            }
            Self::JsonTooDeep { .. } => Some(
                "Fold this stream with a reducer written in SQL or PL/pgSQL, which PostgreSQL \
                 evaluates with its own stack checks."
                    .into(),
            ),
            Self::TooManyEvents { .. } => Some(
                "Split the batch into several appends in one transaction: they commit or fail \
                 together."
                    .into(),
            ),
            Self::CatalogBehind { .. } => {
                Some("Run ALTER EXTENSION pg_eventstore UPDATE in this database.".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

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
    fn check_is_admits_as_the_conflict_error() {
        assert_eq!(ExpectedVersion::Exact(2).check("s", 2), Ok(()));
        assert_eq!(
            ExpectedVersion::NoStream.check("s", 4),
            Err(EsError::WrongExpectedVersion {
                stream: "s".into(),
                expected: ExpectedVersion::NoStream,
                actual: 4,
            })
        );
        assert_eq!(ExpectedVersion::StreamExists.check("s", 0).unwrap_err().sqlstate(), "ES001");
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

    #[test]
    fn json_errors_map_to_their_sqlstates() {
        let deep = EsError::json(
            JsonError::TooDeep { limit: 1000 },
            "the data of event 3 of stream \"s\"",
        );
        assert_eq!(deep.sqlstate(), "54001");
        assert_eq!(
            deep.to_string(),
            "the data of event 3 of stream \"s\" nests more than 1000 levels deep"
        );
        let bad = EsError::json(JsonError::Malformed, "events");
        assert_eq!(
            (bad.sqlstate(), bad.to_string().as_str()),
            ("XX001", "events is not jsonb as PostgreSQL writes it")
        );
        let latin1 = EsError::json(JsonError::NotUtf8, "data");
        assert_eq!(latin1.sqlstate(), "22021");
        assert!(latin1.hint().is_some());
    }
}
