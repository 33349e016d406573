-- zipf_ours.sql through the PL/pgSQL append.
\set o random_zipfian(1, 100000, 1.1)
\set t random(1, 4)
SELECT * FROM bench.pl_append_event('order-' || :o,
    (ARRAY['OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled'])[:t],
    jsonb_build_object('order_id', 'ord-' || :o, 'customer_id', 'cust-' || (:o % 9973),
        'currency', 'EUR', 'total', '129.90', 'channel', 'web', 'warehouse', 'FRA-2',
        'lines', '[{"sku":"SKU-1001","qty":2,"price":"39.95"},{"sku":"SKU-2002","qty":1,"price":"50.00"}]'::jsonb,
        'shipping', '{"carrier":"DHL","service":"express","address":{"city":"Lyon","country":"FR"}}'::jsonb),
    '{"correlation_id":"5f0c7d52-8d0e-4c43-9a2b-0d6c1e7f3a10","source":"checkout"}');
