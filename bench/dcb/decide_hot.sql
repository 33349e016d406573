\set s random(1, 1000000000)
SELECT bench.subscribe_dcb('hot', :client_id || '-' || :s, 1000000000);
