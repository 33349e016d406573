"""Real concurrent clients against append conditions and append_multi (docs/dcb.md).

    python dcb_clients.py DSN [--seconds N] [--clients N]

1. Courses: N clients (16) decide for a bounded time, each in its own connection, with read and
   append in separate transactions: "subscribe student S to course C if C has a seat and S has
   fewer than 5 courses" (read_query on both boundaries, then append after the token; ES005:
   decide again). Half the clients share 20 hot courses and 80 students (overlapping
   boundaries); the other half each own their courses and students (disjoint boundaries).
   Afterwards no course exceeds its capacity, no student holds more than 5 courses, and the
   disjoint clients saw no ES005.
2. Transfers: N clients append_multi to a random pair of 10 accounts, listed in random order,
   half with expected versions (retrying ES001). Afterwards: no deadlock was reported, every
   account's versions are 1..n without a gap, and every transfer has both its events
   (all-or-nothing).

Exits non-zero, saying why, when an invariant fails.
"""

import argparse
import json
import random
import sys
import threading
import time
import uuid

import psycopg

CAPACITY = 10
STUDENT_LIMIT = 5
HOT = 20  # courses the overlapping clients share, with 4 * HOT shared students


def query(course, student):
    return {"items": [
        {"types": ["CourseDefined", "StudentSubscribed"], "tags": [f"course:{course}"]},
        {"types": ["StudentSubscribed"], "tags": [f"student:{student}"]},
    ]}


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def decider(dsn, client, deadline, shared, tally, errors):
    rng = random.Random(client)
    kind = "overlapping" if shared else "disjoint"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                if shared:
                    course, student = f"hot-{rng.randint(1, HOT)}", f"shared-{rng.randint(1, 4 * HOT)}"
                else:
                    course = f"own-{client}-{rng.randint(1, 1000)}"
                    student = f"own-{client}-{rng.randint(1, 3000)}"
                q = query(course, student)
                while True:
                    # The decision: one transaction.
                    result = conn.execute("SELECT eventstore.read_query(%s)",
                                          (json.dumps(q),)).fetchone()[0]
                    seats = sum(1 for e in result["events"] if e["type"] == "StudentSubscribed"
                                and f"course:{course}" in e["tags"])
                    courses = sum(1 for e in result["events"] if e["type"] == "StudentSubscribed"
                                  and f"student:{student}" in e["tags"])
                    already = any(e["type"] == "StudentSubscribed"
                                  and f"course:{course}" in e["tags"]
                                  and f"student:{student}" in e["tags"] for e in result["events"])
                    if already or seats >= CAPACITY or courses >= STUDENT_LIMIT:
                        tally.add(f"{kind}.refused")
                        break
                    condition = {"fail_if_events_match": q, "after": result["token"]}
                    try:
                        # The append: another transaction, on another round trip.
                        conn.execute(
                            "SELECT eventstore.append_event(%s, 'StudentSubscribed', %s, "
                            "tags => %s, condition => %s)",
                            (f"student-{student}", json.dumps({"course": course}),
                             [f"course:{course}", f"student:{student}"], json.dumps(condition)))
                        tally.add(f"{kind}.subscribed")
                        break
                    except psycopg.Error as e:
                        if e.sqlstate == "ES005":
                            tally.add(f"{kind}.es005")
                            continue
                        raise
    except Exception as e:  # noqa: BLE001 - report every failure of a client
        errors.append(f"decider {client}: {type(e).__name__}: {e}")


def transferrer(dsn, client, deadline, tally, errors):
    rng = random.Random(1000 + client)
    with_versions = client % 2 == 0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                a, b = rng.sample(range(1, 11), 2)
                transfer = str(uuid.uuid4())
                while True:
                    legs = [(f"account-{a}", "MoneySent"), (f"account-{b}", "MoneyReceived")]
                    rng.shuffle(legs)
                    appends = []
                    for stream, type_ in legs:
                        item = {"stream_id": stream, "events": [
                            {"type": type_, "data": {"transfer": transfer}, "tags": [f"transfer:{transfer}"]}]}
                        if with_versions:
                            item["expected_version"] = conn.execute(
                                "SELECT eventstore.stream_version(%s)", (stream,)).fetchone()[0]
                        appends.append(item)
                    try:
                        conn.execute("SELECT count(*) FROM eventstore.append_multi(%s)",
                                     (json.dumps(appends),))
                        tally.add("transfers")
                        break
                    except psycopg.Error as e:
                        if e.sqlstate == "ES001" and with_versions:
                            tally.add("transfers.es001")
                            continue
                        raise
    except Exception as e:  # noqa: BLE001
        errors.append(f"transferrer {client}: {type(e).__name__}: {e}")


def run(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dsn")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args()
    failures = []

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for c in [f"hot-{i}" for i in range(1, HOT + 1)]:
            conn.execute("SELECT eventstore.append_event(%s, 'CourseDefined', %s, tags => %s)",
                         (f"course-{c}", json.dumps({"capacity": CAPACITY}), [f"course:{c}"]))

    tally, errors = Tally(), []
    deadline = time.monotonic() + args.seconds
    run([threading.Thread(target=decider, args=(args.dsn, i, deadline, i % 2 == 0, tally, errors))
         for i in range(args.clients)])
    print("courses:", json.dumps(tally.counts, sort_keys=True))
    failures += errors
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        over = conn.execute("""
            SELECT t, count(*) FROM eventstore.events, unnest(tags) t
            WHERE event_type = 'StudentSubscribed' AND t LIKE 'course:%%'
            GROUP BY t HAVING count(*) > %s""", (CAPACITY,)).fetchall()
        if over:
            failures.append(f"courses over capacity: {over}")
        busy = conn.execute("""
            SELECT t, count(*) FROM eventstore.events, unnest(tags) t
            WHERE event_type = 'StudentSubscribed' AND t LIKE 'student:%%'
            GROUP BY t HAVING count(*) > %s""", (STUDENT_LIMIT,)).fetchall()
        if busy:
            failures.append(f"students over {STUDENT_LIMIT} courses: {busy}")
        twice = conn.execute("""
            SELECT tags, count(*) FROM eventstore.events WHERE event_type = 'StudentSubscribed'
            GROUP BY tags HAVING count(*) > 1""").fetchall()
        if twice:
            failures.append(f"students subscribed twice to a course: {twice}")
        full = conn.execute("""
            SELECT count(*) FROM eventstore.events
            WHERE event_type = 'StudentSubscribed' AND tags::text LIKE '%%course:hot-%%'""").fetchone()[0]
    if tally.counts.get("disjoint.es005", 0) != 0:
        failures.append(f"disjoint boundaries saw {tally.counts['disjoint.es005']} ES005")
    if tally.counts.get("disjoint.subscribed", 0) == 0 or tally.counts.get("overlapping.subscribed", 0) == 0:
        failures.append("a kind of client never subscribed anyone")
    print(f"courses: hot courses hold {full} of {HOT * CAPACITY} seats; no course over capacity, "
          f"no student over {STUDENT_LIMIT} courses")

    tally2, errors2 = Tally(), []
    deadline = time.monotonic() + args.seconds
    run([threading.Thread(target=transferrer, args=(args.dsn, i, deadline, tally2, errors2))
         for i in range(args.clients)])
    print("transfers:", json.dumps(tally2.counts, sort_keys=True))
    failures += errors2
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        gaps = conn.execute("""
            SELECT stream_id, count(*), max(stream_version) FROM eventstore.events
            WHERE stream_id LIKE 'account-%%' GROUP BY stream_id
            HAVING count(*) <> max(stream_version) OR count(DISTINCT stream_version) <> count(*)""").fetchall()
        if gaps:
            failures.append(f"version gaps: {gaps}")
        halves = conn.execute("""
            SELECT data->>'transfer', count(*), count(DISTINCT stream_id) FROM eventstore.events
            WHERE stream_id LIKE 'account-%%' GROUP BY 1
            HAVING count(*) <> 2 OR count(DISTINCT stream_id) <> 2""").fetchall()
        if halves:
            failures.append(f"transfers not all-or-nothing: {halves[:5]}")
        stored = conn.execute("SELECT count(DISTINCT data->>'transfer') FROM eventstore.events "
                              "WHERE stream_id LIKE 'account-%%'").fetchone()[0]
        versions = conn.execute("SELECT coalesce(sum(version), 0) FROM eventstore.streams "
                                "WHERE stream_id LIKE 'account-%%'").fetchone()[0]
    if stored != tally2.counts.get("transfers", 0) or versions != 2 * stored:
        failures.append(f"{tally2.counts.get('transfers', 0)} transfers appended, {stored} stored, "
                        f"stream versions sum to {versions}")
    print(f"transfers: {stored} stored, each with both legs; versions gapless; no deadlock")

    if failures:
        for f in failures:
            print("FAILED:", f)
        sys.exit(1)
    print("dcb clients: all invariants held")


if __name__ == "__main__":
    main()
