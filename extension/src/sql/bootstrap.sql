-- Tables, indexes and privileges of the event store. Schema `eventstore` is created by
-- CREATE EXTENSION (control file). Functions written in Rust follow; finalize.sql wires them up.

-- jsonb keeps strings in the database encoding and the extension reads them as UTF-8: refuse
-- any other encoding up front rather than fail on the first non-ASCII event.
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
        RAISE EXCEPTION 'pg_eventstore needs a UTF8 database: database "%" uses %',
            pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = '0A000',
                  HINT = 'Create the database with ENCODING ''UTF8'' (and TEMPLATE template0) and install the extension there.';
    END IF;
END
$$;

-- Category of a stream: the part of its id before the first '-' ('order-42' -> 'order').
CREATE FUNCTION eventstore.category(stream_id text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN pg_catalog.split_part(stream_id, '-', 1);

-- Store-wide positions. A sequence, so positions are unique and increasing in allocation
-- order, but NOT in commit order: readers of the whole store use (transaction_id,
-- global_position) and stop below the oldest running transaction (see read_all).
CREATE SEQUENCE eventstore.global_position_seq AS bigint;

-- One row per stream. Appends to a stream serialize on its row; appends to different
-- streams touch different rows and never wait for each other. Only the API updates rows here
-- (the append_only trigger), and it rejects an empty stream id and only ever raises a version, so
-- the table has no CHECK constraints: PostgreSQL would parse and evaluate them on every
-- append.
CREATE TABLE eventstore.streams (
    stream_id   text PRIMARY KEY,
    category    text NOT NULL,
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The log. Rows are never updated or deleted (see the append_only triggers).
CREATE TABLE eventstore.events (
    global_position bigint NOT NULL DEFAULT nextval('eventstore.global_position_seq')
                    PRIMARY KEY,
    stream_id       text NOT NULL,
    stream_version  bigint NOT NULL CHECK (stream_version > 0),
    event_id        uuid NOT NULL UNIQUE,
    event_type      text NOT NULL CHECK (event_type <> ''),
    data            jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    schema_version  integer NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    tags            text[] NOT NULL DEFAULT '{}',
    UNIQUE (stream_id, stream_version)
);

-- Gap-free paging through the whole store and through one category.
CREATE INDEX events_by_transaction ON eventstore.events (transaction_id, global_position);
CREATE INDEX events_by_category
    ON eventstore.events (eventstore.category(stream_id), transaction_id, global_position);
-- Queries of append conditions and read_query (docs/dcb.md): tagged events by tag (untagged
-- events, most of a store, are not in it; fastupdate off, so a condition's lookup never scans a
-- pending list), and events by type. On the type's hash, so a type of
-- any length is indexed; the query compares the type itself as well.
CREATE INDEX events_by_tag ON eventstore.events USING gin (tags) WITH (fastupdate = off)
    WHERE tags <> '{}';
CREATE INDEX events_by_type ON eventstore.events (pg_catalog.hashtext(event_type));

-- Snapshots of folded state (see replay/aggregate). Derived data, kept by the API only.
-- fingerprint: of the reducer that folded the state (src/replay.rs, REDUCER_SQL); replay uses a
-- snapshot only under a reducer with the same fingerprint. NULL: saved by an administrator
-- with save_snapshot, trusted under its name.
CREATE TABLE eventstore.snapshots (
    stream_id       text NOT NULL,
    snapshot_name   text NOT NULL CHECK (snapshot_name <> ''),
    stream_version  bigint NOT NULL CHECK (stream_version > 0),
    state           jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    fingerprint     text,
    PRIMARY KEY (stream_id, snapshot_name, stream_version)
);
CREATE INDEX snapshots_by_name ON eventstore.snapshots (snapshot_name);

-- pg_dump must carry the store's rows and the sequence position.
SELECT pg_catalog.pg_extension_config_dump('eventstore.events', '');
SELECT pg_catalog.pg_extension_config_dump('eventstore.streams', '');
SELECT pg_catalog.pg_extension_config_dump('eventstore.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('eventstore.global_position_seq', '');

-- Nothing is readable or writable by default: eventstore.grant_reader and grant_writer
-- (privileges.sql) give roles what they need, and no role but the owner ever writes a table.
REVOKE ALL ON ALL TABLES IN SCHEMA eventstore FROM PUBLIC;
REVOKE ALL ON SEQUENCE eventstore.global_position_seq FROM PUBLIC;
