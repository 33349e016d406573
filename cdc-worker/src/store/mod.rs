//! Everything the worker keeps in `eventstore_worker.*`: its schema, the projections' and
//! rebuilds' rows, the commit-order map and the advisory locks that coordinate the live path,
//! catch-ups and rebuilds.

pub mod coordination;
pub mod projections;
pub mod slot_recovery;
pub mod source_map;

use tokio_postgres::Client;

const SCHEMA: &str = include_str!("schema.sql");

/// Creates or upgrades the worker's own tables (idempotent; its "already exists" notices are
/// not worth a log line).
pub(crate) async fn ensure_schema(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SET client_min_messages TO warning").await?;
    let result = client.batch_execute(SCHEMA).await;
    client.batch_execute("RESET client_min_messages").await?;
    result
}
