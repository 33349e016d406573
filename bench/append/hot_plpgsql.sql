-- hot_ours.sql through the PL/pgSQL append.
\set s random(1, 10)
SELECT bench.hot_plpgsql('hot-' || :s);
