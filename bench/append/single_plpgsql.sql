-- single_ours.sql's append through bench.pl_append_event (PL/pgSQL, same checks, same table
-- shape): the alternative a user would write.
\set r random(1, 1000000000000000)
SELECT * FROM bench.pl_append_event('order-' || :client_id || '-' || :r, 'OrderPlaced',
    '{"order_id":"ord-2024-000042","customer_id":"cust-1234","currency":"EUR","total":"129.90","lines":[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}],"channel":"web"}'::jsonb);
