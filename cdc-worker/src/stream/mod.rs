//! The live path: one replication session after another, the stream reader, the batcher, the
//! feedback task and the pure pieces that decide what is acknowledged and when.

mod ack;
mod batcher;
mod feedback;
mod idle;
mod queue;
mod reader;
mod session;
mod slot;

pub use session::run;
