//! The rows of `eventstore_worker.projections` and `eventstore_worker.rebuilds`: reading them,
//! registering projections, moving a status, and the one way a projection is marked failed.

use tokio_postgres::{Client, Row};

use crate::model::{Lsn, ProjectionStatus};

/// Where progress is recorded: a projection's own row, or its build's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Projections,
    Rebuilds,
}

impl Table {
    pub const fn name(self) -> &'static str {
        match self {
            Table::Projections => "eventstore_worker.projections",
            Table::Rebuilds => "eventstore_worker.rebuilds",
        }
    }
}

/// A projection's row as the coordination needs it (from `projections` or `rebuilds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionRow {
    pub name: String,
    pub status: ProjectionStatus,
    pub checkpoint: Option<Lsn>,
    pub version: Option<String>,
}

pub(crate) const PROJECTION_ROWS: &str =
    "SELECT name, status, checkpoint_lsn, version FROM eventstore_worker.projections WHERE name = ANY($1)";

pub(crate) fn projection_row(r: &Row) -> ProjectionRow {
    ProjectionRow { name: r.get(0), status: r.get(1), checkpoint: r.get(2), version: r.get(3) }
}

pub async fn projection_rows(
    client: &Client,
    names: &[&str],
) -> Result<Vec<ProjectionRow>, tokio_postgres::Error> {
    Ok(client.query(PROJECTION_ROWS, &[&names]).await?.iter().map(projection_row).collect())
}

pub async fn rebuild_rows(
    client: &Client,
    name: &str,
) -> Result<Vec<ProjectionRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, status, checkpoint_lsn, version FROM eventstore_worker.rebuilds WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(rows.iter().map(projection_row).collect())
}

/// Gives every named projection a row (the table's default status, `running`, for new ones).
pub async fn register(client: &Client, names: &[&str]) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO eventstore_worker.projections (name) SELECT pg_catalog.unnest($1::pg_catalog.text[]) ON CONFLICT (name) DO NOTHING",
            &[&names],
        )
        .await
}

/// Moves a projection from status `from` to `to`; 0 when it was not in `from` any more.
pub async fn set_status(
    client: &Client,
    name: &str,
    from: ProjectionStatus,
    to: ProjectionStatus,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE eventstore_worker.projections SET status = $3, updated_at = now() WHERE name = $1 AND status = $2",
            &[&name, &from, &to],
        )
        .await
}

/// What [`mark_failed`] records as the failing event.
#[derive(Debug, Clone, Copy)]
pub enum FailedEvent<'a> {
    /// The envelope of the event whose handler failed, or `None` when no event did (a setup).
    Is(Option<&'a str>),
    /// Whatever the row holds already.
    Kept,
}

/// The one way a projection (`Table::Projections`) or its build (`Table::Rebuilds`) becomes
/// `failed`: with its error in `last_error` and the failing event; when `only_from` is given,
/// only if its status is still that. Returns the number of rows changed.
pub async fn mark_failed(
    client: &Client,
    table: Table,
    name: &str,
    only_from: Option<ProjectionStatus>,
    error: &str,
    event: FailedEvent<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let (set_event, envelope) = match event {
        FailedEvent::Is(envelope) => (true, envelope),
        FailedEvent::Kept => (false, None),
    };
    client
        .execute(
            &format!(
                "UPDATE {}
                    SET status = $2, last_error = $3,
                        failed_event = CASE WHEN $5 THEN $4::text::jsonb ELSE failed_event END, updated_at = now()
                  WHERE name = $1 AND ($6::text IS NULL OR status = $6::text)",
                table.name()
            ),
            &[&name, &ProjectionStatus::Failed, &error, &envelope, &set_event, &only_from],
        )
        .await
}
