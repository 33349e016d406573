-- pg_eventstore 0.1.0 -> 0.2.0: writes only through the API, every internal reference
-- schema-qualified, snapshots tied to the reducer definition that folded them, as_of folding a
-- prefix of the stream, read_all pages bounded, and the horizon visible (docs/security.md).
\echo Use "ALTER EXTENSION pg_eventstore UPDATE TO '0.2.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION eventstore.category(stream_id text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN pg_catalog.split_part(stream_id, '-', 1);

-- Snapshots record the reducer definition that folded them. Those saved by 0.1.0 may have been
-- written by any role holding INSERT on the table, so none is trusted: they stay, under a
-- fingerprint no reducer has, and aggregate folds and saves new ones.
ALTER TABLE eventstore.snapshots ADD COLUMN fingerprint text DEFAULT 'saved by 0.1.0, unverified';
ALTER TABLE eventstore.snapshots ALTER COLUMN fingerprint DROP DEFAULT;

-- The write functions run as the owner, with a pinned search_path.
ALTER FUNCTION eventstore.append(text, jsonb, bigint)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- replay runs the caller's reducer, which may write.
ALTER FUNCTION eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text) VOLATILE;

COMMENT ON FUNCTION eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text) IS
'Fold a stream''s events, in version order, through reducer(state jsonb, event eventstore.events) '
'RETURNS jsonb, up to until_version and/or the longest prefix of the stream recorded at or before '
'as_of, starting from the newest snapshot named snapshot_name (default: the reducer''s '
'schema-qualified name) that this reducer''s definition folded within that bound.';


CREATE OR REPLACE FUNCTION eventstore.load_snapshot(stream_id text, snapshot_name text,
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

CREATE OR REPLACE FUNCTION eventstore.stream_version(stream_id text) RETURNS bigint
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN coalesce((SELECT s.version FROM eventstore.streams s
                     WHERE s.stream_id OPERATOR(pg_catalog.=) $1), 0);
END
$$;

CREATE OR REPLACE FUNCTION eventstore.read_stream(stream_id text, from_version bigint DEFAULT 1,
                                       max_count bigint DEFAULT NULL)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_stream_read($1, $2, false, $3)
      AND e.stream_id OPERATOR(pg_catalog.=) $1 AND e.stream_version OPERATOR(pg_catalog.>=) $2
    ORDER BY e.stream_version
    LIMIT $3
$$;

CREATE OR REPLACE FUNCTION eventstore.read_stream_backward(stream_id text, from_version bigint DEFAULT NULL,
                                                max_count bigint DEFAULT NULL)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_stream_read($1, $2, true, $3)
      AND e.stream_id OPERATOR(pg_catalog.=) $1
      AND e.stream_version OPERATOR(pg_catalog.<=) coalesce($2, 9223372036854775807)
    ORDER BY e.stream_version DESC
    LIMIT $3
$$;

CREATE OR REPLACE FUNCTION eventstore.read_all(after_transaction_id xid8 DEFAULT '0',
                                    after_global_position bigint DEFAULT 0,
                                    max_count bigint DEFAULT 1000)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_page_read($3)
      AND (e.transaction_id, e.global_position)
          OPERATOR(pg_catalog.>) (coalesce($1, '0'::pg_catalog.xid8), coalesce($2, 0))
      AND e.transaction_id
          OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT coalesce($3, 1000)
$$;

CREATE OR REPLACE FUNCTION eventstore.read_category(category text,
                                         after_transaction_id xid8 DEFAULT '0',
                                         after_global_position bigint DEFAULT 0,
                                         max_count bigint DEFAULT 1000)
    RETURNS SETOF eventstore.events
    LANGUAGE sql STABLE
AS $$
    SELECT e.* FROM eventstore.events e
    WHERE eventstore._check_category_read($1, $4)
      AND eventstore.category(e.stream_id) OPERATOR(pg_catalog.=) $1
      AND (e.transaction_id, e.global_position)
          OPERATOR(pg_catalog.>) (coalesce($2, '0'::pg_catalog.xid8), coalesce($3, 0))
      AND e.transaction_id
          OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
    ORDER BY e.transaction_id, e.global_position
    LIMIT coalesce($4, 1000)
$$;

CREATE FUNCTION eventstore._api_functions(level text) RETURNS regprocedure[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE $1
        WHEN 'reader' THEN ARRAY[
            'eventstore.category(text)',
            'eventstore.stream_version(text)',
            'eventstore.read_stream(text, bigint, bigint)',
            'eventstore.read_stream_backward(text, bigint, bigint)',
            'eventstore.read_all(xid8, bigint, bigint)',
            'eventstore.read_category(text, xid8, bigint, bigint)',
            'eventstore._check_stream_read(text, bigint, boolean, bigint)',
            'eventstore._check_page_read(bigint)',
            'eventstore._check_category_read(text, bigint)',
            'eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text)',
            'eventstore.load_snapshot(text, text, bigint)',
            'eventstore.merge(jsonb, eventstore.events)',
            'eventstore.read_horizon()']::regprocedure[]
        WHEN 'writer' THEN ARRAY[
            'eventstore.append(text, jsonb, bigint)',
            'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid)',
            'eventstore.aggregate(text, regprocedure, jsonb, integer)',
            'eventstore._aggregate(text, regprocedure, jsonb, integer)']::regprocedure[]
    END
$$;

CREATE FUNCTION eventstore.grant_reader(role regrole) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA eventstore TO %s', role);
    EXECUTE format('GRANT SELECT ON eventstore.events, eventstore.streams, eventstore.snapshots TO %s',
                   role);
    FOREACH f IN ARRAY eventstore._api_functions('reader') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, role);
    END LOOP;
END
$$;

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
    EXECUTE format('REVOKE ALL ON eventstore.events, eventstore.streams, eventstore.snapshots FROM %s',
                   role);
    EXECUTE format('REVOKE ALL ON SCHEMA eventstore FROM %s', role);
END
$$;

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

-- 0.1.0 told users to grant application roles INSERT on the tables (and UPDATE on streams, USAGE
-- on the sequence). Every role that could append keeps appending, now through grant_writer;
-- every other role that could read keeps reading, through grant_reader; and no role but the
-- owner keeps a write privilege on a store table.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.grantee::regrole AS role,
               bool_or(a.privilege_type OPERATOR(pg_catalog.=) 'INSERT'
                       AND c.relname OPERATOR(pg_catalog.=) 'events') AS writer
        FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.relnamespace OPERATOR(pg_catalog.=) 'eventstore'::pg_catalog.regnamespace
          AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
          AND a.grantee OPERATOR(pg_catalog.<>) 0
        GROUP BY a.grantee
    LOOP
        IF r.writer THEN
            PERFORM eventstore.grant_writer(r.role);
        ELSE
            PERFORM eventstore.grant_reader(r.role);
        END IF;
        EXECUTE pg_catalog.format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER '
                                  'ON eventstore.events, eventstore.streams, eventstore.snapshots '
                                  'FROM %s', r.role);
        EXECUTE pg_catalog.format('REVOKE ALL ON SEQUENCE eventstore.global_position_seq FROM %s',
                                  r.role);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA eventstore FROM PUBLIC;

-- GRANTs and REVOKEs run by an extension script are recorded as the objects' initial privileges
-- (pg_init_privs), which pg_dump leaves out of a dump. The grants above are the users' roles',
-- not the extension's: keep as initial only the owner's privileges, as a fresh install records
-- them (and none for the schema), so that a dump of this database keeps the users' grants.
UPDATE pg_catalog.pg_init_privs i
SET initprivs = ARRAY(SELECT a FROM pg_catalog.unnest(i.initprivs) AS a
                      WHERE (SELECT pg_catalog.bool_and(e.grantee OPERATOR(pg_catalog.=) x.extowner)
                             FROM pg_catalog.aclexplode(ARRAY[a]) AS e))
FROM pg_catalog.pg_extension x, pg_catalog.pg_depend d
WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore'
  AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
  AND d.refobjid OPERATOR(pg_catalog.=) x.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
  AND d.classid OPERATOR(pg_catalog.=) i.classoid AND d.objid OPERATOR(pg_catalog.=) i.objoid;
DELETE FROM pg_catalog.pg_init_privs i
WHERE i.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
  AND i.objoid OPERATOR(pg_catalog.=) 'eventstore'::pg_catalog.regnamespace;
