-- Schema evolution: upcasters registered per step, and every read path returning events at their
-- type's current version (upcast => false: as stored).
DROP EXTENSION IF EXISTS pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
\set VERBOSITY terse
CREATE OR REPLACE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- The shapes of an order over time:
--   OrderPlaced v1 {"order_id", "total"}            (no currency)
--   OrderPlaced v2 {"order_id", "total", "currency"}
--   OrderSubmitted v3 {"order_id", "amount": {"value", "currency"}}   (renamed at 2 -> 3)
--   OrderSubmitted v4 ... plus "channel" (from the metadata, default "web")
CREATE FUNCTION public.order_placed_v1_v2(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN data || '{"currency": "EUR"}';
CREATE FUNCTION public.order_placed_v2_submitted_v3(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN (data - 'total' - 'currency')
           || jsonb_build_object('amount', jsonb_build_object('value', data->'total',
                                                              'currency', data->'currency'));
CREATE FUNCTION public.order_submitted_v3_v4(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN data || jsonb_build_object('channel', coalesce(metadata->>'channel', 'web'));
END $$;

-- Before any upcaster, every type is at version 1.
SELECT stream_version FROM eventstore.append('order-1', '[
  {"type": "OrderPlaced", "data": {"order_id": "1", "total": 10}}]');
SELECT * FROM eventstore.event_types;

-- Each registered step moves the type's current version; appends without "schema_version"
-- store the current one.
SELECT eventstore.register_upcaster('OrderPlaced', 1, 'public.order_placed_v1_v2(jsonb,jsonb)');
SELECT stream_version FROM eventstore.append('order-1', '[
  {"type": "OrderPlaced", "data": {"order_id": "1", "total": 20, "currency": "USD"}}]');
SELECT eventstore.register_upcaster('OrderPlaced', 2, 'public.order_placed_v2_submitted_v3(jsonb,jsonb)',
                                    new_type => 'OrderSubmitted');
SELECT eventstore.register_upcaster('OrderSubmitted', 3, 'public.order_submitted_v3_v4(jsonb,jsonb)');
SELECT stream_version FROM eventstore.append('order-1', '[
  {"type": "OrderSubmitted", "schema_version": 3,
   "data": {"order_id": "1", "amount": {"value": 30, "currency": "USD"}}, "metadata": {"channel": "shop"}},
  {"type": "OrderSubmitted", "data": {"order_id": "1", "amount": {"value": 40, "currency": "USD"}, "channel": "app"}},
  {"type": "PaymentCaptured", "data": {"order_id": "1", "amount": 40}}]');
-- An old client still appending OrderPlaced (its last shape, v2) is read as OrderSubmitted v4.
SELECT stream_version FROM eventstore.append_event('order-1', 'OrderPlaced',
    '{"order_id": "1", "total": 50, "currency": "GBP"}', '{"channel": "phone"}');
SELECT stream_version FROM eventstore.append_event('order-2', 'OrderPlaced', '{"order_id": "2", "total": 5}',
                                                   schema_version => 1);
SELECT type, current_version, jsonb_pretty(chain) FROM eventstore.event_types;

-- Stored: every version of the order's shape in one stream.
SELECT stream_id, stream_version, event_type, schema_version, data FROM eventstore.events
ORDER BY global_position;

-- read_stream: upcast, and as stored.
SELECT stream_version, event_type, schema_version, data FROM eventstore.read_stream('order-1');
SELECT stream_version, event_type, schema_version, data FROM eventstore.read_stream('order-1', upcast => false);
-- read_stream_backward
SELECT stream_version, event_type, schema_version, data
FROM eventstore.read_stream_backward('order-1', max_count => 3);
SELECT stream_version, event_type, schema_version, data
FROM eventstore.read_stream_backward('order-1', max_count => 3, upcast => false);
-- read_all
SELECT stream_id, stream_version, event_type, schema_version, data FROM eventstore.read_all();
SELECT stream_id, stream_version, event_type, schema_version FROM eventstore.read_all(upcast => false);
-- read_category
SELECT stream_id, stream_version, event_type, schema_version, data FROM eventstore.read_category('order', max_count => 2);
SELECT stream_id, stream_version, event_type, schema_version FROM eventstore.read_category('order', upcast => false);
-- events_current: ad-hoc SQL sees what reads return.
SELECT stream_id, stream_version, event_type, schema_version, data FROM eventstore.events_current
WHERE event_type = 'OrderSubmitted' AND (data->'amount'->>'value')::numeric >= 40
ORDER BY global_position;

-- replay and aggregate fold upcast events: with a PL/pgSQL reducer and with merge.
CREATE FUNCTION public.order_view(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN state || jsonb_build_object(
        'events', coalesce((state->>'events')::int, 0) + 1,
        'last', event.event_type || ' v' || event.schema_version,
        'total', coalesce((state->>'total')::numeric, 0)
                 + CASE WHEN event.event_type = 'OrderSubmitted'
                        THEN (event.data->'amount'->>'value')::numeric ELSE 0 END,
        'channels', coalesce(state->'channels', '[]') || coalesce(event.data->'channel', '[]'));
END $$;
SELECT eventstore.replay('order-1', 'public.order_view'::regproc);
SELECT eventstore.replay('order-1', 'public.order_view'::regproc, upcast => false);
SELECT eventstore.replay('order-1', 'eventstore.merge'::regproc);
SELECT eventstore.replay('order-1', 'eventstore.merge'::regproc, upcast => false);
SELECT * FROM eventstore.aggregate('order-1', 'public.order_view'::regproc, snapshot_every => 1000);
SELECT * FROM eventstore.aggregate('order-1', 'eventstore.merge'::regproc, snapshot_every => 1000, upcast => false);
-- Temporal: as_of folds the longest prefix recorded by then, upcast.
SELECT eventstore.replay('order-1', 'public.order_view'::regproc, until_version => 2);
SELECT eventstore.replay('order-1', 'public.order_view'::regproc, as_of => now() + interval '1 day');
SELECT eventstore.replay('order-1', 'public.order_view'::regproc, as_of => now() + interval '1 day', upcast => false);

-- replay equals the fold of hand-upcast events.
WITH RECURSIVE up AS (
    SELECT e.stream_version AS v,
           CASE e.event_type || ' v' || e.schema_version
               WHEN 'OrderPlaced v1' THEN public.order_submitted_v3_v4(public.order_placed_v2_submitted_v3(
                                              public.order_placed_v1_v2(e.data, e.metadata), e.metadata), e.metadata)
               WHEN 'OrderPlaced v2' THEN public.order_submitted_v3_v4(public.order_placed_v2_submitted_v3(
                                              e.data, e.metadata), e.metadata)
               WHEN 'OrderSubmitted v3' THEN public.order_submitted_v3_v4(e.data, e.metadata)
               ELSE e.data END AS data,
           CASE WHEN e.event_type LIKE 'Order%' THEN 'OrderSubmitted' ELSE e.event_type END AS type,
           CASE WHEN e.event_type LIKE 'Order%' THEN 4 ELSE e.schema_version END AS version
    FROM eventstore.events e WHERE e.stream_id = 'order-1'
), folded(v, state) AS (
    SELECT 0::bigint, '{}'::jsonb
    UNION ALL
    SELECT f.v + 1, public.order_view(f.state, ROW(0, 'order-1', f.v + 1, gen_random_uuid(), u.type, u.data,
                                                   '{}', now(), '1', u.version, '{}')::eventstore.events)
    FROM folded f JOIN up u ON u.v = f.v + 1
)
SELECT (SELECT state FROM folded ORDER BY v DESC LIMIT 1)
       = eventstore.replay('order-1', 'public.order_view'::regproc) AS replay_equals_hand_upcast_fold;

-- Snapshots remember the upcaster chains they were folded under, for every type they folded;
-- replay and aggregate ignore one whose chains changed, and fold from an earlier one or the
-- start. A reducer that counts its calls shows how many events each fold read.
CREATE SEQUENCE public.reducer_calls;
CREATE FUNCTION public.counting_total(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('public.reducer_calls');
    RETURN jsonb_build_object('total', coalesce((state->>'total')::numeric, 0)
        + coalesce((event.data->'amount'->>'value')::numeric, (event.data->>'amount')::numeric, 0));
END $$;
-- How many events were folded since the last call.
CREATE FUNCTION public.folded_now() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO n FROM public.reducer_calls;
    PERFORM setval('public.reducer_calls', 1, false);
    RETURN n;
END $$;
CREATE FUNCTION public.same_data(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN data;
CREATE FUNCTION public.double_amount(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN data || jsonb_build_object('amount', (data->>'amount')::numeric * 2);
SELECT * FROM eventstore.aggregate('order-1', 'public.counting_total'::regproc, snapshot_every => 1);
SELECT public.folded_now() AS events_folded;
SELECT stream_version, jsonb_object_keys(chains) AS chain_of, chains->>jsonb_object_keys(chains) <> '' AS upcast
FROM eventstore.snapshots WHERE snapshot_name = 'public.counting_total' ORDER BY 2;
SELECT eventstore.replay('order-1', 'public.counting_total'::regproc), public.folded_now() AS events_folded;
-- A chain for a type the stream does not hold leaves its snapshots in use.
SELECT eventstore.register_upcaster('ShipmentBooked', 1, 'public.same_data(jsonb,jsonb)');
SELECT eventstore.replay('order-1', 'public.counting_total'::regproc), public.folded_now() AS events_folded;
-- A new step for a type it holds: the snapshot is ignored and the fold sees the new shape.
SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.double_amount(jsonb,jsonb)');
SELECT eventstore.replay('order-1', 'public.counting_total'::regproc), public.folded_now() AS events_folded;
SELECT eventstore.unregister_upcaster('PaymentCaptured', 1);
-- Back to the chains it was folded under (fingerprints are of definitions, not of moments).
SELECT eventstore.replay('order-1', 'public.counting_total'::regproc), public.folded_now() AS events_folded;
-- Folded upcast, it is no snapshot for a fold of the stored events.
SELECT eventstore.replay('order-1', 'public.counting_total'::regproc, upcast => false), public.folded_now() AS events_folded;
-- An earlier snapshot whose chains still hold is used when a later one's do not.
SELECT stream_version FROM eventstore.append('order-9', '[{"type": "OrderPlaced", "data": {"total": 1}, "schema_version": 1},
                                                          {"type": "PaymentCaptured", "data": {"amount": 1}}]');
SELECT stream_version, state FROM eventstore.aggregate('order-9', 'public.counting_total'::regproc, snapshot_every => 1);
SELECT stream_version FROM eventstore.append('order-9', '[{"type": "OrderShipped", "data": {"amount": 10}},
                                                          {"type": "OrderShipped", "data": {"amount": 20}}]');
SELECT stream_version, state FROM eventstore.aggregate('order-9', 'public.counting_total'::regproc, snapshot_every => 1);
SELECT stream_version, (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(chains) k) AS folded_types
FROM eventstore.snapshots WHERE stream_id = 'order-9' ORDER BY 1;
SELECT public.folded_now();
SELECT eventstore.register_upcaster('OrderShipped', 1, 'public.double_amount(jsonb,jsonb)');
SELECT eventstore.replay('order-9', 'public.counting_total'::regproc), public.folded_now() AS events_folded;
SELECT eventstore.unregister_upcaster('OrderShipped', 1);
SELECT eventstore.unregister_upcaster('ShipmentBooked', 1);

-- Versions an append may give: from the type's base to its current version.
SELECT error_of($$SELECT eventstore.append('order-3', '[{"type": "PaymentCaptured"}, {"type": "OrderPlaced", "schema_version": 3}]')$$);
SELECT error_of($$SELECT eventstore.append('order-3', '[{"type": "OrderSubmitted", "schema_version": 2}]')$$);
SELECT error_of($$SELECT eventstore.append('order-3', '[{"type": "OrderSubmitted", "schema_version": 0}]')$$);
SELECT error_of($$SELECT eventstore.append('order-3', '[{"type": "OrderSubmitted", "schema_version": "4"}]')$$);
SELECT error_of($$SELECT eventstore.append('order-3', '[{"type": "OrderSubmitted", "schema_version": 3.5}]')$$);
SELECT error_of($$SELECT eventstore.append_event('order-3', 'PaymentCaptured', '{}', schema_version => 2)$$);
SELECT error_of($$SELECT eventstore.append_event('order-3', 'PaymentCaptured', '{}', schema_version => -1)$$);
SELECT eventstore.stream_version('order-3');

-- Registration: the function must fit and be IMMUTABLE; steps extend a chain at its end.
CREATE FUNCTION public.stable_upcaster(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql STABLE RETURN data;
CREATE FUNCTION public.volatile_upcaster(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql VOLATILE RETURN data;
CREATE FUNCTION public.one_arg(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE RETURN data;
CREATE FUNCTION public.returns_text(data jsonb, metadata jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE RETURN data::text;
CREATE FUNCTION public.copy_data(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN data;
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.stable_upcaster(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.volatile_upcaster(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.one_arg(jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.returns_text(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.missing(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 2, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 0, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('OrderPlaced', 2, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('OrderPlaced', 3, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.copy_data(jsonb,jsonb)', 'OrderSubmitted')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.copy_data(jsonb,jsonb)', 'PaymentCaptured')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('', 1, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster(NULL, 1, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', NULL, 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, NULL)$$);
-- A rename may not bring a type in below versions it already has stored events at.
SELECT stream_version FROM eventstore.append_event('refund-1', 'RefundIssued', '{}');
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.copy_data(jsonb,jsonb)', 'RefundIssued')$$);

-- Unregister: only the last step of a chain, and not while events are stored past it.
SELECT error_of($$SELECT eventstore.unregister_upcaster('OrderPlaced', 1)$$);
SELECT error_of($$SELECT eventstore.unregister_upcaster('OrderSubmitted', 3)$$);
SELECT error_of($$SELECT eventstore.unregister_upcaster('OrderSubmitted', 9)$$);
SELECT eventstore.register_upcaster('OrderSubmitted', 4, 'public.copy_data(jsonb,jsonb)');
SELECT type, current_version FROM eventstore.event_types;
SELECT eventstore.unregister_upcaster('OrderSubmitted', 4);
SELECT type, current_version FROM eventstore.event_types;

-- An upcaster that raises fails the read with its own SQLSTATE; the context names the event.
CREATE FUNCTION public.strict_refund(data jsonb, metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF data->>'amount' IS NULL THEN
        RAISE EXCEPTION 'refund without an amount' USING ERRCODE = 'AB123';
    END IF;
    RETURN data;
END $$;
SELECT eventstore.register_upcaster('RefundIssued', 1, 'public.strict_refund(jsonb,jsonb)');
CREATE FUNCTION error_context_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text; message text; context text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, context = PG_EXCEPTION_CONTEXT;
    RETURN state || ': ' || message || E'\n'
           || (SELECT string_agg(l, E'\n') FROM regexp_split_to_table(context, E'\n') l
               WHERE l LIKE 'upcasting%');
END $$;
SELECT error_context_of($$SELECT * FROM eventstore.read_stream('refund-1')$$);
SELECT error_context_of($$SELECT * FROM eventstore.read_stream_backward('refund-1')$$);
SELECT error_context_of($$SELECT * FROM eventstore.read_all()$$);
SELECT error_context_of($$SELECT * FROM eventstore.read_category('refund')$$);
SELECT error_context_of($$SELECT * FROM eventstore.events_current$$);
SELECT error_context_of($$SELECT eventstore.replay('refund-1', 'eventstore.merge'::regproc)$$);
SELECT error_context_of($$SELECT eventstore.replay('refund-1', 'public.order_view'::regproc)$$);
SELECT error_context_of($$SELECT * FROM eventstore.aggregate('refund-1', 'public.order_view'::regproc)$$);
-- As stored, it reads; so do streams it is not in.
SELECT stream_version, event_type FROM eventstore.read_stream('refund-1', upcast => false);
SELECT count(*) FROM eventstore.read_stream('order-1');
-- An upcaster that returns NULL, or that was dropped, fails the read with a clear error.
CREATE OR REPLACE FUNCTION public.strict_refund(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE RETURN NULL::jsonb;
SELECT error_of($$SELECT * FROM eventstore.read_stream('refund-1')$$);
DROP FUNCTION public.strict_refund(jsonb, jsonb);
SELECT error_of($$SELECT * FROM eventstore.read_stream('refund-1')$$);
SELECT type, current_version, chain->0->>'upcaster' AS upcaster FROM eventstore.event_types WHERE type = 'RefundIssued';
SELECT eventstore.unregister_upcaster('RefundIssued', 1);
SELECT stream_version, event_type FROM eventstore.read_stream('refund-1');

-- The registry is a configuration table of the extension: pg_dump keeps its rows.
SELECT event_type, from_version, upcaster, new_type FROM eventstore.upcasters ORDER BY 1, 2;
SELECT c.relname FROM pg_extension x, unnest(x.extconfig) r JOIN pg_class c ON c.oid = r
WHERE x.extname = 'pg_eventstore' ORDER BY 1;

-- Declared event types: with eventstore.require_declared_types on (off by default), append
-- refuses undeclared types and payloads a type's validator rejects.
CREATE FUNCTION public.refund_is_positive(data jsonb, metadata jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE RETURN (data->>'amount')::numeric > 0;
CREATE FUNCTION public.payment_problem(data jsonb, metadata jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN data ? 'amount' THEN NULL ELSE 'a payment needs an amount' END;
CREATE FUNCTION public.picky(data jsonb, metadata jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION 'no % today', data->>'what' USING ERRCODE = 'AB124';
END $$;
SELECT eventstore.declare_event_type('OrderPlaced');
SELECT eventstore.declare_event_type('RefundIssued', 'public.refund_is_positive(jsonb,jsonb)');
SELECT eventstore.declare_event_type('PaymentCaptured', 'public.payment_problem(jsonb,jsonb)');
SELECT eventstore.declare_event_type('OrderShipped', 'public.picky(jsonb,jsonb)');
SELECT error_of($$SELECT eventstore.declare_event_type('X', 'public.copy_data(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.declare_event_type('', NULL)$$);
SELECT event_type, validator FROM eventstore.event_declarations ORDER BY 1;
-- Off: anything goes.
SHOW eventstore.require_declared_types;
SELECT stream_version FROM eventstore.append('decl-1', '[{"type": "Whatever"}, {"type": "RefundIssued", "data": {"amount": -1}}]');
SET eventstore.require_declared_types = on;
SELECT error_of($$SELECT eventstore.append('decl-1', '[{"type": "OrderPlaced"}, {"type": "Whatever"}]')$$);
SELECT error_of($$SELECT eventstore.append_event('decl-1', 'Whatever', '{}')$$);
SELECT error_of($$SELECT eventstore.append('decl-1', '[{"type": "RefundIssued", "data": {"amount": 5}}, {"type": "RefundIssued", "data": {"amount": -5}}]')$$);
SELECT error_of($$SELECT eventstore.append('decl-1', '[{"type": "PaymentCaptured", "data": {"total": 5}}]')$$);
SELECT error_of($$SELECT eventstore.append_event('decl-1', 'OrderShipped', '{"what": "parcels"}')$$);
SELECT stream_version FROM eventstore.append('decl-1', '[{"type": "OrderPlaced"}, {"type": "RefundIssued", "data": {"amount": 5}},
                                                         {"type": "PaymentCaptured", "data": {"amount": 5}}]');
SELECT stream_version FROM eventstore.append_event('decl-1', 'RefundIssued', '{"amount": 1}');
-- A validator runs as the role that called append (which itself runs as the owner).
CREATE ROLE regress_decl_writer;
SELECT eventstore.grant_writer('regress_decl_writer');
CREATE FUNCTION public.only_owner(data jsonb, metadata jsonb) RETURNS text
    LANGUAGE sql STABLE RETURN 'validated as ' || current_user;
SELECT eventstore.declare_event_type('Audited', 'public.only_owner(jsonb,jsonb)');
SET ROLE regress_decl_writer;
SELECT error_of($$SELECT eventstore.append_event('decl-2', 'Audited', '{}')$$);
RESET ROLE;
SELECT error_of($$SELECT eventstore.append_event('decl-2', 'Audited', '{}')$$);
-- A validator that changes functions (an invalidation) and reads the store while append
-- holds the registry: the registry is not reloaded under it.
CREATE FUNCTION public.busy_validator(data jsonb, metadata jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    CREATE OR REPLACE FUNCTION public.scratch() RETURNS int LANGUAGE sql RETURN 1;
    PERFORM count(e.data) FROM eventstore.events_current e;
    RETURN NULL;
END $$;
SELECT eventstore.declare_event_type('Busy', 'public.busy_validator(jsonb,jsonb)');
SELECT stream_version FROM eventstore.append('decl-3', '[{"type": "Busy"}, {"type": "Busy"}]');
-- Only superusers change the setting; only the owner and superusers declare.
SET ROLE regress_decl_writer;
SELECT error_of($$SET eventstore.require_declared_types = off$$);
SELECT error_of($$SELECT eventstore.declare_event_type('Mine')$$);
RESET ROLE;
RESET eventstore.require_declared_types;
SELECT eventstore.revoke_access('regress_decl_writer');
DROP ROLE regress_decl_writer;
