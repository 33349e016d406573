//! Issue 17, the worker's side: handlers that do not read the envelope, memory bounded under
//! huge transactions, TLS, the narrowest role, search_path attacks, and the xmin horizon.

use anyhow::{Context, Result};
use eventstore_integration_tests::*;
use tokio_postgres::Client;

/// A counter projection whose handlers never mention `$1`. `PaymentCaptured` divides by the
/// number of rows in `gate`, so it fails while `gate` is empty.
const COUNTER: &str = r#"
[[projection]]
name = "status_counts"
setup = """CREATE TABLE IF NOT EXISTS status_counts (status text PRIMARY KEY, n bigint NOT NULL)"""
[projection.handlers]
OrderPlaced = "INSERT INTO status_counts VALUES ('placed', 1) ON CONFLICT (status) DO UPDATE SET n = status_counts.n + 1"
PaymentCaptured = "INSERT INTO status_counts SELECT 'paid', 1 / (SELECT count(*) FROM gate)::int ON CONFLICT (status) DO UPDATE SET n = status_counts.n + 1"
"#;

async fn counts_match(db: &Client) -> Result<bool> {
    let expected = rows(
        db,
        "SELECT (s, n)::text FROM (
           SELECT CASE event_type WHEN 'OrderPlaced' THEN 'placed' ELSE 'paid' END AS s, count(*) AS n FROM eventstore.events
            WHERE event_type IN ('OrderPlaced', 'PaymentCaptured') GROUP BY 1) c ORDER BY 1",
    )
    .await?;
    let Ok(actual) = rows(db, "SELECT (status, n)::text FROM status_counts ORDER BY 1").await
    else {
        return Ok(false);
    };
    Ok(actual == expected)
}

async fn wait_counts(db: &Client, worker: &Worker, what: &str) -> Result<()> {
    eventually(what, CONVERGE, || counts_match(db)).await.with_context(|| worker.plain_log())
}

async fn projection_status(db: &Client, name: &str) -> Result<String> {
    Ok(db
        .query_one("SELECT status FROM eventstore_worker.projections WHERE name = $1", &[&name])
        .await?
        .get(0))
}

/// Hole 10: the counter is built from history, counts live, catches up after a failure and is
/// rebuilt, and `check`/`status` accept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_does_not_read_the_envelope_counts_live_in_catch_up_and_in_rebuilds(
) -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    db.batch_execute("CREATE TABLE gate (ok int); INSERT INTO gate VALUES (1)").await?;
    let config = write_config(
        &cluster.dir,
        "counter",
        &format!("{}{COUNTER}", socket_source(&cluster, "app")),
    )?;
    let check = worker_command(&["check", "--config", config.to_str().unwrap()])?;
    assert!(check.status.success(), "check: {}", String::from_utf8_lossy(&check.stderr));

    // History first: the first start builds the projection from the event table.
    append_orders(&dsn, 0, 100, 2, 1).await?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 1).await?;
    wait_counts(&db, &worker, "the build counts history").await?;
    // Live.
    append_orders(&dsn, 100, 100, 2, 2).await?;
    wait_counts(&db, &worker, "live events are counted").await?;

    // The gate closes: the projection fails on a payment; once reopened, retry catches up
    // through the table.
    db.batch_execute("DELETE FROM gate").await?;
    append_orders(&dsn, 200, 50, 2, 3).await?;
    eventually("the counter fails", CONVERGE, || async {
        Ok(projection_status(&db, "status_counts").await? == "failed")
    })
    .await?;
    append_orders(&dsn, 250, 50, 2, 4).await?;
    db.batch_execute("INSERT INTO gate VALUES (1)").await?;
    succeeded(&worker_on("retry", &config, "status_counts")?, "retry");
    wait_until_running(&db, &worker, 1).await?;
    wait_counts(&db, &worker, "the catch-up counts what the failure left").await?;
    assert!(
        worker.plain_log().contains("caught up; following the stream again"),
        "{}",
        worker.plain_log()
    );

    // A rebuild recounts from scratch.
    succeeded(&worker_on("rebuild", &config, "status_counts")?, "rebuild");
    append_orders(&dsn, 300, 50, 2, 5).await?;
    wait_counts(&db, &worker, "counts after the rebuild").await?;

    let status = worker_command(&["status", "--config", config.to_str().unwrap()])?;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("status_counts"),
        "status: {text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Hole 11: 20 source transactions of one 5 MB event each wait in the slot while the worker is
/// stopped; with a queue bound of 6 MiB the worker holds at most one of them at a time (each
/// is over half the bound), as its own gauge shows, and the read model still converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_transactions_are_queued_within_the_byte_bound() -> Result<()> {
    const BOUND: usize = 6 << 20;
    const BLOB: usize = 5_000_000;
    let Store { cluster, db, .. } = Store::start().await?;
    let projection = r#"
[stream]
max_queued_bytes = 6291456

[[projection]]
name = "blobs"
setup = "CREATE TABLE IF NOT EXISTS blobs (position bigint PRIMARY KEY, size int NOT NULL)"
[projection.handlers]
BlobAttached = "INSERT INTO blobs VALUES (($1->>'global_position')::bigint, length($1->'data'->>'blob'))"
"#;
    let config = write_config(
        &cluster.dir,
        "blobs",
        &format!("{}{projection}", socket_source(&cluster, "app")),
    )?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 1).await?;
    assert!(worker.terminate()?.success());

    for i in 0..20 {
        db.execute(
            "SELECT eventstore.append_event($1, 'BlobAttached', jsonb_build_object('blob', repeat('x', $2)))",
            &[&format!("blob-{i}"), &(BLOB as i32)],
        )
        .await?;
    }
    let addr = format!("127.0.0.1:{}", free_local_port()?);
    let worker = Worker::start_with_env(&config, &[("EVENTSTORE_WORKER_METRICS_ADDR", &addr)])?;
    eventually("every blob is applied", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM blobs WHERE size = 5000000").await? == 20)
    })
    .await
    .with_context(|| worker.plain_log())?;
    let (_, text) = http_get(&addr, "/metrics").await?;
    let peak = metric(&text, "eventstore_worker_queued_bytes_peak")
        .context("no queue peak in /metrics")?;
    assert_eq!(metric(&text, "eventstore_worker_queued_bytes_bound"), Some(BOUND as f64));
    // One envelope is the blob plus a few hundred bytes of envelope.
    assert!(peak >= BLOB as f64, "the peak counts at least one transaction: {peak}");
    assert!(peak <= BOUND as f64, "more than the bound was queued: {peak}");
    assert!(worker.terminate()?.success());
    Ok(())
}

async fn horizon_pid(config: &std::path::Path) -> Result<(Option<i64>, serde_json::Value)> {
    let out = worker_command(&["status", "--config", config.to_str().unwrap(), "--json"])?;
    anyhow::ensure!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["horizon"]["pid"].as_i64(), v["horizon"].clone()))
}

/// Hole 8, the worker's part: a transaction holding an xid in another database shows in
/// `status` and `/metrics` as what holds the horizon, and no longer once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_name_the_transaction_holding_the_horizon() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    cluster.connect("postgres").await?.batch_execute("CREATE DATABASE other").await?;
    let config = cluster.orders_config("orders")?;
    let addr = format!("127.0.0.1:{}", free_local_port()?);
    let worker = Worker::start_with_env(&config, &[("EVENTSTORE_WORKER_METRICS_ADDR", &addr)])?;
    wait_until_running(&db, &worker, 3).await?;

    let other = cluster.connect("other").await?;
    other.batch_execute("BEGIN; SELECT pg_current_xact_id()").await?;
    let pid: i32 = other.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let (held_by, horizon) = horizon_pid(&config).await?;
    assert_eq!(held_by, Some(i64::from(pid)), "status names the holder: {horizon}");
    assert_eq!(horizon["database"], "other");
    assert_eq!(horizon["state"], "idle in transaction");
    assert!(
        horizon["xid_age"].as_i64().is_some()
            && horizon["transaction_age_seconds"].as_f64().is_some(),
        "{horizon}"
    );
    let table = worker_command(&["status", "--config", config.to_str().unwrap()])?;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&format!(
            "oldest transaction holding the xmin horizon: pid {pid} in database other"
        )),
        "{text}"
    );
    let (_, metrics) = http_get(&addr, "/metrics").await?;
    assert!(
        metrics.contains(&format!("eventstore_worker_horizon_holder{{pid=\"{pid}\",database=\"other\",state=\"idle in transaction\"}} 1")),
        "{metrics}"
    );

    other.batch_execute("COMMIT").await?;
    eventually("the holder is gone from status", CONVERGE, || async {
        Ok(horizon_pid(&config).await?.0 != Some(i64::from(pid)))
    })
    .await?;
    let (_, metrics) = http_get(&addr, "/metrics").await?;
    assert!(!metrics.contains(&format!("pid=\"{pid}\"")), "{metrics}");
    assert!(worker.terminate()?.success());
    Ok(())
}

fn run_cmd(program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA, a server certificate it signed for `localhost` only (no IP), and a second CA that
/// signed nothing, under `dir`; the server's key owned by postgres as the server requires.
fn make_certs(dir: &std::path::Path) -> Result<()> {
    let p = |name: &str| dir.join(name).display().to_string();
    for ca in ["ca", "other_ca"] {
        run_cmd(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &p(&format!("{ca}.key")),
                "-out",
                &p(&format!("{ca}.crt")),
            ],
        )?;
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    run_cmd(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    )?;
    run_cmd(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("server.ext"),
            "-out",
            &p("server.crt"),
        ],
    )?;
    run_cmd("chown", &["postgres:postgres", &p("server.key"), &p("server.crt")])?;
    run_cmd("chmod", &["600", &p("server.key")])?;
    Ok(())
}

/// `eventstore-worker status` with `dsn`: whether it succeeded, and its stderr.
fn status_with(cluster: &Cluster, name: &str, dsn: &str) -> Result<(bool, String)> {
    let config =
        write_config(&cluster.dir, name, &format!("[source]\ndsn = \"{dsn}\"\n{COUNTER}"))?;
    let out = worker_command(&["status", "--config", config.to_str().unwrap()])?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Hole 12: a cluster that accepts TCP only over TLS (hostssl lines, a certificate made here).
/// The worker converges with verify-full, both its SQL connections and its replication
/// connection use TLS, and the checks libpq makes are made: wrong host name or CA fails with
/// a clear error, verify-ca ignores the name, disable is refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_on_both_connections_and_clear_refusals() -> Result<()> {
    if !server_has_ssl()? {
        eprintln!("skipped: the PostgreSQL in {} is built without SSL", pg_bin().display());
        return Ok(());
    }
    let cluster = Cluster::start()?;
    make_certs(&cluster.dir)?;
    let file = |name: &str| cluster.dir.join(name).display().to_string();
    // TCP over TLS only (read at the reload below).
    std::fs::write(
        cluster.dir.join("data/pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
    )?;
    cluster.alter_system("ssl_cert_file", &file("server.crt")).await?;
    cluster.alter_system("ssl_key_file", &file("server.key")).await?;
    cluster.alter_system("ssl", "on").await?;
    let db = cluster.create_store("app").await?;
    create_worker_role(
        &db,
        "GRANT CREATE ON DATABASE app TO worker; GRANT CREATE, USAGE ON SCHEMA public TO worker;",
    )
    .await?;
    let kv = |host: &str, tls: &str| {
        format!(
            "host={host} port={} dbname=app user=worker password='{WORKER_PASSWORD}' {tls}",
            cluster.port
        )
    };
    let ca = file("ca.crt");

    // What fails, and says why.
    let (ok, err) = status_with(
        &cluster,
        "wrong_name",
        &kv("127.0.0.1", &format!("sslmode=verify-full sslrootcert={ca}")),
    )?;
    assert!(
        !ok && err.contains("sslmode=verify-full")
            && err.contains("certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    let (ok, err) = status_with(
        &cluster,
        "wrong_ca",
        &kv("localhost", &format!("sslmode=verify-full sslrootcert={}", file("other_ca.crt"))),
    )?;
    assert!(
        !ok && err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let (ok, err) = status_with(&cluster, "plain", &kv("localhost", "sslmode=disable"))?;
    assert!(!ok && err.contains("no encryption"), "hostssl lines refuse a plain connection: {err}");
    // verify-ca checks the chain only; require (no root) encrypts without checking.
    let (ok, err) = status_with(
        &cluster,
        "ca_only",
        &kv("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")),
    )?;
    assert!(ok, "{err}");
    let (ok, err) = status_with(&cluster, "require", &kv("127.0.0.1", "sslmode=require"))?;
    assert!(ok, "{err}");

    // verify-full in a URL, the root certificate beside it.
    let url = format!(
        "postgres://worker:{}@localhost:{}/app?sslmode=verify-full",
        WORKER_PASSWORD.replace(' ', "%20"),
        cluster.port
    );
    let config = orders_config(
        &cluster.dir,
        "tls",
        &format!("[source]\ndsn = \"{url}\"\nsslrootcert = \"{ca}\"\n"),
    )?;
    let worker = Worker::start(&config)?;
    wait_for_streaming(&db, &worker).await?;
    append_orders(&cluster.socket_dsn("app"), 0, 100, 2, 9).await?;
    assert_converges(&db, &db, &worker).await;
    let walsenders = rows(
        &db,
        "SELECT s.ssl::text FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.usename = 'worker'",
    )
    .await?;
    assert_eq!(walsenders, ["true"], "the replication connection uses TLS");
    let backends = rows(
        &db,
        "SELECT a.backend_type || ':' || s.ssl::text FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.usename = 'worker' ORDER BY 1",
    )
    .await?;
    assert!(
        backends.len() >= 2 && backends.iter().all(|b| b.ends_with(":true")),
        "every connection of the worker uses TLS: {backends:?}"
    );
    assert!(
        backends.iter().any(|b| b.starts_with("client backend:"))
            && backends.iter().any(|b| b.starts_with("walsender:")),
        "{backends:?}"
    );
    assert!(worker.terminate()?.success());
    Ok(())
}

/// Functions and operators an application role plants in `public` to catch whoever resolves
/// them: better matches than pg_catalog's for what the worker's SQL calls (polymorphic
/// functions, a cross-type comparison) and exact copies of built-ins. Each records who ran it.
const TRAPS: &str = r#"
CREATE TABLE public.trap (who text, what text);
GRANT INSERT ON public.trap TO PUBLIC;
CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'unnest(text[])'); SELECT pg_catalog.unnest(a) $$;
CREATE FUNCTION public.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'unnest(bigint[])'); SELECT pg_catalog.unnest(a) $$;
CREATE FUNCTION public.unnest(a pg_lsn[]) RETURNS SETOF pg_lsn LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'unnest(pg_lsn[])'); SELECT pg_catalog.unnest(a) $$;
CREATE FUNCTION public.unnest(a xid8[]) RETURNS SETOF xid8 LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'unnest(xid8[])'); SELECT pg_catalog.unnest(a) $$;
CREATE FUNCTION public.cardinality(a jsonb[]) RETURNS int LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'cardinality(jsonb[])'); SELECT pg_catalog.cardinality(a) $$;
CREATE FUNCTION public.trap_append(s pg_lsn[], v pg_lsn) RETURNS pg_lsn[] LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'array_agg(pg_lsn)'); SELECT pg_catalog.array_append(s, v) $$;
CREATE AGGREGATE public.array_agg(pg_lsn) (SFUNC = public.trap_append, STYPE = pg_lsn[]);
CREATE FUNCTION public.pg_try_advisory_lock(k text) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'pg_try_advisory_lock(text)'); SELECT true $$;
CREATE FUNCTION public.trap_oid_eq(a oid, b regclass) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, '=(oid, regclass)'); SELECT a OPERATOR(pg_catalog.=) b::oid $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.trap_oid_eq);
CREATE FUNCTION public.trap_text_eq(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, '=(text, text)'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trap_text_eq);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'now()'); SELECT pg_catalog.now() $$;
CREATE FUNCTION public.pg_current_wal_lsn() RETURNS pg_lsn LANGUAGE sql
    AS $$ INSERT INTO public.trap VALUES (current_user, 'pg_current_wal_lsn()'); SELECT pg_catalog.pg_current_wal_lsn() $$;
"#;

/// Hole 2, the worker's part: with the default search_path and CREATE on public for an
/// application role (as the docs used to tell operators), nothing that role plants runs as
/// the worker's role — through a first start (build), live load, a failure and its catch-up,
/// a rebuild, `status` and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_planted_on_the_search_path_never_run_as_the_worker() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    db.batch_execute(&format!(
        "CREATE ROLE worker LOGIN REPLICATION PASSWORD '{WORKER_PASSWORD}';
         SELECT eventstore.grant_reader('worker');
         GRANT CREATE ON DATABASE app TO worker;
         GRANT CREATE, USAGE ON SCHEMA public TO worker;
         CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events;
         CREATE ROLE app LOGIN;
         GRANT CREATE, USAGE ON SCHEMA public TO app;
         CREATE TABLE public.gate (ok int); INSERT INTO public.gate VALUES (1); GRANT SELECT ON public.gate TO worker;
         SET ROLE app; {TRAPS} RESET ROLE;"
    ))
    .await?;
    // The traps work: they catch a role that resolves names through public.
    let probe = cluster.connect("app").await?;
    probe.batch_execute("SET ROLE app; SELECT unnest(ARRAY['x']::text[]); RESET ROLE").await?;
    assert_eq!(count(&db, "SELECT count(*) FROM public.trap").await?, 1, "the trap is armed");
    db.batch_execute("TRUNCATE public.trap").await?;

    let dsn = cluster.socket_dsn("app");
    append_orders(&dsn, 0, 100, 2, 11).await?;
    let header = format!("[source]\ndsn = \"{}\"\n", cluster.tcp_url("app"));
    let addr = format!("127.0.0.1:{}", free_local_port()?);
    let config = orders_config(&cluster.dir, "trapped", &header)?;
    let text = std::fs::read_to_string(&config)? + COUNTER;
    std::fs::write(&config, text)?;
    let worker = Worker::start_with_env(&config, &[("EVENTSTORE_WORKER_METRICS_ADDR", &addr)])?;
    wait_until_running(&db, &worker, 4).await?;
    append_orders(&dsn, 100, 100, 2, 12).await?;
    assert_converges(&db, &db, &worker).await;

    // A failure and its catch-up.
    db.batch_execute("DELETE FROM public.gate").await?;
    append_orders(&dsn, 200, 50, 2, 13).await?;
    eventually("the counter fails", CONVERGE, || async {
        Ok(projection_status(&db, "status_counts").await? == "failed")
    })
    .await?;
    db.batch_execute("INSERT INTO public.gate VALUES (1)").await?;
    succeeded(&worker_on("retry", &config, "status_counts")?, "retry");
    wait_until_running(&db, &worker, 4).await?;
    wait_counts(&db, &worker, "the catch-up counts").await?;
    // A rebuild (build, swap) while writers append.
    succeeded(&worker_on("rebuild", &config, "order_summary")?, "rebuild");
    append_orders(&dsn, 250, 50, 2, 14).await?;
    assert_converges(&db, &db, &worker).await;
    let status = worker_command(&["status", "--config", config.to_str().unwrap()])?;
    assert!(status.status.success(), "status: {}", String::from_utf8_lossy(&status.stderr));
    let (code, _) = http_get(&addr, "/metrics").await?;
    assert_eq!(code, 200);
    assert!(worker.terminate()?.success());

    let caught = rows(&db, "SELECT who || ': ' || what FROM public.trap ORDER BY 1").await?;
    assert!(caught.is_empty(), "planted functions ran: {caught:?}");
    Ok(())
}

/// Hole 7: the role and pg_hba.conf lines docs/worker.md gives, and nothing more: a logical
/// replication connection matches the database's line (no `replication` line), the read
/// models live in a schema the worker owns, the source grants come from
/// `eventstore.grant_reader`. The worker builds, streams and rebuilds; the same role cannot take
/// a physical base backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_narrow_role_runs_the_worker_and_cannot_take_a_base_backup() -> Result<()> {
    let Store { cluster, db, .. } = Store::start().await?;
    db.batch_execute(&format!(
        "CREATE ROLE eventstore_worker LOGIN REPLICATION PASSWORD '{WORKER_PASSWORD}';
         SELECT eventstore.grant_reader('eventstore_worker');
         CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events;
         GRANT CREATE ON DATABASE app TO eventstore_worker;
         CREATE SCHEMA readmodels AUTHORIZATION eventstore_worker;"
    ))
    .await?;
    // Exactly the documented lines (the unix socket stays open to the test's superuser).
    std::fs::write(
        cluster.dir.join("data/pg_hba.conf"),
        "local all postgres trust\nhost app eventstore_worker 127.0.0.1/32 scram-sha-256\n",
    )?;
    db.batch_execute("SELECT pg_reload_conf()").await?;

    let dsn = cluster.socket_dsn("app");
    append_orders(&dsn, 0, 100, 2, 21).await?;
    let url = format!(
        "postgres://eventstore_worker:{}@127.0.0.1:{}/app",
        WORKER_PASSWORD.replace(' ', "%20"),
        cluster.port
    );
    let header = format!("[source]\ndsn = \"{url}\"\n\n[target]\nsearch_path = \"readmodels\"\n");
    let config = orders_config(&cluster.dir, "narrow", &header)?;
    let worker = Worker::start(&config)?;
    // The test reads the read models where the worker keeps them.
    let models = connect(&format!("{dsn} options='-c search_path=readmodels'")).await?;
    wait_until_running(&db, &worker, 3).await?;
    append_orders(&dsn, 100, 100, 2, 22).await?;
    assert_converges(&db, &models, &worker).await;
    succeeded(&worker_on("rebuild", &config, "customer_revenue")?, "rebuild");
    assert_converges(&db, &models, &worker).await;
    let placed = count(&db, "SELECT count(*) FROM pg_tables WHERE tablename = 'order_summary' AND schemaname = 'readmodels'").await?;
    assert_eq!(placed, 1, "the read models are in the worker's schema");
    let walsender =
        count(&db, "SELECT count(*) FROM pg_stat_replication WHERE usename = 'eventstore_worker'")
            .await?;
    assert_eq!(
        walsender, 1,
        "the logical replication connection came in through the database's line"
    );

    // Physical replication: no pg_hba line admits it.
    let backup = cluster.dir.join("backup");
    let out = std::process::Command::new(pg_bin().join("pg_basebackup"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "eventstore_worker",
            "-X",
            "none",
            "-w",
            "-D",
        ])
        .arg(&backup)
        .env("PGPASSWORD", WORKER_PASSWORD)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no pg_hba.conf entry for replication connection"),
        "pg_basebackup: {err}"
    );
    assert!(!backup.join("PG_VERSION").exists());
    assert!(worker.terminate()?.success());
    Ok(())
}
