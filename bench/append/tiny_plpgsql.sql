-- tiny_ours.sql through the PL/pgSQL append.
\set r random(1, 1000000000000000)
SELECT * FROM bench.pl_append_event('s-' || :client_id || '-' || :r, 'E', '{}');
