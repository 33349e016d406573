//! What an error means for a projection: transient (retry later) or its own (it fails), and
//! the text recorded in `last_error`.

use tokio_postgres::error::SqlState;

use crate::config::Projection;
use crate::model::Lsn;

/// Errors that say "try again later" rather than "this handler is broken".
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else { return true };
    if matches!(db.severity(), "FATAL" | "PANIC") {
        return true;
    }
    let code = db.code().code();
    ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class))
        || *db.code() == SqlState::IN_FAILED_SQL_TRANSACTION
}

/// The PostgreSQL error text recorded in `last_error`.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s =
                format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; DETAIL: {d}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("; CONTEXT: {w}"));
            }
            s
        }
        None => e.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{file}: projection {projection:?}: {key}: {message}")]
    Projection { file: String, projection: String, key: String, message: String },
    #[error("target database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl SetupError {
    /// A broken configuration will not fix itself by retrying.
    pub fn is_fatal(&self) -> bool {
        match self {
            SetupError::Projection { .. } => true,
            SetupError::Database(e) => !is_transient(e),
        }
    }
}

/// A projection that failed in a batch; its checkpoint stays where it was.
#[derive(Debug, Clone)]
pub struct Failure {
    pub projection: String,
    pub checkpoint: Option<Lsn>,
    pub error: String,
}

/// Whether the session survived the error (an `ERROR`, not a lost connection or a `FATAL`).
pub(super) fn connection_alive(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| !matches!(db.severity(), "FATAL" | "PANIC"))
}

pub(crate) fn setup_error(
    file: &str,
    p: &Projection,
    key: &str,
    e: tokio_postgres::Error,
) -> SetupError {
    if is_transient(&e) {
        SetupError::Database(e)
    } else {
        SetupError::Projection {
            file: file.into(),
            projection: p.name.clone(),
            key: key.into(),
            message: error_text(&e),
        }
    }
}
