-- Timing happens in the server: the token is pg_current_wal_lsn() at the start of the call
-- (after the append committed, in the same session), the figure is the time wait_for took.
-- NULL = wait_for timed out (5 s).
CREATE EXTENSION pg_eventstore;
CREATE SEQUENCE bench_orders;
CREATE UNLOGGED TABLE bench_wait (ms float8);
CREATE UNLOGGED TABLE bench_wait_idle (ms float8);
CREATE TABLE bench_unrelated (id int);
CREATE PUBLICATION eventstore_events FOR TABLE eventstore.events;
SELECT 1 FROM pg_create_logical_replication_slot('eventstore_worker', 'pgoutput');
CREATE FUNCTION bench_read_your_write(projection text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    token constant pg_lsn := pg_current_wal_lsn();
    t0 constant timestamptz := clock_timestamp();
BEGIN
    IF NOT eventstore_worker.wait_for(projection, token) THEN
        RETURN NULL;
    END IF;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END
$$;
