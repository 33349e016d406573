-- As single_raw.sql, into bench.events_idx: the floor plus the two paging indexes of
-- eventstore.events (breakdown of the gap only).
\set r random(1, 1000000000000000)
INSERT INTO bench.events_idx (stream_id, stream_version, event_id, event_type, data)
VALUES ('order-' || :client_id || '-' || :r, 1, gen_random_uuid(), 'OrderPlaced',
    '{"order_id":"ord-2024-000042","customer_id":"cust-1234","currency":"EUR","total":"129.90","lines":[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}],"channel":"web"}'::jsonb)
RETURNING event_id, stream_version, global_position;
