-- What an application would write instead of running eventstore-worker: a trigger that keeps
-- order_summary and customer_revenue up to date inside the appending transaction. The handlers
-- are those of the first two projections of examples/orders-worker.toml, with the envelope in
-- `e` where the worker binds it as $1 (in each branch order_summary's, then customer_revenue's);
-- the read-model tables come from the projections' setup.

CREATE SCHEMA bench;

CREATE FUNCTION bench.apply_order_event() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    -- The envelope the worker hands its handlers (cdc-worker/src/envelope.rs). recorded_at is
    -- the jsonb form of the timestamptz: another spelling of the same instant, which is all
    -- the handlers' ::timestamptz casts see.
    e jsonb := jsonb_build_object(
        'stream_id', NEW.stream_id, 'stream_version', NEW.stream_version,
        'global_position', NEW.global_position, 'event_id', NEW.event_id, 'type', NEW.event_type,
        'data', NEW.data, 'metadata', NEW.metadata, 'recorded_at', NEW.recorded_at);
BEGIN
    CASE e->>'type'
    WHEN 'OrderPlaced' THEN
        INSERT INTO order_summary (order_id, customer_id, status, total, event_count, last_position, updated_at)
        VALUES (e->'data'->>'order_id', e->'data'->>'customer_id', 'placed', (e->'data'->>'total')::numeric,
                1, (e->>'global_position')::bigint, (e->>'recorded_at')::timestamptz);
        INSERT INTO customer_revenue AS c (customer_id, orders) VALUES (e->'data'->>'customer_id', 1)
        ON CONFLICT (customer_id) DO UPDATE SET orders = c.orders + 1;
    WHEN 'PaymentCaptured' THEN
        UPDATE order_summary
           SET status = 'paid', paid = paid + (e->'data'->>'amount')::numeric, event_count = event_count + 1,
               last_position = (e->>'global_position')::bigint, updated_at = (e->>'recorded_at')::timestamptz
         WHERE order_id = e->'data'->>'order_id';
        INSERT INTO customer_revenue AS c (customer_id, revenue)
        VALUES (e->'data'->>'customer_id', (e->'data'->>'amount')::numeric)
        ON CONFLICT (customer_id) DO UPDATE SET revenue = c.revenue + EXCLUDED.revenue;
    WHEN 'OrderShipped' THEN
        UPDATE order_summary
           SET status = 'shipped', event_count = event_count + 1,
               last_position = (e->>'global_position')::bigint, updated_at = (e->>'recorded_at')::timestamptz
         WHERE order_id = e->'data'->>'order_id';
    WHEN 'OrderCancelled' THEN
        UPDATE order_summary
           SET status = 'cancelled', event_count = event_count + 1,
               last_position = (e->>'global_position')::bigint, updated_at = (e->>'recorded_at')::timestamptz
         WHERE order_id = e->'data'->>'order_id';
        INSERT INTO customer_revenue AS c (customer_id, cancelled) VALUES (e->'data'->>'customer_id', 1)
        ON CONFLICT (customer_id) DO UPDATE SET cancelled = c.cancelled + 1;
    ELSE
        -- Like the worker's projections (on_unknown = "skip"): other event types change nothing.
        NULL;
    END CASE;
    RETURN NULL;
END
$$;

CREATE TRIGGER apply_order_event AFTER INSERT ON eventstore.events
    FOR EACH ROW EXECUTE FUNCTION bench.apply_order_event();
