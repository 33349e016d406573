//! eventstore-worker end to end: a real cluster, the real binary, crashes included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use eventstore_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_example_end_to_end() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;

    append_orders(&dsn, 0, 300, 4, 1).await?;
    assert!(count(&db, "SELECT count(*) FROM eventstore.events").await? > 600);
    assert_converges(&db, &db, &worker).await;

    let status =
        rows(&db, "SELECT name || ':' || status FROM eventstore_worker.projections ORDER BY name")
            .await?;
    assert_eq!(
        status,
        ["customer_revenue:running", "fulfillment_queue:running", "order_summary:running"]
    );
    let unset = count(
        &db,
        "SELECT count(*) FROM eventstore_worker.projections WHERE checkpoint_lsn IS NULL",
    )
    .await?;
    assert_eq!(unset, 0, "every projection has a checkpoint");
    // The envelope carries recorded_at as a timestamp PostgreSQL accepts back.
    let stale = count(
        &db,
        "SELECT count(*) FROM order_summary o JOIN eventstore.events e ON e.global_position = o.last_position
          WHERE o.updated_at <> e.recorded_at",
    )
    .await?;
    assert_eq!(stale, 0);

    let status = worker.terminate()?;
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_in_paced_reads_is_applied_exactly() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    assert!(worker.terminate()?.success());

    // Thousands of source transactions waiting in the slot: the reader gets far ahead of the
    // apply path and paces its reads, which must not lose, reorder or split anything.
    append_orders(&dsn, 0, 2000, 4, 7).await?;
    let worker = Worker::start(&config)?;
    assert_converges(&db, &db, &worker).await;
    let log = worker.plain_log();
    assert!(log.contains("paced=true"), "the reader never paced its reads:\n{log}");
    let status = worker.terminate()?;
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(read_models_match(&db, &db).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_nothing_and_applies_nothing_twice() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let mut worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;

    let kills_done = Arc::new(AtomicBool::new(false));
    let load = background_orders(dsn.clone(), 1500, 3, 2, kills_done.clone());

    for round in 1..=2 {
        let seen = count(&db, "SELECT count(*) FROM order_summary").await.unwrap_or(0);
        eventually("worker applies more orders", CONVERGE, || async {
            Ok(count(&db, "SELECT count(*) FROM order_summary").await.unwrap_or(0) > seen + 50)
        })
        .await?;
        worker.kill()?;
        eprintln!("killed worker (round {round})");
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker = Worker::start(&config)?;
    }
    kills_done.store(true, Ordering::SeqCst);
    load.await??;
    assert_converges(&db, &db, &worker).await;
    assert!(worker.is_running());
    let status = worker.terminate()?;
    assert!(status.success());
    // Still equal after a clean stop: nothing was applied late or twice.
    assert!(read_models_match(&db, &db).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_postgres_restart() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let mut worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;

    append_orders(&dsn, 0, 150, 2, 3).await?;
    assert_converges(&db, &db, &worker).await;

    cluster.restart()?;
    let db = cluster.connect("app").await?;
    append_orders(&dsn, 150, 150, 2, 4).await?;
    assert_converges(&db, &db, &worker).await;
    assert!(worker.is_running(), "the worker survived the restart");
    assert!(worker.log_text().contains("reconnecting"), "the worker noticed the restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slot_follows_unrelated_wal() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    append_orders(&dsn, 0, 20, 1, 5).await?;
    assert_converges(&db, &db, &worker).await;

    // Plenty of WAL that the publication does not cover.
    db.batch_execute("CREATE TABLE unrelated (id int, pad text)").await?;
    db.batch_execute(
        "BEGIN; INSERT INTO unrelated SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
    )
    .await?;
    let written: String =
        db.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
    db.batch_execute("COMMIT").await?;

    if let Err(e) = eventually("slot's confirmed_flush_lsn passes unrelated WAL", CONVERGE, || {
        slot_passes(&db, &written)
    })
    .await
    {
        panic!("{e:#}\nworker log:\n{}", worker.log_text());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_stops_only_its_projection_and_resumes_after_a_fix() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    let config_text = |fragile_sql: &str| {
        format!(
            r#"{}
[[projection]]
name = "counter"
setup = "CREATE TABLE IF NOT EXISTS event_counts (event_type text PRIMARY KEY, n bigint NOT NULL)"
[projection.handlers]
Measured = "INSERT INTO event_counts AS c VALUES ($1->>'type', 1) ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1"

[[projection]]
name = "fragile"
setup = "CREATE TABLE IF NOT EXISTS fragile_log (global_position bigint PRIMARY KEY, ratio int)"
[projection.handlers]
Measured = "{fragile_sql}"
"#,
            socket_source(&cluster, "app")
        )
    };
    let broken = "INSERT INTO fragile_log VALUES (($1->>'global_position')::bigint, 100 / ($1->'data'->>'divisor')::int)";
    let config = write_config(&cluster.dir, "fragile", &config_text(broken))?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    // Both built (from an empty log) and following the stream: the failure below happens in
    // the live apply path.
    wait_until_running(&db, &worker, 2).await?;

    // One writer, so commit order is position order.
    let append = |divisor: i32| {
        let db = &db;
        async move {
            let data = serde_json::json!({ "divisor": divisor }).to_string();
            let row = db
                .query_one(
                    "SELECT global_position FROM eventstore.append_event('sensor-1', 'Measured', $1::text::jsonb)",
                    &[&data],
                )
                .await?;
            anyhow::Ok(row.get::<_, i64>(0))
        }
    };
    let mut before = Vec::new();
    for _ in 0..10 {
        before.push(append(1).await?);
    }
    let poison = append(0).await?;
    for _ in 0..10 {
        append(2).await?;
    }

    let counted = |n: i64| {
        let db = &db;
        move || async move {
            Ok(count(db, "SELECT coalesce(max(n), 0) FROM event_counts").await.unwrap_or(0) == n)
        }
    };
    eventually("the healthy projection applies every event", CONVERGE, counted(21)).await?;
    eventually("the fragile projection is marked failed", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE name = 'fragile' AND status = 'failed'").await? == 1)
    })
    .await?;
    let row = db
        .query_one(
            "SELECT last_error, (failed_event->>'global_position')::bigint FROM eventstore_worker.projections WHERE name = 'fragile'",
            &[],
        )
        .await?;
    let last_error: String = row.get(0);
    assert!(last_error.contains("division by zero"), "last_error = {last_error:?}");
    assert_eq!(row.get::<_, i64>(1), poison, "the failing event is recorded");
    let applied: Vec<i64> = db
        .query("SELECT global_position FROM fragile_log ORDER BY 1", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(applied, before, "everything before the failing event, nothing after it");

    // The other projection keeps going.
    for _ in 0..5 {
        append(3).await?;
    }
    eventually("the healthy projection keeps applying", CONVERGE, counted(26)).await?;
    assert!(worker.terminate()?.success());

    // Fix the handler and restart: the failed projection resumes at the failing event
    // (through the event log; the slot moved on) and the healthy one applies nothing twice.
    let fixed = "INSERT INTO fragile_log VALUES (($1->>'global_position')::bigint, 100 / NULLIF(($1->'data'->>'divisor')::int, 0))";
    std::fs::write(&config, config_text(fixed))?;
    let worker = Worker::start(&config)?;
    eventually("the repaired projection catches up", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM fragile_log").await? == 26
            && count(
                &db,
                "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'",
            )
            .await?
                == 2)
    })
    .await?;
    assert_eq!(count(&db, "SELECT max(n) FROM event_counts").await?, 26, "no event applied twice");
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_in_a_second_database_with_scram_over_tcp() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    // A least-privilege role, as docs/worker.md describes it.
    create_worker_role(&db, "").await?;
    db.batch_execute("CREATE DATABASE readmodels OWNER worker").await?;
    let rm = cluster.connect("readmodels").await?;
    let header = format!(
        "[source]\ndsn = \"{}\"\n\n[target]\ndsn = \"host={} port={} user=worker dbname=readmodels\"\n",
        cluster.tcp_url("app"),
        cluster.dir.display(),
        cluster.port
    );
    let config = orders_config(&cluster.dir, "split", &header)?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;

    append_orders(&dsn, 0, 200, 3, 6).await?;
    assert_converges(&db, &rm, &worker).await;

    let in_source = count(
        &db,
        "SELECT count(*) FROM pg_class WHERE relname IN ('order_summary', 'customer_revenue')",
    )
    .await?;
    assert_eq!(in_source, 0, "read models live only in the target database");
    let over_tcp = count(
        &db,
        "SELECT count(*) FROM pg_stat_replication WHERE usename = 'worker' AND client_addr = '127.0.0.1'",
    )
    .await?;
    assert_eq!(
        over_tcp, 1,
        "the replication connection authenticated over TCP (SCRAM-SHA-256 per pg_hba)"
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

/// The two password methods besides SCRAM: `md5` and `password` (cleartext), each required by
/// pg_hba.conf for one role over TCP, on both of the worker's connections (SQL and
/// replication). The server's own connection log says which method authenticated each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_cleartext_password_authentication_on_both_connections() -> Result<()> {
    const ROLES: [(&str, &str); 2] = [("md5_worker", "md5"), ("password_worker", "password")];
    let hba: String = ROLES
        .iter()
        .map(|(role, method)| format!("host all {role} 127.0.0.1/32 {method}\nhost replication {role} 127.0.0.1/32 {method}\n"))
        .collect();
    let cluster = Cluster::start_with_hba(&hba)?;
    cluster.alter_system("log_connections", "on").await?;
    let db = cluster.create_store("app").await?;
    db.batch_execute("CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events").await?;

    let mut orders = 0;
    for (role, method) in ROLES {
        // An md5 exchange needs an md5-hashed password: for a SCRAM verifier the server asks
        // for SCRAM instead, whatever pg_hba.conf says. `password` works with either.
        let encryption = if method == "md5" { "md5" } else { "scram-sha-256" };
        db.batch_execute(&format!(
            "SET password_encryption = '{encryption}';
             CREATE ROLE {role} LOGIN REPLICATION PASSWORD '{role}-secret';
             RESET password_encryption;
             GRANT USAGE ON SCHEMA eventstore TO {role};
             GRANT SELECT ON eventstore.events TO {role};"
        ))
        .await?;
        db.batch_execute(&format!("CREATE DATABASE {role}_models OWNER {role}")).await?;
        let models = cluster.connect(&format!("{role}_models")).await?;
        let url = format!("postgres://{role}:{role}-secret@127.0.0.1:{}", cluster.port);
        let header =
            format!("[source]\ndsn = \"{url}/app\"\n\n[target]\ndsn = \"{url}/{role}_models\"\n");
        let worker = Worker::start(&orders_config(&cluster.dir, role, &header)?)?;
        wait_for_streaming(&db, &worker).await?;
        // The second worker builds the first one's orders from the table and streams its own.
        append_orders(&cluster.socket_dsn("app"), orders, 100, 2, 8).await?;
        orders += 100;
        assert_converges(&db, &models, &worker).await;
        assert!(worker.terminate()?.success());
    }

    let log = cluster.server_log();
    let pids = |needle: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_owned()))
            .collect()
    };
    for (role, method) in ROLES {
        let authenticated =
            pids(&format!("connection authenticated: identity=\"{role}\" method={method} "));
        for (kind, needle) in [
            ("replication", format!("LOG:  replication connection authorized: user={role}")),
            ("SQL", format!("LOG:  connection authorized: user={role} ")),
        ] {
            assert!(
                pids(&needle).iter().any(|pid| authenticated.contains(pid)),
                "no {kind} connection of {role} authenticated by {method}; server log:\n{log}"
            );
        }
    }
    Ok(())
}

/// One source transaction whose handlers run for over twice wal_sender_timeout, so one batch
/// does (a source transaction is never split). The stream reader answers the walsender's
/// keepalives and the status updates go on apart from the apply path, so the server never
/// times the replication connection out: the same walsender serves the worker throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_longer_than_wal_sender_timeout_keeps_its_replication_connection() -> Result<()> {
    let cluster = Cluster::start()?;
    cluster.alter_system("wal_sender_timeout", "3s").await?;
    let db = cluster.create_store("app").await?;
    let worker = Worker::start(&slow_config(&cluster, &[("Slow", 2.0)])?)?;
    wait_until_running(&db, &worker, 1).await?;
    let walsender =
        "SELECT active_pid::bigint FROM pg_replication_slots WHERE slot_name = 'eventstore_worker'";
    let before = count(&db, walsender).await?;

    let appended = append_slow(&db, "slow-1", "Slow", 4).await?;
    let written: String =
        db.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
    let applied = eventually("the slow batch is applied", Duration::from_secs(120), || async {
        Ok(count(&db, "SELECT count(*) FROM slow_applied").await? == 4)
    })
    .await;
    applied.with_context(|| format!("worker log:\n{}", worker.log_text()))?;
    assert_eq!(
        positions(&db, "SELECT global_position FROM slow_applied ORDER BY 1").await?,
        appended
    );
    // One target transaction ran the four handlers, each sleeping 2 s: 8 s against 3 s.
    assert_eq!(count(&db, "SELECT count(DISTINCT xmin::text) FROM slow_applied").await?, 1);

    eventually("the slot confirms the slow batch", CONVERGE, || slot_passes(&db, &written)).await?;
    assert_eq!(
        count(&db, walsender).await?,
        before,
        "the worker's walsender was replaced; worker log:\n{}",
        worker.log_text()
    );
    let log = cluster.server_log();
    assert!(!log.contains("replication timeout"), "the server timed the worker out:\n{log}");
    assert!(worker.terminate()?.success());
    Ok(())
}

/// A projection, `slow`, whose handlers record each event's position in `slow_applied` after
/// sleeping: per event type, the seconds its handler sleeps.
fn slow_projection(handlers: &[(&str, f64)]) -> String {
    let mut text = "[[projection]]\nname = \"slow\"\n\
                    setup = \"CREATE TABLE IF NOT EXISTS slow_applied (global_position bigint PRIMARY KEY)\"\n\
                    [projection.handlers]\n"
        .to_owned();
    for (event_type, seconds) in handlers {
        text.push_str(&format!(
            "{event_type} = \"INSERT INTO slow_applied SELECT ($1->>'global_position')::bigint FROM pg_sleep({seconds})\"\n"
        ));
    }
    text
}

/// A worker config with only the `slow` projection (`slow_projection`), on the app database.
fn slow_config(cluster: &Cluster, handlers: &[(&str, f64)]) -> Result<std::path::PathBuf> {
    write_config(
        &cluster.dir,
        "slow",
        &format!("{}\n{}", socket_source(cluster, "app"), slow_projection(handlers)),
    )
}

/// Appends `n` events of `event_type` to `stream` in one transaction; their global positions.
async fn append_slow(
    db: &tokio_postgres::Client,
    stream: &str,
    event_type: &str,
    n: i32,
) -> Result<Vec<i64>> {
    let rows = db
        .query(
            "SELECT global_position FROM eventstore.append($1,
                 (SELECT jsonb_agg(jsonb_build_object('type', $2::text)) FROM generate_series(1, $3)))",
            &[&stream, &event_type, &n],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn positions(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<i64>> {
    Ok(client.query(sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// SIGINT and SIGTERM while a batch is being applied. A batch that ends within the shutdown
/// grace (10 s) is finished and acknowledged; one that would not is abandoned, and the next
/// start applies it once. Either way the worker exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_mid_batch_finishes_or_abandons_it_and_nothing_is_lost_or_doubled() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    let config = slow_config(&cluster, &[("Slow", 1.0), ("Slower", 6.0)])?;
    // Until the target backend is inside a handler of the open batch.
    let sleeping = || async {
        Ok(count(&db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = 'app'").await? == 1)
    };
    let acknowledged = "SELECT (s.confirmed_flush_lsn >= p.checkpoint_lsn)::int::bigint
                          FROM pg_replication_slots s, eventstore_worker.projections p
                         WHERE s.slot_name = 'eventstore_worker' AND p.name = 'slow'";

    // SIGINT, 3 s of handlers: finished within the grace, then acknowledged.
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 1).await?;
    let first = append_slow(&db, "slow-1", "Slow", 3).await?;
    eventually("a handler of the first batch runs", CONVERGE, sleeping).await?;
    let log = worker.log.clone();
    assert!(worker.stop_with("INT")?.success(), "exit status after SIGINT");
    let text = std::fs::read_to_string(&log)?;
    assert!(text.contains("SIGINT received"), "{text}");
    assert!(!text.contains("abandoning"), "a batch within the grace was abandoned:\n{text}");
    assert_eq!(positions(&db, "SELECT global_position FROM slow_applied ORDER BY 1").await?, first);
    assert_eq!(count(&db, acknowledged).await?, 1, "the slot was not told of the finished batch");
    let checkpoint =
        "SELECT checkpoint_lsn::text FROM eventstore_worker.projections WHERE name = 'slow'";
    let finished: String = db.query_one(checkpoint, &[]).await?.get(0);

    // SIGTERM, 12 s of handlers: abandoned after the grace, rolled back, redelivered.
    let worker = Worker::start_with_env(&config, &[("EVENTSTORE_WORKER_LOG_FORMAT", "json")])?;
    wait_until_running(&db, &worker, 1).await?;
    let second = append_slow(&db, "slow-2", "Slower", 2).await?;
    eventually("a handler of the second batch runs", CONVERGE, sleeping).await?;
    let log = worker.log.clone();
    assert!(worker.stop_with("TERM")?.success(), "exit status after SIGTERM");
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("JSON log lines:\n{text}"))?;
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("abandoning the open batch"))),
        "no warning about the abandoned batch:\n{text}"
    );
    // Nothing of it recorded: no row committed, the checkpoint where the first batch left it.
    assert_eq!(positions(&db, "SELECT global_position FROM slow_applied ORDER BY 1").await?, first);
    assert_eq!(db.query_one(checkpoint, &[]).await?.get::<_, String>(0), finished);

    let worker = Worker::start(&config)?;
    let all: Vec<i64> = first.iter().chain(&second).copied().collect();
    let applied = eventually(
        "the abandoned batch is applied after the restart",
        Duration::from_secs(120),
        || async {
            Ok(positions(&db, "SELECT global_position FROM slow_applied ORDER BY 1").await? == all)
        },
    )
    .await;
    applied.with_context(|| format!("worker log:\n{}", worker.log_text()))?;
    assert!(worker.terminate()?.success());
    Ok(())
}

/// The replication connection and then the target connections cut by the server in the middle
/// of a load (pg_terminate_backend), twice each: the worker process stays up, reconnects, and
/// the read models end equal to a replay of the log, nothing lost and nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_connection_cut_mid_load_resumes_exactly() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    db.batch_execute("CREATE DATABASE readmodels").await?;
    let rm = cluster.connect("readmodels").await?;
    let header = format!(
        "{}\n[target]\ndsn = \"{}\"\n",
        socket_source(&cluster, "app"),
        cluster.socket_dsn("readmodels")
    );
    let mut worker = Worker::start(&orders_config(&cluster.dir, "cut", &header)?)?;
    wait_for_streaming(&db, &worker).await?;

    let cuts_done = Arc::new(AtomicBool::new(false));
    let load = background_orders(dsn.clone(), 1000, 2, 40, cuts_done.clone());
    let cuts = [
        ("replication", "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker'"),
        // The apply path's connection (its background tasks' names carry a suffix).
        ("target", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'readmodels' AND application_name = 'eventstore-worker'"),
    ];
    let applied = "SELECT count(*) FROM order_summary";
    for (done, (connection, cut)) in cuts.iter().chain(&cuts).enumerate() {
        // Each cut in a session of its own, once it has applied more orders: the one before
        // has ended (sessions follow one another) and a new one streams and applies.
        eventually("a new session streams", CONVERGE, || async {
            Ok(worker.plain_log().matches("streaming started").count() > done)
        })
        .await
        .with_context(|| format!("worker log:\n{}", worker.log_text()))?;
        let seen = count(&rm, applied).await.unwrap_or(0);
        eventually("the worker applies more orders", CONVERGE, || async {
            Ok(count(&rm, applied).await.unwrap_or(0) > seen + 50)
        })
        .await
        .with_context(|| format!("worker log:\n{}", worker.log_text()))?;
        assert_eq!(count(&db, cut).await?, 1, "one {connection} connection to cut");
        eprintln!("cut the {connection} connection");
    }
    cuts_done.store(true, Ordering::SeqCst);
    load.await??;
    // One more order, so that a batch follows the last cut whatever the load's timing.
    append_orders(&dsn, 100_000, 1, 1, 41).await?;
    assert_converges(&db, &rm, &worker).await;
    assert!(worker.is_running(), "the worker process survived the cuts");
    let reconnects = worker.plain_log().matches("session ended; reconnecting").count();
    assert_eq!(reconnects, 4, "reconnections for 4 cuts:\n{}", worker.log_text());
    assert!(worker.terminate()?.success());
    Ok(())
}

/// PostgreSQL crashes (immediate shutdown) while the worker drains a backlog into read models
/// in the same cluster, and recovers. The slot's confirmed position is saved only at
/// checkpoints, so the server resends transactions the worker had already applied; the
/// checkpoints in the read-model transactions make it skip them. Nothing is lost, nothing
/// applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_drain_loses_nothing_and_applies_nothing_twice() -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    // The order projections, and one that sleeps 1 ms per event so that the drain lasts, in
    // batches of about 100 events, so that some commit before the crash and one is open.
    let slow = slow_projection(&[
        ("OrderPlaced", 0.001),
        ("PaymentCaptured", 0.001),
        ("OrderShipped", 0.001),
        ("OrderCancelled", 0.001),
    ]);
    let header = format!("[batch]\nmax_events = 100\n\n{}\n{slow}", socket_source(&cluster, "app"));
    let config = orders_config(&cluster.dir, "crash", &header)?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 4).await?;
    let worker = {
        let log = worker.log.clone();
        assert!(worker.terminate()?.success(), "{}", std::fs::read_to_string(log)?);
        // A backlog of 1,000 orders, then the worker drains it.
        append_orders(&dsn, 0, 1000, 4, 9).await?;
        Worker::start(&config)?
    };
    let total = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    eventually("the drain is under way", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM slow_applied").await? >= total / 4)
    })
    .await?;
    assert!(
        count(&db, "SELECT count(*) FROM slow_applied").await? < total,
        "the drain ended before the crash"
    );
    cluster.crash_and_restart()?;

    let db = cluster.connect("app").await?;
    assert_converges(&db, &db, &worker).await;
    let drained = eventually("the slow projection has every event", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM slow_applied").await? == total)
    })
    .await;
    drained.with_context(|| format!("worker log:\n{}", worker.log_text()))?;
    // Every event once (a doubled one would have failed on the primary key and stopped it).
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM eventstore.events e JOIN slow_applied a USING (global_position)"
        )
        .await?,
        total
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'")
            .await?,
        4
    );
    assert!(
        worker.plain_log().contains("session ended; reconnecting"),
        "the worker noticed the crash"
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

/// A handler that the target database refuses (here a column that does not exist) stops the
/// worker at start with exit status 1 and an error that names the file, the projection and the
/// handler's key and carries PostgreSQL's message (docs/worker.md). It consumes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_the_database_refuses_stops_the_start_naming_file_projection_and_key(
) -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = orders_config(&cluster.dir, "broken", &socket_source(&cluster, "app"))?;
    let text = std::fs::read_to_string(&config)?;
    let broken = text.replacen("SET status = 'shipped'", "SET statuz = 'shipped'", 1);
    assert_ne!(broken, text, "the example's OrderShipped handler changed; update this test");
    std::fs::write(&config, broken)?;
    append_orders(&dsn, 0, 10, 1, 3).await?;

    let worker = Worker::start(&config)?;
    let log = worker.log.clone();
    let status = worker.exit_status("a start with a broken handler")?;
    let text = std::fs::read_to_string(&log)?;
    assert_eq!(status.code(), Some(1), "exit status {status}:\n{text}");
    let expected =
        format!("{}: projection \"order_summary\": handlers.OrderShipped: ", config.display());
    assert!(
        text.contains(&expected) && text.contains("column \"statuz\""),
        "no error naming the handler:\n{text}"
    );
    // Nothing was consumed: no slot, and no projection applied anything.
    assert_eq!(count(&db, "SELECT count(*) FROM pg_replication_slots").await?, 0);
    let applied = count(
        &db,
        "SELECT coalesce(sum(events_applied), 0)::bigint FROM eventstore_worker.projections",
    )
    .await
    .unwrap_or(0);
    assert_eq!(applied, 0);
    Ok(())
}
