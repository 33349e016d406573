//! Applying a batch of source transactions in one target transaction: every projection's
//! handlers and checkpoint, the fast path through the apply functions together, and locating a
//! failing event exactly.

use tokio_postgres::types::{ToSql, Type};
use tracing::{debug, warn};

use crate::apply::apply_function;
use crate::apply::failure::{connection_alive, error_text, Failure};
use crate::apply::pipeline::{call_ranges, source_time, Owner, Part, Pipeline};
use crate::apply::Target;
use crate::model::{ErrorKind, Event, Lsn, SourceTxn};
use crate::pg::types::JsonText;

type CallSlices<'a> = (Vec<&'a [Option<i32>]>, &'a [JsonText<'a>]);

impl Target {
    /// Applies a batch in one target transaction. On return `Ok`, the transaction committed:
    /// every running projection's changes and checkpoints, and any new failures, are durable.
    /// `Err` means nothing of the batch may be assumed applied (the caller reconnects).
    pub async fn apply(
        &mut self,
        batch: &[SourceTxn],
    ) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let Some(last) = batch.last().map(|t| t.end_lsn) else { return Ok(Vec::new()) };
        self.client.batch_execute("BEGIN").await?;
        let result = match self.begin_batch(batch).await {
            Ok(mut failures) => self.apply_in_transaction(batch, last).await.map(|f| {
                failures.extend(f);
                failures
            }),
            Err(e) => Err(e),
        };
        match result {
            Ok(failures) => {
                let commit = std::time::Instant::now();
                self.client.batch_execute("COMMIT").await?;
                debug!(
                    commit_ms = commit.elapsed().as_millis() as u64,
                    "target transaction committed"
                );
                for p in &mut self.projections {
                    if !p.failed && p.checkpoint.is_none_or(|c| c < last) {
                        p.checkpoint = Some(last);
                    }
                }
                Ok(failures)
            }
            Err(e) => {
                // The connection may be gone; the rollback is best effort. In-memory state may
                // now disagree with the database, so the caller must discard this Target.
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn apply_in_transaction(
        &mut self,
        batch: &[SourceTxn],
        last: Lsn,
    ) -> Result<Vec<Failure>, tokio_postgres::Error> {
        let done = self.apply_together(batch, last).await?;
        let mut failures = Vec::new();
        let mut start = 0;
        // Projections that run statement by statement in this batch because their apply
        // function failed, with the function's error when it was not a transient one.
        let mut by_statement = vec![false; self.projections.len()];
        let mut function_errors: Vec<(usize, String)> = Vec::new();
        // Happy path: every projection's statements go out in one pipeline, each projection
        // inside its own savepoint; a projection with an apply function sends one call per run
        // of compiled handlers instead of one statement per event. When the function fails, the
        // projection is rolled back to its savepoint and applied again statement by statement,
        // which finds the failing event exactly. When a handler statement fails, that
        // projection is rolled back to its savepoint, re-applied up to the source transaction
        // before the failing one, and marked failed; the projections after it are pipelined
        // again.
        while start < self.projections.len() {
            let mut pipeline = Pipeline::new(&self.client);
            let mut unknown_failure: Option<(usize, Lsn, &Event)> = None;
            for (i, p) in self.projections.iter().enumerate().skip(start) {
                if done[i] || p.failed || p.checkpoint.is_some_and(|c| c >= last) {
                    continue;
                }
                let (work, unknown) = p.work(batch, None);
                if let Some((lsn, ev)) = unknown {
                    // Stop the pipeline here: earlier projections still run, this one fails.
                    unknown_failure = Some((i, lsn, ev));
                    break;
                }
                let function = if by_statement[i] { None } else { p.function.as_ref() };
                pipeline.projection(Part {
                    index: i,
                    projection: p,
                    function,
                    work: &work,
                    checkpoint: (&self.checkpoint, last, source_time(batch, last)),
                });
            }

            let first_error = pipeline.run().await;
            match first_error {
                None => match unknown_failure {
                    Some((i, lsn, ev)) => {
                        let error = format!(
                            "no handler for event type {:?} and on_unknown = \"fail\"",
                            ev.event_type
                        );
                        failures.push(self.fail(i, batch, lsn, error, &ev.envelope).await?);
                        start = i + 1;
                    }
                    None => start = self.projections.len(),
                },
                Some((i, Owner::Function, e)) if connection_alive(&e) => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection")
                        .await?;
                    if !ErrorKind::of_postgres(&e).is_transient() {
                        function_errors.push((i, error_text(&e)));
                    }
                    by_statement[i] = true;
                    start = i;
                }
                Some((i, Owner::Event(lsn, ev), e))
                    if !ErrorKind::of_postgres(&e).is_transient() =>
                {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection")
                        .await?;
                    failures.push(self.fail(i, batch, lsn, error_text(&e), &ev.envelope).await?);
                    start = i + 1;
                }
                Some((_, _, e)) => return Err(e),
            }
        }
        let applier = self.apply_functions.applier();
        for (i, error) in function_errors {
            let p = &mut self.projections[i];
            if !p.failed {
                // The statements went through where the function did not: the function is not
                // equivalent for some handler (PL/pgSQL's rules differ from top-level SQL in
                // corners). Stay on the exact path for this projection.
                warn!(projection = %p.name, ?applier, %error, "apply function failed where the handler statements did not; this projection now runs statement by statement");
                p.function = None;
            }
        }
        Ok(failures)
    }

    /// The fastest path: one statement for every projection whose whole part of the batch runs
    /// through its apply function, the envelopes bound once, inside one savepoint with their
    /// checkpoints. Returns which projections it applied. When it fails (any error that leaves
    /// the session usable), everything it did is rolled back and those projections take the
    /// per-projection path, which finds out which one failed and where.
    async fn apply_together(
        &mut self,
        batch: &[SourceTxn],
        last: Lsn,
    ) -> Result<Vec<bool>, tokio_postgres::Error> {
        let mut done = vec![false; self.projections.len()];
        let (members, works): (Vec<usize>, Vec<_>) = self
            .projections
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                !p.failed && p.checkpoint.is_none_or(|c| c < last) && p.function.is_some()
            })
            .map(|(i, p)| (i, p.work(batch, None)))
            .filter(|(_, (work, unknown))| {
                unknown.is_none() && work.iter().all(|(h, _, _)| h.number.is_some())
            })
            .map(|(i, (work, _))| (i, work))
            .unzip();
        if members.is_empty() {
            return Ok(done);
        }
        if !self.together.contains_key(&members) {
            let names: Vec<&str> =
                members.iter().map(|&i| self.projections[i].name.as_str()).collect();
            let mut types = vec![Type::INT4_ARRAY; members.len()];
            types.push(Type::JSONB_ARRAY);
            let applier = self
                .apply_functions
                .applier()
                .expect("a projection has a function only when functions are on");
            let statement = self
                .client
                .prepare_typed(&apply_function::call_together(&names, applier), &types)
                .await?;
            self.together.insert(members.clone(), statement);
        }

        // The envelopes of every event some member handles, in batch order, and per member its
        // handler number for each of them (NULL when it has none).
        let mut next = vec![0; members.len()];
        let mut numbers: Vec<Vec<Option<i32>>> = vec![Vec::new(); members.len()];
        let mut envelopes = Vec::new();
        for ev in batch.iter().flat_map(|t| &t.events) {
            let mut any = false;
            let row: Vec<Option<i32>> = works
                .iter()
                .zip(next.iter_mut())
                .map(|(work, n)| match work.get(*n) {
                    Some((h, _, e)) if std::ptr::eq(*e, ev) => {
                        *n += 1;
                        any = true;
                        h.number
                    }
                    _ => None,
                })
                .collect();
            if any {
                envelopes.push(JsonText(&ev.envelope));
                for (column, number) in numbers.iter_mut().zip(row) {
                    column.push(number);
                }
            }
        }
        let ranges = call_ranges(&envelopes);
        // Per call: each member's handler numbers and the envelopes, as slices to bind.
        let slices: Vec<CallSlices<'_>> = ranges
            .iter()
            .map(|r| (numbers.iter().map(|n| &n[r.clone()]).collect(), &envelopes[r.clone()]))
            .collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = slices
            .iter()
            .map(|(n, e)| {
                n.iter()
                    .map(|n| n as &(dyn ToSql + Sync))
                    .chain(std::iter::once(e as &(dyn ToSql + Sync)))
                    .collect()
            })
            .collect();

        let time = source_time(batch, last);
        let client = &self.client;
        let statement = &self.together[&members];
        let mut pipeline = Pipeline::new(client);
        pipeline.control(0, "SAVEPOINT eventstore_batch");
        for params in &params {
            pipeline.push(0, Owner::Control, client.execute(statement, params));
        }
        for (&i, work) in members.iter().zip(&works) {
            let (name, count) = (self.projections[i].name.as_str(), work.len() as i64);
            let checkpoint = &self.checkpoint;
            pipeline.push(i, Owner::Control, async move {
                client.execute(checkpoint, &[&name, &last, &count, &time]).await
            });
        }
        pipeline.control(0, "RELEASE SAVEPOINT eventstore_batch");
        match pipeline.run().await.map(|(_, _, e)| e) {
            None => {
                for i in members {
                    done[i] = true;
                }
                Ok(done)
            }
            Some(e) if connection_alive(&e) => {
                debug!(error = %error_text(&e), "applying the batch through the apply functions together failed; applying per projection");
                self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_batch; RELEASE SAVEPOINT eventstore_batch").await?;
                Ok(done)
            }
            Some(e) => Err(e),
        }
    }

    /// Marks projection `i` failed at the source transaction ending at `failed_txn`, after
    /// applying the transactions of the batch that precede it (so its checkpoint is exact).
    async fn fail(
        &mut self,
        i: usize,
        batch: &[SourceTxn],
        failed_txn: Lsn,
        error: String,
        envelope: &str,
    ) -> Result<Failure, tokio_postgres::Error> {
        let p = &self.projections[i];
        let prefix_end = batch
            .iter()
            .map(|t| t.end_lsn)
            .filter(|l| *l < failed_txn && p.checkpoint.is_none_or(|c| *l > c))
            .max();
        let mut checkpoint = p.checkpoint;
        if let Some(prefix_end) = prefix_end {
            let (work, _) = p.work(batch, Some(prefix_end));
            let mut pipeline = Pipeline::new(&self.client);
            // Statement by statement: this is the path that locates failures exactly.
            pipeline.projection(Part {
                index: i,
                projection: p,
                function: None,
                work: &work,
                checkpoint: (&self.checkpoint, prefix_end, source_time(batch, prefix_end)),
            });
            match pipeline.run().await.map(|(_, _, e)| e) {
                None => checkpoint = Some(prefix_end),
                Some(e) if ErrorKind::of_postgres(&e).is_transient() => return Err(e),
                // Failed differently the second time: keep the old checkpoint.
                Some(_) => {
                    self.client.batch_execute("ROLLBACK TO SAVEPOINT eventstore_projection").await?
                }
            }
        }
        self.mark_failed(&self.projections[i].name, &error, Some(envelope)).await?;
        let p = &mut self.projections[i];
        p.failed = true;
        p.checkpoint = checkpoint;
        Ok(Failure { projection: p.name.clone(), checkpoint, error })
    }
}
