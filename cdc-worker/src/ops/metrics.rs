//! What `run --metrics-addr` serves: Prometheus text on `/metrics` and a liveness answer on
//! `/healthz`.
//!
//! Two sources: counters, gauges, histograms and the session's phase, kept in this process by
//! a few calls from the session loop (prometheus-client's atomic metrics, one global
//! `Metrics`); and per-projection figures read from the databases at scrape time through
//! `ops/status.rs`, so that `/metrics` and `eventstore-worker status` always agree. Each scrape
//! builds a prometheus-client `Registry` of both and encodes it in the Prometheus text format
//! (0.0.4).
//!
//! About 800 lines with its tests (about 230): every series is spelled out once, here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::{prometheus_text, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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
    batches: Counter,
    transactions: Counter,
    events: Counter,
    idle_positions: Counter,
    apply_seconds: Counter<f64, AtomicU64>,
    session_errors: Counter,
    received: Gauge<u64, AtomicU64>,
    acknowledged: Gauge<u64, AtomicU64>,
    queued_bytes: Gauge<u64, AtomicU64>,
    queued_bytes_peak: Gauge<u64, AtomicU64>,
    /// Seconds each batch took to apply (`Target::apply` through COMMIT).
    batch_apply_seconds: Histogram,
    /// Per source transaction with events applied live: seconds from its commit on the source
    /// to the target COMMIT that applied it.
    apply_lag_seconds: Histogram,
    projection_errors: Mutex<BTreeMap<String, u64>>,
}

/// `eventstore_worker_batch_apply_seconds`' buckets: a batch is usually milliseconds; past
/// `APPLY_STALL` `/healthz` fails anyway.
const APPLY_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0];
/// `eventstore_worker_apply_lag_seconds`' buckets: sub-second when following the stream, up
/// to an hour after an outage.
const LAG_BUCKETS: [f64; 15] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's registry.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Labelled samples of one family, encoded in the order given (prometheus-client's `Family`
/// keeps its series in a hash map); built per scrape.
#[derive(Debug)]
struct Series<V> {
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, V)>,
}

impl<V> Series<V> {
    fn gauge() -> Series<V> {
        Series { kind: MetricType::Gauge, samples: Vec::new() }
    }

    fn counter() -> Series<V> {
        Series { kind: MetricType::Counter, samples: Vec::new() }
    }

    fn with(mut self, labels: &[(&'static str, &str)], value: V) -> Series<V> {
        self.push(labels, value);
        self
    }

    fn push(&mut self, labels: &[(&'static str, &str)], value: V) {
        self.samples.push((labels.iter().map(|&(k, v)| (k, v.to_owned())).collect(), value));
    }
}

/// A sample value: integers and floats as gauges, unsigned integers as counters too.
trait Value: std::fmt::Debug + Send + Sync + 'static {
    fn encode(&self, kind: MetricType, sample: &mut MetricEncoder) -> std::fmt::Result;
}

impl Value for u64 {
    fn encode(&self, kind: MetricType, sample: &mut MetricEncoder) -> std::fmt::Result {
        match kind {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(self, None),
            _ => sample.encode_gauge(self),
        }
    }
}

impl Value for i64 {
    fn encode(&self, _: MetricType, sample: &mut MetricEncoder) -> std::fmt::Result {
        sample.encode_gauge(self)
    }
}

impl Value for f64 {
    fn encode(&self, _: MetricType, sample: &mut MetricEncoder) -> std::fmt::Result {
        sample.encode_gauge(self)
    }
}

impl<V: Value> EncodeMetric for Series<V> {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        for (labels, value) in &self.samples {
            value.encode(self.kind, &mut encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            phase: Mutex::new(Phase::Starting),
            applying_since: Mutex::new(None),
            batches: Counter::default(),
            transactions: Counter::default(),
            events: Counter::default(),
            idle_positions: Counter::default(),
            apply_seconds: Counter::default(),
            session_errors: Counter::default(),
            received: Gauge::default(),
            acknowledged: Gauge::default(),
            queued_bytes: Gauge::default(),
            queued_bytes_peak: Gauge::default(),
            batch_apply_seconds: Histogram::new(APPLY_BUCKETS),
            apply_lag_seconds: Histogram::new(LAG_BUCKETS),
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
        self.session_errors.inc();
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
        // The histograms first: a scrape in between sees their counts at least the counters'.
        self.batch_apply_seconds.observe(elapsed.as_secs_f64());
        let now = SystemTime::now();
        for t in batch.iter().filter(|t| !t.events.is_empty()) {
            let lag = now.duration_since(t.source_time).unwrap_or(Duration::ZERO);
            self.apply_lag_seconds.observe(lag.as_secs_f64());
        }
        let idle = batch.iter().filter(|t| t.events.is_empty()).count() as u64;
        self.batches.inc();
        self.transactions.inc_by(batch.len() as u64 - idle);
        self.idle_positions.inc_by(idle);
        self.events.inc_by(batch.iter().map(|t| t.events.len() as u64).sum());
        self.apply_seconds.inc_by(elapsed.as_secs_f64());
        if !failures.is_empty() {
            let mut errors = lock(&self.projection_errors);
            for f in failures {
                *errors.entry(f.projection.clone()).or_default() += 1;
            }
        }
    }

    /// A standby status update reported these positions to the server.
    pub fn acknowledged(&self, write: Lsn, flush: Lsn) {
        self.received.set(write.0);
        self.acknowledged.set(flush.0);
    }

    /// Bytes of source transactions held between the stream reader and the apply path now,
    /// and the most held at once since the worker started (see `stream/queue.rs`).
    pub fn queued_bytes(&self, now: usize, peak: usize) {
        self.queued_bytes.set(now as u64);
        self.queued_bytes_peak.inner().fetch_max(peak as u64, Ordering::Relaxed);
    }

    /// Liveness: `true` while streaming, connecting, or waiting to reconnect; `false` when
    /// stopping or stuck (connecting or applying one batch for longer than the stall limits).
    /// The text says which, for people reading probe failures.
    pub fn health(&self, now: Instant) -> (bool, String) {
        let acked = Lsn(self.acknowledged.get());
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

    /// Prometheus text exposition (format 0.0.4, prometheus-client's encoder). `report` is the
    /// per-projection part, `None` when the databases could not be read for this scrape.
    ///
    /// A registry per scrape: the process's counters, gauges and histograms are registered by
    /// handle (they keep counting between scrapes), the per-scrape figures as constants.
    /// prometheus-client adds `_total` to a counter's name and a period to its help.
    pub fn render(&self, config: &Config, report: Option<&Report>) -> String {
        let mut r = Registry::default();
        let streaming = matches!(*lock(&self.phase), Phase::Streaming { .. });
        r.register(
            "eventstore_worker_up",
            "1 while a replication session is streaming, 0 while connecting or reconnecting",
            ConstGauge::new(u64::from(streaming)),
        );
        r.register(
            "eventstore_worker_build_info",
            "The worker's version",
            Series::gauge().with(&[("version", env!("CARGO_PKG_VERSION"))], 1u64),
        );
        r.register(
            "eventstore_worker_batches",
            "Target transactions committed (batches of source transactions)",
            self.batches.clone(),
        );
        r.register(
            "eventstore_worker_source_transactions",
            "Source transactions with events applied",
            self.transactions.clone(),
        );
        r.register(
            "eventstore_worker_source_events",
            "Events in the source transactions applied (before handler selection)",
            self.events.clone(),
        );
        r.register(
            "eventstore_worker_idle_positions",
            "Idle positions recorded as checkpoints (read-your-writes while the event table is quiet)",
            self.idle_positions.clone(),
        );
        r.register(
            "eventstore_worker_apply_seconds",
            "Time spent applying batches to the target",
            self.apply_seconds.clone(),
        );
        r.register(
            "eventstore_worker_batch_apply_seconds",
            "Seconds each batch took to apply to the target, through its COMMIT",
            self.batch_apply_seconds.clone(),
        );
        r.register(
            "eventstore_worker_apply_lag_seconds",
            "Per source transaction with events applied live: seconds from its commit on the source to the target COMMIT that applied it",
            self.apply_lag_seconds.clone(),
        );
        r.register(
            "eventstore_worker_session_errors",
            "Replication sessions ended by an error (each followed by a reconnect)",
            self.session_errors.clone(),
        );
        r.register(
            "eventstore_worker_received_lsn",
            "WAL position received from the server (write position reported), as a number",
            self.received.clone(),
        );
        r.register(
            "eventstore_worker_acknowledged_lsn",
            "Last flush position acknowledged to the replication slot, as a number",
            self.acknowledged.clone(),
        );
        r.register(
            "eventstore_worker_queued_bytes",
            "Bytes of decoded source transactions between the stream reader and the apply path",
            self.queued_bytes.clone(),
        );
        r.register(
            "eventstore_worker_queued_bytes_peak",
            "Most bytes ever held between the stream reader and the apply path at once",
            self.queued_bytes_peak.clone(),
        );
        r.register(
            "eventstore_worker_queued_bytes_bound",
            "[stream] max_queued_bytes: the queue holds at most this much, or one larger transaction alone",
            ConstGauge::new(config.stream.max_queued_bytes as u64),
        );
        let errors = lock(&self.projection_errors).clone();
        let mut failures = Series::counter();
        for p in &config.projections {
            failures.push(&[("projection", &p.name)], errors.get(&p.name).copied().unwrap_or(0));
        }
        r.register(
            "eventstore_worker_projection_errors",
            "Handler failures that stopped the projection, since the worker started",
            failures,
        );
        r.register(
            "eventstore_worker_status_query_success",
            "1 when this scrape read the per-projection figures from the databases",
            ConstGauge::new(u64::from(report.is_some())),
        );
        if let Some(report) = report {
            register_report(&mut r, report);
        }
        let mut out = String::new();
        prometheus_text::encode(&mut out, &r).expect("writing to a String does not fail");
        out
    }
}

/// The per-scrape series read from the databases.
fn register_report(r: &mut Registry, report: &Report) {
    let projections = || report.projections.iter().filter(|p| p.state != "pending");
    fn each<V>(
        report: &Report,
        series: Series<V>,
        pick: impl Fn(&status::ProjectionReport) -> Option<V>,
    ) -> Series<V> {
        report.projections.iter().filter(|p| p.state != "pending").fold(series, |s, p| {
            match pick(p) {
                Some(v) => s.with(&[("projection", &p.name)], v),
                None => s,
            }
        })
    }
    r.register(
        "eventstore_worker_projection_events_applied",
        "Handler executions recorded in the projection's checkpoint row",
        each(report, Series::counter(), |p| Some(p.events_applied.max(0) as u64)),
    );
    r.register(
        "eventstore_worker_projection_checkpoint_lsn",
        "Source position the projection reflects, as a number",
        each(report, Series::gauge(), |p| p.checkpoint.map(|c| c.0)),
    );
    r.register(
        "eventstore_worker_projection_lag_bytes",
        "Source WAL between the projection's checkpoint and pg_current_wal_lsn(); 0 when it reflects everything",
        each(report, Series::gauge(), |p| p.lag_bytes),
    );
    r.register(
        "eventstore_worker_projection_lag_seconds",
        "0 when caught up, otherwise how long ago the source was at the projection's checkpoint",
        each(report, Series::gauge(), |p| p.lag_seconds),
    );
    r.register(
        "eventstore_worker_projection_failed",
        "1 while a handler failure stops the projection",
        each(report, Series::gauge(), |p| {
            Some(u64::from(p.state == ProjectionStatus::Failed.as_str()))
        }),
    );
    let holder = report.horizon.as_ref();
    r.register(
        "eventstore_worker_horizon_xid_age",
        "age() of the oldest open transaction with an xid on the source server (any database); 0 when none",
        ConstGauge::new(holder.map_or(0, |h| h.xid_age)),
    );
    r.register(
        "eventstore_worker_horizon_transaction_age_seconds",
        "How long that transaction has been open; 0 when none",
        ConstGauge::new(holder.and_then(|h| h.transaction_age_seconds).unwrap_or(0.0)),
    );
    let mut holders = Series::gauge();
    if let Some(h) = holder {
        let pid = h.pid.map_or_else(String::new, |p| p.to_string());
        holders.push(
            &[
                ("pid", &pid),
                ("database", h.database.as_deref().unwrap_or("")),
                ("state", h.state.as_deref().unwrap_or("")),
            ],
            1u64,
        );
    }
    r.register(
        "eventstore_worker_horizon_holder",
        "1 for the oldest open transaction with an xid: while it is open, reads in commit order stop before it",
        holders,
    );
    if let Some(slot) = &report.slot {
        let name = slot.name.as_str();
        let mut wal_status = Series::gauge();
        for status in ["reserved", "extended", "unreserved", "lost"] {
            let on = slot.wal_status.as_deref() == Some(status);
            wal_status.push(&[("slot", name), ("wal_status", status)], u64::from(on));
        }
        r.register(
            "eventstore_worker_slot_wal_status",
            "1 for the replication slot's wal_status (reserved, extended, unreserved, lost)",
            wal_status,
        );
        let mut safe = Series::gauge();
        if let Some(b) = slot.safe_wal_size {
            safe.push(&[("slot", name)], b);
        }
        r.register(
            "eventstore_worker_slot_safe_wal_size_bytes",
            "WAL that may still be written before the slot is in danger of invalidation (max_slot_wal_keep_size); absent when unlimited",
            safe,
        );
        let mut retained = Series::gauge();
        if let Some(b) = slot.retained_bytes {
            retained.push(&[("slot", name)], b);
        }
        r.register(
            "eventstore_worker_slot_retained_wal_bytes",
            "Source WAL the slot holds back (current position minus its restart position)",
            retained,
        );
        r.register(
            "eventstore_worker_slot_invalidated",
            "1 while the slot is invalidated (the worker recreates it and catches up through the event table), with the reason",
            Series::gauge().with(
                &[("slot", name), ("reason", slot.invalidation_reason.as_deref().unwrap_or(""))],
                u64::from(slot.invalidation_reason.is_some()),
            ),
        );
        r.register(
            "eventstore_worker_slot_failover",
            "1 when the slot is a failover slot that standbys synchronize (PostgreSQL 17+)",
            Series::gauge().with(&[("slot", name)], u64::from(slot.failover == Some(true))),
        );
    }
    // One series per lifecycle status, 1 for the current one (a state set).
    let mut states = Series::gauge();
    for p in projections() {
        for state in ProjectionStatus::OF_PROJECTIONS {
            states.push(
                &[("projection", &p.name), ("state", state.as_str())],
                u64::from(p.state == state.as_str()),
            );
        }
    }
    r.register(
        "eventstore_worker_projection_state",
        "1 for the projection's current status: running (follows the stream), catching_up, rebuilding or failed",
        states,
    );
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
                    response.content_type = prometheus_text::CONTENT_TYPE;
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
        assert_eq!(s["eventstore_worker_apply_seconds_total"], "2.0");
        // One observation per batch: 1.5 s and 0.5 s.
        let apply = "eventstore_worker_batch_apply_seconds";
        assert_eq!(s[&format!("{apply}_count")], "2");
        assert_eq!(s[&format!("{apply}_sum")], "2.0");
        assert_eq!(s[&format!("{apply}_bucket{{le=\"0.5\"}}")], "1");
        assert_eq!(s[&format!("{apply}_bucket{{le=\"2.5\"}}")], "2");
        assert_eq!(s[&format!("{apply}_bucket{{le=\"+Inf\"}}")], "2");
        // One per source transaction with events (3), not per idle position; these committed
        // in 1970, so every lag is over the last bound.
        let lag = "eventstore_worker_apply_lag_seconds";
        assert_eq!(s[&format!("{lag}_count")], "3");
        assert_eq!(s[&format!("{lag}_bucket{{le=\"3600\"}}")], "0");
        assert_eq!(s[&format!("{lag}_bucket{{le=\"+Inf\"}}")], "3");
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
        // Every series has HELP and TYPE (a histogram's under the histogram's name).
        for name in s.keys().map(|k| k.split('{').next().unwrap()) {
            let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                text.contains(&format!("# TYPE {base} histogram\n")).then_some(base)
            });
            let family = histogram.unwrap_or(name);
            assert!(text.contains(&format!("# HELP {family} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{name}");
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
        assert_eq!(s["eventstore_worker_horizon_transaction_age_seconds"], "12.5");
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
