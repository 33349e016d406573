-- Run before every measured run, so each starts from empty tables and a fresh checkpoint.
DROP EXTENSION IF EXISTS pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
TRUNCATE bench.events, bench.events_idx, bench.streams, bench.pl_events, bench.pl_streams;
ALTER SEQUENCE bench.global_position_seq RESTART;
ALTER SEQUENCE bench.global_position_idx_seq RESTART;
ALTER SEQUENCE bench.pl_position_seq RESTART;
CHECKPOINT;
