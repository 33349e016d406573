-- Schema evolution: the upcaster registry and the functions every read builds its rows with
-- (src/upcast.rs). The user's view is docs/schema-evolution.md.

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
