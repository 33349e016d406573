\set c random(1, 200)
\set s random(1, 1000000000)
SELECT bench.subscribe_serializable(:client_id || '-' || :c, :client_id || '-' || :s, 1000000000);
