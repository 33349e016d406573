-- The append API as a user sees it: versions, expected-version modes, retries, errors.
-- (IF NOT EXISTS: the suite also runs on a database updated from an earlier release.)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_eventstore;
RESET client_min_messages;

-- Prints the SQLSTATE and message of a failing statement (or 'ok').
CREATE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- A batch gets consecutive versions; positions come from the store-wide sequence.
SELECT stream_version, global_position
FROM eventstore.append('order-1', '[
  {"type": "OrderPlaced", "data": {"order_id": "1", "customer": "ada", "total": 120.50}},
  {"type": "PaymentCaptured", "data": {"order_id": "1", "amount": 120.50}}
]');

SELECT stream_version, global_position
FROM eventstore.append_event('order-1', 'OrderShipped', '{"order_id": "1", "carrier": "DHL"}',
                             metadata => '{"correlation_id": "c-1"}', expected_version => 2);

SELECT eventstore.stream_version('order-1') AS "order-1", eventstore.stream_version('order-404') AS absent;

SELECT stream_id, category, version FROM eventstore.streams;

-- Expected versions: 0 = must not exist, -1 = must exist, N = exactly N, NULL = any.
SELECT error_of($$SELECT eventstore.append_event('order-1', 'OrderCancelled', '{}', expected_version => 2)$$);
SELECT error_of($$SELECT eventstore.append_event('order-1', 'OrderPlaced', '{}', expected_version => 0)$$);
SELECT error_of($$SELECT eventstore.append_event('order-2', 'OrderShipped', '{}', expected_version => -1)$$);
SELECT error_of($$SELECT eventstore.append_event('order-2', 'OrderPlaced', '{"order_id": "2"}', expected_version => 0)$$);
SELECT error_of($$SELECT eventstore.append_event('order-2', 'PaymentCaptured', '{"order_id": "2"}', expected_version => -1)$$);

-- Retrying a batch with the same ids returns the original rows and writes nothing,
-- whatever expected_version says.
SELECT event_id, stream_version, global_position
FROM eventstore.append('order-3', '[
  {"type": "OrderPlaced", "id": "0a3c6f1e-7d4b-4a5e-9f60-1b2c3d4e5f60", "data": {"order_id": "3"}},
  {"type": "PaymentCaptured", "id": "0a3c6f1e-7d4b-4a5e-9f60-1b2c3d4e5f61", "data": {"order_id": "3"}}
]', 0);
SELECT event_id, stream_version, global_position
FROM eventstore.append('order-3', '[
  {"type": "OrderPlaced", "id": "0a3c6f1e-7d4b-4a5e-9f60-1b2c3d4e5f60", "data": {"order_id": "3"}},
  {"type": "PaymentCaptured", "id": "0a3c6f1e-7d4b-4a5e-9f60-1b2c3d4e5f61", "data": {"order_id": "3"}}
]', 0);
SELECT count(*) AS events_in_order_3 FROM eventstore.events WHERE stream_id = 'order-3';

-- Any other reuse of an id is ES004, naming where the id is.
SELECT error_of($$SELECT eventstore.append('order-4', '[{"type": "OrderPlaced", "id": "0a3c6f1e-7d4b-4a5e-9f60-1b2c3d4e5f60"}]')$$);

-- Bad input: 22023 naming the argument; nothing is written.
SELECT error_of($$SELECT eventstore.append('order-5', '{"type": "OrderPlaced"}')$$);
SELECT error_of($$SELECT eventstore.append('order-5', '[]')$$);
SELECT error_of($$SELECT eventstore.append('order-5', '[{"type": "OrderPlaced"}, {"data": {}}]')$$);
SELECT error_of($$SELECT eventstore.append('order-5', '[{"type": "OrderPlaced"}, {"type": " "}]')$$);
SELECT error_of($$SELECT eventstore.append('order-5', '[{"type": "OrderPlaced", "id": "not-a-uuid"}]')$$);
SELECT error_of($$SELECT eventstore.append('order-5', '[{"type": "OrderPlaced", "payload": {}}]')$$);
SELECT error_of($$SELECT eventstore.append('', '[{"type": "OrderPlaced"}]')$$);
SELECT error_of($$SELECT eventstore.append('order-5', '[{"type": "OrderPlaced"}]', -2)$$);
SELECT error_of($$SELECT eventstore.append_event('order-5', 'OrderPlaced', '{}', '"not an object"')$$);
SELECT count(*) AS events_in_order_5 FROM eventstore.events WHERE stream_id = 'order-5';

-- The log is append-only, for superusers too.
SELECT error_of($$UPDATE eventstore.events SET data = '{}'$$);
SELECT error_of($$DELETE FROM eventstore.events WHERE stream_id = 'order-1'$$);
SELECT error_of($$TRUNCATE eventstore.events$$);
SELECT error_of($$UPDATE eventstore.streams SET version = 0$$);
SELECT error_of($$TRUNCATE eventstore.streams$$);
SELECT error_of($$TRUNCATE eventstore.snapshots$$);
SELECT count(*) AS events FROM eventstore.events;
