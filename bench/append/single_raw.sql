-- Physical floor for single_ours.sql: the same row values, inserted directly into
-- bench.events (same columns, defaults, constraints and unique indexes as eventstore.events).
\set r random(1, 1000000000000000)
INSERT INTO bench.events (stream_id, stream_version, event_id, event_type, data)
VALUES ('order-' || :client_id || '-' || :r, 1, gen_random_uuid(), 'OrderPlaced',
    '{"order_id":"ord-2024-000042","customer_id":"cust-1234","currency":"EUR","total":"129.90","lines":[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}],"channel":"web"}'::jsonb)
RETURNING event_id, stream_version, global_position;
