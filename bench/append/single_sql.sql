-- Breakdown only: single_ours.sql's work as one plain SQL statement (stream upsert + insert
-- into bench.events_idx, which has all five indexes of eventstore.events).
\set r random(1, 1000000000000000)
WITH s AS (
    INSERT INTO bench.streams AS s (stream_id, category, version)
    VALUES ('order-' || :client_id || '-' || :r, bench.category('order-' || :client_id || '-' || :r), 1)
    ON CONFLICT (stream_id) DO UPDATE SET version = s.version + EXCLUDED.version, updated_at = now()
    RETURNING s.stream_id, s.version)
INSERT INTO bench.events_idx (stream_id, stream_version, event_id, event_type, data)
SELECT s.stream_id, s.version, gen_random_uuid(), 'OrderPlaced',
    '{"order_id":"ord-2024-000042","customer_id":"cust-1234","currency":"EUR","total":"129.90","lines":[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}],"channel":"web"}'::jsonb
FROM s
RETURNING event_id, stream_version, global_position;
