//! Types every layer shares: log positions and source transactions. The bottom of the module
//! graph: it imports nothing of the worker's.

pub mod lsn;
pub mod txn;

pub use lsn::Lsn;
pub use txn::{Event, SourceTxn};
