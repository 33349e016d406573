//! Each projection's state, checkpoint and lag, read from the databases: the target's
//! `eventstore_worker.projections` and the source's current WAL position. Used by
//! `eventstore-worker status` and by the metrics endpoint, so both report the same numbers.
//!
//! Lag, per projection:
//! - bytes: source `pg_current_wal_lsn()` minus the checkpoint, 0 when the checkpoint is at or
//!   past it (the projection reflects everything committed on the source).
//! - seconds: 0 when the lag in bytes is 0; otherwise how long ago the source was at the
//!   checkpoint, by the source's clock (the checkpoint records the commit time of its
//!   transaction, or the server clock of its idle position). That is how old the source
//!   state the read model shows is, and an upper bound of the age of the oldest commit it
//!   has not applied.
//!   A checkpoint recorded by a catch-up or a build carries the latest `recorded_at` of its
//!   transaction's events instead of the commit time (the table has no commit time), which
//!   makes the figure slightly high, never low.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize, Serializer};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::config::Config;
use crate::model::Lsn;
use crate::pg::connect::{connect_sql, Endpoint};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionReport {
    pub name: String,
    /// `running`, `catching_up`, `rebuilding`, `failed`, or `pending` when the worker has not
    /// started it yet. While `rebuilding`, checkpoint and lag are those of the tables in use.
    pub state: String,
    #[serde(serialize_with = "lsn_text")]
    pub checkpoint: Option<Lsn>,
    pub checkpoint_time: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub events_applied: i64,
    pub last_error: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(serialize_with = "lsn_text")]
    pub source_lsn: Option<Lsn>,
    pub projections: Vec<ProjectionReport>,
    /// The oldest transaction with an xid still open on the source's server, in any database:
    /// while it is open, reads of `eventstore.events` in commit order (`read_all`, a catch-up,
    /// a build) stop before everything that committed after it started. `None`: no transaction
    /// holds an xid.
    pub horizon: Option<HorizonHolder>,
    /// The worker's replication slot; `None` when it does not exist (yet).
    pub slot: Option<SlotHealth>,
}

/// The replication slot's health, from `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotHealth {
    pub name: String,
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL's `wal_status`).
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is in danger of being
    /// invalidated (`max_slot_wal_keep_size`); `None` when unlimited.
    pub safe_wal_size: Option<i64>,
    /// Why the slot was invalidated (PostgreSQL 17+ `invalidation_reason`; `wal_removed` for a
    /// lost slot on earlier majors); `None` while it is usable. The worker recreates an
    /// invalidated slot and catches up through the event table.
    pub invalidation_reason: Option<String>,
    /// A failover slot (PostgreSQL 17+); `None` before 17.
    pub failover: Option<bool>,
    /// WAL the slot holds back: the source position minus its restart position.
    pub retained_bytes: Option<i64>,
}

/// Columns that differ between majors are read through `to_jsonb`.
const SLOT_SQL: &str = "
    SELECT s.j OPERATOR(pg_catalog.->>) 'slot_name', (s.j OPERATOR(pg_catalog.->>) 'active')::pg_catalog.bool,
           s.j OPERATOR(pg_catalog.->>) 'wal_status', (s.j OPERATOR(pg_catalog.->>) 'safe_wal_size')::pg_catalog.int8,
           coalesce(s.j OPERATOR(pg_catalog.->>) 'invalidation_reason',
                    CASE WHEN s.j OPERATOR(pg_catalog.->>) 'wal_status' OPERATOR(pg_catalog.=) 'lost' THEN 'wal_removed' END),
           (s.j OPERATOR(pg_catalog.->>) 'failover')::pg_catalog.bool,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::pg_catalog.int8
      FROM (SELECT pg_catalog.to_jsonb(r) AS j, r.restart_lsn
              FROM pg_catalog.pg_replication_slots r WHERE r.slot_name OPERATOR(pg_catalog.=) $1) AS s";

/// Reads the slot's health on the source.
pub async fn slot_health(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotHealth>, tokio_postgres::Error> {
    Ok(client.query_opt(SLOT_SQL, &[&slot]).await?.map(|r| SlotHealth {
        name: r.get(0),
        active: r.get::<_, Option<bool>>(1).unwrap_or(false),
        wal_status: r.get(2),
        safe_wal_size: r.get(3),
        invalidation_reason: r.get(4),
        failover: r.get(5),
        retained_bytes: r.get(6),
    }))
}

impl SlotHealth {
    /// One line for people.
    pub fn describe(&self) -> String {
        let dash = || "-".to_owned();
        format!(
            "{} ({}), wal_status {}, safe_wal_size {}, retained {} bytes, failover {}{}",
            self.name,
            if self.active { "active" } else { "inactive" },
            self.wal_status.clone().unwrap_or_else(dash),
            self.safe_wal_size.map_or_else(|| "unlimited".to_owned(), |b| b.to_string()),
            self.retained_bytes.map_or_else(dash, |b| b.to_string()),
            self.failover.map_or_else(|| "n/a".to_owned(), |f| f.to_string()),
            self.invalidation_reason
                .as_deref()
                .map_or_else(String::new, |r| format!(", INVALIDATED ({r})")),
        )
    }
}

/// Who holds the xmin horizon (see `Report::horizon`), from `pg_stat_activity.backend_xid`
/// and `pg_prepared_xacts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HorizonHolder {
    /// `None` for a prepared transaction (it has no backend).
    pub pid: Option<i32>,
    pub database: Option<String>,
    /// `age(xid)`: transactions started since.
    pub xid_age: i32,
    /// Seconds since the transaction started (or was prepared); `None` when the worker's role
    /// may not see it (grant `pg_read_all_stats`).
    pub transaction_age_seconds: Option<f64>,
    /// `active`, `idle in transaction`, …, or `prepared <gid>`; `None` as above.
    pub state: Option<String>,
}

/// The oldest open transaction with an xid. Every name schema-qualified: it runs on a
/// connection whose role others may plant functions for (see docs/worker.md, search_path).
const HORIZON_SQL: &str = "
    SELECT h.pid, h.database, h.xid_age, h.age_seconds, h.state FROM (
        SELECT a.pid, a.datname::pg_catalog.text AS database, pg_catalog.age(a.backend_xid) AS xid_age,
               pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) a.xact_start)
                   AS age_seconds,
               a.state
          FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_xid IS NOT NULL
        UNION ALL
        SELECT NULL, p.database::pg_catalog.text, pg_catalog.age(p.transaction),
               pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p.prepared),
               'prepared ' OPERATOR(pg_catalog.||) p.gid
          FROM pg_catalog.pg_prepared_xacts p) h
     ORDER BY h.xid_age DESC
     LIMIT 1";

/// Reads who holds the horizon on `client`'s server (any database of it).
pub async fn horizon(client: &Client) -> Result<Option<HorizonHolder>, tokio_postgres::Error> {
    Ok(client.query_opt(HORIZON_SQL, &[]).await?.map(|r| HorizonHolder {
        pid: r.get(0),
        database: r.get(1),
        xid_age: r.get(2),
        transaction_age_seconds: r.get(3),
        state: r.get(4),
    }))
}

impl HorizonHolder {
    /// One line for people: who, where, how old.
    pub fn describe(&self) -> String {
        let who = match self.pid {
            Some(pid) => format!("pid {pid}"),
            None => "a prepared transaction".to_owned(),
        };
        let age =
            self.transaction_age_seconds.map_or_else(|| "?".to_owned(), |s| format!("{s:.1}"));
        format!(
            "{who} in database {}, xid age {}, open {age} s, state {}",
            self.database.as_deref().unwrap_or("?"),
            self.xid_age,
            self.state.as_deref().unwrap_or("?"),
        )
    }
}

fn lsn_text<S: Serializer>(lsn: &Option<Lsn>, s: S) -> Result<S::Ok, S::Error> {
    match lsn {
        Some(l) => s.serialize_str(&l.to_string()),
        None => s.serialize_none(),
    }
}

/// Lag of a projection whose checkpoint is `checkpoint` (reached by the source at
/// `checkpoint_time`, Unix seconds) when the source is at `source_lsn` at `source_now`.
pub fn lag(
    source_lsn: Lsn,
    source_now: f64,
    checkpoint: Option<Lsn>,
    checkpoint_time: Option<f64>,
) -> (Option<u64>, Option<f64>) {
    let Some(checkpoint) = checkpoint else { return (None, None) };
    let bytes = source_lsn.0.saturating_sub(checkpoint.0);
    let seconds =
        if bytes == 0 { Some(0.0) } else { checkpoint_time.map(|t| (source_now - t).max(0.0)) };
    (Some(bytes), seconds)
}

/// A row of eventstore_worker.projections, read through `to_jsonb` so that a database the
/// worker has not upgraded yet (no checkpoint_time column) still reads.
#[derive(Debug, Deserialize)]
struct Row {
    name: String,
    status: String,
    #[serde(default)]
    checkpoint_lsn: Option<String>,
    #[serde(default)]
    checkpoint_time: Option<String>,
    #[serde(default)]
    events_applied: i64,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

/// Connections to the target and, when it is another database, the source.
pub struct Clients {
    target: Client,
    source: Option<Client>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect_one(endpoint: &Endpoint, what: &'static str) -> anyhow::Result<Client> {
    let mut endpoint = endpoint.clone();
    if endpoint.pg.get_connect_timeout().is_none() {
        endpoint.pg.connect_timeout(CONNECT_TIMEOUT);
    }
    connect_sql(&endpoint, what, "status").await
}

impl Clients {
    pub async fn connect(config: &Config) -> anyhow::Result<Clients> {
        let target = connect_one(config.target_internal(), "target").await?;
        let source = match &config.target {
            Some(_) => Some(connect_one(&config.source, "source").await?),
            None => None,
        };
        Ok(Clients { target, source })
    }

    fn source(&self) -> &Client {
        self.source.as_ref().unwrap_or(&self.target)
    }

    /// The configured projections, in configuration order.
    pub async fn report(&self, config: &Config) -> anyhow::Result<Report> {
        // Source position first: a checkpoint read after it can only be closer to it.
        let row = self
            .source()
            .query_one(
                "SELECT pg_current_wal_lsn(), extract(epoch FROM clock_timestamp())::float8",
                &[],
            )
            .await
            .context("reading the source's WAL position")?;
        let source_lsn: Lsn = row.get(0);
        let source_now: f64 = row.get(1);
        let horizon = horizon(self.source()).await.context("reading who holds the xmin horizon")?;
        let slot = slot_health(self.source(), &config.slot)
            .await
            .context("reading the replication slot's health")?;

        let rows = self
            .target
            .query(
                "SELECT pg_catalog.to_jsonb(p)::text, extract(epoch FROM (pg_catalog.to_jsonb(p)->>'checkpoint_time')::timestamptz)::float8
                   FROM eventstore_worker.projections p",
                &[],
            )
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            // The worker has never run against this database: every projection is pending.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Vec::new(),
            Err(e) => {
                return Err(anyhow::Error::new(e).context("reading eventstore_worker.projections"))
            }
        };
        let mut found = Vec::new();
        for r in rows {
            let row: Row = serde_json::from_str(&r.get::<_, String>(0))
                .context("decoding a projections row")?;
            found.push((row, r.get::<_, Option<f64>>(1)));
        }

        let projections = config
            .projections
            .iter()
            .map(|p| match found.iter().find(|(row, _)| row.name == p.name) {
                Some((row, checkpoint_epoch)) => {
                    let checkpoint = row.checkpoint_lsn.as_deref().and_then(|s| s.parse().ok());
                    let (lag_bytes, lag_seconds) =
                        lag(source_lsn, source_now, checkpoint, *checkpoint_epoch);
                    ProjectionReport {
                        name: p.name.clone(),
                        state: row.status.clone(),
                        checkpoint,
                        checkpoint_time: row.checkpoint_time.clone(),
                        lag_bytes,
                        lag_seconds,
                        events_applied: row.events_applied,
                        last_error: row.last_error.clone(),
                        updated_at: row.updated_at.clone(),
                    }
                }
                None => ProjectionReport {
                    name: p.name.clone(),
                    state: "pending".into(),
                    checkpoint: None,
                    checkpoint_time: None,
                    lag_bytes: None,
                    lag_seconds: None,
                    events_applied: 0,
                    last_error: None,
                    updated_at: None,
                },
            })
            .collect();
        Ok(Report { source_lsn: Some(source_lsn), projections, horizon, slot })
    }
}

pub fn render_json(report: &Report) -> String {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// An aligned table: text columns left-aligned, numbers right-aligned, `-` for unknown.
pub fn render_table(report: &Report) -> String {
    const HEADERS: [&str; 7] = [
        "projection",
        "state",
        "checkpoint",
        "lag_bytes",
        "lag_seconds",
        "events_applied",
        "last_error",
    ];
    const NUMERIC: [bool; 7] = [false, false, false, true, true, true, false];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 7]> = report
        .projections
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.state.clone(),
                p.checkpoint.map_or_else(dash, |l| l.to_string()),
                p.lag_bytes.map_or_else(dash, |b| b.to_string()),
                p.lag_seconds.map_or_else(dash, |s| format!("{s:.3}")),
                p.events_applied.to_string(),
                p.last_error
                    .as_deref()
                    .map_or_else(dash, |e| e.split_whitespace().collect::<Vec<_>>().join(" ")),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i == cells.len() - 1;
            let pad = widths[i].saturating_sub(cell.chars().count());
            if NUMERIC[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                out.push_str("  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(HEADERS);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    if let Some(slot) = &report.slot {
        out.push_str(&format!("\nreplication slot: {}\n", slot.describe()));
    }
    if let Some(h) = &report.horizon {
        out.push_str(&format!("\noldest transaction holding the xmin horizon: {}\n", h.describe()));
    }
    out
}

/// `eventstore-worker status`: prints the report; errors are the caller's to print.
pub async fn run(config: &Config, json: bool) -> anyhow::Result<()> {
    let clients = Clients::connect(config).await?;
    let report = clients.report(config).await?;
    if json {
        println!("{}", render_json(&report));
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_at_or_past_the_source_position() {
        assert_eq!(lag(Lsn(1000), 50.0, Some(Lsn(1000)), Some(10.0)), (Some(0), Some(0.0)));
        assert_eq!(lag(Lsn(1000), 50.0, Some(Lsn(1200)), Some(10.0)), (Some(0), Some(0.0)));
    }

    #[test]
    fn lag_behind_counts_bytes_and_the_age_of_the_checkpoint() {
        assert_eq!(lag(Lsn(1000), 50.5, Some(Lsn(400)), Some(20.0)), (Some(600), Some(30.5)));
        // Clocks that disagree never give a negative age.
        assert_eq!(lag(Lsn(1000), 50.0, Some(Lsn(400)), Some(60.0)), (Some(600), Some(0.0)));
        assert_eq!(lag(Lsn(1000), 50.0, Some(Lsn(400)), None), (Some(600), None));
        assert_eq!(lag(Lsn(1000), 50.0, None, None), (None, None));
    }

    fn sample() -> Report {
        let p = |name: &str,
                 state: &str,
                 checkpoint: Option<Lsn>,
                 lag: Option<(u64, f64)>,
                 events: i64,
                 error: Option<&str>| {
            ProjectionReport {
                name: name.into(),
                state: state.into(),
                checkpoint,
                checkpoint_time: None,
                lag_bytes: lag.map(|l| l.0),
                lag_seconds: lag.map(|l| l.1),
                events_applied: events,
                last_error: error.map(str::to_owned),
                updated_at: None,
            }
        };
        Report {
            source_lsn: Some(Lsn(0x1_6B37_4800)),
            projections: vec![
                p(
                    "order_summary",
                    "running",
                    Some(Lsn(0x1_6B37_4800)),
                    Some((0, 0.0)),
                    123_456,
                    None,
                ),
                p(
                    "fragile",
                    "failed",
                    Some(Lsn(0x16B_0000)),
                    Some((4096, 12.25)),
                    7,
                    Some("ERROR: division by zero\n(SQLSTATE 22012)"),
                ),
                p("new_one", "pending", None, None, 0, None),
            ],
            horizon: None,
            slot: None,
        }
    }

    #[test]
    fn the_horizon_holder_is_named_in_the_table_and_the_json() {
        let holder = HorizonHolder {
            pid: Some(4242),
            database: Some("billing".into()),
            xid_age: 17,
            transaction_age_seconds: Some(93.25),
            state: Some("idle in transaction".into()),
        };
        let report = Report { horizon: Some(holder.clone()), ..sample() };
        assert!(render_table(&report).ends_with(
            "\noldest transaction holding the xmin horizon: pid 4242 in database billing, xid age 17, open 93.2 s, state idle in transaction\n"
        ));
        let v: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(v["horizon"]["pid"], 4242);
        assert_eq!(v["horizon"]["database"], "billing");
        assert_eq!(v["horizon"]["xid_age"], 17);
        let prepared = HorizonHolder {
            pid: None,
            transaction_age_seconds: None,
            state: Some("prepared t1".into()),
            ..holder
        };
        assert_eq!(
            prepared.describe(),
            "a prepared transaction in database billing, xid age 17, open ? s, state prepared t1"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&render_json(&sample())).unwrap()
            ["horizon"]
            .is_null());
    }

    #[test]
    fn table_is_aligned() {
        let table = render_table(&sample());
        let expected = "\
projection     state    checkpoint  lag_bytes  lag_seconds  events_applied  last_error
order_summary  running  1/6B374800          0        0.000          123456  -
fragile        failed   0/16B0000        4096       12.250               7  ERROR: division by zero (SQLSTATE 22012)
new_one        pending  -                   -            -               0  -
";
        assert_eq!(table, expected);
    }

    #[test]
    fn json_has_lsns_as_text_and_nulls_for_unknowns() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        assert_eq!(v["source_lsn"], "1/6B374800");
        assert_eq!(v["projections"][0]["checkpoint"], "1/6B374800");
        assert_eq!(v["projections"][0]["lag_bytes"], 0);
        assert_eq!(v["projections"][1]["lag_seconds"], 12.25);
        assert_eq!(v["projections"][1]["state"], "failed");
        assert!(v["projections"][2]["checkpoint"].is_null());
        assert!(v["projections"][2]["lag_bytes"].is_null());
    }

    #[test]
    fn rows_of_an_older_schema_still_decode() {
        let row: Row =
            serde_json::from_str(r#"{"name": "x", "status": "running", "checkpoint_lsn": "0/10"}"#)
                .unwrap();
        assert_eq!(
            (row.checkpoint_lsn.as_deref(), row.checkpoint_time, row.events_applied),
            (Some("0/10"), None, 0)
        );
    }
}
