//! Projection lifecycle end to end: building from the event log on a first start and for a
//! projection added later, resuming failed projections without holding the slot, and
//! zero-downtime rebuilds, all while writers keep appending.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use eventstore_integration_tests::*;
use tokio_postgres::Client;

const SUMMARY_TYPES: &str = "('OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled')";
const REVENUE_TYPES: &str = "('OrderPlaced', 'PaymentCaptured', 'OrderCancelled')";

/// Handler executions the projection recorded equal the events it handles: none applied twice
/// (events_applied counts every execution since its tables were built).
async fn assert_applied_once(db: &Client, projection: &str, types: &str) -> Result<()> {
    let applied = count(
        db,
        &format!(
            "SELECT events_applied FROM eventstore_worker.projections WHERE name = '{projection}'"
        ),
    )
    .await?;
    let handled =
        count(db, &format!("SELECT count(*) FROM eventstore.events WHERE event_type IN {types}"))
            .await?;
    assert_eq!(applied, handled, "{projection}: handler executions vs events it handles");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_on_an_existing_store_folds_history_while_writers_append() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    append_orders(&dsn, 0, 3000, 4, 11).await?;
    let preloaded = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    assert!(preloaded > 7000, "{preloaded} events preloaded");

    // Writers keep appending while the worker builds from the log and joins the stream: the
    // load only ends once the worker runs.
    let running = Arc::new(AtomicBool::new(false));
    let load = background_orders_from(dsn.clone(), 3000, 2000, 3, 12, running.clone());
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    let at_start = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    wait_until_running(&db, &worker, 3).await?;
    let when_running = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    running.store(true, Ordering::SeqCst);
    assert!(
        when_running > at_start,
        "events appended during the build: {at_start} at start, {when_running} when running"
    );
    load.await??;

    assert_converges(&db, &db, &worker).await;
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert_applied_once(&db, "customer_revenue", REVENUE_TYPES).await?;
    assert!(worker.plain_log().contains("rebuilt and swapped in"), "{}", worker.plain_log());
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_added_later_backfills_exactly_and_the_others_do_not_move() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let header = socket_source(&cluster, "app");
    let two = orders_config_with(
        &cluster.dir,
        "two",
        &header,
        &["order_summary", "customer_revenue"],
        "",
    )?;
    let worker = Worker::start(&two)?;
    wait_until_running(&db, &worker, 2).await?;

    // The load only ends once the restarted worker runs.
    let running = Arc::new(AtomicBool::new(false));
    let load = background_orders(dsn.clone(), 2500, 3, 21, running.clone());
    eventually("the first projections apply part of the load", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM order_summary").await? > 400)
    })
    .await?;
    assert!(worker.terminate()?.success());

    // The same worker with a third projection: only that one is built from the log.
    let three = orders_config(&cluster.dir, "three", &header)?;
    let worker = Worker::start(&three)?;
    let at_start = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    wait_until_running(&db, &worker, 3).await?;
    let when_running = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    running.store(true, Ordering::SeqCst);
    assert!(
        when_running > at_start,
        "events appended during the backfill: {at_start} at start, {when_running} when running"
    );
    load.await??;

    assert_converges(&db, &db, &worker).await;
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert_applied_once(&db, "customer_revenue", REVENUE_TYPES).await?;
    let log = worker.plain_log();
    assert!(
        log.contains("rebuilt and swapped in") && log.contains("projection=fulfillment_queue"),
        "{log}"
    );
    let rebuilt_others = log
        .lines()
        .filter(|l| {
            l.contains("rebuilt and swapped in") && !l.contains("projection=fulfillment_queue")
        })
        .count();
    assert_eq!(rebuilt_others, 0, "running projections are not built again:\n{log}");
    assert!(worker.terminate()?.success());
    Ok(())
}

/// Breaks fulfillment_queue in `config` so that it fails on the first payment of customer c7,
/// starts a worker on it, appends `orders` orders and waits until that projection has failed
/// (`models`: the read-model database). Returns the worker and the config's unbroken text.
async fn failing_fulfillment(
    config: &Path,
    models: &Client,
    dsn: &str,
    orders: u64,
    seed: u64,
) -> Result<(Worker, String)> {
    let fixed = std::fs::read_to_string(config)?;
    let broken = fixed.replacen(
        "ON CONFLICT (order_id) DO NOTHING\"\"\"",
        "ON CONFLICT (order_id) DO NOTHING RETURNING 1 / (CASE customer_id WHEN 'c7' THEN 0 ELSE 1 END)\"\"\"",
        1,
    );
    assert_ne!(broken, fixed);
    std::fs::write(config, &broken)?;
    let worker = Worker::start(config)?;
    wait_until_running(models, &worker, 3).await?;
    append_orders(dsn, 0, orders, 3, seed).await?;
    eventually("fulfillment_queue fails", CONVERGE, || async {
        Ok(count(models, "SELECT count(*) FROM eventstore_worker.projections WHERE name = 'fulfillment_queue' AND status = 'failed'")
            .await?
            == 1)
    })
    .await?;
    Ok((worker, fixed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_projection_does_not_hold_the_slot_and_retry_resumes_it_exactly() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let (worker, fixed) = failing_fulfillment(&config, &db, &dsn, 600, 31).await?;
    let error: String = db
        .query_one(
            "SELECT last_error FROM eventstore_worker.projections WHERE name = 'fulfillment_queue'",
            &[],
        )
        .await?
        .get(0);
    assert!(error.contains("division by zero"), "{error}");

    // New events the failed projection has not applied, and unrelated WAL: the slot moves on.
    append_orders(&dsn, 600, 300, 3, 32).await?;
    db.batch_execute("CREATE TABLE unrelated AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g").await?;
    let written: String =
        db.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
    let failed_at: String = db
        .query_one("SELECT checkpoint_lsn::text FROM eventstore_worker.projections WHERE name = 'fulfillment_queue'", &[])
        .await?
        .get(0);
    if let Err(e) =
        eventually("the slot passes new WAL", CONVERGE, || slot_passes(&db, &written)).await
    {
        panic!("{e:#} (failed projection at {failed_at})\n{}", worker.plain_log());
    }
    let held: bool = db
        .query_one(
            "SELECT confirmed_flush_lsn > $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'eventstore_worker'",
            &[&failed_at],
        )
        .await?
        .get(0);
    assert!(held, "the slot is past the failed projection's checkpoint {failed_at}");
    // The commit-order map keeps what the failed projection has still to apply.
    let kept = count(
        &db,
        &format!(
            "SELECT count(*) FROM eventstore_worker.source_transactions
              WHERE end_lsn > '{failed_at}' AND (SELECT horizon FROM eventstore_worker.source_horizon) <= '{failed_at}'"
        ),
    )
    .await?;
    assert!(
        kept > 0,
        "the map kept the transactions after the failed projection's checkpoint {failed_at}"
    );
    // Stored in runs: each in commit order, of 1 to 100 transactions, keyed by its last, none
    // overlapping the one before; every transaction once, and each one that wrote events.
    let runs = db
        .query_one(
            "SELECT bool_and(cardinality(end_lsns) BETWEEN 1 AND 100
                             AND last_end_lsn = end_lsns[cardinality(end_lsns)]
                             AND cardinality(transaction_ids) = cardinality(end_lsns)
                             AND (before IS NULL OR end_lsns[1] > before)
                             AND ordered)
               FROM (SELECT r.*, lag(last_end_lsn) OVER (ORDER BY last_end_lsn) AS before,
                            (SELECT bool_and(l > p) FROM (SELECT l, lag(l) OVER (ORDER BY n) AS p
                                                            FROM unnest(r.end_lsns) WITH ORDINALITY AS u(l, n)) o
                              WHERE p IS NOT NULL) IS NOT false AS ordered
                       FROM eventstore_worker.source_transaction_runs r) AS s",
            &[],
        )
        .await?;
    assert_eq!(runs.get::<_, Option<bool>>(0), Some(true), "the map's runs are malformed");
    let once = db
        .query_one(
            "SELECT count(*) = count(DISTINCT end_lsn) AND count(*) = count(DISTINCT transaction_id)
                    AND bool_and(EXISTS (SELECT 1 FROM eventstore.events e WHERE e.transaction_id = m.transaction_id))
               FROM eventstore_worker.source_transactions m",
            &[],
        )
        .await?;
    assert_eq!(
        once.get::<_, Option<bool>>(0),
        Some(true),
        "a transaction is in the map twice, or has no events"
    );

    // Fix the handler and retry while the worker runs and writers append.
    std::fs::write(&config, &fixed)?;
    let load = {
        let dsn = dsn.clone();
        tokio::spawn(async move { append_orders(&dsn, 900, 600, 3, 33).await })
    };
    let stdout = succeeded(&worker_on("retry", &config, "fulfillment_queue")?, "retry");
    assert!(stdout.contains("resuming from checkpoint"), "{stdout}");
    load.await??;
    assert_converges(&db, &db, &worker).await;
    wait_until_running(&db, &worker, 3).await?;
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert!(
        worker.plain_log().contains("caught up; following the stream again"),
        "{}",
        worker.plain_log()
    );
    no_build_functions_left(&db).await?;

    // Resumed, it no longer holds pruning: the map loses every run of transactions up to the
    // lowest checkpoint, never beyond it.
    eventually("the map is pruned past the failed position", CONVERGE, || async {
        let row = db
            .query_one(
                "SELECT h.horizon > $1::text::pg_lsn,
                        NOT EXISTS (SELECT 1 FROM eventstore_worker.source_transaction_runs WHERE last_end_lsn <= h.horizon)
                   FROM eventstore_worker.source_horizon h",
                &[&failed_at],
            )
            .await?;
        Ok(row.get::<_, bool>(0) && row.get::<_, bool>(1))
    })
    .await?;
    let beyond = count(
        &db,
        "SELECT count(*) FROM eventstore_worker.projections
          WHERE checkpoint_lsn < (SELECT horizon FROM eventstore_worker.source_horizon)",
    )
    .await?;
    assert_eq!(beyond, 0, "the map's horizon is above a projection's checkpoint");

    // Nothing left to retry.
    let out = worker_on("retry", &config, "fulfillment_queue")?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to retry"));
    assert!(worker.terminate()?.success());
    Ok(())
}

/// The stream delivers a transaction as soon as its commit is in the WAL, which can be before
/// other sessions see it. Here a payment's commit waits for a synchronous standby that never
/// comes: the running projections apply it from the stream and the map records it, while a
/// query still cannot see it. A projection catching up through the map must wait for it, not
/// step past its events. The read models live in a second cluster, whose commits (the
/// worker's, which insists on durable ones) wait for no standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_waits_for_a_delivered_transaction_to_become_visible() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    // On the source, every session commits locally unless it asks for a standby, which then
    // never confirms.
    db.batch_execute("ALTER SYSTEM SET synchronous_commit = local").await?;
    db.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'").await?;
    db.batch_execute("SELECT pg_reload_conf()").await?;
    let models = Cluster::start()?;
    models.connect("postgres").await?.batch_execute("CREATE DATABASE readmodels").await?;
    let rm = models.connect("readmodels").await?;
    let dsn = cluster.socket_dsn("app");
    let header = format!(
        "[source]\ndsn = \"{dsn}\"\n\n[target]\ndsn = \"{}\"\n",
        models.socket_dsn("readmodels")
    );
    let config = orders_config(&cluster.dir, "orders", &header)?;
    let (worker, fixed) = failing_fulfillment(&config, &rm, &dsn, 300, 41).await?;

    db.execute(
        "SELECT eventstore.append_event('order-9999', 'OrderPlaced', '{\"order_id\": \"o9999\", \"customer_id\": \"c1\", \"total\": \"12.50\"}')",
        &[],
    )
    .await?;
    let waiting = {
        let writer = connect(&dsn).await?;
        tokio::spawn(async move {
            writer
                .batch_execute(
                    "SET synchronous_commit = on;
                     SELECT eventstore.append_event('order-9999', 'PaymentCaptured',
                            '{\"order_id\": \"o9999\", \"customer_id\": \"c1\", \"amount\": \"12.50\"}')",
                )
                .await
        })
    };
    eventually("the running projections apply the payment from the stream", CONVERGE, || async {
        Ok(count(
            &rm,
            "SELECT count(*) FROM order_summary WHERE order_id = 'o9999' AND status = 'paid'",
        )
        .await?
            == 1)
    })
    .await?;
    let visible =
        count(&db, "SELECT count(*) FROM eventstore.events WHERE stream_id = 'order-9999'").await?;
    assert_eq!(visible, 1, "the payment is not visible yet");

    std::fs::write(&config, &fixed)?;
    succeeded(&worker_on("retry", &config, "fulfillment_queue")?, "retry");
    eventually("the catch-up waits for the payment", CONVERGE, || async {
        Ok(worker
            .plain_log()
            .contains("waiting for source transactions the stream delivered to become visible"))
    })
    .await?;
    let status: String = rm
        .query_one(
            "SELECT status FROM eventstore_worker.projections WHERE name = 'fulfillment_queue'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(status, "catching_up");

    db.batch_execute("ALTER SYSTEM SET synchronous_standby_names = ''").await?;
    db.batch_execute("SELECT pg_reload_conf()").await?;
    waiting.await??;
    assert_converges(&db, &rm, &worker).await;
    wait_until_running(&rm, &worker, 3).await?;
    assert_eq!(
        count(&rm, "SELECT count(*) FROM fulfillment_queue WHERE order_id = 'o9999'").await?,
        1
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

/// Catch-ups and builds compile the handlers into apply functions of their own, dropped when
/// they are done (just after they log so: hence `eventually`).
async fn no_build_functions_left(db: &Client) -> Result<()> {
    let sql = "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'eventstore_worker' AND (p.proname LIKE 'build\\_%' OR p.proname LIKE 'catchup\\_%')";
    eventually("the catch-up and build apply functions are dropped", CONVERGE, || async {
        Ok(count(db, sql).await? == 0)
    })
    .await
}

/// A reader querying `SELECT count(*) FROM table` over and over until stopped, as an
/// application would: it must never fail and never see the count drop (orders are only ever
/// added).
struct Reader {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Reader {
    async fn start(dsn: &str, table: &'static str) -> Result<Reader> {
        let client = connect(dsn).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (stopped, made) = (stop.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut last = 0i64;
            while !stopped.load(Ordering::Relaxed) {
                let queries = made.load(Ordering::Relaxed);
                let n: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .map_err(|e| anyhow::anyhow!("reader query {queries} failed: {e:#}"))?
                    .get(0);
                anyhow::ensure!(
                    n >= last,
                    "reader saw {table} shrink from {last} to {n} rows (query {queries})"
                );
                last = n;
                made.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            Ok(())
        });
        Ok(Reader { stop, queries, task })
    }

    /// Waits until the reader has answered one more query than it had when called (or has
    /// stopped on an error, which `finish` returns): `what` names the moment, for the failure.
    async fn answers_again(&self, what: &str) {
        let seen = self.queries.load(Ordering::Relaxed);
        wait_until(
            &format!("the reader to answer a query {what}"),
            Instant::now() + CONVERGE,
            || self.queries.load(Ordering::Relaxed) > seen || self.task.is_finished(),
        )
        .await;
    }

    async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

async fn relation_oid(db: &Client, table: &str) -> Result<u32> {
    Ok(db.query_one("SELECT $1::text::regclass::oid", &[&table]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_under_load_swaps_in_one_transaction_while_readers_query() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    append_orders(&dsn, 0, 1500, 4, 41).await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    let before = relation_oid(&db, "order_summary").await?;

    let reader = Reader::start(&dsn, "order_summary").await?;
    reader.answers_again("on the table before the rebuild").await;
    // Writers append until the rebuild is done.
    let rebuilt = Arc::new(AtomicBool::new(false));
    let load = background_orders_from(dsn.clone(), 1500, 2000, 3, 42, rebuilt.clone());
    let at_start = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    let stdout = succeeded(&worker_on("rebuild", &config, "order_summary")?, "rebuild");
    assert!(stdout.contains("swapped in"), "{stdout}");
    let at_end = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    rebuilt.store(true, Ordering::SeqCst);
    assert!(
        at_end > at_start,
        "events appended during the rebuild: {at_start} at start, {at_end} at the end"
    );
    load.await??;

    assert_converges(&db, &db, &worker).await;
    reader.answers_again("on the table swapped in").await;
    reader.finish().await?;
    assert_ne!(relation_oid(&db, "order_summary").await?, before, "order_summary is a new table");
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert_applied_once(&db, "customer_revenue", REVENUE_TYPES).await?;
    let leftovers = count(
        &db,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'eventstore_shadow%')
              + (SELECT count(*) FROM eventstore_worker.rebuilds)",
    )
    .await?;
    assert_eq!(leftovers, 0, "no shadow schema or build row left behind");
    no_build_functions_left(&db).await?;
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_change_rebuilds_that_projection_without_downtime() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let header = socket_source(&cluster, "app");
    append_orders(&dsn, 0, 1500, 4, 51).await?;
    let v1 = orders_config(&cluster.dir, "v1", &header)?;
    let worker = Worker::start(&v1)?;
    wait_until_running(&db, &worker, 3).await?;
    assert_converges(&db, &db, &worker).await;
    let before = relation_oid(&db, "order_summary").await?;

    let reader = Reader::start(&dsn, "order_summary").await?;
    reader.answers_again("on the version 1 table").await;
    // Writers append until version 2 runs.
    let running = Arc::new(AtomicBool::new(false));
    let load = background_orders_from(dsn.clone(), 1500, 2000, 3, 52, running.clone());
    assert!(worker.terminate()?.success());
    let text = std::fs::read_to_string(&v1)?.replacen(
        "name = \"order_summary\"",
        "name = \"order_summary\"\nversion = 2",
        1,
    );
    let v2 = write_config(&cluster.dir, "v2", &text)?;
    let worker = Worker::start(&v2)?;
    wait_until_running(&db, &worker, 3).await?;
    running.store(true, Ordering::SeqCst);
    load.await??;

    assert_converges(&db, &db, &worker).await;
    reader.answers_again("on the version 2 table").await;
    reader.finish().await?;
    assert_ne!(relation_oid(&db, "order_summary").await?, before, "order_summary was rebuilt");
    let version: Option<String> = db
        .query_one(
            "SELECT version FROM eventstore_worker.projections WHERE name = 'order_summary'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(version.as_deref(), Some("2"));
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert_applied_once(&db, "customer_revenue", REVENUE_TYPES).await?;
    let log = worker.plain_log();
    let rebuilt: Vec<&str> = log.lines().filter(|l| l.contains("rebuilt and swapped in")).collect();
    assert!(rebuilt.len() == 1 && rebuilt[0].contains("projection=order_summary"), "{log}");
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_build_and_the_restart_builds_again_exactly() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    append_orders(&dsn, 0, 3000, 4, 71).await?;
    let load = {
        let dsn = dsn.clone();
        tokio::spawn(async move { append_orders(&dsn, 3000, 1500, 3, 72).await })
    };
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    eventually("the build is under way", CONVERGE, || async {
        Ok(count(
            &db,
            "SELECT coalesce(sum(events_applied), 0)::bigint FROM eventstore_worker.rebuilds",
        )
        .await
        .unwrap_or(0)
            > 0)
    })
    .await?;
    worker.kill()?;

    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    load.await??;
    assert_converges(&db, &db, &worker).await;
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert_applied_once(&db, "customer_revenue", REVENUE_TYPES).await?;
    let leftovers = count(
        &db,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'eventstore_shadow%')
              + (SELECT count(*) FROM eventstore_worker.rebuilds)
              + (SELECT count(*) FROM pg_replication_slots WHERE temporary)",
    )
    .await?;
    assert_eq!(leftovers, 0, "no shadow schema, build row or temporary slot left behind");
    assert!(worker.terminate()?.success());
    Ok(())
}

/// Earlier builds kept the commit-order map as a table of one row per transaction: the schema
/// the worker applies at start turns its rows into runs of one behind a view of the same name,
/// and applies again without change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_per_transaction_map_is_converted_to_runs() -> Result<()> {
    let Store { cluster: _cluster, db, .. } = Store::start().await?;
    db.batch_execute(
        "CREATE SCHEMA eventstore_worker;
         CREATE TABLE eventstore_worker.source_transactions (end_lsn pg_lsn PRIMARY KEY, transaction_id xid8 NOT NULL);
         INSERT INTO eventstore_worker.source_transactions VALUES ('0/10', '741'), ('1/0', '743'), ('0/20', '742')",
    )
    .await?;
    for _ in 0..2 {
        db.batch_execute(include_str!("../../cdc-worker/src/store/schema.sql")).await?;
        let row = db
            .query_one(
                "SELECT (SELECT relkind::text FROM pg_class WHERE oid = 'eventstore_worker.source_transactions'::regclass),
                        (SELECT string_agg(end_lsn || '=' || transaction_id, ' ' ORDER BY end_lsn)
                           FROM eventstore_worker.source_transactions),
                        (SELECT string_agg(end_lsns[1] || '-' || last_end_lsn || ':' || array_to_string(transaction_ids, ','), ' '
                                           ORDER BY last_end_lsn)
                           FROM eventstore_worker.source_transaction_runs)",
                &[],
            )
            .await?;
        assert_eq!(row.get::<_, String>(0), "v", "source_transactions is a view now");
        assert_eq!(row.get::<_, String>(1), "0/10=741 0/20=742 1/0=743");
        assert_eq!(row.get::<_, String>(2), "0/10-0/10:741 0/20-0/20:742 1/0-1/0:743");
    }
    Ok(())
}
