//! Ordinary SQL connections to the worker's databases: where they are, TLS, and the pinned
//! `search_path` every connection is opened with.

pub mod connect;
pub mod tls;
pub mod types;
