-- pg_eventstore 0.2.0 -> 0.3.0.
\echo Use "ALTER EXTENSION pg_eventstore UPDATE TO '0.3.0'" to load this file. \quit

-- PostgreSQL 17 and later record a dependency of a role on an object whose initial privileges
-- (pg_init_privs) name it. The 0.1.0 -> 0.2.0 script removed such roles from pg_init_privs
-- directly, which left those dependency entries behind, so DROP ROLE refused the roles it had
-- migrated. Remove the entries, for any role, whose object belongs to the extension (or is its
-- schema) while its initial privileges no longer mention the role. Nothing else is touched; on
-- earlier majors there are no such entries.
DELETE FROM pg_catalog.pg_shdepend s
USING (SELECT d.classid, d.objid
       FROM pg_catalog.pg_depend d, pg_catalog.pg_extension x
       WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore'
         AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
         AND d.refobjid OPERATOR(pg_catalog.=) x.oid
         AND d.deptype OPERATOR(pg_catalog.=) 'e'
       UNION ALL
       SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, x.extnamespace
       FROM pg_catalog.pg_extension x
       WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore') o
WHERE s.deptype OPERATOR(pg_catalog.=) 'i'
  AND s.dbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND s.classid OPERATOR(pg_catalog.=) o.classid
  AND s.objid OPERATOR(pg_catalog.=) o.objid
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_init_privs i, pg_catalog.aclexplode(i.initprivs) e
                  WHERE i.classoid OPERATOR(pg_catalog.=) s.classid
                    AND i.objoid OPERATOR(pg_catalog.=) s.objid
                    AND e.grantee OPERATOR(pg_catalog.=) s.refobjid);

-- Two columns every event has from 0.3.0 on: the version of its payload's shape (the events
-- already stored are version 1) and its consistency-boundary tags (none). Constant defaults:
-- the table is not rewritten.
ALTER TABLE eventstore.events
    ADD COLUMN schema_version integer NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}';

-- Multi-stream appends and append conditions (docs/dcb.md) -----------------------------------

-- The queries of append conditions and read_query: tagged events by tag, events by type.
CREATE INDEX events_by_tag ON eventstore.events USING gin (tags) WITH (fastupdate = off)
    WHERE tags <> '{}';
CREATE INDEX events_by_type ON eventstore.events (pg_catalog.hashtext(event_type));

-- append and append_event take a condition (append_event also tags): new signatures, so the
-- functions are dropped and created again, and whoever could call them still can. Who could is
-- kept, as role oids, in settings local to this transaction.
SELECT pg_catalog.set_config('pg_eventstore_upgrade.' OPERATOR(pg_catalog.||) f.name,
                             coalesce((SELECT pg_catalog.string_agg(DISTINCT a.grantee::pg_catalog.text, ',')
                                       FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
                                       WHERE p.oid OPERATOR(pg_catalog.=) f.proc
                                         AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
                                         AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
                                         AND a.grantee OPERATOR(pg_catalog.<>) 0), ''),
                             true)
FROM (VALUES ('append', 'eventstore.append(text, jsonb, bigint)'::pg_catalog.regprocedure),
             ('append_event', 'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid)'::pg_catalog.regprocedure),
             ('read_stream', 'eventstore.read_stream(text, bigint, bigint)'::pg_catalog.regprocedure))
     AS f(name, proc);

DROP FUNCTION eventstore.append(text, jsonb, bigint);
DROP FUNCTION eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid);

CREATE FUNCTION eventstore."append"(
	"stream_id" TEXT,
	"events" jsonb,
	"expected_version" bigint DEFAULT NULL,
	"condition" jsonb DEFAULT NULL
) RETURNS TABLE (
	"event_id" uuid,
	"stream_version" bigint,
	"global_position" bigint
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'append_conditional_wrapper';

CREATE FUNCTION eventstore."append_event"(
	"stream_id" TEXT,
	"event_type" TEXT,
	"data" jsonb,
	"metadata" jsonb DEFAULT '{}',
	"expected_version" bigint DEFAULT NULL,
	"event_id" uuid DEFAULT NULL,
	"tags" TEXT[] DEFAULT NULL,
	"condition" jsonb DEFAULT NULL
) RETURNS TABLE (
	"event_id" uuid,
	"stream_version" bigint,
	"global_position" bigint
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'append_event_conditional_wrapper';

CREATE FUNCTION eventstore."append_multi"(
	"appends" jsonb,
	"condition" jsonb DEFAULT NULL
) RETURNS TABLE (
	"stream_id" TEXT,
	"event_id" uuid,
	"stream_version" bigint,
	"global_position" bigint
)
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'append_multi_wrapper';

CREATE FUNCTION eventstore."read_query"(
	"query" jsonb,
	"max_count" bigint DEFAULT NULL
) RETURNS jsonb
STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'read_query_wrapper';

REVOKE ALL ON FUNCTION eventstore.append(text, jsonb, bigint, jsonb),
                       eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid, text[], jsonb),
                       eventstore.append_multi(jsonb, jsonb),
                       eventstore.read_query(jsonb, bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION eventstore._api_functions(level text) RETURNS regprocedure[]
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
            'eventstore.read_horizon()',
            'eventstore.read_query(jsonb, bigint)']::regprocedure[]
        WHEN 'writer' THEN ARRAY[
            'eventstore.append(text, jsonb, bigint, jsonb)',
            'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid, text[], jsonb)',
            'eventstore.append_multi(jsonb, jsonb)',
            'eventstore.aggregate(text, regprocedure, jsonb, integer)',
            'eventstore._aggregate(text, regprocedure, jsonb, integer)']::regprocedure[]
    END
$$;

-- Whoever could append may append, to several streams at once too; whoever could read may run
-- read_query.
DO $$
DECLARE
    grants text[][] := ARRAY[
        ['append', 'eventstore.append(text, jsonb, bigint, jsonb)'],
        ['append', 'eventstore.append_multi(jsonb, jsonb)'],
        ['append_event', 'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid, text[], jsonb)'],
        ['read_stream', 'eventstore.read_query(jsonb, bigint)']];
    i int;
    role text;
BEGIN
    FOR i IN 1 .. pg_catalog.array_length(grants, 1) LOOP
        FOREACH role IN ARRAY pg_catalog.string_to_array(
                pg_catalog.current_setting('pg_eventstore_upgrade.' OPERATOR(pg_catalog.||) grants[i][1]), ',') LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', grants[i][2],
                                      role::pg_catalog.oid::pg_catalog.regrole);
        END LOOP;
    END LOOP;
END
$$;

-- Those grants are the users' roles', not the extension's initial privileges (see 0.1.0 ->
-- 0.2.0): keep as initial only the owner's, as a fresh install records them, and drop the
-- dependencies PostgreSQL 17 and later recorded on the roles for them.
UPDATE pg_catalog.pg_init_privs i
SET initprivs = ARRAY(SELECT a FROM pg_catalog.unnest(i.initprivs) AS a
                      WHERE (SELECT pg_catalog.bool_and(e.grantee OPERATOR(pg_catalog.=) x.extowner)
                             FROM pg_catalog.aclexplode(ARRAY[a]) AS e))
FROM pg_catalog.pg_extension x
WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore'
  AND i.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
  AND i.objoid OPERATOR(pg_catalog.=) ANY (ARRAY[
        'eventstore.append(text, jsonb, bigint, jsonb)'::pg_catalog.regprocedure,
        'eventstore.append_multi(jsonb, jsonb)'::pg_catalog.regprocedure,
        'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid, text[], jsonb)'::pg_catalog.regprocedure,
        'eventstore.read_query(jsonb, bigint)'::pg_catalog.regprocedure]::pg_catalog.oid[]);
DELETE FROM pg_catalog.pg_shdepend s
WHERE s.deptype OPERATOR(pg_catalog.=) 'i'
  AND s.dbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND s.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
  AND s.objid OPERATOR(pg_catalog.=) ANY (ARRAY[
        'eventstore.append(text, jsonb, bigint, jsonb)'::pg_catalog.regprocedure,
        'eventstore.append_multi(jsonb, jsonb)'::pg_catalog.regprocedure,
        'eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid, text[], jsonb)'::pg_catalog.regprocedure,
        'eventstore.read_query(jsonb, bigint)'::pg_catalog.regprocedure]::pg_catalog.oid[])
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_init_privs i, pg_catalog.aclexplode(i.initprivs) e
                  WHERE i.classoid OPERATOR(pg_catalog.=) s.classid
                    AND i.objoid OPERATOR(pg_catalog.=) s.objid
                    AND e.grantee OPERATOR(pg_catalog.=) s.refobjid);
