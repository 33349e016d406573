//! The replication slot lost, invalidated or left behind by a failover: the worker recreates
//! it and the projections catch up from their checkpoints through `eventstore.events` — no
//! rebuild, nothing applied twice (DESIGN.md, worker invariants). And a failover to a standby
//! that synchronizes the worker's failover slot (PostgreSQL 17 and later): the worker follows
//! the new primary through a multi-host DSN and streams from the synchronized slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use eventstore_integration_tests::*;
use tokio_postgres::Client;

const SUMMARY_TYPES: &str = "('OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled')";

/// The three read models' tables, by OID: a rebuild swaps new tables in.
async fn table_oids(db: &Client) -> Result<Vec<String>> {
    rows(
        db,
        "SELECT string_agg(c.oid::text, ',' ORDER BY c.relname) FROM pg_class c
          WHERE c.relname IN ('order_summary', 'customer_revenue', 'fulfillment_queue')
            AND c.relnamespace = 'public'::regnamespace",
    )
    .await
}

/// Handler executions recorded equal the events handled: none applied twice, none skipped.
async fn assert_applied_once(db: &Client) -> Result<()> {
    let applied = count(
        db,
        "SELECT events_applied FROM eventstore_worker.projections WHERE name = 'order_summary'",
    )
    .await?;
    let handled = count(
        db,
        &format!("SELECT count(*) FROM eventstore.events WHERE event_type IN {SUMMARY_TYPES}"),
    )
    .await?;
    assert_eq!(applied, handled, "order_summary: handler executions vs events it handles");
    Ok(())
}

/// The log says the slot was recreated for `reason`, and no projection was rebuilt after that
/// (a first start builds them once, before).
fn assert_caught_up_without_rebuild(worker: &Worker, reason: &str) {
    let log = worker.plain_log();
    let Some(at) = log.find("recreating the replication slot") else {
        panic!("the slot was not recreated:\n{log}")
    };
    let after = &log[at..];
    assert!(after.lines().next().is_some_and(|l| l.contains(reason)), "{log}");
    assert!(after.contains("recreated the replication slot"), "{log}");
    assert!(after.contains("caught up; following the stream again"), "{log}");
    assert!(!after.contains("rebuilt and swapped in"), "a projection was rebuilt:\n{log}");
    assert!(!after.contains("rebuilding every projection"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_recreated_and_the_projections_catch_up_from_their_checkpoints(
) -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    append_orders(&dsn, 0, 300, 3, 61).await?;
    assert_converges(&db, &db, &worker).await;
    assert!(worker.terminate()?.success());
    let tables = table_oids(&db).await?;

    // Events the old slot held, then the slot is gone, then more.
    append_orders(&dsn, 300, 200, 3, 62).await?;
    db.batch_execute("SELECT pg_drop_replication_slot('eventstore_worker')").await?;
    append_orders(&dsn, 500, 200, 3, 63).await?;

    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    assert_converges(&db, &db, &worker).await;
    assert_applied_once(&db).await?;
    assert_eq!(table_oids(&db).await?, tables, "the read-model tables were replaced");
    assert_caught_up_without_rebuild(&worker, "the replication slot is gone");
    assert!(worker.terminate()?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_invalidated_under_load_is_recreated_and_nothing_is_lost_or_applied_twice(
) -> Result<()> {
    let Store { cluster, db, dsn } = Store::start().await?;
    let config = cluster.orders_config("orders")?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    let done = Arc::new(AtomicBool::new(false));
    let load = background_orders(dsn.clone(), 600, 3, 71, done.clone());
    eventually("the worker applies the load", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM order_summary").await? >= 100)
    })
    .await?;
    let tables = table_oids(&db).await?;

    // The worker stops reading (its walsender keeps the slot active) while writers go on, and
    // the slot may keep only 1 MB of WAL: a checkpoint past that invalidates it and ends the
    // walsender.
    cluster.alter_system("max_slot_wal_keep_size", "1MB").await?;
    worker.signal("STOP")?;
    // Checkpoints in a task of their own: one that invalidates the slot ends its walsender,
    // which cannot exit before the paused worker reads what it is sending, so the checkpoint
    // waits for the worker to resume.
    let checkpointing = Arc::new(AtomicBool::new(true));
    let checkpoints = {
        let (db, on) = (cluster.connect("app").await?, checkpointing.clone());
        tokio::spawn(async move {
            while on.load(Ordering::SeqCst) {
                db.batch_execute("SELECT pg_switch_wal(); CHECKPOINT").await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    let ending = eventually("a checkpoint ends the slot's walsender", Duration::from_secs(120), || async {
        let lost = count(
            &db,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker' AND wal_status = 'lost'",
        )
        .await?;
        Ok(lost == 1 || cluster.server_log().contains("to release replication slot \"eventstore_worker\""))
    })
    .await;
    worker.signal("CONT")?;
    ending?;
    eventually("the slot is invalidated", Duration::from_secs(60), || async {
        let lost = count(
            &db,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker' AND wal_status = 'lost'",
        )
        .await?;
        // Or already recreated by the worker, which saw it invalidated.
        Ok(lost == 1 || worker.plain_log().contains("the replication slot was invalidated"))
    })
    .await?;
    checkpointing.store(false, Ordering::SeqCst);
    checkpoints.await??;
    cluster.alter_system("max_slot_wal_keep_size", "-1").await?;

    // The worker goes on by itself, under load; then the load stops.
    eventually("the slot is recreated", CONVERGE, || async {
        Ok(count(
            &db,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker' AND wal_status <> 'lost'",
        )
        .await?
            == 1)
    })
    .await?;
    done.store(true, Ordering::SeqCst);
    load.await??;
    assert_converges(&db, &db, &worker).await;
    wait_until_running(&db, &worker, 3).await?;
    assert_applied_once(&db).await?;
    assert_eq!(table_oids(&db).await?, tables, "the read-model tables were replaced");
    assert_caught_up_without_rebuild(&worker, "the replication slot was invalidated");
    assert!(worker.terminate()?.success());
    Ok(())
}

/// Orders appended in chunks of 100 over `dsn` until `done`; a chunk cut off by a crash is
/// left as it got (the expected read models are computed from the events that are there) and
/// the next chunk, with new order ids, starts once a connection works again.
fn resilient_orders(
    dsn: String,
    seed: u64,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<u64>> {
    tokio::spawn(async move {
        let (mut first, mut failed_chunks) = (0, 0);
        while !done.load(Ordering::SeqCst) {
            if append_orders(&dsn, first, 100, 3, seed + first).await.is_err() {
                failed_chunks += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            first += 100;
        }
        Ok(failed_chunks)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_promoted_mid_load_takes_over_and_the_read_models_stay_exact() -> Result<()> {
    let primary = Cluster::start()?;
    let db = primary.create_store("app").await?;
    let standby = Cluster::start_standby(&primary, "app")?;
    let synced_slots = pg_major()? >= 17;
    if synced_slots {
        // Logical walsenders send nothing the standby has not confirmed, and commits wait for
        // it (synchronous replication: the failover loses nothing that was committed), so the
        // slot the promoted standby has is never ahead of the worker's state there.
        primary.alter_system("synchronized_standby_slots", "standby_slot").await?;
        primary.alter_system("synchronous_standby_names", "*").await?;
    }
    // Both servers, the writable one wins: the worker follows the primary wherever it is.
    let dsn = format!(
        "host={},{} port={},{} user=postgres dbname=app target_session_attrs=read-write",
        primary.dir.display(),
        standby.dir.display(),
        primary.port,
        standby.port
    );
    let config = orders_config(&primary.dir, "orders", &format!("[source]\ndsn = \"{dsn}\"\n"))?;
    let worker = Worker::start(&config)?;
    wait_until_running(&db, &worker, 3).await?;
    let replica = standby.connect("app").await?;
    if synced_slots {
        eventually("the standby has synchronized the worker's slot", CONVERGE, || async {
            db.batch_execute("SELECT pg_catalog.pg_log_standby_snapshot()").await?;
            Ok(count(
                &replica,
                "SELECT count(*) FROM pg_replication_slots
                  WHERE slot_name = 'eventstore_worker' AND synced AND NOT temporary",
            )
            .await?
                == 1)
        })
        .await
        .with_context(|| worker.log_text())?;
    }

    let done = Arc::new(AtomicBool::new(false));
    let load = resilient_orders(dsn.clone(), 81, done.clone());
    eventually("the worker applies the load", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM order_summary").await? >= 200)
    })
    .await?;
    // The primary crashes mid-load; the standby is promoted; writers and worker go on there.
    primary.crash()?;
    standby.promote()?;
    drop(replica);
    let new_primary = standby.connect("app").await?;
    let at_promotion = count(&new_primary, "SELECT count(*) FROM eventstore.events").await?;
    eventually("writers append on the new primary", CONVERGE, || async {
        Ok(count(&new_primary, "SELECT count(*) FROM eventstore.events").await?
            > at_promotion + 500)
    })
    .await?;
    done.store(true, Ordering::SeqCst);
    load.await??;

    assert_converges(&new_primary, &new_primary, &worker).await;
    wait_until_running(&new_primary, &worker, 3).await?;
    assert_applied_once(&new_primary).await?;
    let log = worker.plain_log();
    let builds = log.lines().filter(|l| l.contains("rebuilt and swapped in")).count();
    assert_eq!(builds, 3, "only the first start builds the projections:\n{log}");
    if synced_slots {
        // The synchronized slot was used, not recreated.
        assert!(!log.contains("recreating the replication slot"), "{log}");
        let synced = count(
            &new_primary,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'eventstore_worker' AND synced",
        )
        .await?;
        assert_eq!(synced, 1, "the worker streams from the slot the standby synchronized");
    } else {
        assert_caught_up_without_rebuild(&worker, "the replication slot is gone");
    }
    assert!(worker.terminate()?.success());
    Ok(())
}
