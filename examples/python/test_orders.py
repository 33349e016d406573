"""The order service against a real cluster and a real eventstore-worker.

ORDERS_WRITER_DSN connects as a role granted eventstore.grant_writer; ORDERS_READER_DSN as a
role that may only SELECT order_summary and wait for the worker (scripts/clients_test.sh).
"""

import json
import os
import threading
import uuid
from decimal import Decimal

import psycopg
import pytest

import orders


def connect(var):
    return psycopg.connect(os.environ[var], autocommit=True)


@pytest.fixture
def writer():
    with connect("ORDERS_WRITER_DSN") as conn:
        yield conn


@pytest.fixture
def reader():
    with connect("ORDERS_READER_DSN") as conn:
        yield conn


@pytest.fixture
def order_id():
    return "py-" + uuid.uuid4().hex[:12]


def history(conn, order_id):
    return [
        (v, t)
        for v, t in conn.execute(
            "SELECT stream_version, event_type FROM eventstore.read_stream(%s)", (f"order-{order_id}",)
        )
    ]


def place(conn, order_id, total="120.50"):
    return orders.execute(conn, order_id, "place", customer_id="ada", total=total)


def test_read_your_writes_through_the_whole_lifecycle(writer, reader, order_id):
    _, token, _ = place(writer, order_id)
    assert orders.read_summary(reader, order_id, token) == (
        order_id, "ada", "placed", Decimal("120.50"), Decimal("0"), 1)

    _, token, _ = orders.execute(writer, order_id, "pay")
    assert orders.read_summary(reader, order_id, token)[2:] == (
        "paid", Decimal("120.50"), Decimal("120.50"), 2)

    version, token, attempts = orders.execute(writer, order_id, "ship", carrier="DHL")
    assert (version, attempts) == (3, 1)
    assert orders.read_summary(reader, order_id, token)[2] == "shipped"


def test_the_domain_refuses_and_nothing_is_written(writer, order_id):
    place(writer, order_id)
    with pytest.raises(orders.Refused, match="is placed, cannot ship"):
        orders.execute(writer, order_id, "ship", carrier="DHL")
    orders.execute(writer, order_id, "cancel", reason="changed mind")
    with pytest.raises(orders.Refused, match="is cancelled, cannot pay"):
        orders.execute(writer, order_id, "pay")
    assert history(writer, order_id) == [(1, "OrderPlaced"), (2, "OrderCancelled")]


def test_the_reader_role_cannot_append(reader, order_id):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("SELECT eventstore.append_event(%s, 'OrderPlaced', '{}')", (f"order-{order_id}",))


def other_writer_appends(order_id, event_type, data):
    """A before_append hook: a second session appends first, on the attempts given."""
    def hook(attempt, attempts=(1,)):
        if attempt in attempts:
            with connect("ORDERS_WRITER_DSN") as other:
                other.execute("SELECT eventstore.append_event(%s, %s, %s::jsonb)",
                              (f"order-{order_id}", event_type, json.dumps({"order_id": order_id, **data})))
    return hook


def test_es001_is_retried_with_a_fresh_read(writer, reader, order_id):
    place(writer, order_id)
    # Someone pays between our read and our append: our cancel hits ES001, reads the paid
    # order again, and cancelling a paid order is still allowed.
    hook = other_writer_appends(order_id, "PaymentCaptured", {"customer_id": "ada", "amount": "120.50"})
    version, token, attempts = orders.execute(writer, order_id, "cancel", reason="late", before_append=hook)
    assert (version, attempts) == (3, 2)
    assert history(writer, order_id) == [(1, "OrderPlaced"), (2, "PaymentCaptured"), (3, "OrderCancelled")]
    assert orders.read_summary(reader, order_id, token)[2:] == (
        "cancelled", Decimal("120.50"), Decimal("120.50"), 3)


def test_a_retry_can_turn_into_a_refusal(writer, order_id):
    place(writer, order_id)
    hook = other_writer_appends(order_id, "PaymentCaptured", {"customer_id": "ada", "amount": "120.50"})
    with pytest.raises(orders.Refused, match="is paid, cannot pay"):
        orders.execute(writer, order_id, "pay", before_append=hook)
    assert history(writer, order_id) == [(1, "OrderPlaced"), (2, "PaymentCaptured")]


def test_retries_are_bounded(writer, order_id):
    place(writer, order_id)
    seen = []

    def always_interfere(attempt):
        seen.append(attempt)
        other_writer_appends(order_id, "OrderNoteAdded", {"note": f"n{attempt}"})(attempt, attempts=(attempt,))

    with pytest.raises(psycopg.Error) as err:
        orders.execute(writer, order_id, "cancel", reason="x", max_attempts=3, before_append=always_interfere)
    assert err.value.sqlstate == "ES001"
    assert seen == [1, 2, 3]
    assert [t for _, t in history(writer, order_id)] == ["OrderPlaced"] + ["OrderNoteAdded"] * 3


def race(order_id, commands):
    """Runs the commands in two sessions that both read the order before either appends."""
    both_read = threading.Barrier(len(commands))
    results = [None] * len(commands)

    def run(i, command, args):
        def hook(attempt):
            if attempt == 1:
                both_read.wait(timeout=10)
        try:
            with connect("ORDERS_WRITER_DSN") as conn:
                results[i] = orders.execute(conn, order_id, command, before_append=hook, **args)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c, a)) for i, (c, a) in enumerate(commands)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_two_clerks_pay_the_same_order_at_once(writer, reader, order_id):
    place(writer, order_id)
    results = race(order_id, [("pay", {}), ("pay", {})])
    won = [r for r in results if isinstance(r, tuple)]
    lost = [r for r in results if not isinstance(r, tuple)]
    # Exactly one wins on its first attempt; the other read again and was refused: paid once.
    assert len(won) == 1 and won[0][0] == 2 and won[0][2] == 1
    assert len(lost) == 1 and isinstance(lost[0], orders.Refused) and "is paid" in str(lost[0])
    assert history(writer, order_id) == [(1, "OrderPlaced"), (2, "PaymentCaptured")]
    assert orders.read_summary(reader, order_id, won[0][1])[4] == Decimal("120.50")


def test_pay_and_cancel_race_and_the_loser_decides_again(writer, reader, order_id):
    place(writer, order_id)
    pay, cancel = race(order_id, [("pay", {}), ("cancel", {"reason": "too slow"})])
    if isinstance(pay, tuple) and pay[2] == 1:
        # Payment won; the cancel was re-decided on the paid order and is allowed.
        assert isinstance(cancel, tuple) and cancel[0] == 3 and cancel[2] == 2
        assert history(writer, order_id) == [(1, "OrderPlaced"), (2, "PaymentCaptured"), (3, "OrderCancelled")]
        token = cancel[1]
    else:
        # Cancel won; paying a cancelled order is refused.
        assert isinstance(cancel, tuple) and cancel[0] == 2 and cancel[2] == 1
        assert isinstance(pay, orders.Refused) and "is cancelled" in str(pay)
        assert history(writer, order_id) == [(1, "OrderPlaced"), (2, "OrderCancelled")]
        token = cancel[1]
    assert orders.read_summary(reader, order_id, token)[2] == "cancelled"
