-- The read models against a from-scratch fold of eventstore.events, written independently of
-- the handlers: prints the number of rows of order_summary and of customer_revenue that are
-- missing, extra or different (0 0 when both are exact).
--
-- An order is folded in position order from its OrderPlaced (events before it change nothing:
-- the handlers' UPDATEs find no row); the two appends of one order are sequential, so position
-- order is the order both designs applied them in.

WITH ev AS (
    SELECT data->>'order_id' AS order_id, data->>'customer_id' AS customer_id, event_type,
           data, global_position, recorded_at
      FROM eventstore.events
     WHERE event_type IN ('OrderPlaced', 'PaymentCaptured', 'OrderShipped', 'OrderCancelled')
), placed AS (
    SELECT order_id, customer_id, (data->>'total')::numeric AS total, global_position
      FROM ev WHERE event_type = 'OrderPlaced'
), expected_summary AS (
    SELECT p.order_id, p.customer_id,
           (array_agg(CASE e.event_type WHEN 'OrderPlaced' THEN 'placed' WHEN 'PaymentCaptured' THEN 'paid'
                                         WHEN 'OrderShipped' THEN 'shipped' ELSE 'cancelled' END
                      ORDER BY e.global_position DESC))[1] AS status,
           p.total,
           coalesce(sum((e.data->>'amount')::numeric) FILTER (WHERE e.event_type = 'PaymentCaptured'), 0) AS paid,
           count(*) AS event_count,
           max(e.global_position) AS last_position,
           (array_agg(e.recorded_at ORDER BY e.global_position DESC))[1] AS updated_at
      FROM placed p JOIN ev e ON e.order_id = p.order_id AND e.global_position >= p.global_position
     GROUP BY p.order_id, p.customer_id, p.total
), expected_revenue AS (
    SELECT customer_id,
           count(*) FILTER (WHERE event_type = 'OrderPlaced') AS orders,
           coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured'), 0) AS revenue,
           count(*) FILTER (WHERE event_type = 'OrderCancelled') AS cancelled
      FROM ev WHERE event_type <> 'OrderShipped'
     GROUP BY customer_id
), summary AS (
    SELECT order_id, customer_id, status, total, paid, event_count, last_position, updated_at FROM order_summary
), revenue AS (
    SELECT customer_id, orders, revenue, cancelled FROM customer_revenue
)
SELECT (SELECT count(*) FROM ((TABLE summary EXCEPT ALL TABLE expected_summary)
                              UNION ALL (TABLE expected_summary EXCEPT ALL TABLE summary)) d),
       (SELECT count(*) FROM ((TABLE revenue EXCEPT ALL TABLE expected_revenue)
                              UNION ALL (TABLE expected_revenue EXCEPT ALL TABLE revenue)) d);
