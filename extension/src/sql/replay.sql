-- Replay and snapshots. replay, _aggregate and save_snapshot are C functions in this library
-- (src/replay.rs, src/snapshot.rs) declared by hand: they call the reducer through the function
-- manager themselves, so that its errors reach the caller unchanged.

CREATE FUNCTION eventstore.replay(stream_id text, reducer regprocedure,
                                  initial_state jsonb DEFAULT '{}',
                                  until_version bigint DEFAULT NULL,
                                  as_of timestamptz DEFAULT NULL,
                                  snapshot_name text DEFAULT NULL,
                                  upcast boolean DEFAULT true)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'eventstore_replay';

-- VOLATILE: the reducer is the caller's and may write.
COMMENT ON FUNCTION eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text, boolean) IS
'Fold a stream''s events, in version order, through reducer(state jsonb, event eventstore.events) '
'RETURNS jsonb, up to until_version and/or the longest prefix of the stream recorded at or before '
'as_of, starting from the newest snapshot named snapshot_name (default: the reducer''s '
'schema-qualified name) that this reducer''s definition folded within that bound. Events are '
'folded upcast to their type''s current version unless upcast is false.';

CREATE FUNCTION eventstore.save_snapshot(stream_id text, snapshot_name text,
                                         stream_version bigint, state jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'eventstore_save_snapshot';

CREATE FUNCTION eventstore.load_snapshot(stream_id text, snapshot_name text,
                                         max_version bigint DEFAULT NULL)
    RETURNS TABLE (stream_version bigint, state jsonb)
    LANGUAGE sql STABLE
AS $$
    SELECT s.stream_version, s.state FROM eventstore.snapshots s
    WHERE s.stream_id OPERATOR(pg_catalog.=) $1 AND s.snapshot_name OPERATOR(pg_catalog.=) $2
      AND s.stream_version OPERATOR(pg_catalog.<=) coalesce($3, 9223372036854775807)
    ORDER BY s.stream_version DESC
    LIMIT 1
$$;

CREATE FUNCTION eventstore._aggregate(stream_id text, reducer regprocedure, initial_state jsonb,
                                      snapshot_every int, upcast boolean,
                                      OUT stream_version bigint, OUT state jsonb)
    RETURNS record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'eventstore_aggregate';

-- Current state; saves a snapshot (named after the reducer) when at least snapshot_every
-- events were folded past the last one.
CREATE FUNCTION eventstore.aggregate(stream_id text, reducer regprocedure,
                                     initial_state jsonb DEFAULT '{}',
                                     snapshot_every int DEFAULT 100,
                                     upcast boolean DEFAULT true)
    RETURNS TABLE (stream_version bigint, state jsonb)
    LANGUAGE sql VOLATILE
AS $$
    SELECT a.stream_version, a.state FROM eventstore._aggregate($1, $2, $3, $4, $5) a
$$;
