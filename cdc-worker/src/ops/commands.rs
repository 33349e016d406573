//! The one-shot operator commands: `rebuild` and `retry`.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lifecycle::rebuild::{self, Mode, Outcome};
use crate::model::ProjectionStatus;
use crate::pg::connect::connect_sql;
use crate::store::projections;

pub async fn rebuild(config: Config, name: &str) -> anyhow::Result<ExitCode> {
    let stop = CancellationToken::new();
    tokio::spawn(super::signals::watch(stop.clone()));
    let outcomes = rebuild::run(&config, &[name.to_owned()], Mode::Command, &stop).await?;
    if stop.is_cancelled() {
        eprintln!("{name}: interrupted; the tables in use are unchanged");
        return Ok(ExitCode::from(130));
    }
    match outcomes.into_iter().next().map(|(_, o)| o) {
        Some(Outcome::Swapped { checkpoint, events }) => {
            println!("{name}: rebuilt from eventstore.events ({events} handler executions) and swapped in at {checkpoint}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Outcome::Failed(error)) => {
            eprintln!("{name}: rebuild failed; the tables in use are unchanged: {error}");
            Ok(ExitCode::FAILURE)
        }
        Some(Outcome::Skipped(why)) => {
            eprintln!("{name}: not rebuilt: {why}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::FAILURE),
    }
}

pub async fn retry(config: Config, name: &str) -> anyhow::Result<ExitCode> {
    let client = connect_sql(config.target_config(), "target", "retry").await?;
    let known: bool = client
        .query_one("SELECT to_regclass('eventstore_worker.projections') IS NOT NULL", &[])
        .await?
        .get(0);
    let rows =
        if known { projections::projection_rows(&client, &[name]).await? } else { Vec::new() };
    let Some(row) = rows.into_iter().next() else {
        eprintln!("{name}: the worker has not started this projection yet; nothing to retry");
        return Ok(ExitCode::FAILURE);
    };
    if row.status != ProjectionStatus::Failed {
        println!("{name}: status is {}; nothing to retry", row.status);
        return Ok(ExitCode::SUCCESS);
    }
    let def = config.projection(name).context("projection not in the configuration")?;
    let file = config.file.display().to_string();
    if let Err(e) = crate::apply::check_in_scratch_schema(&client, def, &file).await {
        eprintln!("eventstore-worker: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let updated = client
        .execute(
            "UPDATE eventstore_worker.projections
                SET status = $2, last_error = NULL, failed_event = NULL, updated_at = now()
              WHERE name = $1 AND status = $3",
            &[&name, &ProjectionStatus::CatchingUp, &ProjectionStatus::Failed],
        )
        .await?;
    if updated == 0 {
        println!("{name}: no longer failed; nothing to retry");
        return Ok(ExitCode::SUCCESS);
    }
    let at =
        row.checkpoint.map(|c| format!("checkpoint {c}")).unwrap_or_else(|| "the beginning".into());
    println!(
        "{name}: resuming from {at} through eventstore.events; a running worker picks it up within seconds, \
         otherwise its next start does"
    );
    Ok(ExitCode::SUCCESS)
}
