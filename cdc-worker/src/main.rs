//! eventstore-worker: keeps read-model tables up to date from the logical replication stream
//! of `eventstore.events`, exactly once in effect.

mod apply;
mod config;
mod decode;
mod lifecycle;
mod model;
mod ops;
mod pg;
mod replication;
mod store;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "eventstore-worker", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EVENTSTORE_WORKER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream events into the configured projections until stopped (SIGTERM/SIGINT).
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, env = "EVENTSTORE_WORKER_CONFIG")]
        config: PathBuf,
        /// Serve Prometheus metrics on /metrics and a liveness probe on /healthz (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT", env = "EVENTSTORE_WORKER_METRICS_ADDR")]
        metrics_addr: Option<String>,
    },
    /// Validate the configuration file and exit.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, env = "EVENTSTORE_WORKER_CONFIG")]
        config: PathBuf,
    },
    /// Print each projection's state, checkpoint, lag and last error, and exit.
    Status {
        /// Configuration file (TOML).
        #[arg(long, short, env = "EVENTSTORE_WORKER_CONFIG")]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a projection from eventstore.events with zero downtime, then exit.
    ///
    /// Builds it afresh into shadow tables and swaps them in, in one transaction, once they
    /// have caught up; the tables in use keep serving queries, and a running worker keeps
    /// updating them, until then.
    Rebuild {
        /// Configuration file (TOML); the projection is built with the definition found here.
        #[arg(long, short, env = "EVENTSTORE_WORKER_CONFIG")]
        config: PathBuf,
        /// Name of the projection to rebuild.
        #[arg(long, short, env = "EVENTSTORE_WORKER_PROJECTION")]
        projection: String,
    },
    /// Resume a failed projection after fixing its definition in the configuration file.
    ///
    /// Checks the definition against the target database and marks the projection for
    /// resuming: the running worker picks it up within seconds (otherwise its next start
    /// does), resumes it from its checkpoint through eventstore.events and lets it join the
    /// stream.
    Retry {
        /// Configuration file (TOML) of the worker.
        #[arg(long, short, env = "EVENTSTORE_WORKER_CONFIG")]
        config: PathBuf,
        /// Name of the failed projection.
        #[arg(long, short, env = "EVENTSTORE_WORKER_PROJECTION")]
        projection: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let (path, check_only) = match &cli.command {
        Command::Run { config, .. }
        | Command::Status { config, .. }
        | Command::Rebuild { config, .. }
        | Command::Retry { config, .. } => (config, false),
        Command::Check { config } => (config, true),
    };
    let config = match config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            eprintln!("eventstore-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("{}: ok ({} projections)", path.display(), config.projections.len());
        return ExitCode::SUCCESS;
    }
    if let Command::Rebuild { projection, .. } | Command::Retry { projection, .. } = &cli.command {
        if config.projection(projection).is_none() {
            eprintln!("eventstore-worker: {}: no projection named {projection:?}", path.display());
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eventstore-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Run { metrics_addr, .. } => {
            runtime.block_on(async_main(config, metrics_addr)).map(|()| ExitCode::SUCCESS)
        }
        Command::Status { json, .. } => {
            runtime.block_on(ops::status::run(&config, json)).map(|()| ExitCode::SUCCESS)
        }
        Command::Rebuild { projection, .. } => {
            runtime.block_on(ops::commands::rebuild(config, &projection))
        }
        Command::Retry { projection, .. } => {
            runtime.block_on(ops::commands::retry(config, &projection))
        }
        Command::Check { .. } => Ok(ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "worker stopped");
            eprintln!("eventstore-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main(config: config::Config, metrics_addr: Option<String>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(ops::signals::watch(shutdown.clone()));
    info!(config = %config.file.display(), projections = config.projections.len(), "starting");
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
        tokio::spawn(ops::metrics::serve(
            listener,
            std::sync::Arc::new(config.clone()),
            shutdown.clone(),
        ));
    }
    stream::run(config, shutdown).await
}
