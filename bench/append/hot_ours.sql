-- Hot streams: every client appends to one of 10 streams with the version it just read as
-- the expected version (ES001 when another client got there first).
\set s random(1, 10)
SELECT bench.hot_ours('hot-' || :s);
