-- pg_eventstore 0.2.0 -> 0.3.0.
\echo Use "ALTER EXTENSION pg_eventstore UPDATE TO '0.3.0'" to load this file. \quit

-- The role dependencies PostgreSQL 17+ recorded for initial privileges that 0.1.0 -> 0.2.0
-- removed from pg_init_privs directly (DROP ROLE refused those roles) go with the ones this
-- update leaves: one statement at the end of this script removes both.

-- Two columns every event has from 0.3.0 on: the version of its payload's shape (the events
-- already stored are version 1) and its consistency-boundary tags (none). Constant defaults:
-- the table is not rewritten.
ALTER TABLE eventstore.events
    ADD COLUMN schema_version integer NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}';

-- Multi-stream appends and append conditions (docs/dcb.md): the queries of append conditions
-- and read_query find tagged events by tag, events by type.
CREATE INDEX events_by_tag ON eventstore.events USING gin (tags) WITH (fastupdate = off)
    WHERE tags <> '{}';
CREATE INDEX events_by_type ON eventstore.events (pg_catalog.hashtext(event_type));

-- ---------------------------------------------------------------------------------------------
-- Schema evolution (upcasting)
--
-- The upcaster registry, the functions every read builds its rows with, and a trailing
-- upcast parameter on every read: read_stream, read_stream_backward, read_all, read_category,
-- replay and aggregate change signature. So do append (condition) and append_event
-- (schema_version, then tags and condition: see "Multi-stream appends and append conditions"
-- below). Those are renamed out of the way first, so that after the new ones exist the roles
-- granted the old ones are granted the new ones (grant_writer/grant_reader), and then dropped.
-- The stored events keep schema_version 1 (the column's default, above).

-- Rust functions (as cargo-pgrx generates them).
CREATE  FUNCTION eventstore."registry_changed"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'registry_changed_wrapper';
CREATE  FUNCTION eventstore."_event_types"() RETURNS TABLE (
	"event_type" TEXT,
	"current_version" INT,
	"chain" jsonb
)
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'event_types_wrapper';
CREATE  FUNCTION eventstore."_register_upcaster"(
	"event_type" TEXT,
	"from_version" INT,
	"upcaster" oid,
	"new_type" TEXT
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'register_upcaster_sql_wrapper';
CREATE  FUNCTION eventstore."unregister_upcaster"(
	"event_type" TEXT,
	"from_version" INT
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'unregister_upcaster_wrapper';

CREATE  FUNCTION eventstore."_declare_event_type"(
	"event_type" TEXT,
	"validator" oid
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'declare_event_type_sql_wrapper';

-- One row per step: events of event_type at from_version are read at from_version + 1 (and as
-- new_type, when given) through upcaster(data jsonb, metadata jsonb) RETURNS jsonb. upcaster is
-- the function's regprocedure text, schema-qualified: a reg* column would stop pg_upgrade, and
-- an OID would not survive pg_dump. Written by register_upcaster and unregister_upcaster only.
CREATE TABLE eventstore.upcasters (
    event_type    text NOT NULL CHECK (event_type <> ''),
    from_version  integer NOT NULL CHECK (from_version BETWEEN 1 AND 2147483646),
    upcaster      text NOT NULL,
    new_type      text CHECK (new_type <> ''),
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type, from_version)
);
SELECT pg_catalog.pg_extension_config_dump('eventstore.upcasters', '');
REVOKE ALL ON eventstore.upcasters FROM PUBLIC;

-- A snapshot remembers the chains it was folded under: for each type its events had as stored,
-- the fingerprint of the steps they were read through ('' for none). replay and aggregate use a
-- snapshot only while every one of those is still today's (src/replay.rs, SNAPSHOT_SQL).
-- NULL: saved by an administrator (save_snapshot), or before 0.3.0.
ALTER TABLE eventstore.snapshots ADD COLUMN chains jsonb;

-- Every backend caches the registry; a change reaches the caches as an invalidation at commit.
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON eventstore.upcasters FOR EACH STATEMENT EXECUTE FUNCTION eventstore.registry_changed();

-- The registry as the caches load it, with each function's OID (0 when it no longer exists)
-- and what identifies its behaviour across dump and restore (its definition, deparsed under a
-- pinned search_path). SECURITY DEFINER: whoever may read events sees them upcast, with no
-- rights on the table. Runs no user code.
CREATE FUNCTION eventstore._registry()
    RETURNS TABLE (event_type text, from_version integer, new_type text, upcaster text,
                   upcaster_oid oid, definition text, immutable boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.event_type, u.from_version, u.new_type, u.upcaster, coalesce(p.oid, 0),
           pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)),
           coalesce(p.provolatile OPERATOR(pg_catalog.=) 'i', false)
    FROM eventstore.upcasters u
    LEFT JOIN pg_catalog.pg_proc p
           ON p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(u.upcaster)::pg_catalog.oid
    ORDER BY u.event_type, u.from_version
$$;

-- What a function does, as text that survives pg_dump and pg_upgrade (no OIDs): snapshot
-- fingerprints are built from it. The pinned search_path makes the deparsed text the same in
-- every session.
CREATE FUNCTION eventstore._definition(f regprocedure) RETURNS text
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.md5(pg_catalog.concat(f::pg_catalog.text, ' ', pg_catalog.pg_get_functiondef(f)))
$$;

-- The per-row functions: an event's type, version and data as reads return them (upcast
-- false: as stored). Called by the caller of the read, so upcasters run with its rights.
-- PARALLEL RESTRICTED: an upcaster's own parallel safety is not known.
CREATE FUNCTION eventstore._upcast_type(event_type text, schema_version integer, upcast boolean)
    RETURNS text
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'eventstore_upcast_type';
CREATE FUNCTION eventstore._upcast_version(event_type text, schema_version integer,
                                           upcast boolean)
    RETURNS integer
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'eventstore_upcast_version';
CREATE FUNCTION eventstore._upcast_data(event_type text, schema_version integer, data jsonb,
                                        metadata jsonb, upcast boolean, stream_id text,
                                        stream_version bigint, global_position bigint)
    RETURNS jsonb
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'eventstore_upcast_data';

-- Declared event types: with eventstore.require_declared_types on, append refuses any other
-- type, and payloads a type's validator rejects. validator: regprocedure text of
-- validator(data jsonb, metadata jsonb) RETURNS boolean (false: rejected) or text (NULL: valid,
-- else the reason). Written by declare_event_type only.
CREATE TABLE eventstore.event_declarations (
    event_type  text PRIMARY KEY CHECK (event_type <> ''),
    validator   text,
    declared_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('eventstore.event_declarations', '');
REVOKE ALL ON eventstore.event_declarations FROM PUBLIC;
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON eventstore.event_declarations FOR EACH STATEMENT EXECUTE FUNCTION eventstore.registry_changed();

-- The declarations as the caches load them (see _registry): validator_oid 0 when it no longer
-- exists.
CREATE FUNCTION eventstore._declarations()
    RETURNS TABLE (event_type text, validator text, validator_oid oid, returns_boolean boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.event_type, d.validator, coalesce(p.oid, 0),
           coalesce(p.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.bool'::pg_catalog.regtype, false)
    FROM eventstore.event_declarations d
    LEFT JOIN pg_catalog.pg_proc p
           ON p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(d.validator)::pg_catalog.oid
    ORDER BY d.event_type
$$;

-- Declare an event type, with the validator append runs on its events (or none), replacing an
-- earlier declaration. The extension owner's and superusers' only, like register_upcaster.
CREATE FUNCTION eventstore.declare_event_type(event_type text, validator regprocedure DEFAULT NULL)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT eventstore._declare_event_type($1, $2::pg_catalog.oid)
$$;

-- Register a step: events of event_type at from_version are read at from_version + 1 through
-- upcaster(data jsonb, metadata jsonb) RETURNS jsonb (IMMUTABLE), renamed to new_type when given.
-- The extension owner's and superusers' only (nothing grants it): a step changes what every
-- read of the store returns.
CREATE FUNCTION eventstore.register_upcaster(event_type text, from_version integer,
                                             upcaster regprocedure, new_type text DEFAULT NULL)
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT eventstore._register_upcaster($1, $2, $3::pg_catalog.oid, $4)
$$;

-- Each type the registry names: the version new events of it are stored at, and the steps its
-- events go through (into the types it is renamed to).
CREATE VIEW eventstore.event_types AS
    SELECT t.event_type AS type, t.current_version, t.chain FROM eventstore._event_types() t;
REVOKE ALL ON eventstore.event_types FROM PUBLIC;

-- The events as every read returns them: upcast to their type's current version.
-- security_invoker: the caller needs SELECT on eventstore.events, and upcasters run as it.
CREATE VIEW eventstore.events_current WITH (security_invoker = true) AS
    SELECT e.global_position, e.stream_id, e.stream_version, e.event_id,
           eventstore._upcast_type(e.event_type, e.schema_version, true) AS event_type,
           eventstore._upcast_data(e.event_type, e.schema_version, e.data, e.metadata, true,
                                   e.stream_id, e.stream_version, e.global_position) AS data,
           e.metadata, e.recorded_at, e.transaction_id,
           eventstore._upcast_version(e.event_type, e.schema_version, true) AS schema_version,
           e.tags
    FROM eventstore.events e;
REVOKE ALL ON eventstore.events_current FROM PUBLIC;

-- Out of the way, keeping their grants for the re-grant below.
ALTER FUNCTION eventstore.read_stream(text, bigint, bigint) RENAME TO _v020_read_stream;
ALTER FUNCTION eventstore.read_stream_backward(text, bigint, bigint)
    RENAME TO _v020_read_stream_backward;
ALTER FUNCTION eventstore.read_all(xid8, bigint, bigint) RENAME TO _v020_read_all;
ALTER FUNCTION eventstore.read_category(text, xid8, bigint, bigint) RENAME TO _v020_read_category;
ALTER FUNCTION eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text)
    RENAME TO _v020_replay;
ALTER FUNCTION eventstore.aggregate(text, regprocedure, jsonb, integer) RENAME TO _v020_aggregate;
ALTER FUNCTION eventstore._aggregate(text, regprocedure, jsonb, integer)
    RENAME TO _v020__aggregate;
ALTER FUNCTION eventstore.append(text, jsonb, bigint) RENAME TO _v020_append;
ALTER FUNCTION eventstore.append_event(text, text, jsonb, jsonb, bigint, uuid)
    RENAME TO _v020_append_event;

-- Multi-stream appends and append conditions (docs/dcb.md) -----------------------------------
--
-- append takes a condition; append_event a schema_version, tags and a condition; append_multi
-- appends to several streams at once; read_query reads what a condition is decided on. Whoever
-- could append may do all three (grant_writer below); whoever could read may run read_query.

CREATE  FUNCTION eventstore."append"(
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

CREATE  FUNCTION eventstore."append_event"(
	"stream_id" TEXT,
	"event_type" TEXT,
	"data" jsonb,
	"metadata" jsonb DEFAULT '{}',
	"expected_version" bigint DEFAULT NULL,
	"event_id" uuid DEFAULT NULL,
	"schema_version" INT DEFAULT NULL,
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

CREATE  FUNCTION eventstore."append_multi"(
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

CREATE  FUNCTION eventstore."read_query"(
	"query" jsonb,
	"max_count" bigint DEFAULT NULL,
	"upcast" bool DEFAULT true
) RETURNS jsonb
STABLE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'read_query_wrapper';

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

CREATE FUNCTION eventstore.replay(stream_id text, reducer regprocedure,
                                  initial_state jsonb DEFAULT '{}',
                                  until_version bigint DEFAULT NULL,
                                  as_of timestamptz DEFAULT NULL,
                                  snapshot_name text DEFAULT NULL,
                                  upcast boolean DEFAULT true)
    RETURNS jsonb
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'eventstore_replay';

CREATE FUNCTION eventstore._aggregate(stream_id text, reducer regprocedure, initial_state jsonb,
                                      snapshot_every int, upcast boolean,
                                      OUT stream_version bigint, OUT state jsonb)
    RETURNS record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'eventstore_aggregate';

CREATE FUNCTION eventstore.aggregate(stream_id text, reducer regprocedure,
                                     initial_state jsonb DEFAULT '{}',
                                     snapshot_every int DEFAULT 100,
                                     upcast boolean DEFAULT true)
    RETURNS TABLE (stream_version bigint, state jsonb)
    LANGUAGE sql VOLATILE
AS $$
    SELECT a.stream_version, a.state FROM eventstore._aggregate($1, $2, $3, $4, $5) a
$$;

COMMENT ON FUNCTION eventstore.replay(text, regprocedure, jsonb, bigint, timestamptz, text, boolean) IS
'Fold a stream''s events, in version order, through reducer(state jsonb, event eventstore.events) '
'RETURNS jsonb, up to until_version and/or the longest prefix of the stream recorded at or before '
'as_of, starting from the newest snapshot named snapshot_name (default: the reducer''s '
'schema-qualified name) that this reducer''s definition folded within that bound. Events are '
'folded upcast to their type''s current version unless upcast is false.';

CREATE OR REPLACE FUNCTION eventstore._api_functions(level text) RETURNS regprocedure[]
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

CREATE OR REPLACE FUNCTION eventstore.grant_reader(role regrole) RETURNS void
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

CREATE OR REPLACE FUNCTION eventstore.revoke_access(role regrole) RETURNS void
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

-- Every role that could append the old way appends the new way; every other role that could read
-- reads. Then the old functions go.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.grantee::pg_catalog.regrole AS role,
               pg_catalog.bool_or(p.proname OPERATOR(pg_catalog.=) ANY ('{_v020_append,_v020_append_event}'))
                   AS writer
        FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
        WHERE p.pronamespace OPERATOR(pg_catalog.=) 'eventstore'::pg_catalog.regnamespace
          AND p.proname OPERATOR(pg_catalog.=) ANY ('{_v020_append,_v020_append_event,_v020_read_stream}')
          AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
          AND a.grantee OPERATOR(pg_catalog.<>) 0
        GROUP BY a.grantee
    LOOP
        IF r.writer THEN
            PERFORM eventstore.grant_writer(r.role);
        ELSE
            PERFORM eventstore.grant_reader(r.role);
        END IF;
    END LOOP;
END
$$;
DROP FUNCTION eventstore._v020_read_stream(text, bigint, bigint);
DROP FUNCTION eventstore._v020_read_stream_backward(text, bigint, bigint);
DROP FUNCTION eventstore._v020_read_all(xid8, bigint, bigint);
DROP FUNCTION eventstore._v020_read_category(text, xid8, bigint, bigint);
DROP FUNCTION eventstore._v020_replay(text, regprocedure, jsonb, bigint, timestamptz, text);
DROP FUNCTION eventstore._v020_aggregate(text, regprocedure, jsonb, integer);
DROP FUNCTION eventstore._v020__aggregate(text, regprocedure, jsonb, integer);
DROP FUNCTION eventstore._v020_append(text, jsonb, bigint);
DROP FUNCTION eventstore._v020_append_event(text, text, jsonb, jsonb, bigint, uuid);

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA eventstore FROM PUBLIC;

-- The grants above ran inside the extension script, so PostgreSQL recorded them as the objects'
-- initial privileges (which pg_dump leaves out of a dump). Keep only the owner's, as a fresh
-- install records them, and none for the schema. Then drop every role dependency PostgreSQL 17+
-- recorded for an initial privilege of the extension's objects (or its schema) that no longer
-- names the role: those of the grants above, and those 0.1.0 -> 0.2.0 left behind when it
-- edited pg_init_privs directly. Nothing else is touched; earlier majors have no such entries.
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
