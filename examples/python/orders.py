"""The order service, command side and query side, over psycopg 3.

Command side: load an order by folding its stream with eventstore.aggregate and the built-in
reducer eventstore.merge, decide, and append with the version the decision was based on. When
another writer got there first (SQLSTATE ES001) read again and decide again, a bounded number
of times. Query side: wait until order_summary reflects our own commit, then read it.
"""

import json

import psycopg

WRONG_EXPECTED_VERSION = "ES001"


class Refused(Exception):
    """The domain says no: the order is not in a state that allows the command."""


def status_of(state):
    """eventstore.merge folds the events' data into one object; each event type leaves its own
    key (OrderPlaced total, PaymentCaptured amount, OrderShipped carrier, OrderCancelled reason)."""
    if not state:
        return None
    for key, status in (("reason", "cancelled"), ("carrier", "shipped"), ("amount", "paid")):
        if key in state:
            return status
    return "placed"


class Order:
    def __init__(self, order_id, version, state):
        self.order_id = order_id
        self.version = version
        self.status = status_of(state)
        self.customer_id = state.get("customer_id")
        self.total = state.get("total")


# The rules examples/orders.sql follows: an order is placed once, paid once while placed,
# shipped only when paid, cancelled only before it ships.
def decide(order, command, **args):
    if command == "place":
        if order.version != 0:
            raise Refused(f"order {order.order_id} already exists")
        return "OrderPlaced", {"customer_id": args["customer_id"], "total": args["total"]}
    if order.version == 0:
        raise Refused(f"order {order.order_id} does not exist")
    if command == "pay":
        if order.status != "placed":
            raise Refused(f"order {order.order_id} is {order.status}, cannot pay")
        return "PaymentCaptured", {"customer_id": order.customer_id, "amount": order.total}
    if command == "ship":
        if order.status != "paid":
            raise Refused(f"order {order.order_id} is {order.status}, cannot ship")
        return "OrderShipped", {"customer_id": order.customer_id, "carrier": args["carrier"]}
    if command == "cancel":
        if order.status in ("shipped", "cancelled"):
            raise Refused(f"order {order.order_id} is {order.status}, cannot cancel")
        return "OrderCancelled", {"customer_id": order.customer_id, "reason": args["reason"]}
    raise ValueError(f"unknown command {command}")


def load(conn, order_id):
    row = conn.execute(
        "SELECT stream_version, state FROM eventstore.aggregate(%s, 'eventstore.merge(jsonb, eventstore.events)'::regprocedure)",
        (f"order-{order_id}",),
    ).fetchone()
    version, state = row if row else (0, {})
    return Order(order_id, version or 0, state or {})


def execute(conn, order_id, command, max_attempts=3, before_append=None, **args):
    """Run a command; returns (stream_version, token, attempts). The token is the WAL position
    after our commit, for wait_for."""
    for attempt in range(1, max_attempts + 1):
        order = load(conn, order_id)
        event_type, data = decide(order, command, **args)
        data = {"order_id": str(order_id), **data}
        if before_append:
            before_append(attempt)
        try:
            with conn.transaction():
                (version,) = conn.execute(
                    "SELECT stream_version FROM eventstore.append_event(%s, %s, %s::jsonb, expected_version => %s)",
                    (f"order-{order_id}", event_type, json.dumps(data, default=str), order.version),
                ).fetchone()
            (token,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            return version, token, attempt
        except psycopg.Error as e:
            if e.sqlstate != WRONG_EXPECTED_VERSION or attempt == max_attempts:
                raise
    raise AssertionError("unreachable")


def read_summary(conn, order_id, token, timeout="5s"):
    (caught_up,) = conn.execute(
        "SELECT eventstore_worker.wait_for('order_summary', %s::pg_lsn, %s::interval)", (token, timeout)
    ).fetchone()
    if not caught_up:
        raise TimeoutError(f"order_summary did not reach {token} within {timeout}")
    return conn.execute(
        "SELECT order_id, customer_id, status, total, paid, event_count FROM order_summary WHERE order_id = %s",
        (str(order_id),),
    ).fetchone()
