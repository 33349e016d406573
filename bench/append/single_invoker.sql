-- single_ours.sql through bench.append_event_invoker (no SECURITY DEFINER, no SET): a new stream per call
-- (stream id from the client id and a random number), an order payload of ~190 bytes.
\set r random(1, 1000000000000000)
SELECT * FROM bench.append_event_invoker('order-' || :client_id || '-' || :r, 'OrderPlaced',
    '{"order_id":"ord-2024-000042","customer_id":"cust-1234","currency":"EUR","total":"129.90","lines":[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}],"channel":"web"}'::jsonb);
