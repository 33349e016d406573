//! eventstore-worker: keeps read-model tables up to date from the logical replication stream
//! of `eventstore.events`, exactly once in effect.

mod ack;
mod apply_function;
mod config;
mod envelope;
mod lsn;
mod pgoutput;
mod projection;
mod replication;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

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
    },
    /// Validate the configuration file and exit.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, env = "EVENTSTORE_WORKER_CONFIG")]
        config: PathBuf,
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
        Command::Run { config } => (config, false),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eventstore-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async_main(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "worker stopped");
            eprintln!("eventstore-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main(config: config::Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    info!(config = %config.file.display(), projections = config.projections.len(), "starting");
    worker::run(config, shutdown).await
}

async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; shutting down"),
        _ = int.recv() => info!("SIGINT received; shutting down"),
    }
    shutdown.cancel();
}
