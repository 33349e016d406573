//! The target side: opening a projection's handlers on a target connection and applying
//! batches of source transactions with their checkpoints in one transaction.

pub mod apply_function;
mod batch;
mod failure;
mod pipeline;
mod prepare;
mod target;

pub use failure::{error_text, Failure};
pub use prepare::check_in_scratch_schema;
pub use target::{Role, Target};
