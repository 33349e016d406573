//! A projection's lifecycle status, as `eventstore_worker.projections.status` (and
//! `rebuilds.status`) store it: the one place its text is written or read.

use std::error::Error;
use std::fmt;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectionStatus {
    /// Applied by the live path from the replication stream.
    Running,
    /// Resuming from its checkpoint through the commit-order map (`lifecycle::catchup`).
    CatchingUp,
    /// Waiting for or being built afresh in shadow tables (`lifecycle::rebuild`).
    Rebuilding,
    /// Stopped by an error, recorded in `last_error`; `retry` resumes it.
    Failed,
    /// A `rebuilds` row whose build is under way (the projection's own row is `Rebuilding`).
    Building,
}

impl ProjectionStatus {
    /// The statuses a projection's row can have, in the order metrics list them.
    pub const OF_PROJECTIONS: [ProjectionStatus; 4] = [
        ProjectionStatus::Running,
        ProjectionStatus::CatchingUp,
        ProjectionStatus::Rebuilding,
        ProjectionStatus::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectionStatus::Running => "running",
            ProjectionStatus::CatchingUp => "catching_up",
            ProjectionStatus::Rebuilding => "rebuilding",
            ProjectionStatus::Failed => "failed",
            ProjectionStatus::Building => "building",
        }
    }

    pub fn parse(text: &str) -> Option<ProjectionStatus> {
        [ProjectionStatus::Building]
            .into_iter()
            .chain(ProjectionStatus::OF_PROJECTIONS)
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for ProjectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for ProjectionStatus {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for ProjectionStatus {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        ProjectionStatus::parse(text)
            .ok_or_else(|| format!("unknown projection status {text:?}").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_matches_the_table() {
        // The values of the CHECK constraints in store/schema.sql.
        let texts: Vec<&str> =
            ProjectionStatus::OF_PROJECTIONS.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["running", "catching_up", "rebuilding", "failed"]);
        for s in ProjectionStatus::OF_PROJECTIONS.into_iter().chain([ProjectionStatus::Building]) {
            assert_eq!(ProjectionStatus::parse(s.as_str()), Some(s));
            let mut out = BytesMut::new();
            s.to_sql(&Type::TEXT, &mut out).unwrap();
            assert_eq!(ProjectionStatus::from_sql(&Type::TEXT, &out).unwrap(), s);
        }
        assert_eq!(ProjectionStatus::parse("pending"), None);
        assert!(ProjectionStatus::from_sql(&Type::TEXT, b"paused").is_err());
    }
}
