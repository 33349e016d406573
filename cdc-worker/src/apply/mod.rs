//! The target side: opening a projection's handlers on a target connection and applying
//! batches of source transactions with their checkpoints in one transaction.

pub mod apply_function;
mod target;

pub use target::{
    check_in_scratch_schema, error_text, is_transient, Failure, Role, SetupError, Target,
};
