-- The physical floor: a table with the same columns, defaults, constraints and unique
-- indexes as eventstore.events (see extension/src/sql/bootstrap.sql), but without the two
-- paging indexes, the streams table, the triggers and the function call.
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE SEQUENCE bench.global_position_seq AS bigint;
CREATE TABLE bench.events (
    global_position bigint NOT NULL DEFAULT nextval('bench.global_position_seq')
                    PRIMARY KEY,
    stream_id       text NOT NULL,
    stream_version  bigint NOT NULL CHECK (stream_version > 0),
    event_id        uuid NOT NULL UNIQUE,
    event_type      text NOT NULL CHECK (event_type <> ''),
    data            jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, stream_version)
);

-- For the breakdown only: the floor plus the two paging indexes of eventstore.events
-- (transaction order and category order), to separate index maintenance from the API's cost.
CREATE FUNCTION bench.category(stream_id text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN split_part(stream_id, '-', 1);
CREATE SEQUENCE bench.global_position_idx_seq AS bigint;
CREATE TABLE bench.events_idx (LIKE bench.events INCLUDING ALL);
ALTER TABLE bench.events_idx
    ALTER global_position SET DEFAULT nextval('bench.global_position_idx_seq');
CREATE INDEX ON bench.events_idx (transaction_id, global_position);
CREATE INDEX ON bench.events_idx (bench.category(stream_id), transaction_id, global_position);

-- For the breakdown only: what append does, written as one plain SQL statement — upsert
-- the stream row (same definition as eventstore.streams), then insert into the table with
-- all five indexes. No function call, no JSON round trip, no trigger.
CREATE TABLE bench.streams (
    stream_id   text PRIMARY KEY CHECK (stream_id <> ''),
    category    text NOT NULL,
    version     bigint NOT NULL CHECK (version >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
