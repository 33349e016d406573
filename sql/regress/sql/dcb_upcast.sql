-- Both 0.3.0 features together: schema versions and tags on the same events, append conditions
-- on upcast types, append_multi at schema versions, read_query returning events upcast.
DROP EXTENSION IF EXISTS pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
\set VERBOSITY terse
CREATE OR REPLACE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'global position [0-9]+', 'global position N');
END $$;
CREATE FUNCTION public.seat_v1_v2(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN data || '{"class": "economy"}';
CREATE FUNCTION public.seat_v2_booked_v3(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('seat', data->'seat', 'cabin', data->'class');

-- A v1 event with tags, before any upcaster.
SELECT stream_version FROM eventstore.append('flight-1', '[{"type": "SeatReserved", "data": {"seat": "1A"}, "tags": ["flight:1"]}]');
SELECT eventstore.register_upcaster('SeatReserved', 1, 'public.seat_v1_v2(jsonb,jsonb)');
SELECT eventstore.register_upcaster('SeatReserved', 2, 'public.seat_v2_booked_v3(jsonb,jsonb)',
                                    new_type => 'SeatBooked');

-- append: per-event schema_version and tags, under a condition.
SELECT stream_version FROM eventstore.append('flight-1', '[
  {"type": "SeatReserved", "schema_version": 2, "data": {"seat": "1B", "class": "business"}, "tags": ["flight:1", "seat:1B"]},
  {"type": "SeatBooked", "data": {"seat": "1C", "cabin": "economy"}, "tags": ["flight:1", "seat:1C"]}]', 1,
  '{"fail_if_events_match": {"items": [{"tags": ["seat:1B"]}, {"tags": ["seat:1C"]}]}}');
-- append_event: schema_version, tags and condition, by name and by position.
SELECT stream_version FROM eventstore.append_event('flight-1', 'SeatReserved', '{"seat": "2A"}',
    schema_version => 1, tags => '{flight:1,seat:2A}',
    condition => '{"fail_if_events_match": {"items": [{"tags": ["seat:2A"]}]}}');
SELECT stream_version FROM eventstore.append_event('flight-1', 'SeatBooked', '{"seat": "2B", "cabin": "first"}',
    '{}', 4, NULL, 3, '{flight:1,seat:2B}', NULL);
SELECT error_of($$SELECT eventstore.append_event('flight-1', 'SeatReserved', '{"seat": "2A"}',
    schema_version => 2, tags => '{flight:1,seat:2A}',
    condition => '{"fail_if_events_match": {"items": [{"tags": ["seat:2A"]}]}}')$$);
-- A version past the type's current one is refused, with or without a condition.
SELECT error_of($$SELECT eventstore.append_event('flight-1', 'SeatBooked', '{}', schema_version => 4,
    tags => '{x}', condition => '{"fail_if_events_match": {"items": [{"tags": ["x"]}]}}')$$);
SELECT error_of($$SELECT eventstore.append('flight-1', '[{"type": "SeatBooked", "schema_version": 4, "tags": ["x"]}]',
    NULL, '{"fail_if_events_match": {"items": [{"tags": ["x"]}]}}')$$);

-- append_multi: schema versions resolved and checked per stream, errors named in appends.
SELECT stream_id, stream_version FROM eventstore.append_multi('[
  {"stream_id": "flight-2", "expected_version": 0, "events": [{"type": "SeatReserved", "schema_version": 1, "data": {"seat": "9A"}, "tags": ["flight:2"]}]},
  {"stream_id": "flight-3", "events": [{"type": "SeatBooked", "data": {"seat": "9B", "cabin": "economy"}, "tags": ["flight:3"]}]}]',
  '{"fail_if_events_match": {"items": [{"tags": ["flight:2"]}, {"tags": ["flight:3"]}]}}');
SELECT error_of($$SELECT eventstore.append_multi('[
  {"stream_id": "flight-4", "events": [{"type": "SeatBooked"}]},
  {"stream_id": "flight-5", "events": [{"type": "SeatBooked"}, {"type": "SeatReserved", "schema_version": 3}]}]')$$);
SELECT error_of($$SELECT eventstore.append_multi('[{"stream_id": "flight-4", "events": [{"type": "SeatBooked", "schema_version": 0}]}]')$$);
SELECT count(*) FROM eventstore.events WHERE stream_id IN ('flight-4', 'flight-5');

-- Stored: each event at the version it was appended at, with its tags.
SELECT stream_id, stream_version, event_type, schema_version, tags, data FROM eventstore.events
WHERE stream_id LIKE 'flight-%' ORDER BY global_position;

-- read_query matches events as stored (type and tags) and returns them upcast, as read_stream
-- does; upcast => false: as stored.
SELECT e->>'stream_id' AS stream_id, e->>'stream_version' AS v, e->>'type' AS type,
       e->>'schema_version' AS schema_version, e->'data' AS data, e->'tags' AS tags
FROM jsonb_array_elements(eventstore.read_query('{"items": [{"tags": ["flight:1"]}]}')->'events') e;
SELECT e->>'type' AS type, e->>'schema_version' AS schema_version, e->'data' AS data
FROM jsonb_array_elements(eventstore.read_query('{"items": [{"tags": ["flight:1"]}]}', upcast => false)->'events') e;
SELECT e->>'stream_id' AS stream_id, e->>'type' AS type
FROM jsonb_array_elements(eventstore.read_query('{"items": [{"types": ["SeatReserved"]}]}')->'events') e;
SELECT event_type, schema_version, data FROM eventstore.read_stream('flight-1');

-- A token from read_query decides as before.
SELECT eventstore.read_query('{"items": [{"tags": ["seat:3A"]}]}')->>'token' AS token \gset
SELECT stream_version FROM eventstore.append_event('flight-1', 'SeatBooked', '{"seat": "3A", "cabin": "economy"}',
    tags => '{flight:1,seat:3A}', condition => jsonb_build_object(
      'fail_if_events_match', '{"items": [{"tags": ["seat:3A"]}]}'::jsonb, 'after', :'token'));
SELECT error_of(format($$SELECT eventstore.append_event('flight-1', 'SeatBooked', '{"seat": "3A"}',
    tags => '{flight:1,seat:3A}', condition => %L)$$, jsonb_build_object(
      'fail_if_events_match', '{"items": [{"tags": ["seat:3A"]}]}'::jsonb, 'after', :'token')));

-- Declared types apply to append_multi as to append.
SELECT eventstore.declare_event_type('SeatBooked');
SET eventstore.require_declared_types = on;
SELECT error_of($$SELECT eventstore.append_multi('[{"stream_id": "flight-6", "events": [{"type": "SeatBooked"}, {"type": "MealOrdered"}]}]')$$);
SELECT stream_id, stream_version FROM eventstore.append_multi('[{"stream_id": "flight-6", "events": [{"type": "SeatBooked", "data": {"seat": "5F"}}]}]');
RESET eventstore.require_declared_types;

DROP EXTENSION pg_eventstore CASCADE;
DROP FUNCTION public.seat_v1_v2(jsonb, jsonb), public.seat_v2_booked_v3(jsonb, jsonb), error_of(text);
