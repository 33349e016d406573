-- Breakdown only: batch_ours.sql's work as one plain SQL statement (stream upsert by 100 +
-- insert of 100 rows into bench.events_idx, which has all five indexes of eventstore.events).
\set r random(1, 1000000000000000)
WITH s AS (
    INSERT INTO bench.streams AS s (stream_id, category, version)
    VALUES ('order-' || :client_id || '-' || :r, bench.category('order-' || :client_id || '-' || :r), 100)
    ON CONFLICT (stream_id) DO UPDATE SET version = s.version + EXCLUDED.version, updated_at = now()
    RETURNING s.stream_id, s.version)
INSERT INTO bench.events_idx (stream_id, stream_version, event_id, event_type, data)
SELECT s.stream_id, s.version - 100 + v, gen_random_uuid(), 'OrderLineAdded',
    '{"order_id":"ord-2024-000042","line":1,"sku":"SKU-1001","qty":2,"price":"11.95","currency":"EUR"}'::jsonb
FROM s, generate_series(1, 100) AS v;
