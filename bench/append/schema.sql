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
    stream_id   text PRIMARY KEY,
    category    text NOT NULL,
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The simplest thing a user would write instead: append in PL/pgSQL with the same checks
-- (arguments, expected version, per-stream serialization on a streams row), into a copy of
-- eventstore.events with all five of its indexes. Ids are gen_random_uuid(); no idempotent
-- retry, no custom SQLSTATE messages beyond the codes.
CREATE SEQUENCE bench.pl_position_seq AS bigint;
CREATE TABLE bench.pl_events (LIKE bench.events INCLUDING ALL);
ALTER TABLE bench.pl_events ALTER global_position SET DEFAULT nextval('bench.pl_position_seq');
CREATE INDEX ON bench.pl_events (transaction_id, global_position);
CREATE INDEX ON bench.pl_events (bench.category(stream_id), transaction_id, global_position);
CREATE TABLE bench.pl_streams (LIKE bench.streams INCLUDING ALL);

CREATE FUNCTION bench.pl_check(stream_id text, expected bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF stream_id IS NULL OR btrim(stream_id) = '' THEN
        RAISE EXCEPTION 'invalid stream_id: must not be empty' USING ERRCODE = '22023';
    END IF;
    IF expected < -1 THEN
        RAISE EXCEPTION 'invalid expected_version' USING ERRCODE = '22023';
    END IF;
END $$;

-- Moves the stream's version by n (locking its row) and checks the expected version.
CREATE FUNCTION bench.pl_bump(p_stream text, n bigint, expected bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE before bigint;
BEGIN
    INSERT INTO bench.pl_streams AS s (stream_id, category, version)
    VALUES (p_stream, bench.category(p_stream), n)
    ON CONFLICT (stream_id) DO UPDATE SET version = s.version + EXCLUDED.version, updated_at = now()
    RETURNING s.version - n INTO before;
    IF expected IS NOT NULL AND NOT (expected = before OR (expected = -1 AND before > 0)) THEN
        RAISE EXCEPTION 'wrong expected version for stream "%": expected %, actual %',
            p_stream, expected, before USING ERRCODE = 'ES001';
    END IF;
    RETURN before;
END $$;

CREATE FUNCTION bench.pl_append_event(p_stream text, p_type text, p_data jsonb,
                                      p_metadata jsonb DEFAULT '{}', p_expected bigint DEFAULT NULL)
RETURNS TABLE (event_id uuid, stream_version bigint, global_position bigint)
LANGUAGE plpgsql AS $$
DECLARE before bigint;
BEGIN
    PERFORM bench.pl_check(p_stream, p_expected);
    IF p_type IS NULL OR btrim(p_type) = '' THEN
        RAISE EXCEPTION 'invalid event_type: is required' USING ERRCODE = '22023';
    END IF;
    IF p_data IS NULL THEN
        RAISE EXCEPTION 'invalid data: must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION 'invalid metadata: must be a JSON object' USING ERRCODE = '22023';
    END IF;
    before := bench.pl_bump(p_stream, 1, p_expected);
    RETURN QUERY
    INSERT INTO bench.pl_events AS e (stream_id, stream_version, event_id, event_type, data, metadata)
    VALUES (p_stream, before + 1, gen_random_uuid(), p_type, p_data, p_metadata)
    RETURNING e.event_id, e.stream_version, e.global_position;
END $$;

CREATE FUNCTION bench.pl_append(p_stream text, p_events jsonb, p_expected bigint DEFAULT NULL)
RETURNS TABLE (event_id uuid, stream_version bigint, global_position bigint)
LANGUAGE plpgsql AS $$
DECLARE before bigint; bad bigint;
BEGIN
    PERFORM bench.pl_check(p_stream, p_expected);
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' OR jsonb_array_length(p_events) = 0 THEN
        RAISE EXCEPTION 'invalid events: must be a non-empty JSON array' USING ERRCODE = '22023';
    END IF;
    SELECT n - 1 INTO bad FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, n)
    WHERE jsonb_typeof(e) <> 'object'
       OR jsonb_typeof(e->'type') IS DISTINCT FROM 'string' OR btrim(e->>'type') = ''
       OR coalesce(jsonb_typeof(e->'metadata'), 'object') NOT IN ('object', 'null')
       OR (e ? 'id' AND (e->>'id') !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$')
       OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k WHERE k NOT IN ('type', 'data', 'metadata', 'id'))
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid events[%]', bad USING ERRCODE = '22023';
    END IF;
    before := bench.pl_bump(p_stream, jsonb_array_length(p_events), p_expected);
    RETURN QUERY
    INSERT INTO bench.pl_events AS ev (stream_id, stream_version, event_id, event_type, data, metadata)
    SELECT p_stream, before + t.n, coalesce((t.e->>'id')::uuid, gen_random_uuid()), t.e->>'type',
           coalesce(t.e->'data', '{}'),
           CASE WHEN jsonb_typeof(t.e->'metadata') = 'object' THEN t.e->'metadata' ELSE '{}' END
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, n)
    RETURNING ev.event_id, ev.stream_version, ev.global_position;
END $$;

-- Hot-stream contention: read the stream's version, append with it as the expected version.
-- A lost race (ES001) is caught and counted as an attempt that committed nothing, so pgbench
-- keeps going; the same wrapper is used for both contenders.
CREATE FUNCTION bench.hot_ours(p_stream text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM eventstore.append_event(p_stream, 'Tick', '{"n": 1}',
                                    expected_version => eventstore.stream_version(p_stream));
    RETURN true;
EXCEPTION WHEN SQLSTATE 'ES001' THEN
    RETURN false;
END $$;

CREATE FUNCTION bench.hot_plpgsql(p_stream text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.pl_append_event(p_stream, 'Tick', '{"n": 1}', '{}',
        coalesce((SELECT version FROM bench.pl_streams WHERE stream_id = p_stream), 0));
    RETURN true;
EXCEPTION WHEN SQLSTATE 'ES001' THEN
    RETURN false;
END $$;

-- For the breakdown only: append_event's own code, declared without SECURITY DEFINER and its
-- pinned search_path (the benchmark runs as a superuser), to measure what those two cost.
CREATE FUNCTION bench.append_event_invoker(stream_id text, event_type text, data jsonb,
                                           metadata jsonb DEFAULT '{}',
                                           expected_version bigint DEFAULT NULL,
                                           event_id uuid DEFAULT NULL)
    RETURNS TABLE (event_id uuid, stream_version bigint, global_position bigint)
    LANGUAGE c VOLATILE
    AS '$libdir/pg_eventstore', 'append_event_wrapper';
