-- Bad input and the store's limits: every refusal names what was wrong, with an SQLSTATE, and
-- writes nothing.
SELECT count(*) AS events_before FROM eventstore.events \gset

-- Nesting: eventstore.max_json_depth (default 64) bounds an event's data and metadata. (The
-- settings exist once the extension's library is loaded, here by the first append.)
SELECT stream_version FROM eventstore.append_event('deep-1', 'Nested', (repeat('[', 64) || repeat(']', 64))::jsonb);
SHOW eventstore.max_json_depth;
SELECT error_of(format('SELECT eventstore.append_event(%L, %L, %L)', 'deep-1', 'Nested', repeat('[', 65) || repeat(']', 65)));
SELECT error_of(format($$SELECT eventstore.append_event('deep-1', 'Nested', '{}', %L)$$, repeat('{"a":', 65) || '1' || repeat('}', 65)));
-- 12,000 levels of plain JSON text: refused (0.1.0 stored it, and every merge fold of the
-- stream then crashed the server).
SELECT error_of(format($$SELECT eventstore.append('deep-1', jsonb_build_array(jsonb_build_object('type', 'Nested', 'data', %L::jsonb)))$$, repeat('{"a":', 12000) || '1' || repeat('}', 12000)));
-- A jsonb built in binary, deeper than its text form could be read back by pg_restore: refused.
CREATE FUNCTION nested(levels int) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    j jsonb := '1';
BEGIN
    FOR i IN 1..levels LOOP
        j := jsonb_build_array(j);
    END LOOP;
    RETURN j;
END $$;
SELECT error_of($$SELECT eventstore.append_event('deep-1', 'Nested', nested(10000))$$);
SELECT error_of($$SELECT eventstore.append('deep-1', jsonb_build_array(jsonb_build_object('type', 'Nested', 'metadata', jsonb_build_object('a', nested(100)))))$$);
-- A superuser may raise the limit, up to 1000.
SET eventstore.max_json_depth = 1000;
SELECT stream_version FROM eventstore.append_event('deep-1', 'Nested', nested(999));
SELECT error_of($$SET eventstore.max_json_depth = 1001$$);
RESET eventstore.max_json_depth;

-- Documents stored deeper than the extension folds (1000 levels; appended before the limit
-- existed, here written directly): merge fails naming the event, and never crashes the server.
INSERT INTO eventstore.streams (stream_id, category, version) VALUES ('legacy-deep-1', 'legacy', 1);
INSERT INTO eventstore.events (stream_id, stream_version, event_id, event_type, data)
VALUES ('legacy-deep-1', 1, gen_random_uuid(), 'Nested', (repeat('{"a":', 12000) || '1' || repeat('}', 12000))::jsonb);
SELECT regexp_replace(error_of($$SELECT eventstore.replay('legacy-deep-1', 'eventstore.merge'::regproc)$$),
                      'position \d+', 'position N') AS merge_fold;
SELECT error_of($$SELECT eventstore.merge('{}', e) FROM eventstore.events e WHERE stream_id = 'legacy-deep-1'$$) AS merge_step;
SELECT error_of($$SELECT eventstore.replay('legacy-deep-1', 'eventstore.merge'::regproc, initial_state => nested(1001))$$) AS deep_initial_state;
-- A merged state deeper than serde's 128 levels, saved as a snapshot, folds on from it.
SET eventstore.max_json_depth = 300;
SELECT stream_version FROM eventstore.append_event('deep-state-1', 'Nested', jsonb_build_object('a', nested(200)));
SELECT stream_version FROM eventstore.append_event('deep-state-1', 'Flat', '{"b": 1}');
RESET eventstore.max_json_depth;
SELECT stream_version FROM eventstore.aggregate('deep-state-1', 'eventstore.merge'::regproc, snapshot_every => 1);
SELECT stream_version FROM eventstore.append_event('deep-state-1', 'Flat', '{"c": 2}');
SELECT s ->> 'b' AS b, s ->> 'c' AS c, s -> 'a' = nested(200) AS deep_part_intact
FROM eventstore.replay('deep-state-1', 'eventstore.merge'::regproc) s;

-- merge keeps numbers exactly as numeric does: every digit, the scale, huge exponents.
SELECT stream_version FROM eventstore.append_event('num-1', 'Priced',
    '{"big": 123456789012345678901234567890, "frac": 0.1234567890123456789, "money": 120.50, "huge": 1e400, "neg": -0.000}');
SELECT stream_version FROM eventstore.append_event('num-1', 'Repriced', '{"money": 99.90, "small": 1e-30}');
SELECT s ->> 'big' AS big, s ->> 'frac' AS frac, s ->> 'money' AS money, s ->> 'neg' AS neg,
       s ->> 'small' AS small, s -> 'huge' = '1e400'::jsonb AS huge_exact
FROM eventstore.replay('num-1', 'eventstore.merge'::regproc) s;
SELECT eventstore.merge('{"n": 0.10}', e) - 'huge' AS merged FROM eventstore.events e WHERE stream_id = 'num-1' AND stream_version = 1;

-- Batch size: eventstore.max_append_events (default 10000).
SHOW eventstore.max_append_events;
SET eventstore.max_append_events = 3;
SELECT error_of($$SELECT eventstore.append('big-1', '[{"type": "A"}, {"type": "B"}, {"type": "C"}, {"type": "D"}]')$$);
SELECT stream_version FROM eventstore.append('big-1', '[{"type": "A"}, {"type": "B"}, {"type": "C"}]');
RESET eventstore.max_append_events;

-- metadata must be an object: SQL NULL means {}, a JSON null is refused.
SELECT error_of($$SELECT eventstore.append_event('meta-1', 'A', '{}', 'null')$$);
SELECT stream_version FROM eventstore.append_event('meta-1', 'A', '{}', NULL);
SELECT stream_version, metadata FROM eventstore.read_stream('meta-1');

SELECT count(*) - :events_before AS events_written FROM eventstore.events;

-- read_all and read_category return pages: max_count NULL means the default page of 1000, never
-- the whole store.
SELECT count(*) AS appended FROM generate_series(1, 1005) i, eventstore.append_event('page-' || i, 'A', '{}');
SELECT count(*) AS page FROM eventstore.read_all(max_count => NULL);
SELECT count(*) AS page FROM eventstore.read_category('page', max_count => NULL);
SELECT count(*) AS page FROM eventstore.read_category('page', max_count => 2000);

-- as_of folds the longest prefix of the stream recorded at or before it, never a version without
-- the ones before it. Appends keep recorded_at non-decreasing within a stream; events stored
-- by 0.1.0 may not be (its recorded_at was the transaction's start), as these, written directly.
INSERT INTO eventstore.streams (stream_id, category, version) VALUES ('legacy-1', 'legacy', 3);
INSERT INTO eventstore.events (stream_id, stream_version, event_id, event_type, data, recorded_at) VALUES
    ('legacy-1', 1, gen_random_uuid(), 'OrderPlaced', '{"placed": true}', '2026-01-01 12:00+00'),
    ('legacy-1', 2, gen_random_uuid(), 'PaymentCaptured', '{"paid": true}', '2026-01-01 11:00+00'),
    ('legacy-1', 3, gen_random_uuid(), 'OrderShipped', '{"shipped": true}', '2026-01-01 13:00+00');
SELECT eventstore.replay('legacy-1', 'eventstore.merge'::regproc, as_of => '2026-01-01 11:30+00') AS at_1130;
SELECT eventstore.replay('legacy-1', 'eventstore.merge'::regproc, as_of => '2026-01-01 12:30+00') AS at_1230;
SELECT eventstore.replay('legacy-1', 'eventstore.merge'::regproc, as_of => '2026-01-01 13:00+00') AS at_1300;
SELECT stream_version FROM eventstore.append_event('legacy-1', 'OrderReturned', '{"returned": true}');
SELECT bool_and(recorded_at >= '2026-01-01 13:00+00') AS later_than_the_last FROM eventstore.events WHERE stream_id = 'legacy-1' AND stream_version = 4;

-- pg_eventstore needs a UTF8 database (jsonb strings are kept in the database encoding).
SELECT current_database() AS regress_db \gset
CREATE DATABASE regress_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c regress_latin1
-- (Without context: its form differs between PostgreSQL majors.)
\set SHOW_CONTEXT never
CREATE EXTENSION pg_eventstore;
\set SHOW_CONTEXT errors
\c :regress_db
DROP DATABASE regress_latin1;
DROP FUNCTION nested;
