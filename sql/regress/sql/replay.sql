-- Replay, temporal queries, snapshots and aggregate (runs after append.sql and read.sql).

-- A reducer is any function (state jsonb, event eventstore.events) RETURNS jsonb.
-- PL/pgSQL: the order summary a read model would show.
CREATE FUNCTION order_summary(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN state || CASE event.event_type
        WHEN 'OrderPlaced' THEN jsonb_build_object('status', 'placed',
                                                   'customer', event.data->'customer',
                                                   'total', event.data->'total')
        WHEN 'PaymentCaptured' THEN jsonb_build_object('status', 'paid',
                                                       'paid', event.data->'amount')
        WHEN 'OrderShipped' THEN jsonb_build_object('status', 'shipped',
                                                    'carrier', event.data->'carrier')
        WHEN 'OrderCancelled' THEN jsonb_build_object('status', 'cancelled')
        ELSE '{}'
    END;
END $$;

-- SQL: count events by type.
CREATE FUNCTION count_by_type(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN state || jsonb_build_object(event.event_type,
                                   coalesce((state->>event.event_type)::int, 0) + 1);

-- Four events, each in its own transaction.
SELECT stream_version FROM eventstore.append_event('order-7', 'OrderPlaced',
    '{"customer": {"id": "ada", "tier": "gold"}, "total": 99.90, "lines": {"sku-1": 2}}');
SELECT pg_sleep(0.02);
SELECT stream_version FROM eventstore.append_event('order-7', 'PaymentCaptured', '{"amount": 99.90}');
SELECT pg_sleep(0.02);
SELECT stream_version FROM eventstore.append_event('order-7', 'OrderShipped',
    '{"carrier": "DHL", "customer": {"address": {"city": "Lyon"}}, "lines": {"sku-2": 1}}');
SELECT pg_sleep(0.02);
SELECT stream_version FROM eventstore.append_event('order-7', 'OrderCancelled', '{"reason": "lost"}');

SELECT eventstore.replay('order-7', 'order_summary'::regproc);
SELECT eventstore.replay('order-7', 'count_by_type'::regproc);
SELECT eventstore.replay('order-7', 'count_by_type'::regproc, initial_state => '{"OrderPlaced": 10}');
SELECT eventstore.replay('order-7', 'order_summary'::regproc, until_version => 2);
SELECT eventstore.replay('order-7', 'order_summary'::regproc, until_version => 0);
SELECT eventstore.replay('order-404', 'order_summary'::regproc) AS absent_stream;

-- The built-in reducer merges object-valued data, recursively.
SELECT eventstore.replay('order-7', 'eventstore.merge'::regproc);
SELECT eventstore.merge('{"customer": {"id": "ada"}, "n": 1}', e)
FROM eventstore.read_stream('order-7', 3, 1) e;

-- Temporal: the state as of the moment the payment was recorded (events 3 and 4 came later,
-- in later transactions).
SELECT recorded_at AS paid_at FROM eventstore.events
WHERE stream_id = 'order-7' AND stream_version = 2 \gset
SELECT eventstore.replay('order-7', 'order_summary'::regproc, as_of => :'paid_at');
SELECT eventstore.replay('order-7', 'order_summary'::regproc, as_of => :'paid_at'::timestamptz - interval '1 microsecond');
SELECT eventstore.replay('order-7', 'order_summary'::regproc, as_of => :'paid_at'::timestamptz - interval '1 hour') AS before_the_order;

-- Snapshots. Their states here are marked, so each result shows where the fold started.
SELECT eventstore.save_snapshot('order-7', 'public.order_summary', 2, '{"from": "snapshot@2"}');
SELECT eventstore.save_snapshot('order-7', 'public.order_summary', 3, '{"from": "snapshot@3"}');
SELECT * FROM eventstore.load_snapshot('order-7', 'public.order_summary');
SELECT * FROM eventstore.load_snapshot('order-7', 'public.order_summary', max_version => 2);
SELECT count(*) AS none_at_1 FROM eventstore.load_snapshot('order-7', 'public.order_summary', 1);
-- The default snapshot name is the reducer's schema-qualified name.
SELECT eventstore.replay('order-7', 'order_summary'::regproc);
-- A snapshot beyond until_version is never used.
SELECT eventstore.replay('order-7', 'order_summary'::regproc, until_version => 2);
SELECT eventstore.replay('order-7', 'order_summary'::regproc, until_version => 1);
-- Nor one that includes events recorded after as_of; one taken later of earlier events is.
SELECT eventstore.replay('order-7', 'order_summary'::regproc, as_of => :'paid_at');
-- Another snapshot name, with none saved: from the start.
SELECT eventstore.replay('order-7', 'order_summary'::regproc, snapshot_name => 'order_summary_v2');
SELECT eventstore.delete_snapshots('public.order_summary');
SELECT eventstore.replay('order-7', 'order_summary'::regproc);

-- aggregate: current state and version; saves a snapshot once snapshot_every events were
-- folded past the last one.
SELECT * FROM eventstore.aggregate('order-7', 'order_summary'::regproc, snapshot_every => 3);
SELECT snapshot_name, stream_version, state FROM eventstore.snapshots ORDER BY 1, 2;
SELECT stream_version FROM eventstore.append_event('order-7', 'OrderShipped', '{"carrier": "UPS"}');
SELECT * FROM eventstore.aggregate('order-7', 'order_summary'::regproc, snapshot_every => 3);
SELECT snapshot_name, stream_version FROM eventstore.snapshots ORDER BY 1, 2;
SELECT * FROM eventstore.aggregate('order-7', 'eventstore.merge(jsonb, eventstore.events)');
SELECT * FROM eventstore.aggregate('order-404', 'order_summary'::regproc);

-- Errors. A reducer's own error passes through with its SQLSTATE and context.
CREATE FUNCTION picky(state jsonb, event eventstore.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF event.event_type = 'OrderCancelled' THEN
        RAISE EXCEPTION 'cannot fold % at version %', event.event_type, event.stream_version
            USING ERRCODE = 'AB123', HINT = 'Fix the reducer.';
    END IF;
    RETURN state;
END $$;
SELECT eventstore.replay('order-7', 'picky'::regproc);
SELECT error_of($$SELECT eventstore.replay('order-7', 'picky'::regproc)$$);
SELECT eventstore.replay('order-7', 'picky'::regproc, until_version => 3);

CREATE FUNCTION not_a_reducer(state jsonb, n int) RETURNS jsonb LANGUAGE sql RETURN state;
SELECT error_of($$SELECT eventstore.replay('order-7', 'not_a_reducer'::regproc)$$);
SELECT error_of($$SELECT eventstore.replay('order-7', 'no_such_reducer'::regproc)$$);
SELECT error_of($$SELECT eventstore.replay('order-7', 'lower(text)')$$);
SELECT error_of($$SELECT eventstore.replay(NULL, 'order_summary'::regproc)$$);
SELECT error_of($$SELECT eventstore.replay('order-7', NULL)$$);
SELECT error_of($$SELECT eventstore.replay('order-7', 'order_summary'::regproc, until_version => -1)$$);
SELECT error_of($$SELECT eventstore.replay('order-7', 'order_summary'::regproc, snapshot_name => '')$$);
SELECT error_of($$SELECT eventstore.save_snapshot('order-7', 'x', 9, '{}')$$);
SELECT error_of($$SELECT eventstore.save_snapshot('order-404', 'x', 1, '{}')$$);
SELECT error_of($$SELECT eventstore.save_snapshot('order-7', 'x', 1, NULL)$$);
SELECT error_of($$SELECT eventstore.delete_snapshots(NULL)$$);
SELECT error_of($$SELECT * FROM eventstore.aggregate('order-7', 'order_summary'::regproc, snapshot_every => 0)$$);
SELECT error_of($$DELETE FROM eventstore.snapshots$$);

-- Calling a reducer needs EXECUTE on it, as calling it directly would.
CREATE ROLE regress_replay_reader;
SELECT eventstore.grant_reader('regress_replay_reader');
REVOKE EXECUTE ON FUNCTION picky(jsonb, eventstore.events) FROM PUBLIC;
SET ROLE regress_replay_reader;
SELECT eventstore.replay('order-7', 'order_summary'::regproc, until_version => 1);
SELECT error_of($$SELECT eventstore.replay('order-7', 'picky'::regproc)$$);
RESET ROLE;
SELECT eventstore.revoke_access('regress_replay_reader');
DROP ROLE regress_replay_reader;
