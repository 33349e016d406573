//! Projection lifecycle end to end: building from the event log on a first start and for a
//! projection added later, resuming failed projections without holding the slot, and
//! zero-downtime rebuilds, all while writers keep appending.

use anyhow::Result;
use eventstore_integration_tests::*;
use tokio_postgres::Client;

const SUMMARY_TYPES: &str = "('OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled')";
const REVENUE_TYPES: &str = "('OrderPlaced', 'PaymentCaptured', 'OrderCancelled')";

/// Handler executions the projection recorded equal the events it handles: none applied twice
/// (events_applied counts every execution since its tables were built).
async fn assert_applied_once(db: &Client, projection: &str, types: &str) -> Result<()> {
    let applied =
        count(db, &format!("SELECT events_applied FROM eventstore_worker.projections WHERE name = '{projection}'")).await?;
    let handled = count(db, &format!("SELECT count(*) FROM eventstore.events WHERE event_type IN {types}")).await?;
    assert_eq!(applied, handled, "{projection}: handler executions vs events it handles");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_on_an_existing_store_folds_history_while_writers_append() -> Result<()> {
    let cluster = Cluster::start()?;
    let db = cluster.create_store("app").await?;
    let dsn = cluster.socket_dsn("app");
    append_orders(&dsn, 0, 3000, 4, 11).await?;
    let preloaded = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    assert!(preloaded > 7000, "{preloaded} events preloaded");

    // Writers keep appending while the worker builds from the log and joins the stream.
    let load = {
        let dsn = dsn.clone();
        tokio::spawn(async move { append_orders(&dsn, 3000, 2000, 3, 12).await })
    };
    let config = orders_config(&cluster.dir, "orders", &socket_source(&cluster, "app"))?;
    let worker = Worker::start(&config)?;
    assert!(!load.is_finished(), "the load runs while the worker starts");
    let at_start = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    wait_until_running(&db, &worker, 3).await?;
    let when_running = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    assert!(when_running > at_start, "events appended during the build: {at_start} at start, {when_running} when running");
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
    let cluster = Cluster::start()?;
    let db = cluster.create_store("app").await?;
    let dsn = cluster.socket_dsn("app");
    let header = socket_source(&cluster, "app");
    let two = orders_config_with(&cluster.dir, "two", &header, &["order_summary", "customer_revenue"], "")?;
    let worker = Worker::start(&two)?;
    wait_until_running(&db, &worker, 2).await?;

    let load = {
        let dsn = dsn.clone();
        tokio::spawn(async move { append_orders(&dsn, 0, 2500, 3, 21).await })
    };
    eventually("the first projections apply part of the load", CONVERGE, || async {
        Ok(count(&db, "SELECT count(*) FROM order_summary").await? > 400)
    })
    .await?;
    assert!(worker.terminate()?.success());

    // The same worker with a third projection: only that one is built from the log.
    let three = orders_config(&cluster.dir, "three", &header)?;
    let worker = Worker::start(&three)?;
    assert!(!load.is_finished(), "the load runs while the worker starts");
    let at_start = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    wait_until_running(&db, &worker, 3).await?;
    let when_running = count(&db, "SELECT count(*) FROM eventstore.events").await?;
    assert!(when_running > at_start, "events appended during the backfill: {at_start} at start, {when_running} when running");
    load.await??;

    assert_converges(&db, &db, &worker).await;
    assert_applied_once(&db, "order_summary", SUMMARY_TYPES).await?;
    assert_applied_once(&db, "customer_revenue", REVENUE_TYPES).await?;
    let log = worker.plain_log();
    assert!(log.contains("rebuilt and swapped in") && log.contains("projection=fulfillment_queue"), "{log}");
    let rebuilt_others = log
        .lines()
        .filter(|l| l.contains("rebuilt and swapped in") && !l.contains("projection=fulfillment_queue"))
        .count();
    assert_eq!(rebuilt_others, 0, "running projections are not built again:\n{log}");
    assert!(worker.terminate()?.success());
    Ok(())
}
