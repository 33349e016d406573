//! Types every layer shares: log positions, source transactions, projection statuses and what
//! an error means. The bottom of the module graph: it imports nothing of the worker's.

pub mod error;
pub mod lsn;
pub mod status;
pub mod txn;

pub use error::{ErrorKind, WorkerError};
pub use lsn::Lsn;
pub use status::ProjectionStatus;
pub use txn::{Event, SourceTxn};
