-- Physical floor for batch_ours.sql: 100 rows of the same size in one INSERT ... SELECT
-- into bench.events (same columns, defaults, constraints and unique indexes as eventstore.events).
\set r random(1, 1000000000000000)
INSERT INTO bench.events (stream_id, stream_version, event_id, event_type, data)
SELECT 'order-' || :client_id || '-' || :r, v, gen_random_uuid(), 'OrderLineAdded',
    '{"order_id":"ord-2024-000042","line":1,"sku":"SKU-1001","qty":2,"price":"11.95","currency":"EUR"}'::jsonb
FROM generate_series(1, 100) AS v;
