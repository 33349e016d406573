-- State eventstore-worker keeps in the target database. Applied at every start (and by the
-- `rebuild` and `retry` commands); idempotent. It may run on a connection whose search_path
-- holds a schema other roles can create in (where handlers resolve read-model tables), so a
-- function or operator that such a role could overload with a better match (polymorphic ones,
-- cross-type comparisons) is schema-qualified; pg_catalog is searched first for the rest.
--
-- Nothing here may lock eventstore_worker.projections more strongly than readers do when there
-- is nothing to change: a client inside wait_for holds ACCESS SHARE on it for the whole wait,
-- and ALTER TABLE takes ACCESS EXCLUSIVE even when IF NOT EXISTS makes it a no-op, so every
-- ALTER below only runs when the catalog says it is needed. The advisory lock serializes
-- workers and commands starting at once against one target (this file runs as one implicit
-- transaction), where CREATE ... IF NOT EXISTS or CREATE OR REPLACE FUNCTION would otherwise
-- fail with a duplicate key or "tuple concurrently updated".
SELECT pg_catalog.pg_advisory_xact_lock(4851733291037460811);

CREATE SCHEMA IF NOT EXISTS eventstore_worker;

CREATE TABLE IF NOT EXISTS eventstore_worker.projections (
    name            text PRIMARY KEY,
    -- running: applied from the replication stream. catching_up: resuming from its checkpoint
    -- through eventstore.events. rebuilding: being built afresh in shadow tables. failed: a
    -- handler failed; stopped until retried.
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'catching_up', 'rebuilding', 'failed')),
    -- End LSN of the last source transaction whose events this projection has applied (or
    -- skipped as unhandled); written in the same transaction as the read-model changes.
    checkpoint_lsn  pg_lsn,
    events_applied  bigint NOT NULL DEFAULT 0,
    last_error      text,
    -- Envelope of the event whose handler failed, when status = 'failed'.
    failed_event    jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE eventstore_worker.projections IS
    'One row per configured projection of eventstore-worker: progress and health.';

-- Commit-order map: every source transaction the stream delivered, by the end LSN of its
-- commit, written in the same target transaction as the batch that contained it. A projection
-- whose checkpoint is L has applied exactly the transactions with end_lsn <= L, so it can
-- resume from L by reading the later transactions' events from eventstore.events.
--
-- Stored in runs of up to 100 consecutive transactions, one row each (both arrays in commit
-- order, runs never overlapping): a drain records thousands of transactions per batch, and a
-- row per transaction cost the target backend a heap and an index insertion each, and the
-- walsender as many changes to decode. A run stays below the size PostgreSQL would move out
-- of line. The view source_transactions shows one row per transaction.
CREATE TABLE IF NOT EXISTS eventstore_worker.source_transaction_runs (
    last_end_lsn     pg_lsn PRIMARY KEY,
    end_lsns         pg_lsn[] NOT NULL,
    transaction_ids  xid8[] NOT NULL,
    CHECK (pg_catalog.cardinality(end_lsns) = pg_catalog.cardinality(transaction_ids) AND pg_catalog.cardinality(end_lsns) > 0)
);

-- Earlier builds kept the map as a table of one row per transaction under the view's name:
-- its rows become runs of one, and the view takes its place.
DO $do$
BEGIN
    IF EXISTS (SELECT FROM pg_class
                WHERE oid = pg_catalog.to_regclass('eventstore_worker.source_transactions')::pg_catalog.oid AND relkind = 'r') THEN
        INSERT INTO eventstore_worker.source_transaction_runs (last_end_lsn, end_lsns, transaction_ids)
        SELECT end_lsn, ARRAY[end_lsn], ARRAY[transaction_id]
          FROM eventstore_worker.source_transactions;
        DROP TABLE eventstore_worker.source_transactions;
    END IF;
    IF pg_catalog.to_regclass('eventstore_worker.source_transactions') IS NULL THEN
        CREATE VIEW eventstore_worker.source_transactions AS
        SELECT t.end_lsn, t.transaction_id
          FROM eventstore_worker.source_transaction_runs r,
               ROWS FROM (pg_catalog.unnest(r.end_lsns), pg_catalog.unnest(r.transaction_ids)) AS t(end_lsn, transaction_id);
        COMMENT ON VIEW eventstore_worker.source_transactions IS
            'The commit-order map of eventstore-worker, one row per source transaction.';
    END IF;
END
$do$;

-- The map holds every transaction with end_lsn > horizon (one row).
--
-- guard: a snapshot of the source such that every event transaction visible in it is in the
-- map or applied by every projection (source_map.rs, "The guard"); pruning removes only
-- transactions visible in it, so a recreated slot's missed transactions are exactly those
-- visible in the new slot's snapshot, not visible in the guard and not in the map.
-- next_guard/next_guard_lsn: a later snapshot and a WAL position read after it, which becomes
-- the guard once every checkpoint has passed that position. recovering: a slot is being
-- recreated (set before it is created, cleared with the recovered transactions' map rows).
-- source_timeline: the source's system identifier and timeline when the stream last started
-- (a promotion changes the timeline).
CREATE TABLE IF NOT EXISTS eventstore_worker.source_horizon (
    single   boolean PRIMARY KEY DEFAULT true CHECK (single),
    horizon  pg_lsn NOT NULL
);

-- Builds in progress: shadow tables being filled from eventstore.events (one row per
-- projection; its builder holds a session advisory lock while it lives).
CREATE TABLE IF NOT EXISTS eventstore_worker.rebuilds (
    name            text PRIMARY KEY,
    shadow_schema   text NOT NULL,
    version         text,
    status          text NOT NULL DEFAULT 'building' CHECK (status IN ('building', 'failed')),
    -- NULL while the snapshot of eventstore.events is being read; then the end LSN of the
    -- last source transaction the shadow tables contain.
    checkpoint_lsn  pg_lsn,
    -- Source time at checkpoint_lsn (see projections.checkpoint_time).
    checkpoint_time timestamptz,
    events_applied  bigint NOT NULL DEFAULT 0,
    last_error      text,
    failed_event    jsonb,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Read-your-writes and lag (docs/worker.md, "Read-your-writes").
--
-- checkpoint_lsn is the source position the projection reflects: every source transaction
-- that committed at or before it has been applied. It is the end of the last transaction
-- applied, or a later position the server reported while nothing was in flight (the
-- walsender sends transactions in commit order, so a keepalive at W that arrives after every
-- delivered transaction was applied proves that nothing committed at or before W is missing).
--
-- Added since the first release (which allowed only 'running' and 'failed'): version (the
-- configured version the read-model tables were built with), checkpoint_time (source time at
-- checkpoint_lsn, for lag), the lifecycle statuses, and rebuilds.checkpoint_time (becomes the
-- projection's when a build is swapped in).
DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute
                    WHERE attrelid = 'eventstore_worker.projections'::pg_catalog.regclass::pg_catalog.oid
                      AND attname = 'version' AND NOT attisdropped) THEN
        ALTER TABLE eventstore_worker.projections ADD COLUMN version text;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute
                    WHERE attrelid = 'eventstore_worker.projections'::pg_catalog.regclass::pg_catalog.oid
                      AND attname = 'checkpoint_time' AND NOT attisdropped) THEN
        ALTER TABLE eventstore_worker.projections ADD COLUMN checkpoint_time timestamptz;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_constraint
                    WHERE conrelid = 'eventstore_worker.projections'::pg_catalog.regclass::pg_catalog.oid
                      AND conname = 'projections_status_check'
                      AND pg_get_constraintdef(oid) LIKE '%catching_up%') THEN
        ALTER TABLE eventstore_worker.projections DROP CONSTRAINT IF EXISTS projections_status_check;
        ALTER TABLE eventstore_worker.projections ADD CONSTRAINT projections_status_check
            CHECK (status IN ('running', 'catching_up', 'rebuilding', 'failed'));
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute
                    WHERE attrelid = 'eventstore_worker.rebuilds'::pg_catalog.regclass::pg_catalog.oid
                      AND attname = 'checkpoint_time' AND NOT attisdropped) THEN
        ALTER TABLE eventstore_worker.rebuilds ADD COLUMN checkpoint_time timestamptz;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute
                    WHERE attrelid = 'eventstore_worker.source_horizon'::pg_catalog.regclass::pg_catalog.oid
                      AND attname = 'guard' AND NOT attisdropped) THEN
        ALTER TABLE eventstore_worker.source_horizon
            ADD COLUMN guard pg_snapshot,
            ADD COLUMN next_guard pg_snapshot,
            ADD COLUMN next_guard_lsn pg_lsn,
            ADD COLUMN recovering boolean NOT NULL DEFAULT false,
            ADD COLUMN source_timeline text;
    END IF;
END
$do$;
COMMENT ON COLUMN eventstore_worker.projections.checkpoint_lsn IS
    'Source position this projection reflects: every source transaction committed at or before it is applied.';
COMMENT ON COLUMN eventstore_worker.projections.checkpoint_time IS
    'Source server time at checkpoint_lsn (commit time of that transaction, or the server clock of the idle position).';

-- True as soon as `projection` reflects everything committed on the source up to `token`
-- (take it with pg_current_wal_lsn() right after the commit), false after `timeout`.
-- VOLATILE on purpose: a volatile PL/pgSQL function takes a fresh snapshot for every
-- statement in READ COMMITTED, so each check sees the worker's latest commit. In REPEATABLE
-- READ or SERIALIZABLE the whole transaction has one snapshot and no progress could ever be
-- seen, so that is an error rather than a silent timeout.
-- A projection that is catching up or rebuilding is not followed by the stream yet, and a
-- rebuild replaces its tables when it swaps: the wait goes on until it is running (or
-- failed, whose checkpoint is still exactly what its tables show) and reflects the token.
CREATE OR REPLACE FUNCTION eventstore_worker.wait_for(projection text, token pg_lsn, timeout interval DEFAULT '5s')
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
-- It runs with its caller's rights: no function another role planted on the caller's path.
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    deadline constant timestamptz := clock_timestamp() + timeout;
    -- Seconds between checks: 1 ms growing by a quarter each round (so a result is seen at
    -- most ~25% late) up to 50 ms: about 18 checks in the first 200 ms, then 20 a second.
    pause double precision := 0.001;
    reflected pg_lsn;
    state text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'eventstore_worker.wait_for cannot see progress in a % transaction',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = '25000',
                  DETAIL = 'The transaction keeps one snapshot, so the projection would never appear to advance.',
                  HINT = 'Call it in READ COMMITTED, before starting the REPEATABLE READ transaction that reads the read model.';
    END IF;
    LOOP
        SELECT p.checkpoint_lsn, p.status INTO reflected, state
          FROM eventstore_worker.projections p
         WHERE p.name = wait_for.projection;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'projection "%" does not exist', wait_for.projection
                USING ERRCODE = '42704',
                      HINT = 'eventstore_worker.projections lists the projections the worker has started.';
        END IF;
        IF reflected >= token AND state IN ('running', 'failed') THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(least(pause, greatest(extract(epoch FROM deadline - clock_timestamp()), 0)));
        pause := least(pause * 1.25, 0.05);
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION eventstore_worker.wait_for(text, pg_lsn, interval) IS
    'Read-your-writes: true once the projection reflects every source commit up to token, false after timeout.';
