#!/usr/bin/env python3
"""SQL for the drain's handler floor (bench/worker.sh): a worker configuration's projections
set up in a database of their own, their handlers compiled into one PL/pgSQL function per
projection exactly as the worker compiles them (the envelope is the function's first parameter,
so `$1` in a handler means it, and each handler's SQL runs unchanged), and a procedure that
applies a range of prepared envelopes in chunks, one transaction per chunk, every projection's
function once per chunk.

What is left out is everything a reader of the stream adds: the walsender, the worker, binding
and parsing the envelopes, the commit-order map and checkpoints. So the time the procedure
takes is a lower bound on the target backend's share of a drain.

    floor.py WORKER.toml > floor.sql
"""
import sys
import tomllib

# Statements PL/pgSQL runs as they are (the worker compiles the same kinds).
COMPILABLE = ("insert", "update", "delete", "merge", "with")


def quote_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def dollar_tag(texts, base: str) -> str:
    tag, n = f"${base}$", 0
    while any(tag in t for t in texts):
        n += 1
        tag = f"${base}{n}$"
    return tag


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    with open(sys.argv[1], "rb") as f:
        config = tomllib.load(f)
    projections = config.get("projection", [])
    if not projections:
        sys.exit(f"{sys.argv[1]}: no [[projection]]")
    out = ["CREATE TABLE envelopes (pos bigint PRIMARY KEY, env jsonb NOT NULL);"]
    for i, p in enumerate(projections):
        if p.get("setup"):
            out.append(p["setup"].rstrip().rstrip(";") + ";")
        handlers = p.get("handlers", {})
        for event_type, sql in handlers.items():
            word = sql.split(None, 1)[0].lower() if sql.strip() else ""
            if word not in COMPILABLE or sql.strip().rstrip(";").count(";"):
                sys.exit(f"{sys.argv[1]}: projection {p['name']!r}, handler {event_type!r}: "
                         "the floor takes single INSERT/UPDATE/DELETE/MERGE/WITH statements only")
        tag = dollar_tag(handlers.values(), "floor")
        body = ["#variable_conflict use_column", "BEGIN",
                "    FOR _floor_i IN 1 .. cardinality(_floor_envs) LOOP",
                "        _floor_env := _floor_envs[_floor_i];",
                "        CASE _floor_env->>'type'"]
        for event_type, sql in handlers.items():
            body.append(f"        WHEN {quote_literal(event_type)} THEN")
            body.append(sql.strip().rstrip(";"))
            body.append(";")
        body += ["        ELSE NULL;", "        END CASE;", "    END LOOP;", "END"]
        out.append(f"-- projection {p['name']}")
        out.append(f"CREATE FUNCTION apply_{i}(_floor_env jsonb, _floor_envs jsonb[]) RETURNS void\n"
                   f"LANGUAGE plpgsql AS {tag}\n" + "\n".join(body) + f"\n{tag};")
    calls = "\n".join(f"        PERFORM apply_{i}(NULL, envs);" for i in range(len(projections)))
    out.append(f"""CREATE PROCEDURE apply_range(first bigint, last bigint, chunk integer)
LANGUAGE plpgsql AS $floor_range$
DECLARE
    envs jsonb[];
    lo bigint := first - 1;
BEGIN
    WHILE lo < last LOOP
        envs := ARRAY(SELECT env FROM envelopes WHERE pos > lo AND pos <= least(lo + chunk, last) ORDER BY pos);
{calls}
        COMMIT;
        lo := lo + chunk;
    END LOOP;
END
$floor_range$;""")
    print("\n".join(out))


if __name__ == "__main__":
    main()
