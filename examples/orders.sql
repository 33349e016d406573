-- The order example: a few orders placed, paid, shipped and cancelled, one stream per order.
-- Run with psql against a database where CREATE EXTENSION pg_eventstore has been done.
\set ON_ERROR_STOP 1
\pset footer off

\echo
\echo '--- Placing orders: one stream per order, expected_version 0 = "must be new"'
SELECT o.stream, a.stream_version, a.global_position
FROM (VALUES ('order-1001', 'ada',   120.50),
             ('order-1002', 'grace',  35.00),
             ('order-1003', 'ada',    12.99),
             ('order-1004', 'linus', 250.00),
             ('order-1005', 'grace',  60.00)) AS o(stream, customer, total),
     LATERAL eventstore.append_event(
         o.stream, 'OrderPlaced',
         jsonb_build_object('order_id', split_part(o.stream, '-', 2), 'customer_id', o.customer, 'total', o.total),
         metadata => '{"correlation_id": "checkout-7"}', expected_version => 0) AS a;

\echo
\echo '--- Payments and shipping: append checks the version each decision was based on'
SELECT * FROM eventstore.append('order-1001', '[
  {"type": "PaymentCaptured", "data": {"order_id": "1001", "customer_id": "ada", "amount": 120.50}},
  {"type": "OrderShipped",    "data": {"order_id": "1001", "customer_id": "ada", "carrier": "DHL"}}
]', expected_version => 1);
SELECT stream_version FROM eventstore.append_event('order-1002', 'PaymentCaptured',
    '{"order_id": "1002", "customer_id": "grace", "amount": 35.00}', expected_version => 1);
SELECT stream_version FROM eventstore.append_event('order-1003', 'OrderCancelled',
    '{"order_id": "1003", "customer_id": "ada", "reason": "changed mind"}', expected_version => 1);
SELECT stream_version FROM eventstore.append_event('order-1004', 'PaymentCaptured',
    '{"order_id": "1004", "customer_id": "linus", "amount": 250.00}', expected_version => 1);
SELECT stream_version FROM eventstore.append_event('order-1005', 'PaymentCaptured',
    '{"order_id": "1005", "customer_id": "grace", "amount": 60.00}', expected_version => 1);

\echo
\echo '--- A client retries after a lost connection: same event id, original row back, nothing new written'
SELECT event_id, stream_version FROM eventstore.append_event('order-1002', 'OrderShipped',
    '{"order_id": "1002", "customer_id": "grace", "carrier": "UPS"}', expected_version => 2,
    event_id => '7d3f2a10-5b1c-4e8a-9c0d-1e2f3a4b5c6d');
SELECT event_id, stream_version FROM eventstore.append_event('order-1002', 'OrderShipped',
    '{"order_id": "1002", "customer_id": "grace", "carrier": "UPS"}', expected_version => 2,
    event_id => '7d3f2a10-5b1c-4e8a-9c0d-1e2f3a4b5c6d');

\echo
\echo '--- The history of order-1001'
SELECT stream_version, event_type, data, recorded_at::time(0) AS recorded
FROM eventstore.read_stream('order-1001');
