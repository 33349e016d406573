//! From replication frames to source transactions: the pgoutput decoder and the event
//! envelope. Pure: no I/O.

pub mod assembly;
pub mod envelope;
pub mod pgoutput;
