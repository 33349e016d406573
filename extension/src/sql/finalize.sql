-- Reads, written in SQL so the planner can inline them into the caller's query, and the
-- triggers that keep the store append-only. Runs after the Rust functions exist.

-- PL/pgSQL, not SQL: a SQL function whose body has a subquery is never inlined, and then
-- PostgreSQL plans its body afresh in every query that calls it (about 50 µs, more than the
-- lookup itself); PL/pgSQL keeps the plan for the session. This is the call that precedes most
-- appends with an expected version.
CREATE FUNCTION eventstore.stream_version(stream_id text) RETURNS bigint
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN coalesce((SELECT s.version FROM eventstore.streams s WHERE s.stream_id = $1), 0);
END
$$;

CREATE FUNCTION eventstore.read_stream(stream_id text, from_version bigint DEFAULT 1,
                                       max_count bigint DEFAULT NULL)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_stream_read($1, $2, false, $3)
      AND e.stream_id = $1 AND e.stream_version >= $2
    ORDER BY e.stream_version
    LIMIT $3
$$;

CREATE FUNCTION eventstore.read_stream_backward(stream_id text, from_version bigint DEFAULT NULL,
                                                max_count bigint DEFAULT NULL)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_stream_read($1, $2, true, $3)
      AND e.stream_id = $1 AND e.stream_version <= coalesce($2, 9223372036854775807)
    ORDER BY e.stream_version DESC
    LIMIT $3
$$;

-- Store-wide paging. The cursor is the (transaction_id, global_position) of the last event
-- the caller has seen. Positions are allocated before commit, so a transaction can commit a
-- lower position after a reader has passed it; ordering by the appending transaction and
-- returning only transactions older than every one still running (the snapshot's xmin) means
-- nothing can later appear before the cursor. Writers are never blocked by readers.
CREATE FUNCTION eventstore.read_all(after_transaction_id xid8 DEFAULT '0',
                                    after_global_position bigint DEFAULT 0,
                                    max_count bigint DEFAULT 1000)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_page_read($3)
      AND (e.transaction_id, e.global_position) > (coalesce($1, '0'::xid8), coalesce($2, 0))
      AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT $3
$$;

CREATE FUNCTION eventstore.read_category(category text,
                                         after_transaction_id xid8 DEFAULT '0',
                                         after_global_position bigint DEFAULT 0,
                                         max_count bigint DEFAULT 1000)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_category_read($1, $4)
      AND eventstore.category(e.stream_id) = $1
      AND (e.transaction_id, e.global_position) > (coalesce($2, '0'::xid8), coalesce($3, 0))
      AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT $4
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
