//! Operating the worker: read-your-writes (`eventstore_worker.wait_for`), `status`, and the
//! metrics and health endpoints. Real clusters, the real binary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use eventstore_integration_tests::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, IsolationLevel};

async fn place_order(db: &Client, order: &str) -> Result<()> {
    let data =
        serde_json::json!({"order_id": order, "customer_id": "c1", "total": "10.00"}).to_string();
    db.execute(
        "SELECT 1 FROM eventstore.append_event('order-' || $1, 'OrderPlaced', $2::text::jsonb)",
        &[&order, &data],
    )
    .await?;
    Ok(())
}

/// The read-your-writes token: the source's WAL position, taken after the commit.
async fn token(db: &Client) -> Result<String> {
    Ok(db.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0))
}

async fn wait_for(target: &Client, projection: &str, token: &str, timeout: &str) -> Result<bool> {
    let row = target
        .query_one(
            "SELECT eventstore_worker.wait_for($1, $2::text::pg_lsn, $3::text::interval)",
            &[&projection, &token, &timeout],
        )
        .await?;
    Ok(row.get(0))
}

async fn checkpoint(target: &Client, projection: &str) -> Result<String> {
    let row = target
        .query_one(
            "SELECT checkpoint_lsn::text FROM eventstore_worker.projections WHERE name = $1",
            &[&projection],
        )
        .await?;
    Ok(row.get::<_, Option<String>>(0).unwrap_or_default())
}

async fn lsn_ge(client: &Client, a: &str, b: &str) -> Result<bool> {
    Ok(client.query_one("SELECT $1::text::pg_lsn >= $2::text::pg_lsn", &[&a, &b]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_once_the_read_model_has_the_append() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;

    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let order = format!("rw{i}");
        place_order(&db, &order).await?;
        let t = token(&db).await?;
        let started = Instant::now();
        let reflected = wait_for(&db, "order_summary", &t, "30 s").await?;
        slowest = slowest.max(started.elapsed());
        ensure!(reflected, "wait_for gave up on append {i}; worker log:\n{}", worker.log_text());
        // Read your write: the row is there, in both projections that handle OrderPlaced.
        let n = db
            .query_one("SELECT count(*) FROM order_summary WHERE order_id = $1", &[&order])
            .await?
            .get::<_, i64>(0);
        assert_eq!(n, 1, "order {order} visible right after wait_for returned true");
        assert!(wait_for(&db, "customer_revenue", &t, "30 s").await?);
        assert_eq!(
            count(&db, "SELECT orders FROM customer_revenue WHERE customer_id = 'c1'").await?,
            i + 1
        );
    }
    eprintln!("slowest wait_for after an append: {slowest:?}");

    // A token the projection has long passed: true at once (a 0 s timeout allows no waiting).
    assert!(wait_for(&db, "order_summary", "0/0", "0 s").await?);
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_confirms_a_token_past_the_last_event_while_idle() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    // Each projection is built from the log on this first start; the checkpoints compared
    // below exist once they all follow the stream.
    wait_until_running(&db, &worker, 3).await?;

    for i in 0..5 {
        place_order(&db, &format!("idle{i}")).await?;
    }
    let t = token(&db).await?;
    assert!(wait_for(&db, "order_summary", &t, "30 s").await?);
    let events = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    let applied =
        count(&db, "SELECT sum(events_applied)::bigint FROM eventstore_worker.projections").await?;

    // No more events, but other WAL: the token lies beyond the last event transaction.
    for round in 0..3 {
        let before = checkpoint(&db, "fulfillment_queue").await?;
        db.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS unrelated (id int, pad text);
             INSERT INTO unrelated SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g; -- round {round}"
        ))
        .await?;
        let t = token(&db).await?;
        assert!(
            !lsn_ge(&db, &before, &t).await?,
            "the token is past the checkpoint before the unrelated write"
        );
        let started = Instant::now();
        for projection in ["order_summary", "customer_revenue", "fulfillment_queue"] {
            let reflected = wait_for(&db, projection, &t, "5 s").await?;
            ensure!(
                reflected,
                "{projection}: idle token {t} not confirmed; worker log:\n{}",
                worker.log_text()
            );
            assert!(lsn_ge(&db, &checkpoint(&db, projection).await?, &t).await?);
        }
        eprintln!("idle token confirmed for all three projections in {:?}", started.elapsed());
    }
    assert_eq!(count(&db, "SELECT count(*) FROM eventstore.events").await?, events);
    assert_eq!(
        count(&db, "SELECT sum(events_applied)::bigint FROM eventstore_worker.projections").await?,
        applied,
        "idle positions apply nothing"
    );

    // Idle, the worker records positions at a bounded rate, not in a loop: its own writes are
    // WAL the server reports back, here in the same cluster.
    let updates = "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'eventstore_worker' AND relname = 'projections'";
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = count(&db, updates).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = count(&db, updates).await? - before;
    // Three projections, at most one idle position per second (plus statistics delay).
    assert!(during <= 3 * 9, "{during} checkpoint updates in 6 idle seconds");
    eprintln!("{during} checkpoint row updates in 6 idle seconds");
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_times_out_on_a_stopped_worker_and_reports_misuse() -> Result<()> {
    let cluster = Cluster::start()?;
    let mut db = cluster.create_store("app").await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    place_order(&db, "first").await?;
    let t = token(&db).await?;
    assert!(wait_for(&db, "order_summary", &t, "30 s").await?);
    assert!(worker.terminate()?.success());

    place_order(&db, "unseen").await?;
    let t = token(&db).await?;
    // It gives up once its timeout has passed, not before, and does not hang.
    let started = Instant::now();
    let reflected = tokio::time::timeout(CONVERGE, wait_for(&db, "order_summary", &t, "300 ms"))
        .await
        .context("wait_for with a 300 ms timeout never returned")??;
    assert!(!reflected, "nothing applies the event");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}, before its timeout");

    // Unknown projection: SQLSTATE 42704, named in the message.
    let err = wait_for(&db, "no_such_projection", &t, "1 s").await.unwrap_err();
    let db_err = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .context("a database error")?;
    assert_eq!(db_err.code(), &SqlState::UNDEFINED_OBJECT);
    assert!(db_err.message().contains("no_such_projection"), "{}", db_err.message());

    // REPEATABLE READ keeps one snapshot: progress could never be seen, so it is refused.
    for level in [IsolationLevel::RepeatableRead, IsolationLevel::Serializable] {
        let tx = db.build_transaction().isolation_level(level).start().await?;
        let err = tx
            .query_one("SELECT eventstore_worker.wait_for('order_summary', '0/0')", &[])
            .await
            .expect_err("refused");
        let db_err = err.as_db_error().context("a database error")?;
        assert_eq!(db_err.code(), &SqlState::INVALID_TRANSACTION_STATE, "{level:?}");
        assert!(db_err.message().contains("cannot see progress"), "{}", db_err.message());
        tx.rollback().await?;
    }
    // READ COMMITTED inside a transaction block is fine: each check takes a fresh snapshot.
    let tx = db.transaction().await?;
    assert!(tx
        .query_one("SELECT eventstore_worker.wait_for('order_summary', '0/0')", &[])
        .await?
        .get::<_, bool>(0));
    tx.commit().await?;

    // Started again, the worker applies the event and the same token is confirmed. The wait
    // begins before the worker's setup runs: setup must not queue behind a waiting client.
    let worker = Worker::start(&config)?;
    assert!(
        wait_for(&db, "order_summary", &t, "60 s").await?,
        "worker log:\n{}",
        worker.log_text()
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

/// Status table rows as column → cell maps; checks the columns line up with the header.
fn parse_status_table(text: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let mut lines = text.lines();
    let header = lines.next().context("empty status output")?;
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        names,
        [
            "projection",
            "state",
            "checkpoint",
            "lag_bytes",
            "lag_seconds",
            "events_applied",
            "last_error"
        ]
    );
    let starts: Vec<usize> = names.iter().map(|n| header.find(n).unwrap()).collect();
    let mut rows = Vec::new();
    // The table ends at the first empty line (the slot and horizon lines follow).
    for line in lines.take_while(|l| !l.is_empty()) {
        // Cells with their offsets; the last column takes the rest of the line.
        let mut cells: Vec<(usize, String)> = Vec::new();
        let mut rest = line;
        let mut offset = 0;
        while cells.len() < names.len() - 1 {
            let trimmed = rest.trim_start();
            offset += rest.len() - trimmed.len();
            let end = trimmed.find(' ').unwrap_or(trimmed.len());
            cells.push((offset, trimmed[..end].to_owned()));
            offset += end;
            rest = &trimmed[end..];
        }
        let trimmed = rest.trim_start();
        cells.push((offset + rest.len() - trimmed.len(), trimmed.to_owned()));
        for (i, (at, cell)) in cells.iter().enumerate() {
            let numeric = (3..=5).contains(&i);
            if numeric {
                assert_eq!(
                    at + cell.len(),
                    starts[i] + names[i].len(),
                    "{} right-aligned in {line:?}",
                    names[i]
                );
            } else {
                assert_eq!(*at, starts[i], "{} left-aligned in {line:?}", names[i]);
            }
        }
        rows.push(
            names.iter().map(|n| n.to_string()).zip(cells.into_iter().map(|c| c.1)).collect(),
        );
    }
    Ok(rows)
}

fn status(config: &std::path::Path, json: bool) -> Result<String> {
    let mut args = vec!["status", "--config", config.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let out = worker_command(&args)?;
    ensure!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_state_checkpoint_lag_and_errors() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    let config_text = format!(
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
Measured = "INSERT INTO fragile_log VALUES (($1->>'global_position')::bigint, 100 / ($1->'data'->>'divisor')::int)"
"#,
        socket_source(&cluster, "app")
    );
    let config = write_config(&cluster.dir, "status", &config_text)?;

    // Before the worker ever ran: every projection is pending.
    let rows = parse_status_table(&status(&config, false)?)?;
    assert_eq!(
        rows.iter().map(|r| (r["projection"].as_str(), r["state"].as_str())).collect::<Vec<_>>(),
        [("counter", "pending"), ("fragile", "pending")]
    );

    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    // New projections are built from the log first; fragile must fail in the live path.
    wait_until_running(&db, &worker, 2).await?;
    let measured = |divisor: i32| {
        let db = &db;
        async move {
            let data = serde_json::json!({ "divisor": divisor }).to_string();
            db.execute(
                "SELECT 1 FROM eventstore.append_event('sensor-1', 'Measured', $1::text::jsonb)",
                &[&data],
            )
            .await?;
            anyhow::Ok(())
        }
    };
    for _ in 0..5 {
        measured(1).await?;
    }
    measured(0).await?; // division by zero: fragile stops here
    for _ in 0..3 {
        measured(2).await?;
    }
    let t = token(&db).await?;
    assert!(wait_for(&db, "counter", &t, "60 s").await?);
    eventually("fragile is failed", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'failed'")
            .await?
            == 1)
    })
    .await?;

    let table = status(&config, false)?;
    eprintln!("{table}");
    let rows = parse_status_table(&table)?;
    let (counter, fragile) = (&rows[0], &rows[1]);
    assert_eq!((counter["projection"].as_str(), counter["state"].as_str()), ("counter", "running"));
    assert_eq!(counter["events_applied"], "9");
    assert_eq!(counter["last_error"], "-");
    counter["lag_bytes"].parse::<u64>().context("counter lag_bytes")?;
    counter["lag_seconds"].parse::<f64>().context("counter lag_seconds")?;
    assert_eq!((fragile["projection"].as_str(), fragile["state"].as_str()), ("fragile", "failed"));
    assert_eq!(fragile["events_applied"], "5");
    assert!(
        fragile["lag_bytes"].parse::<u64>()? > 0,
        "held at its checkpoint while the source moved on"
    );
    assert!(fragile["lag_seconds"].parse::<f64>()? > 0.0);
    assert!(fragile["last_error"].contains("division by zero"), "{}", fragile["last_error"]);
    assert_eq!(fragile["checkpoint"], checkpoint(&db, "fragile").await?);
    // The slot's health follows the table (no max_slot_wal_keep_size here: unlimited).
    let slot_line = table.lines().find(|l| l.starts_with("replication slot: ")).unwrap_or("");
    assert!(
        slot_line.starts_with(
            "replication slot: eventstore_worker (active), wal_status reserved, safe_wal_size unlimited, retained "
        ),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&status(&config, true)?)?;
    assert_eq!(json["slot"]["wal_status"], "reserved");
    assert!(json["slot"]["invalidation_reason"].is_null());
    assert!(json["slot"]["retained_bytes"].as_i64().is_some_and(|b| b >= 0), "{json}");
    let failover_slots = pg_major()? >= 17;
    assert_eq!(json["slot"]["failover"].as_bool(), failover_slots.then_some(true), "{json}");
    let source_lsn = json["source_lsn"].as_str().context("source_lsn")?;
    let p = json["projections"].as_array().context("projections")?;
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0]["name"].as_str(), p[0]["state"].as_str(), p[0]["events_applied"].as_i64()),
        (Some("counter"), Some("running"), Some(9))
    );
    assert!(p[0]["last_error"].is_null());
    assert!(p[0]["lag_bytes"].as_u64().is_some() && p[0]["lag_seconds"].as_f64().is_some());
    assert_eq!(
        (p[1]["name"].as_str(), p[1]["state"].as_str(), p[1]["events_applied"].as_i64()),
        (Some("fragile"), Some("failed"), Some(5))
    );
    assert!(p[1]["last_error"].as_str().unwrap_or_default().contains("division by zero"));
    let fragile_checkpoint = p[1]["checkpoint"].as_str().context("fragile checkpoint")?;
    assert_eq!(fragile_checkpoint, checkpoint(&db, "fragile").await?);
    let behind: i64 = db
        .query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint",
            &[&source_lsn, &fragile_checkpoint],
        )
        .await?
        .get(0);
    assert_eq!(
        p[1]["lag_bytes"].as_i64(),
        Some(behind),
        "lag_bytes = source position - checkpoint"
    );

    // Worker stopped, events keep coming: the running projection falls behind too.
    assert!(worker.terminate()?.success());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    measured(3).await?;
    let json: serde_json::Value = serde_json::from_str(&status(&config, true)?)?;
    let counter = &json["projections"][0];
    assert!(counter["lag_bytes"].as_u64().unwrap_or(0) > 0, "{counter}");
    assert!(
        counter["lag_seconds"].as_f64().unwrap_or(0.0) >= 1.0,
        "seconds since the source was at its checkpoint: {counter}"
    );
    Ok(())
}

/// Prometheus text as `series → value`, checking every line parses and every series is typed
/// (a histogram's `NAME_bucket{…,le="…"}`, `NAME_sum` and `NAME_count` under
/// `# TYPE NAME histogram`).
fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>> {
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) =
            line.rsplit_once(' ').with_context(|| format!("no value in {line:?}"))?;
        let value: f64 = value.parse().with_context(|| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap_or(series);
        let histogram = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| text.contains(&format!("# TYPE {base} histogram\n")))
        });
        ensure!(histogram || text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
        values.insert(series.to_owned(), value);
    }
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() -> Result<()> {
    // Read models in another cluster, as in production: the worker's own writes are not WAL
    // of the source, so an idle projection's lag is exactly zero.
    let source = Cluster::start()?;
    let target = Cluster::start()?;
    let db = source.create_store("app").await?;
    target.connect("postgres").await?.batch_execute("CREATE DATABASE readmodels").await?;
    let rm = target.connect("readmodels").await?;
    let header = format!(
        "{}\n[target]\ndsn = \"{}\"\n",
        socket_source(&source, "app"),
        target.socket_dsn("readmodels")
    );
    let config = orders_config(&source.dir, "metrics", &header)?;
    let addr = format!("127.0.0.1:{}", free_local_port()?);
    let worker = Worker::start_with_env(&config, &[("EVENTSTORE_WORKER_METRICS_ADDR", &addr)])?;
    wait_for_streaming(&db, &worker).await?;

    eventually("/healthz reports streaming", CONVERGE, || async {
        let (code, body) = http_get(&addr, "/healthz").await?;
        Ok(code == 200 && body.starts_with("streaming"))
    })
    .await?;

    append_orders(&source.socket_dsn("app"), 0, 40, 2, 7).await?;
    let t = token(&db).await?;
    for projection in ["order_summary", "customer_revenue", "fulfillment_queue"] {
        assert!(
            wait_for(&rm, projection, &t, "60 s").await?,
            "a source token, confirmed in the target database"
        );
    }
    let events = count(&db, "SELECT count(*) FROM eventstore.events").await?;

    let (code, text) = http_get(&addr, "/metrics").await?;
    assert_eq!(code, 200);
    let m = parse_metrics(&text)?;
    assert_eq!(m["eventstore_worker_up"], 1.0);
    assert_eq!(m["eventstore_worker_status_query_success"], 1.0);
    assert_eq!(m["eventstore_worker_source_events_total"], events as f64);
    assert!(m["eventstore_worker_batches_total"] >= 1.0);
    assert!(m["eventstore_worker_acknowledged_lsn"] > 0.0);
    // The histograms: one apply time per batch, one lag per source transaction with events
    // (observed before the counters move, so a scrape never sees fewer).
    let apply = "eventstore_worker_batch_apply_seconds";
    assert!(m[&format!("{apply}_count")] >= m["eventstore_worker_batches_total"]);
    assert_eq!(m[&format!("{apply}_bucket{{le=\"+Inf\"}}")], m[&format!("{apply}_count")]);
    assert!(m[&format!("{apply}_sum")] > 0.0);
    let lag = "eventstore_worker_apply_lag_seconds";
    assert!(m[&format!("{lag}_count")] >= m["eventstore_worker_source_transactions_total"]);
    assert!(m["eventstore_worker_source_transactions_total"] >= 1.0);
    assert_eq!(m[&format!("{lag}_bucket{{le=\"+Inf\"}}")], m[&format!("{lag}_count")]);
    for projection in ["order_summary", "customer_revenue", "fulfillment_queue"] {
        let applied: i64 = rm
            .query_one(
                "SELECT events_applied FROM eventstore_worker.projections WHERE name = $1",
                &[&projection],
            )
            .await?
            .get(0);
        let series = |name: &str| format!("{name}{{projection=\"{projection}\"}}");
        assert_eq!(m[&series("eventstore_worker_projection_events_applied_total")], applied as f64);
        assert_eq!(m[&series("eventstore_worker_projection_failed")], 0.0);
        assert_eq!(m[&series("eventstore_worker_projection_errors_total")], 0.0);
        assert!(m.contains_key(&series("eventstore_worker_projection_lag_bytes")));
    }
    // Idle, every projection catches up with the source's position exactly.
    eventually("lag drops to zero while idle", CONVERGE, || async {
        let m = parse_metrics(&http_get(&addr, "/metrics").await?.1)?;
        Ok(["order_summary", "customer_revenue", "fulfillment_queue"].iter().all(|p| {
            m.get(&format!("eventstore_worker_projection_lag_bytes{{projection=\"{p}\"}}"))
                == Some(&0.0)
                && m.get(&format!("eventstore_worker_projection_lag_seconds{{projection=\"{p}\"}}"))
                    == Some(&0.0)
        }))
    })
    .await?;
    // The status command agrees. (Eventually as well: an idle server still writes a WAL record
    // now and then — a checkpoint, a running-transactions snapshot — that the worker then acks.)
    eventually("status agrees: lag_bytes 0 for every projection", CONVERGE, || async {
        let json: serde_json::Value = serde_json::from_str(&status(&config, true)?)?;
        Ok(json["projections"].as_array().unwrap().iter().all(|p| p["lag_bytes"] == 0))
    })
    .await?;

    assert_eq!(http_get(&addr, "/nope").await?.0, 404);

    // Source down: still alive (reconnecting within its backoff), not up, figures unavailable.
    source.stop()?;
    eventually("/healthz reports reconnecting", CONVERGE, || async {
        let (code, body) = http_get(&addr, "/healthz").await?;
        Ok(code == 200 && body.starts_with("reconnecting"))
    })
    .await?;
    let m = parse_metrics(&http_get(&addr, "/metrics").await?.1)?;
    assert_eq!(m["eventstore_worker_up"], 0.0);
    assert!(m["eventstore_worker_session_errors_total"] >= 1.0);
    assert_eq!(m["eventstore_worker_status_query_success"], 0.0);
    source.start_again()?;
    eventually("streaming again", CONVERGE, || async {
        let m = parse_metrics(&http_get(&addr, "/metrics").await?.1)?;
        Ok(m["eventstore_worker_up"] == 1.0 && m["eventstore_worker_status_query_success"] == 1.0)
    })
    .await?;
    assert_eq!(http_get(&addr, "/healthz").await?.0, 200);
    assert!(worker.terminate()?.success());
    Ok(())
}
