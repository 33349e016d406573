-- State eventstore-worker keeps in the target database. Applied at every start; idempotent.
CREATE SCHEMA IF NOT EXISTS eventstore_worker;

CREATE TABLE IF NOT EXISTS eventstore_worker.projections (
    name            text PRIMARY KEY,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'failed')),
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
