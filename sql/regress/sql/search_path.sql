-- Every internal reference of the extension is schema-qualified: a role that can put objects in
-- a schema on another role's search_path cannot get its functions or operators run by the
-- extension. A hostile schema shadows, with exact-match overloads, every pg_catalog function and
-- operator over the types the extension works with, plus the cross-type comparisons PostgreSQL
-- would otherwise resolve through casts. Each trap raises. A superuser then calls the whole API
-- with that schema first on its path: nothing may trip a trap.
DROP EXTENSION pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
CREATE SCHEMA hostile;
CREATE TABLE hostile.types (t regtype PRIMARY KEY);
INSERT INTO hostile.types VALUES
    ('text'), ('bigint'), ('integer'), ('smallint'), ('oid'), ('regtype'), ('regclass'),
    ('regproc'), ('regprocedure'), ('regnamespace'), ('regrole'), ('jsonb'), ('uuid'), ('xid8'),
    ('xid'), ('pg_snapshot'), ('timestamptz'), ('boolean'), ('name'), ('uuid[]'), ('text[]'),
    ('regprocedure[]'), ('interval'), ('"char"'), ('oidvector'), ('numeric'), ('pg_lsn');

DO $$
DECLARE
    f record;
    n int := 0;
BEGIN
    -- Functions (set-returning ones too) whose arguments are all of those types.
    FOR f IN
        SELECT p.proname, p.proretset, p.prorettype::regtype AS ret,
               coalesce((SELECT string_agg(a::regtype::text, ', ' ORDER BY i)
                         FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS x(a, i)), '') AS args
        FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
          AND p.pronargs <= 4 AND p.provariadic = 0
          AND (p.prorettype IN (SELECT t FROM hostile.types) OR p.prorettype = 'void'::regtype)
          AND NOT EXISTS (SELECT FROM unnest(p.proargtypes::oid[]) a
                          WHERE a NOT IN (SELECT t FROM hostile.types))
    LOOP
        EXECUTE format('CREATE FUNCTION hostile.%I(%s) RETURNS %s%s LANGUAGE plpgsql AS '
                       '$b$BEGIN RAISE EXCEPTION ''search_path trap %% ran as %%'', %L, current_user; END$b$',
                       f.proname, f.args, CASE WHEN f.proretset THEN 'SETOF ' ELSE '' END, f.ret,
                       format('%s(%s)', f.proname, f.args));
        n := n + 1;
    END LOOP;
    -- Operators over those types, and cross-type comparisons pg_catalog has no exact match for.
    FOR f IN
        SELECT o.oprname, nullif(o.oprleft, 0)::regtype AS l, o.oprright::regtype AS r,
               o.oprresult::regtype AS ret
        FROM pg_operator o
        WHERE o.oprnamespace = 'pg_catalog'::regnamespace
          AND (o.oprleft = 0 OR o.oprleft IN (SELECT t FROM hostile.types))
          AND o.oprright IN (SELECT t FROM hostile.types)
          AND o.oprresult IN (SELECT t FROM hostile.types)
        UNION
        SELECT op, l, r, 'boolean'::regtype
        FROM unnest(ARRAY['=', '<>', '<', '>', '<=', '>=']) op,
             unnest(ARRAY['oid', 'regtype', 'regclass', 'regproc', 'regprocedure', 'regnamespace',
                          'name', 'text']::regtype[]) l,
             unnest(ARRAY['oid', 'regtype', 'regclass', 'regproc', 'regprocedure', 'regnamespace',
                          'name', 'text']::regtype[]) r
        WHERE l <> r AND NOT EXISTS (SELECT FROM pg_operator o
                                     WHERE o.oprname = op AND o.oprleft = l AND o.oprright = r)
    LOOP
        n := n + 1;
        EXECUTE format('CREATE FUNCTION hostile.op_%s(%s) RETURNS %s LANGUAGE plpgsql AS '
                       '$b$BEGIN RAISE EXCEPTION ''search_path trap %% ran as %%'', %L, current_user; END$b$',
                       n, concat_ws(', ', f.l, f.r), f.ret,
                       format('operator %s(%s)', f.oprname, concat_ws(', ', f.l, f.r)));
        EXECUTE format('CREATE OPERATOR hostile.%s (%s RIGHTARG = %s, FUNCTION = hostile.op_%s)',
                       f.oprname, CASE WHEN f.l IS NULL THEN '' ELSE format('LEFTARG = %s,', f.l) END,
                       f.r, n);
    END LOOP;
    RAISE NOTICE 'traps set: %', CASE WHEN n > 1000 THEN 'more than 1000' ELSE n::text END;
END
$$;
-- Polymorphic built-ins and aggregates, shadowed for the concrete types the extension uses.
CREATE FUNCTION hostile.unnest(uuid[]) RETURNS SETOF uuid LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'search_path trap unnest(uuid[]) ran as %', current_user; END$$;
CREATE FUNCTION hostile.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'search_path trap unnest(text[]) ran as %', current_user; END$$;
CREATE FUNCTION hostile.unnest(regprocedure[]) RETURNS SETOF regprocedure LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'search_path trap unnest(regprocedure[]) ran as %', current_user; END$$;
CREATE FUNCTION hostile.agg_trap(bigint, bigint) RETURNS bigint LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'search_path trap aggregate ran as %', current_user; END$$;
CREATE FUNCTION hostile.count_trap(bigint) RETURNS bigint LANGUAGE plpgsql
    AS $$BEGIN RAISE EXCEPTION 'search_path trap count(*) ran as %', current_user; END$$;
CREATE AGGREGATE hostile.min(bigint) (SFUNC = hostile.agg_trap, STYPE = bigint);
CREATE AGGREGATE hostile.max(bigint) (SFUNC = hostile.agg_trap, STYPE = bigint);
CREATE AGGREGATE hostile.count(*) (SFUNC = hostile.count_trap, STYPE = bigint);

-- A reducer that is itself safe: its own search_path.
CREATE FUNCTION public.count_events(state jsonb, event eventstore.events) RETURNS jsonb
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1, 'last', event.event_type);
END $$;
SELECT now() AS before_appends \gset
-- An upcaster that is itself safe: its own search_path.
CREATE FUNCTION public.sp_placed_v2(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    RETURN data || jsonb_build_object('currency', 'EUR');
END $$;

-- The whole API, as a superuser whose path puts the hostile schema first. None of these
-- statements names a function or operator itself, so only the extension's internals could
-- reach a trap.
SET search_path = hostile, pg_catalog, public;
-- The traps work: a statement of our own that names now() and = trips them.
\set VERBOSITY terse
SELECT now();
SELECT 1::bigint = 1::bigint;
\set VERBOSITY default
SELECT eventstore.register_upcaster('OrderPlaced', 1, 'public.sp_placed_v2(jsonb,jsonb)');
SELECT stream_version FROM eventstore.append('sp-1', '[{"type": "OrderPlaced", "data": {"total": 5}, "schema_version": 1}, {"type": "PaymentCaptured"}]', 0);
SELECT stream_version FROM eventstore.append('sp-1', '[{"type": "OrderShipped", "id": "0b6a5d4e-2d4f-4bd0-8f6e-9d3c1f1f0a01"}]', 2);
SELECT stream_version FROM eventstore.append('sp-1', '[{"type": "OrderShipped", "id": "0b6a5d4e-2d4f-4bd0-8f6e-9d3c1f1f0a01"}]', 2);
SELECT stream_version FROM eventstore.append_event('sp-2', 'OrderPlaced', '{"total": 7}');
SELECT stream_version FROM eventstore.append_event('sp-2', 'OrderCancelled', '{}', '{}', 1, '0b6a5d4e-2d4f-4bd0-8f6e-9d3c1f1f0a02');
SELECT stream_version FROM eventstore.append_event('sp-2', 'OrderCancelled', '{}', '{}', 1, '0b6a5d4e-2d4f-4bd0-8f6e-9d3c1f1f0a02');
SELECT stream_version FROM eventstore.append_event('sp-2', 'OrderShipped', '{}', expected_version => 1);
-- Tags, append conditions, append_multi and read_query (docs/dcb.md).
SELECT eventstore.read_query('{"items": [{"types": ["OrderPlaced"]}, {"tags": ["sp"]}]}') OPERATOR(pg_catalog.->>) 'token' AS sp_token \gset
SELECT stream_version FROM eventstore.append_event('sp-3', 'OrderPlaced', '{}', tags => '{sp,sp-3}',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"types": ["OrderPlaced"]}, {"tags": ["sp"]}]}'::jsonb, 'after', :'sp_token'));
SELECT stream_version FROM eventstore.append('sp-3', '[{"type": "OrderShipped", "tags": ["sp-3"]}]', 1,
    '{"fail_if_events_match": {"items": [{"types": ["OrderShipped"], "tags": ["sp-3"]}]}}');
SELECT stream_id, stream_version FROM eventstore.append_multi('[{"stream_id": "sp-4", "expected_version": 0, "events": [{"type": "OrderPlaced", "tags": ["sp"]}]},
    {"stream_id": "sp-5", "events": [{"type": "OrderPlaced", "id": "0b6a5d4e-2d4f-4bd0-8f6e-9d3c1f1f0a03"}]}]', '{"fail_if_events_match": {"items": [{"tags": ["nothing-here"]}]}, "after": "v1:1:1:"}');
SELECT stream_id, stream_version FROM eventstore.append_multi('[{"stream_id": "sp-5", "events": [{"type": "OrderPlaced", "id": "0b6a5d4e-2d4f-4bd0-8f6e-9d3c1f1f0a03"}]}]');
SELECT pg_catalog.jsonb_array_length(eventstore.read_query('{"items": [{"types": ["OrderPlaced"], "tags": ["sp"]}]}', 5) OPERATOR(pg_catalog.->) 'events');
SELECT pg_catalog.jsonb_array_length(eventstore.read_query('{"all": true}') OPERATOR(pg_catalog.->) 'events');
SELECT eventstore.stream_version('sp-1');
SELECT stream_version, event_type FROM eventstore.read_stream('sp-1');
SELECT stream_version, event_type FROM eventstore.read_stream_backward('sp-1', max_count => 1);
SELECT stream_id, event_type FROM eventstore.read_all();
SELECT stream_id, event_type FROM eventstore.read_category('sp');
SELECT eventstore.category('sp-1');
SELECT eventstore.replay('sp-1', 'eventstore.merge'::regproc);
SELECT eventstore.replay('sp-1', 'public.count_events'::regproc);
SELECT eventstore.replay('sp-1', 'public.count_events'::regproc, as_of => :'before_appends');
SELECT * FROM eventstore.aggregate('sp-1', 'public.count_events'::regproc, snapshot_every => 1);
SELECT * FROM eventstore.aggregate('sp-1', 'eventstore.merge'::regproc, snapshot_every => 1);
SELECT eventstore.replay('sp-1', 'public.count_events'::regproc);
SELECT stream_version, state FROM eventstore.load_snapshot('sp-1', 'public.count_events');
SELECT eventstore.save_snapshot('sp-1', 'by-hand', 1, '{"n": 1}');
SELECT eventstore.delete_snapshots('by-hand');
SELECT xid FROM eventstore.read_horizon();
SELECT stream_id, stream_version, event_type, schema_version, data FROM eventstore.events_current;
SELECT stream_version, schema_version, data FROM eventstore.read_stream('sp-2', upcast => false);
SELECT * FROM eventstore.event_types;
SELECT eventstore.register_upcaster('OrderShipped', 1, 'public.sp_placed_v2(jsonb,jsonb)', 'OrderSent');
SELECT eventstore.unregister_upcaster('OrderShipped', 1);
CREATE ROLE regress_sp_role;
SELECT eventstore.grant_writer('regress_sp_role');
SELECT eventstore.revoke_access('regress_sp_role');
RESET search_path;

DROP ROLE regress_sp_role;
-- (Quietly: the list of dropped traps differs between PostgreSQL majors.)
SET client_min_messages = warning;
DROP SCHEMA hostile CASCADE;
RESET client_min_messages;
DROP FUNCTION public.count_events;
DROP FUNCTION public.sp_placed_v2;
DROP EXTENSION pg_eventstore;
