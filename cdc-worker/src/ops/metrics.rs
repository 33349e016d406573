//! What `run --metrics-addr` serves: Prometheus text on `/metrics` and a liveness answer on
//! `/healthz`.
//!
//! Two sources: counters and the session's phase, kept in this process by a few calls from
//! the session loop (cheap atomics, one global registry); and per-projection figures read from
//! the databases at scrape time through `ops/status.rs`, so that `/metrics` and
//! `eventstore-worker status` always agree.
//!
//! Over 500 lines with its tests (about 190): every series is spelled out once, here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::apply::Failure;
use crate::config::Config;
use crate::model::SourceTxn;
use crate::model::{Lsn, ProjectionStatus};
use crate::ops::http::{self, Request, Response};
use crate::ops::status::{self, Report};

/// Connecting longer than this (setup SQL, slot creation waiting for old transactions, a
/// connection attempt that never answers) makes `/healthz` fail.
pub const CONNECT_STALL: Duration = Duration::from_secs(600);
/// A batch applying longer than this (a target connection that went silent, a lock that is
/// never released) makes `/healthz` fail.
pub const APPLY_STALL: Duration = Duration::from_secs(600);
/// Per-scrape bound on the database queries behind the per-projection figures.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Phase {
    Starting,
    Connecting { since: Instant },
    Streaming { since: Instant },
    Reconnecting { at: Instant, error: String },
    Stopping,
}

pub struct Metrics {
    phase: Mutex<Phase>,
    applying_since: Mutex<Option<Instant>>,
    batches: AtomicU64,
    transactions: AtomicU64,
    events: AtomicU64,
    idle_positions: AtomicU64,
    apply_micros: AtomicU64,
    session_errors: AtomicU64,
    received: AtomicU64,
    acknowledged: AtomicU64,
    queued_bytes: AtomicU64,
    queued_bytes_peak: AtomicU64,
    projection_errors: Mutex<BTreeMap<String, u64>>,
}

static METRICS: Metrics = Metrics::new();

/// The process's registry.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            phase: Mutex::new(Phase::Starting),
            applying_since: Mutex::new(None),
            batches: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            events: AtomicU64::new(0),
            idle_positions: AtomicU64::new(0),
            apply_micros: AtomicU64::new(0),
            session_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            queued_bytes_peak: AtomicU64::new(0),
            projection_errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn connecting(&self) {
        *lock(&self.phase) = Phase::Connecting { since: Instant::now() };
    }

    pub fn streaming(&self) {
        *lock(&self.phase) = Phase::Streaming { since: Instant::now() };
    }

    /// The session ended with `error`; the next attempt starts after `retry_in`.
    pub fn reconnecting(&self, retry_in: Duration, error: &anyhow::Error) {
        self.session_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.applying_since) = None;
        *lock(&self.phase) =
            Phase::Reconnecting { at: Instant::now() + retry_in, error: format!("{error:#}") };
    }

    pub fn stopping(&self) {
        *lock(&self.phase) = Phase::Stopping;
    }

    pub fn apply_started(&self) {
        *lock(&self.applying_since) = Some(Instant::now());
    }

    /// A batch committed in the target; `failures` are the projections it stopped.
    pub fn batch_applied(&self, batch: &[SourceTxn], elapsed: Duration, failures: &[Failure]) {
        *lock(&self.applying_since) = None;
        let idle = batch.iter().filter(|t| t.events.is_empty()).count() as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.transactions.fetch_add(batch.len() as u64 - idle, Ordering::Relaxed);
        self.idle_positions.fetch_add(idle, Ordering::Relaxed);
        self.events.fetch_add(batch.iter().map(|t| t.events.len() as u64).sum(), Ordering::Relaxed);
        self.apply_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if !failures.is_empty() {
            let mut errors = lock(&self.projection_errors);
            for f in failures {
                *errors.entry(f.projection.clone()).or_default() += 1;
            }
        }
    }

    /// A standby status update reported these positions to the server.
    pub fn acknowledged(&self, write: Lsn, flush: Lsn) {
        self.received.store(write.0, Ordering::Relaxed);
        self.acknowledged.store(flush.0, Ordering::Relaxed);
    }

    /// Bytes of source transactions held between the stream reader and the apply path now,
    /// and the most held at once since the worker started (see `stream/queue.rs`).
    pub fn queued_bytes(&self, now: usize, peak: usize) {
        self.queued_bytes.store(now as u64, Ordering::Relaxed);
        self.queued_bytes_peak.fetch_max(peak as u64, Ordering::Relaxed);
    }

    /// Liveness: `true` while streaming, connecting, or waiting to reconnect; `false` when
    /// stopping or stuck (connecting or applying one batch for longer than the stall limits).
    /// The text says which, for people reading probe failures.
    pub fn health(&self, now: Instant) -> (bool, String) {
        let acked = Lsn(self.acknowledged.load(Ordering::Relaxed));
        let applying = *lock(&self.applying_since);
        match lock(&self.phase).clone() {
            Phase::Starting => (true, "starting".into()),
            Phase::Connecting { since } => {
                let waited = now.saturating_duration_since(since);
                if waited > CONNECT_STALL {
                    (false, format!("stuck: connecting for {} s", waited.as_secs()))
                } else {
                    (true, format!("connecting for {:.1} s", waited.as_secs_f64()))
                }
            }
            Phase::Streaming { since } => {
                match applying.map(|a| now.saturating_duration_since(a)) {
                    Some(busy) if busy > APPLY_STALL => {
                        (false, format!("stuck: one batch applying for {} s", busy.as_secs()))
                    }
                    _ => (
                        true,
                        format!(
                            "streaming for {:.1} s; acknowledged {acked}",
                            now.saturating_duration_since(since).as_secs_f64()
                        ),
                    ),
                }
            }
            Phase::Reconnecting { at, error } => (
                true,
                format!(
                    "reconnecting in {:.1} s after: {error}",
                    at.saturating_duration_since(now).as_secs_f64()
                ),
            ),
            Phase::Stopping => (false, "stopping".into()),
        }
    }

    /// Prometheus text exposition (format 0.0.4). `report` is the per-projection part, `None`
    /// when the databases could not be read for this scrape.
    pub fn render(&self, config: &Config, report: Option<&Report>) -> String {
        let mut out = String::new();
        let streaming = matches!(*lock(&self.phase), Phase::Streaming { .. });
        let counter = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();

        gauge(
            &mut out,
            "eventstore_worker_up",
            "1 while a replication session is streaming, 0 while connecting or reconnecting.",
            u8::from(streaming).to_string(),
        );
        let _ = write!(
            out,
            "# HELP eventstore_worker_build_info The worker's version.\n# TYPE eventstore_worker_build_info gauge\neventstore_worker_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        counter(
            &mut out,
            "eventstore_worker_batches_total",
            "Target transactions committed (batches of source transactions).",
            load(&self.batches),
        );
        counter(
            &mut out,
            "eventstore_worker_source_transactions_total",
            "Source transactions with events applied.",
            load(&self.transactions),
        );
        counter(
            &mut out,
            "eventstore_worker_source_events_total",
            "Events in the source transactions applied (before handler selection).",
            load(&self.events),
        );
        counter(&mut out, "eventstore_worker_idle_positions_total", "Idle positions recorded as checkpoints (read-your-writes while the event table is quiet).", load(&self.idle_positions));
        counter(
            &mut out,
            "eventstore_worker_apply_seconds_total",
            "Time spent applying batches to the target.",
            format!("{:.6}", self.apply_micros.load(Ordering::Relaxed) as f64 / 1e6),
        );
        counter(
            &mut out,
            "eventstore_worker_session_errors_total",
            "Replication sessions ended by an error (each followed by a reconnect).",
            load(&self.session_errors),
        );
        gauge(
            &mut out,
            "eventstore_worker_received_lsn",
            "WAL position received from the server (write position reported), as a number.",
            load(&self.received),
        );
        gauge(
            &mut out,
            "eventstore_worker_acknowledged_lsn",
            "Last flush position acknowledged to the replication slot, as a number.",
            load(&self.acknowledged),
        );
        gauge(
            &mut out,
            "eventstore_worker_queued_bytes",
            "Bytes of decoded source transactions between the stream reader and the apply path.",
            load(&self.queued_bytes),
        );
        gauge(
            &mut out,
            "eventstore_worker_queued_bytes_peak",
            "Most bytes ever held between the stream reader and the apply path at once.",
            load(&self.queued_bytes_peak),
        );
        gauge(&mut out, "eventstore_worker_queued_bytes_bound", "[stream] max_queued_bytes: the queue holds at most this much, or one larger transaction alone.", config.stream.max_queued_bytes.to_string());

        let errors = lock(&self.projection_errors).clone();
        let _ = write!(
            out,
            "# HELP eventstore_worker_projection_errors_total Handler failures that stopped the projection, since the worker started.\n# TYPE eventstore_worker_projection_errors_total counter\n"
        );
        for p in &config.projections {
            let _ = writeln!(
                out,
                "eventstore_worker_projection_errors_total{{projection=\"{}\"}} {}",
                label(&p.name),
                errors.get(&p.name).copied().unwrap_or(0)
            );
        }

        gauge(
            &mut out,
            "eventstore_worker_status_query_success",
            "1 when this scrape read the per-projection figures from the databases.",
            u8::from(report.is_some()).to_string(),
        );
        let Some(report) = report else { return out };
        type Pick = fn(&status::ProjectionReport) -> Option<String>;
        let series: [(&str, &str, &str, Pick); 5] = [
            ("eventstore_worker_projection_events_applied_total", "counter", "Handler executions recorded in the projection's checkpoint row.", |p| Some(p.events_applied.to_string())),
            ("eventstore_worker_projection_checkpoint_lsn", "gauge", "Source position the projection reflects, as a number.", |p| p.checkpoint.map(|c| c.0.to_string())),
            ("eventstore_worker_projection_lag_bytes", "gauge", "Source WAL between the projection's checkpoint and pg_current_wal_lsn(); 0 when it reflects everything.", |p| p.lag_bytes.map(|b| b.to_string())),
            ("eventstore_worker_projection_lag_seconds", "gauge", "0 when caught up, otherwise how long ago the source was at the projection's checkpoint.", |p| p.lag_seconds.map(|s| format!("{s:.3}"))),
            ("eventstore_worker_projection_failed", "gauge", "1 while a handler failure stops the projection.", |p| Some(u8::from(p.state == ProjectionStatus::Failed.as_str()).to_string())),
        ];
        for (name, kind, help, pick) in series {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for p in report.projections.iter().filter(|p| p.state != "pending") {
                if let Some(value) = pick(p) {
                    let _ = writeln!(out, "{name}{{projection=\"{}\"}} {value}", label(&p.name));
                }
            }
        }
        let holder = report.horizon.as_ref();
        gauge(&mut out, "eventstore_worker_horizon_xid_age", "age() of the oldest open transaction with an xid on the source server (any database); 0 when none.", holder.map_or(0, |h| h.xid_age).to_string());
        gauge(
            &mut out,
            "eventstore_worker_horizon_transaction_age_seconds",
            "How long that transaction has been open; 0 when none.",
            format!("{:.3}", holder.and_then(|h| h.transaction_age_seconds).unwrap_or(0.0)),
        );
        let name = "eventstore_worker_horizon_holder";
        let _ = write!(out, "# HELP {name} 1 for the oldest open transaction with an xid: while it is open, reads in commit order stop before it.\n# TYPE {name} gauge\n");
        if let Some(h) = holder {
            let _ = writeln!(
                out,
                "{name}{{pid=\"{}\",database=\"{}\",state=\"{}\"}} 1",
                h.pid.map_or_else(String::new, |p| p.to_string()),
                label(h.database.as_deref().unwrap_or("")),
                label(h.state.as_deref().unwrap_or(""))
            );
        }
        if let Some(slot) = &report.slot {
            let labels = format!("slot=\"{}\"", label(&slot.name));
            let name = "eventstore_worker_slot_wal_status";
            let _ = write!(out, "# HELP {name} 1 for the replication slot's wal_status (reserved, extended, unreserved, lost).\n# TYPE {name} gauge\n");
            for status in ["reserved", "extended", "unreserved", "lost"] {
                let on = slot.wal_status.as_deref() == Some(status);
                let _ =
                    writeln!(out, "{name}{{{labels},wal_status=\"{status}\"}} {}", u8::from(on));
            }
            let name = "eventstore_worker_slot_safe_wal_size_bytes";
            let _ = write!(out, "# HELP {name} WAL that may still be written before the slot is in danger of invalidation (max_slot_wal_keep_size); absent when unlimited.\n# TYPE {name} gauge\n");
            if let Some(b) = slot.safe_wal_size {
                let _ = writeln!(out, "{name}{{{labels}}} {b}");
            }
            let name = "eventstore_worker_slot_retained_wal_bytes";
            let _ = write!(out, "# HELP {name} Source WAL the slot holds back (current position minus its restart position).\n# TYPE {name} gauge\n");
            if let Some(b) = slot.retained_bytes {
                let _ = writeln!(out, "{name}{{{labels}}} {b}");
            }
            let name = "eventstore_worker_slot_invalidated";
            let _ = write!(out, "# HELP {name} 1 while the slot is invalidated (the worker recreates it and catches up through the event table), with the reason.\n# TYPE {name} gauge\n");
            let _ = writeln!(
                out,
                "{name}{{{labels},reason=\"{}\"}} {}",
                label(slot.invalidation_reason.as_deref().unwrap_or("")),
                u8::from(slot.invalidation_reason.is_some())
            );
            let name = "eventstore_worker_slot_failover";
            let _ = write!(out, "# HELP {name} 1 when the slot is a failover slot that standbys synchronize (PostgreSQL 17+).\n# TYPE {name} gauge\n");
            let _ = writeln!(out, "{name}{{{labels}}} {}", u8::from(slot.failover == Some(true)));
        }
        // One series per lifecycle status, 1 for the current one (a state set).
        let name = "eventstore_worker_projection_state";
        let _ = write!(
            out,
            "# HELP {name} 1 for the projection's current status: running (follows the stream), catching_up, rebuilding or failed.\n# TYPE {name} gauge\n"
        );
        for p in report.projections.iter().filter(|p| p.state != "pending") {
            for state in ProjectionStatus::OF_PROJECTIONS {
                let _ = writeln!(
                    out,
                    "{name}{{projection=\"{}\",state=\"{state}\"}} {}",
                    label(&p.name),
                    u8::from(p.state == state.as_str())
                );
            }
        }
        out
    }
}

/// A label value escaped as the exposition format requires.
fn label(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Serves `/metrics` and `/healthz` on `listener` for as long as the process runs: during a
/// shutdown (`shutdown` cancelled) `/healthz` answers 503 "stopping" and `/metrics` still
/// shows the last batches.
pub async fn serve(listener: TcpListener, config: Arc<Config>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        get().stopping();
    });
    // One set of connections, opened at the first scrape and reopened after an error.
    let clients: Arc<tokio::sync::Mutex<Option<status::Clients>>> = Arc::default();
    http::serve(listener, CancellationToken::new(), move |request: Request| {
        let config = config.clone();
        let clients = clients.clone();
        async move {
            match request.path.as_str() {
                "/metrics" => {
                    let report =
                        tokio::time::timeout(SCRAPE_TIMEOUT, scrape(&config, &clients)).await;
                    let report = match report {
                        Ok(Ok(r)) => Some(r),
                        Ok(Err(e)) => {
                            debug!(error = format!("{e:#}"), "metrics: reading projections failed");
                            None
                        }
                        Err(_) => {
                            debug!("metrics: reading projections timed out");
                            *clients.lock().await = None;
                            None
                        }
                    };
                    let mut response = Response::text(200, get().render(&config, report.as_ref()));
                    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
                    response
                }
                "/healthz" => {
                    let (healthy, text) = get().health(Instant::now());
                    Response::text(if healthy { 200 } else { 503 }, format!("{text}\n"))
                }
                _ => Response::text(404, "not found: try /metrics or /healthz\n"),
            }
        }
    })
    .await
}

async fn scrape(
    config: &Config,
    clients: &tokio::sync::Mutex<Option<status::Clients>>,
) -> anyhow::Result<Report> {
    let mut guard = clients.lock().await;
    if guard.is_none() {
        *guard = Some(status::Clients::connect(config).await?);
    }
    let result = match guard.as_ref() {
        Some(c) => c.report(config).await,
        None => unreachable!("connected above"),
    };
    if result.is_err() {
        *guard = None;
    }
    result
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use super::*;
    use crate::model::Event;
    use crate::ops::status::ProjectionReport;

    fn config() -> Config {
        Config::parse(
            Path::new("w.toml"),
            r#"
            [source]
            dsn = "host=localhost dbname=app"
            [[projection]]
            name = "order_summary"
            [projection.handlers]
            OrderPlaced = "SELECT $1"
            [[projection]]
            name = 'odd "name"'
            [projection.handlers]
            OrderPlaced = "SELECT $1"
            "#,
        )
        .unwrap()
    }

    fn txn(end: u64, events: usize) -> SourceTxn {
        let ev =
            Event { event_type: "OrderPlaced".into(), global_position: 1, envelope: "{}".into() };
        SourceTxn {
            end_lsn: Lsn(end),
            source_time: SystemTime::UNIX_EPOCH,
            transaction_id: None,
            events: vec![ev; events],
            bytes: 2 * events,
        }
    }

    /// `name{labels} value` lines as a map, for assertions.
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    }

    #[test]
    fn counts_batches_and_failures() {
        let m = Metrics::new();
        m.streaming();
        m.batch_applied(&[txn(10, 2), txn(20, 0), txn(30, 1)], Duration::from_millis(1500), &[]);
        let failure = Failure {
            projection: "order_summary".into(),
            checkpoint: Some(Lsn(10)),
            error: "boom".into(),
        };
        m.batch_applied(&[txn(40, 1)], Duration::from_millis(500), &[failure]);
        m.acknowledged(Lsn(50), Lsn(40));
        let text = m.render(&config(), None);
        let s = samples(&text);
        assert_eq!(s["eventstore_worker_up"], "1");
        assert_eq!(s["eventstore_worker_batches_total"], "2");
        assert_eq!(s["eventstore_worker_source_transactions_total"], "3");
        assert_eq!(s["eventstore_worker_idle_positions_total"], "1");
        assert_eq!(s["eventstore_worker_source_events_total"], "4");
        assert_eq!(s["eventstore_worker_apply_seconds_total"], "2.000000");
        assert_eq!(s["eventstore_worker_acknowledged_lsn"], "40");
        assert_eq!(s["eventstore_worker_received_lsn"], "50");
        assert_eq!(
            s["eventstore_worker_projection_errors_total{projection=\"order_summary\"}"],
            "1"
        );
        assert_eq!(
            s["eventstore_worker_projection_errors_total{projection=\"odd \\\"name\\\"\"}"],
            "0"
        );
        assert_eq!(s["eventstore_worker_status_query_success"], "0");
        assert!(!text.contains("lag_bytes{"), "no per-projection figures without a report");
        // Every series has HELP and TYPE.
        for name in s.keys().map(|k| k.split('{').next().unwrap()) {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn renders_projection_figures_from_the_report() {
        let m = Metrics::new();
        let p = |name: &str, state: &str, lag: Option<u64>| ProjectionReport {
            name: name.into(),
            state: state.into(),
            checkpoint: lag.map(|_| Lsn(4096)),
            checkpoint_time: None,
            lag_bytes: lag,
            lag_seconds: lag.map(|l| l as f64 / 1000.0),
            events_applied: 42,
            last_error: None,
            updated_at: None,
        };
        let report = Report {
            source_lsn: Some(Lsn(5000)),
            projections: vec![
                p("order_summary", "failed", Some(904)),
                p("odd \"name\"", "pending", None),
                p("customer_revenue", "rebuilding", None),
            ],
            horizon: Some(crate::ops::status::HorizonHolder {
                pid: Some(77),
                database: Some("billing".into()),
                xid_age: 5,
                transaction_age_seconds: Some(12.5),
                state: Some("idle in transaction".into()),
            }),
            slot: Some(crate::ops::status::SlotHealth {
                name: "eventstore_worker".into(),
                active: true,
                wal_status: Some("unreserved".into()),
                safe_wal_size: Some(1024),
                invalidation_reason: None,
                failover: Some(true),
                retained_bytes: Some(4096),
            }),
        };
        let s = samples(&m.render(&config(), Some(&report)));
        assert_eq!(s["eventstore_worker_up"], "0");
        assert_eq!(s["eventstore_worker_status_query_success"], "1");
        assert_eq!(
            s["eventstore_worker_projection_events_applied_total{projection=\"order_summary\"}"],
            "42"
        );
        assert_eq!(
            s["eventstore_worker_projection_checkpoint_lsn{projection=\"order_summary\"}"],
            "4096"
        );
        assert_eq!(
            s["eventstore_worker_projection_lag_bytes{projection=\"order_summary\"}"],
            "904"
        );
        assert_eq!(
            s["eventstore_worker_projection_lag_seconds{projection=\"order_summary\"}"],
            "0.904"
        );
        assert_eq!(s["eventstore_worker_projection_failed{projection=\"order_summary\"}"], "1");
        assert_eq!(
            s["eventstore_worker_projection_state{projection=\"order_summary\",state=\"failed\"}"],
            "1"
        );
        assert_eq!(
            s["eventstore_worker_projection_state{projection=\"order_summary\",state=\"running\"}"],
            "0"
        );
        assert_eq!(s["eventstore_worker_projection_state{projection=\"customer_revenue\",state=\"rebuilding\"}"], "1");
        assert_eq!(s["eventstore_worker_projection_failed{projection=\"customer_revenue\"}"], "0");
        assert_eq!(s["eventstore_worker_horizon_xid_age"], "5");
        let slot = "slot=\"eventstore_worker\"";
        assert_eq!(
            s[&format!("eventstore_worker_slot_wal_status{{{slot},wal_status=\"unreserved\"}}")],
            "1"
        );
        assert_eq!(
            s[&format!("eventstore_worker_slot_wal_status{{{slot},wal_status=\"lost\"}}")],
            "0"
        );
        assert_eq!(s[&format!("eventstore_worker_slot_safe_wal_size_bytes{{{slot}}}")], "1024");
        assert_eq!(s[&format!("eventstore_worker_slot_retained_wal_bytes{{{slot}}}")], "4096");
        assert_eq!(s[&format!("eventstore_worker_slot_invalidated{{{slot},reason=\"\"}}")], "0");
        assert_eq!(s[&format!("eventstore_worker_slot_failover{{{slot}}}")], "1");
        assert_eq!(s["eventstore_worker_horizon_transaction_age_seconds"], "12.500");
        assert_eq!(s["eventstore_worker_horizon_holder{pid=\"77\",database=\"billing\",state=\"idle in transaction\"}"], "1");
        assert!(
            !s.contains_key(
                "eventstore_worker_projection_lag_bytes{projection=\"customer_revenue\"}"
            ),
            "no checkpoint yet"
        );
        assert!(
            !s.keys().any(|k| k.contains("odd")
                && !k.starts_with("eventstore_worker_projection_errors_total")),
            "pending projections have no row to report"
        );
    }

    #[test]
    fn health_follows_the_session() {
        let m = Metrics::new();
        let now = Instant::now();
        assert!(m.health(now).0);
        m.connecting();
        assert!(m.health(Instant::now()).0);
        assert!(
            !m.health(Instant::now() + CONNECT_STALL + Duration::from_secs(1)).0,
            "stuck connecting"
        );
        m.streaming();
        let (ok, text) = m.health(Instant::now());
        assert!(ok && text.starts_with("streaming"), "{text}");
        m.apply_started();
        assert!(
            !m.health(Instant::now() + APPLY_STALL + Duration::from_secs(1)).0,
            "stuck applying"
        );
        m.batch_applied(&[txn(1, 1)], Duration::ZERO, &[]);
        assert!(m.health(Instant::now() + APPLY_STALL + Duration::from_secs(1)).0);
        m.reconnecting(Duration::from_secs(2), &anyhow::anyhow!("connection refused"));
        let (ok, text) = m.health(Instant::now());
        assert!(
            ok && text.starts_with("reconnecting in ")
                && text.ends_with("after: connection refused"),
            "{text}"
        );
        m.stopping();
        assert_eq!(m.health(Instant::now()), (false, "stopping".into()));
    }
}
