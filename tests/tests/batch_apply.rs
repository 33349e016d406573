//! How a batch reaches the read models: through each projection's apply function (one statement
//! per batch) and, when that fails or cannot take a handler, statement by statement, with the
//! same outcome either way.

use anyhow::{Context, Result};
use eventstore_integration_tests::*;
use tokio_postgres::Client;

async fn positions(client: &Client, sql: &str) -> Result<Vec<i64>> {
    Ok(client.query(sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// Appends one source transaction to `stream`: events of the given types and data.
async fn append(
    db: &Client,
    stream: &str,
    events: &[(&str, serde_json::Value)],
) -> Result<Vec<i64>> {
    let events: Vec<_> =
        events.iter().map(|(t, d)| serde_json::json!({"type": t, "data": d})).collect();
    let rows = db
        .query(
            "SELECT global_position FROM eventstore.append($1, $2::text::jsonb) ORDER BY global_position",
            &[&stream, &serde_json::Value::Array(events).to_string()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A worker that ran once (creating its slot, and building its `projections` on the empty
/// store, after which they follow the stream) and stopped, so what is appended next waits in the
/// slot and arrives as one large backlog for the live path.
async fn stopped_worker(db: &Client, config: &std::path::Path, projections: i64) -> Result<()> {
    let worker = Worker::start(config)?;
    wait_for_streaming(db, &worker).await?;
    wait_until_running(db, &worker, projections).await?;
    assert!(worker.terminate()?.success());
    Ok(())
}

async fn apply_function_source(db: &Client, projection: &str) -> Result<Option<String>> {
    let row = db
        .query_opt(
            "SELECT prosrc FROM pg_proc WHERE pronamespace = 'eventstore_worker'::regnamespace AND proname LIKE $1",
            &[&format!("apply\\_{projection}\\_%")],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_deep_in_a_large_batch_is_exact() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    // Handlers as people write them: a trailing semicolon, $1 several times, a dollar-quoted
    // string holding a semicolon and "$1", a trailing comment.
    let config_text = |fragile_ratio: &str| {
        format!(
            r#"{}
[[projection]]
name = "counter"
setup = "CREATE TABLE IF NOT EXISTS event_counts (event_type text PRIMARY KEY, n bigint NOT NULL)"
[projection.handlers]
Measured = "INSERT INTO event_counts AS c VALUES ($1->>'type', 1) ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1;"

[[projection]]
name = "fragile"
setup = "CREATE TABLE IF NOT EXISTS fragile_log (global_position bigint PRIMARY KEY, ratio int, note text)"
[projection.handlers]
Measured = """
INSERT INTO fragile_log
VALUES (($1->>'global_position')::bigint, {fragile_ratio}, $note$ not a parameter; $1 $note$) -- the ratio
"""
"#,
            socket_source(&cluster, "app")
        )
    };
    let config =
        write_config(&cluster.dir, "fragile", &config_text("100 / ($1->'data'->>'divisor')::int"))?;
    stopped_worker(&db, &config, 2).await?;

    // 1,500 good events in 30 transactions, then one transaction whose second event divides by
    // zero, then 1,500 more: the worker finds them all waiting and applies them in large batches.
    let good = |n: usize| vec![("Measured", serde_json::json!({"divisor": 1})); n];
    let mut before = Vec::new();
    for _ in 0..30 {
        before.extend(append(&db, "sensor-1", &good(50)).await?);
    }
    let poison_txn = append(
        &db,
        "sensor-1",
        &[
            ("Measured", serde_json::json!({"divisor": 1})),
            ("Measured", serde_json::json!({"divisor": 0})),
            ("Measured", serde_json::json!({"divisor": 1})),
        ],
    )
    .await?;
    for _ in 0..30 {
        append(&db, "sensor-1", &good(50)).await?;
    }

    let worker = Worker::start(&config)?;
    eventually("the healthy projection applies every event", CONVERGE, || async {
        Ok(count(&db, "SELECT coalesce(max(n), 0) FROM event_counts").await.unwrap_or(0) == 3003)
    })
    .await?;
    eventually("the fragile projection is marked failed", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE name = 'fragile' AND status = 'failed'").await? == 1)
    })
    .await?;
    let row = db
        .query_one(
            "SELECT last_error, (failed_event->>'global_position')::bigint, events_applied
               FROM eventstore_worker.projections WHERE name = 'fragile'",
            &[],
        )
        .await?;
    let last_error: String = row.get(0);
    assert!(
        last_error.starts_with("ERROR: division by zero (SQLSTATE 22012)"),
        "last_error = {last_error:?}"
    );
    assert!(
        !last_error.contains("PL/pgSQL"),
        "the statement's own error, not the function's: {last_error:?}"
    );
    assert_eq!(row.get::<_, i64>(1), poison_txn[1], "the failing event is recorded");
    assert_eq!(row.get::<_, i64>(2), 1500, "events_applied counts exactly the transactions before");
    let applied = positions(&db, "SELECT global_position FROM fragile_log ORDER BY 1").await?;
    assert_eq!(
        applied, before,
        "every transaction before the failing one, nothing of it or after it"
    );
    let note = count(&db, "SELECT count(*) FROM fragile_log WHERE note <> ' not a parameter; $1 '")
        .await?;
    assert_eq!(note, 0, "dollar-quoted text is text, also inside the apply function");
    let log = worker.log_text();
    assert!(
        log.contains("apply functions together failed"),
        "the batch went through the apply functions first:\n{log}"
    );
    assert!(
        !log.contains("now runs statement by statement"),
        "the function agreed with the statements:\n{log}"
    );
    assert!(worker.terminate()?.success());

    // Fix the handler: the function is recreated from the new text at start, and the projection
    // resumes exactly at the failing transaction (a primary key catches any event applied twice).
    std::fs::write(&config, config_text("100 / NULLIF(($1->'data'->>'divisor')::int, 0)"))?;
    let worker = Worker::start(&config)?;
    eventually("the repaired projection catches up", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM fragile_log").await? == 3003
            && count(
                &db,
                "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'",
            )
            .await?
                == 2)
    })
    .await?;
    // The catch-up sets the projection running; the live path recreates its function when it
    // next applies a batch. One more division by zero, applied by the live path: only the
    // repaired handler gets past it.
    append(&db, "sensor-1", &[("Measured", serde_json::json!({"divisor": 0}))]).await?;
    eventually(
        "the live path applies the next event with the repaired handler",
        CONVERGE,
        || async { Ok(count(&db, "SELECT count(*) FROM fragile_log").await? == 3004) },
    )
    .await?;
    assert_eq!(
        count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE status = 'running'")
            .await?,
        2
    );
    let source =
        apply_function_source(&db, "fragile").await?.expect("fragile has an apply function");
    assert!(source.contains("NULLIF"), "recreated from the current handler:\n{source}");
    assert_eq!(
        count(&db, "SELECT max(n) FROM event_counts").await?,
        3004,
        "no event applied twice"
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_outside_the_function_keep_their_order_and_on_unknown_fail_stays_exact(
) -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    let config = write_config(
        &cluster.dir,
        "mixed",
        &format!(
            r#"{}
[[projection]]
name = "Audit \"Log\""
setup = "CREATE TABLE IF NOT EXISTS audit_log (seq bigserial PRIMARY KEY, global_position bigint NOT NULL, via text NOT NULL)"
[projection.handlers]
Plain = "INSERT INTO audit_log (global_position, via) VALUES (($1->>'global_position')::bigint, 'insert')"
Selected = "SELECT audit_select($1)"
Returning = "INSERT INTO audit_log (global_position, via) VALUES (($1->>'global_position')::bigint, 'returning') RETURNING seq"

[[projection]]
name = "strict"
on_unknown = "fail"
setup = "CREATE TABLE IF NOT EXISTS strict_log (global_position bigint PRIMARY KEY)"
[projection.handlers]
Plain = "INSERT INTO strict_log VALUES (($1->>'global_position')::bigint)"
Selected = "INSERT INTO strict_log VALUES (($1->>'global_position')::bigint)"
Returning = "INSERT INTO strict_log VALUES (($1->>'global_position')::bigint)"
"#,
            socket_source(&cluster, "app")
        ),
    )?;
    // Setup creates tables only (a build swaps them in from a shadow schema), so the function a
    // handler calls exists beforehand; its body resolves audit_log through the caller's
    // search_path, like the handlers.
    db.batch_execute(
        "SET check_function_bodies TO off;
         CREATE FUNCTION audit_select(e jsonb) RETURNS bigint LANGUAGE sql AS
           $$ INSERT INTO audit_log (global_position, via) VALUES ((e->>'global_position')::bigint, 'select') RETURNING seq $$;
         RESET check_function_bodies",
    )
    .await?;
    stopped_worker(&db, &config, 2).await?;

    // Runs of each kind, interleaved within and across transactions; one "Stray" event (no
    // handler anywhere) in the middle.
    let kinds = ["Plain", "Plain", "Plain", "Selected", "Plain", "Returning", "Returning", "Plain"];
    let mut rng = Lcg::new(7);
    let mut expected = Vec::new();
    let mut before_stray = Vec::new();
    let mut stray = None;
    for txn in 0..120 {
        let events: Vec<(&str, serde_json::Value)> = (0..1 + rng.below(6))
            .map(|_| (kinds[rng.below(kinds.len() as u64) as usize], serde_json::json!({})))
            .chain((txn == 60).then(|| ("Stray", serde_json::json!({}))))
            .collect();
        let appended = append(&db, "mixed-1", &events).await?;
        for (position, (kind, _)) in appended.iter().zip(&events) {
            let via = match *kind {
                "Plain" => "insert",
                "Selected" => "select",
                "Returning" => "returning",
                _ => {
                    stray = Some(*position);
                    continue;
                }
            };
            expected.push(format!("{position}:{via}"));
        }
        if txn < 60 {
            before_stray.extend(appended);
        }
    }

    let worker = Worker::start(&config)?;
    eventually("the audit projection applies every event", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM audit_log").await.unwrap_or(0) >= expected.len() as i64)
    })
    .await?;
    let audit =
        rows(&db, "SELECT global_position || ':' || via FROM audit_log ORDER BY seq").await?;
    assert_eq!(
        audit, expected,
        "statement-path handlers interleave with the function's in event order"
    );
    // The function's name is derived from the projection's, never spliced.
    let source =
        apply_function_source(&db, "audit__log_").await?.expect("audit has an apply function");
    assert!(
        source.contains("'insert'")
            && !source.contains("audit_select")
            && !source.contains("'returning'"),
        "{source}"
    );
    let public = count(
        &db,
        "SELECT count(*) FROM pg_proc, aclexplode(coalesce(proacl, acldefault('f', proowner))) a
          WHERE pronamespace = 'eventstore_worker'::regnamespace AND proname LIKE 'apply\\_%' AND a.grantee = 0",
    )
    .await?;
    assert_eq!(public, 0, "PUBLIC may not execute the apply functions");

    eventually("the strict projection fails at the stray event", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE name = 'strict' AND status = 'failed'").await? == 1)
    })
    .await?;
    let row = db
        .query_one(
            "SELECT last_error, (failed_event->>'global_position')::bigint FROM eventstore_worker.projections WHERE name = 'strict'",
            &[],
        )
        .await?;
    assert_eq!(
        row.get::<_, String>(0),
        "no handler for event type \"Stray\" and on_unknown = \"fail\""
    );
    assert_eq!(Some(row.get::<_, i64>(1)), stray);
    let applied = positions(&db, "SELECT global_position FROM strict_log ORDER BY 1").await?;
    assert_eq!(applied, before_stray, "every transaction before the stray event's, nothing after");
    assert_eq!(count(&db, "SELECT count(*) FROM eventstore_worker.projections WHERE name = 'Audit \"Log\"' AND status = 'running'").await?, 1);
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_disagrees_with_its_statements_is_set_aside() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    // Fails only when called from an apply function: a stand-in for the corners where PL/pgSQL
    // and top-level SQL differ.
    let config = write_config(
        &cluster.dir,
        "picky",
        &format!(
            r#"{}
[[projection]]
name = "picky"
setup = "CREATE TABLE IF NOT EXISTS picky_log (global_position bigint PRIMARY KEY, ok int)"
[projection.handlers]
Measured = """
INSERT INTO picky_log VALUES (($1->>'global_position')::bigint,
    CASE WHEN strpos(current_query(), 'SELECT ' || 'eventstore_worker.') > 0
         THEN 1 / (random() * 0)::int ELSE 1 END)"""
"#,
            socket_source(&cluster, "app")
        ),
    )?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    let mut expected = Vec::new();
    for _ in 0..20 {
        expected
            .extend(append(&db, "sensor-1", &vec![("Measured", serde_json::json!({})); 5]).await?);
    }
    eventually("every event is applied", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM picky_log").await.unwrap_or(0) == 100)
    })
    .await
    .with_context(|| format!("worker log:\n{}", worker.log_text()))?;
    assert_eq!(positions(&db, "SELECT global_position FROM picky_log ORDER BY 1").await?, expected);
    let status =
        rows(&db, "SELECT status FROM eventstore_worker.projections WHERE name = 'picky'").await?;
    assert_eq!(status, ["running"]);
    // Set aside once by each path that applied some of the events, then statements only: the
    // live path, and the first start's build if the appends reached it before the swap.
    let log = worker.plain_log();
    let set_aside: Vec<&str> =
        log.lines().filter(|l| l.contains("now runs statement by statement")).collect();
    let by = |path: &str| {
        set_aside.iter().filter(|l| l.contains(&format!("applier=Some({path})"))).count()
    };
    assert!(!set_aside.is_empty(), "the function was set aside:\n{log}");
    assert!(by("Live") <= 1 && by("Build") <= 1, "set aside once per path:\n{log}");
    assert_eq!(
        by("Live") + by("Build"),
        set_aside.len(),
        "only the live path and the build apply here:\n{log}"
    );
    assert!(worker.terminate()?.success());
    Ok(())
}
