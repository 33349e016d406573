//! What operators see and run: the status report, the metrics endpoint, and the one-shot
//! `rebuild` and `retry` commands.

pub mod commands;
mod http;
pub mod metrics;
pub mod signals;
pub mod status;
