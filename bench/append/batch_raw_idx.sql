-- As batch_raw.sql, into bench.events_idx: the floor plus the two paging indexes of
-- eventstore.events (breakdown of the gap only).
\set r random(1, 1000000000000000)
INSERT INTO bench.events_idx (stream_id, stream_version, event_id, event_type, data)
SELECT 'order-' || :client_id || '-' || :r, v, gen_random_uuid(), 'OrderLineAdded',
    '{"order_id":"ord-2024-000042","line":1,"sku":"SKU-1001","qty":2,"price":"11.95","currency":"EUR"}'::jsonb
FROM generate_series(1, 100) AS v;
