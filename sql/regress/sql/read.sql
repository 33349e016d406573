-- Reading streams, the whole store and categories (runs after append.sql).

SELECT stream_version, event_type, data, metadata
FROM eventstore.read_stream('order-1');

SELECT stream_version, event_type FROM eventstore.read_stream('order-1', from_version => 2, max_count => 1);

SELECT stream_version, event_type FROM eventstore.read_stream_backward('order-1');

SELECT stream_version, event_type FROM eventstore.read_stream_backward('order-1', from_version => 2);

SELECT count(*) AS absent FROM eventstore.read_stream('order-404');

-- Paging through the whole store: keep passing the (transaction_id, global_position) of the
-- last event seen. Here, pages of 3.
CREATE TEMP TABLE cursor_pos AS SELECT '0'::xid8 AS txid, 0::bigint AS pos;
CREATE TEMP TABLE seen (page int, stream_id text, stream_version bigint,
                        transaction_id xid8, global_position bigint);
DO $$
DECLARE
    p int := 0;
    n int;
BEGIN
    LOOP
        p := p + 1;
        INSERT INTO seen
        SELECT p, e.stream_id, e.stream_version, e.transaction_id, e.global_position
        FROM cursor_pos c, eventstore.read_all(c.txid, c.pos, 3) e;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        UPDATE cursor_pos SET (txid, pos) = (
            SELECT s.transaction_id, s.global_position FROM seen s
            ORDER BY s.transaction_id DESC, s.global_position DESC LIMIT 1);
    END LOOP;
END $$;
SELECT page, stream_id, stream_version, global_position FROM seen ORDER BY page, global_position;
SELECT count(*) = (SELECT count(*) FROM eventstore.events) AS saw_every_event_once,
       count(DISTINCT global_position) = count(*) AS no_duplicates
FROM seen;

SELECT stream_id, stream_version, event_type FROM eventstore.read_category('order', max_count => 4);

SELECT count(*) FROM eventstore.read_category('invoice');

SELECT error_of($$SELECT * FROM eventstore.read_stream('order-1', 0)$$);
SELECT error_of($$SELECT * FROM eventstore.read_stream('order-1', 1, -5)$$);
SELECT error_of($$SELECT * FROM eventstore.read_all('0', 0, -1)$$);
SELECT error_of($$SELECT * FROM eventstore.read_category(NULL)$$);
