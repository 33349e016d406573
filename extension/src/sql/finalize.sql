-- Reads, written in SQL so the planner can inline them into the caller's query, and the
-- triggers that keep the store append-only. Runs after the Rust functions exist.
--
-- Inlined SQL bodies are parsed with the caller's search_path, so every function, operator and
-- type they name is schema-qualified: an exact-match overload in a schema the caller put first
-- must never be picked (docs/security.md).

-- PL/pgSQL, not SQL: a SQL function whose body has a subquery is never inlined, and then
-- PostgreSQL plans its body afresh in every query that calls it (about 50 µs, more than the
-- lookup itself); PL/pgSQL keeps the plan for the session. This is the call that precedes most
-- appends with an expected version.
CREATE FUNCTION eventstore.stream_version(stream_id text) RETURNS bigint
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN coalesce((SELECT s.version FROM eventstore.streams s
                     WHERE s.stream_id OPERATOR(pg_catalog.=) $1), 0);
END
$$;

-- Every read returns events upcast to their type's current version (src/upcast.rs), or as
-- stored with upcast => false. The row is built column by column: the three _upcast_ functions
-- return an event with no upcaster route as it is.
CREATE FUNCTION eventstore.read_stream(stream_id text, from_version bigint DEFAULT 1,
                                       max_count bigint DEFAULT NULL, upcast boolean DEFAULT true)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE PARALLEL RESTRICTED
AS $$
    SELECT e.global_position, e.stream_id, e.stream_version, e.event_id,
           eventstore._upcast_type(e.event_type, e.schema_version, $4) AS event_type,
           eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, $4,
                                   e.stream_id, e.stream_version, e.global_position) AS data,
           e.metadata, e.recorded_at, e.transaction_id,
           eventstore._upcast_version(e.event_type, e.schema_version, $4) AS schema_version,
           e.tags
    FROM eventstore.events e
    WHERE eventstore._check_stream_read($1, $2, false, $3)
      AND e.stream_id OPERATOR(pg_catalog.=) $1 AND e.stream_version OPERATOR(pg_catalog.>=) $2
    ORDER BY e.stream_version
    LIMIT $3
$$;

CREATE FUNCTION eventstore.read_stream_backward(stream_id text, from_version bigint DEFAULT NULL,
                                                max_count bigint DEFAULT NULL,
                                                upcast boolean DEFAULT true)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE PARALLEL RESTRICTED
AS $$
    SELECT e.global_position, e.stream_id, e.stream_version, e.event_id,
           eventstore._upcast_type(e.event_type, e.schema_version, $4) AS event_type,
           eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, $4,
                                   e.stream_id, e.stream_version, e.global_position) AS data,
           e.metadata, e.recorded_at, e.transaction_id,
           eventstore._upcast_version(e.event_type, e.schema_version, $4) AS schema_version,
           e.tags
    FROM eventstore.events e
    WHERE eventstore._check_stream_read($1, $2, true, $3)
      AND e.stream_id OPERATOR(pg_catalog.=) $1
      AND e.stream_version OPERATOR(pg_catalog.<=) coalesce($2, 9223372036854775807)
    ORDER BY e.stream_version DESC
    LIMIT $3
$$;

-- Store-wide paging. The cursor is the (transaction_id, global_position) of the last event
-- the caller has seen. Positions are allocated before commit, so a transaction can commit a
-- lower position after a reader has passed it; ordering by the appending transaction and
-- returning only transactions older than every one still running (the snapshot's xmin) means
-- nothing can later appear before the cursor. Writers are never blocked by readers.
-- max_count NULL means the default page, 1000: a page is never the whole store.
CREATE FUNCTION eventstore.read_all(after_transaction_id xid8 DEFAULT '0',
                                    after_global_position bigint DEFAULT 0,
                                    max_count bigint DEFAULT 1000,
                                    upcast boolean DEFAULT true)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE
AS $$
    SELECT e.global_position, e.stream_id, e.stream_version, e.event_id,
           eventstore._upcast_type(e.event_type, e.schema_version, $4) AS event_type,
           eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, $4,
                                   e.stream_id, e.stream_version, e.global_position) AS data,
           e.metadata, e.recorded_at, e.transaction_id,
           eventstore._upcast_version(e.event_type, e.schema_version, $4) AS schema_version,
           e.tags
    FROM eventstore.events e
    WHERE eventstore._check_page_read($3)
      AND (e.transaction_id, e.global_position)
          OPERATOR(pg_catalog.>) (coalesce($1, '0'::pg_catalog.xid8), coalesce($2, 0))
      AND e.transaction_id
          OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT coalesce($3, 1000)
$$;

CREATE FUNCTION eventstore.read_category(category text,
                                         after_transaction_id xid8 DEFAULT '0',
                                         after_global_position bigint DEFAULT 0,
                                         max_count bigint DEFAULT 1000,
                                         upcast boolean DEFAULT true)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE
AS $$
    SELECT e.global_position, e.stream_id, e.stream_version, e.event_id,
           eventstore._upcast_type(e.event_type, e.schema_version, $5) AS event_type,
           eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, $5,
                                   e.stream_id, e.stream_version, e.global_position) AS data,
           e.metadata, e.recorded_at, e.transaction_id,
           eventstore._upcast_version(e.event_type, e.schema_version, $5) AS schema_version,
           e.tags
    FROM eventstore.events e
    WHERE eventstore._check_category_read($1, $4)
      AND eventstore.category(e.stream_id) OPERATOR(pg_catalog.=) $1
      AND (e.transaction_id, e.global_position)
          OPERATOR(pg_catalog.>) (coalesce($2, '0'::pg_catalog.xid8), coalesce($3, 0))
      AND e.transaction_id
          OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT coalesce($4, 1000)
$$;

-- Append-only for everyone, superusers included. ENABLE ALWAYS keeps the triggers firing
-- under session_replication_role = replica too. 'api' lets the extension's own functions
-- maintain streams and snapshots; nothing may change events.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON eventstore.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventstore.append_only();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON eventstore.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventstore.append_only();
-- On streams the trigger is per row: every append upserts its stream row, and PostgreSQL
-- fires statement-level UPDATE triggers for each INSERT ... ON CONFLICT DO UPDATE, even one
-- that inserts. Per row, it runs only when a row is actually updated or deleted.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON eventstore.streams
    FOR EACH ROW EXECUTE FUNCTION eventstore.append_only('api');
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON eventstore.streams
    FOR EACH STATEMENT EXECUTE FUNCTION eventstore.append_only();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON eventstore.snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION eventstore.append_only('api');
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON eventstore.snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION eventstore.append_only();
ALTER TABLE eventstore.events ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE eventstore.events ENABLE ALWAYS TRIGGER append_only_truncate;
ALTER TABLE eventstore.streams ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE eventstore.streams ENABLE ALWAYS TRIGGER append_only_truncate;
ALTER TABLE eventstore.snapshots ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE eventstore.snapshots ENABLE ALWAYS TRIGGER append_only_truncate;

-- ---------------------------------------------------------------------------------------------
-- Who may do what. Application roles never hold a write privilege on a store table: appends go
-- through eventstore.append/append_event (SECURITY DEFINER), snapshots are saved by aggregate
-- itself, and the owner alone saves or deletes snapshots by hand. These functions are the
-- only grants a user needs (docs/security.md).

-- The functions each kind of role may call, in one place for grant_* and revoke_access.
CREATE FUNCTION eventstore._api_functions(level text) RETURNS regprocedure[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE $1
        WHEN 'reader' THEN ARRAY[
            'eventstore.category(text)',
            'eventstore.stream_version(text)',
            'eventstore.read_stream(text, bigint, bigint, boolean)',
            'eventstore.read_stream_backward(text, bigint, bigint, boolean)',
            'eventstore.read_all(xid8, bigint, bigint, boolean)',
            'eventstore.read_category(text, xid8, bigint, bigint, boolean)',
            'eventstore._check_stream_read(text, bigint, boolean, bigint)',
            'eventstore._check_page_read(bigint)',
            'eventstore._check_category_read(text, bigint)',
            'eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text, boolean)',
            'eventstore.load_snapshot(text, text, bigint)',
            'eventstore.merge(jsonb, eventstore.events)',
            'eventstore.read_horizon()',
            'eventstore._upcast_type(text, integer, boolean)',
            'eventstore._upcast_version(text, integer, boolean)',
            'eventstore._upcast_data(text, integer, jsonb, jsonb, boolean, text, bigint, bigint)',
            'eventstore._registry()',
            'eventstore._declarations()',
            'eventstore._definition(regprocedure)',
            'eventstore._event_types()',
            'eventstore.read_query(jsonb, bigint, boolean)']::regprocedure[]
        WHEN 'writer' THEN ARRAY[
            'eventstore.append(text, jsonb, bigint, jsonb)',
            'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid, integer, text[], jsonb)',
            'eventstore.append_multi(jsonb, jsonb)',
            'eventstore.aggregate(text, regprocedure, jsonb, integer, boolean)',
            'eventstore._aggregate(text, regprocedure, jsonb, integer, boolean)']::regprocedure[]
    END
$$;

-- Read and replay: SELECT on the tables, EXECUTE on the read functions. Appending is 42501.
CREATE FUNCTION eventstore.grant_reader(role regrole) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA eventstore TO %s', role);
    EXECUTE format('GRANT SELECT ON eventstore.events, eventstore.streams, eventstore.snapshots, '
                   'eventstore.events_current, eventstore.event_types TO %s', role);
    FOREACH f IN ARRAY eventstore._api_functions('reader') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, role);
    END LOOP;
END
$$;

-- What a reader may, and append, append_event and aggregate (which saves snapshots itself).
CREATE FUNCTION eventstore.grant_writer(role regrole) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    PERFORM eventstore.grant_reader(role);
    FOREACH f IN ARRAY eventstore._api_functions('writer') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, role);
    END LOOP;
END
$$;

-- Undoes grant_reader and grant_writer.
CREATE FUNCTION eventstore.revoke_access(role regrole) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY eventstore._api_functions('writer')
                       OPERATOR(pg_catalog.||) eventstore._api_functions('reader') LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', f, role);
    END LOOP;
    EXECUTE format('REVOKE ALL ON eventstore.events, eventstore.streams, eventstore.snapshots, '
                   'eventstore.events_current, eventstore.event_types FROM %s', role);
    EXECUTE format('REVOKE ALL ON SCHEMA eventstore FROM %s', role);
END
$$;

-- Why read_all and read_category may return nothing yet: they return only events of
-- transactions older than every transaction still running, in any database of the cluster.
-- One row per running transaction that has an xid (prepared ones included), oldest first;
-- holds_horizon marks the one the readers wait for. SECURITY DEFINER so that a reader sees every
-- session; it shows no query text.
CREATE FUNCTION eventstore.read_horizon()
    RETURNS TABLE (xid xid, pid integer, database name, role name, application_name text,
                   state text, xact_start timestamptz, xact_age interval, prepared boolean,
                   holds_horizon boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.xid, t.pid, t.database, t.role, t.application_name, t.state, t.xact_start,
           pg_catalog.now() OPERATOR(pg_catalog.-) t.xact_start, t.prepared,
           t.xid OPERATOR(pg_catalog.=)
               pg_catalog.xid(pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()))
    FROM (SELECT a.backend_xid, a.pid, a.datname, a.usename, a.application_name, a.state,
                 a.xact_start, false
          FROM pg_catalog.pg_stat_activity a WHERE a.backend_xid IS NOT NULL
          UNION ALL
          SELECT p.transaction, NULL, p.database, p.owner, p.gid, 'prepared', p.prepared, true
          FROM pg_catalog.pg_prepared_xacts p)
         AS t(xid, pid, database, role, application_name, state, xact_start, prepared)
    ORDER BY pg_catalog.age(t.xid) DESC
$$;

-- Nothing runs for PUBLIC: least privilege, granted by the functions above. Last in the script,
-- so it covers every function the extension creates.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA eventstore FROM PUBLIC;
