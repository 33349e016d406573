-- State eventstore-worker keeps in the target database. Applied at every start; idempotent.
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

-- Added after the first release: the configured version the read-model tables were built with.
ALTER TABLE eventstore_worker.projections ADD COLUMN IF NOT EXISTS version text;

-- The first release allowed only 'running' and 'failed'.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'eventstore_worker.projections'::regclass
                      AND conname = 'projections_status_check'
                      AND pg_get_constraintdef(oid) LIKE '%catching_up%') THEN
        ALTER TABLE eventstore_worker.projections DROP CONSTRAINT IF EXISTS projections_status_check;
        ALTER TABLE eventstore_worker.projections ADD CONSTRAINT projections_status_check
            CHECK (status IN ('running', 'catching_up', 'rebuilding', 'failed'));
    END IF;
END
$$;

-- Commit-order map: every source transaction the stream delivered, by the end LSN of its
-- commit, written in the same target transaction as the batch that contained it. A projection
-- whose checkpoint is L has applied exactly the transactions with end_lsn <= L, so it can
-- resume from L by reading the later transactions' events from eventstore.events.
CREATE TABLE IF NOT EXISTS eventstore_worker.source_transactions (
    end_lsn         pg_lsn PRIMARY KEY,
    transaction_id  xid8 NOT NULL
);

-- source_transactions holds every transaction with end_lsn > horizon (one row).
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
    events_applied  bigint NOT NULL DEFAULT 0,
    last_error      text,
    failed_event    jsonb,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
