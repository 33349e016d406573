//! What an error means for the worker, in one place: whether retrying can cure it.

use tokio_postgres::error::SqlState;

/// How an error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A connection or concurrency problem: try again later (reconnect, next batch, next poll).
    Transient,
    /// The database refused the statement itself: retrying the same thing fails the same way.
    Definitive,
    /// The configuration is wrong (a projection's setup or handler): fix the file, then retry.
    Config,
}

impl ErrorKind {
    /// A PostgreSQL error: transient unless the server answered with an `ERROR` outside the
    /// connection, resource, operator-intervention and system classes (08, 40, 53, 57, 58), or
    /// the transaction is already aborted.
    pub fn of_postgres(e: &tokio_postgres::Error) -> ErrorKind {
        let Some(db) = e.as_db_error() else { return ErrorKind::Transient };
        if matches!(db.severity(), "FATAL" | "PANIC") {
            return ErrorKind::Transient;
        }
        let code = db.code().code();
        if ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class))
            || *db.code() == SqlState::IN_FAILED_SQL_TRANSACTION
        {
            ErrorKind::Transient
        } else {
            ErrorKind::Definitive
        }
    }

    /// An error carried through `anyhow` (the lifecycle tasks): that of the [`WorkerError`] or
    /// PostgreSQL error inside it; any other error (a check of the worker's own) is definitive.
    pub fn of(e: &anyhow::Error) -> ErrorKind {
        if let Some(w) = e.downcast_ref::<WorkerError>() {
            return w.kind();
        }
        match e.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => ErrorKind::of_postgres(pg),
            None => ErrorKind::Definitive,
        }
    }

    pub fn is_transient(self) -> bool {
        self == ErrorKind::Transient
    }
}

/// The SQLSTATE of the PostgreSQL error inside `e`, if it is one.
pub fn sqlstate(e: &anyhow::Error) -> Option<&SqlState> {
    e.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code())
}

/// Preparing a projection on a target connection.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Its setup or a handler is wrong: names the file, projection and key.
    #[error("{file}: projection {projection:?}: {key}: {message}")]
    Projection { file: String, projection: String, key: String, message: String },
    #[error("target database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl WorkerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            WorkerError::Projection { .. } => ErrorKind::Config,
            WorkerError::Database(e) => ErrorKind::of_postgres(e),
        }
    }
}
