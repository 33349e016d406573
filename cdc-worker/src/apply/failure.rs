//! What an error means for a projection: transient (retry later) or its own (it fails), and
//! the text recorded in `last_error`.

use crate::config::Projection;
use crate::model::{ErrorKind, Lsn, WorkerError};

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
) -> WorkerError {
    if ErrorKind::of_postgres(&e).is_transient() {
        WorkerError::Database(e)
    } else {
        WorkerError::Projection {
            file: file.into(),
            projection: p.name.clone(),
            key: key.into(),
            message: error_text(&e),
        }
    }
}
