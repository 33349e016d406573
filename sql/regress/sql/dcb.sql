-- Consistency beyond one stream (docs/dcb.md): tags, read_query, append conditions and
-- append_multi, as a user sees them. Concurrency is in sql/isolation/specs/dcb_*.spec.
-- (IF NOT EXISTS: the suite also runs on a database updated from an earlier release.)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_eventstore;
RESET client_min_messages;

-- The SQLSTATE and message of a failing statement (or 'ok'); global positions depend on what
-- ran before, so they print as N.
CREATE FUNCTION dcb_error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'global position [0-9]+', 'global position N');
END $$;
-- read_query's events without what changes from run to run.
CREATE FUNCTION dcb_events(result jsonb) RETURNS TABLE (stream_id text, stream_version bigint, type text, tags jsonb, data jsonb)
    LANGUAGE sql AS $$
    SELECT e->>'stream_id', (e->>'stream_version')::bigint, e->>'type', e->'tags', e->'data'
    FROM jsonb_array_elements(result->'events') e
$$;

-- Tags: an event may carry them; every read returns them; untagged events have none.
SELECT stream_version FROM eventstore.append('course-c1', '[
  {"type": "CourseDefined", "data": {"capacity": 2}, "tags": ["course:c1"]},
  {"type": "CourseRenamed", "data": {"title": "Event sourcing"}, "tags": ["course:c1"]}
]');
SELECT stream_version FROM eventstore.append_event('course-c2', 'CourseDefined', '{"capacity": 1}',
                                                   tags => '{course:c2}');
SELECT stream_version FROM eventstore.append_event('course-c3', 'CourseDefined', '{"capacity": 5}');
SELECT stream_id, stream_version, event_type, tags FROM eventstore.read_stream('course-c1');
SELECT stream_id, tags FROM eventstore.read_stream_backward('course-c2');
SELECT stream_id, tags FROM eventstore.read_all(max_count => 100000) WHERE stream_id LIKE 'course-%' ORDER BY global_position;
SELECT stream_id, tags FROM eventstore.read_category('course') ORDER BY global_position;

-- Tags are an array of distinct, non-empty strings (at most 100, of at most 1000 bytes each).
SELECT dcb_error_of($$SELECT eventstore.append('t-1', '[{"type": "A", "tags": "course:c1"}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append('t-1', '[{"type": "A"}, {"type": "A", "tags": ["a", 1]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append('t-1', '[{"type": "A", "tags": ["a", ""]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append('t-1', '[{"type": "A", "tags": ["a", "b", "a"]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append('t-1', '[{"type": "A", "tags": [["a"]]}]')$$);
SELECT dcb_error_of(format($$SELECT eventstore.append('t-1', '[{"type": "A", "tags": %s}]')$$,
                           (SELECT jsonb_agg(i::text) FROM generate_series(1, 101) i)));
SELECT dcb_error_of(format($$SELECT eventstore.append('t-1', '[{"type": "A", "tags": ["%s"]}]')$$, repeat('x', 1001)));
SELECT dcb_error_of($$SELECT eventstore.append_event('t-1', 'A', '{}', tags => ARRAY['a', NULL])$$);
SELECT dcb_error_of($$SELECT eventstore.append_event('t-1', 'A', '{}', tags => ARRAY['a', 'a'])$$);
SELECT dcb_error_of($$SELECT eventstore.append_event('t-1', 'A', '{}', tags => ARRAY['a', ''])$$);
-- JSON null and an empty array mean no tags.
SELECT stream_version FROM eventstore.append('t-1', '[{"type": "A", "tags": null}, {"type": "A", "tags": []}]');
SELECT tags FROM eventstore.read_stream('t-1');

-- read_query: items are OR'ed; an item matches one of its types and all of its tags.
SELECT stream_version FROM eventstore.append('student-s1', '[
  {"type": "StudentRegistered", "tags": ["student:s1"]},
  {"type": "StudentSubscribed", "data": {"course": "c1"}, "tags": ["student:s1", "course:c1"]}
]');
SELECT * FROM dcb_events(eventstore.read_query('{"items": [{"tags": ["course:c1"]}]}'));
SELECT * FROM dcb_events(eventstore.read_query('{"items": [{"types": ["CourseDefined"]}]}'));
SELECT * FROM dcb_events(eventstore.read_query('{"items": [{"types": ["StudentSubscribed", "CourseDefined"], "tags": ["course:c1"]}]}'));
SELECT * FROM dcb_events(eventstore.read_query('{"items": [{"tags": ["student:s1", "course:c1"]}]}'));
SELECT * FROM dcb_events(eventstore.read_query('{"items": [{"types": ["CourseDefined"], "tags": ["course:c2"]}, {"tags": ["student:s1"]}]}'));
SELECT * FROM dcb_events(eventstore.read_query('{"items": [{"tags": ["course:c9"]}]}'));
-- Every key of an event, in store order; a token, also when nothing matches.
SELECT jsonb_object_keys(eventstore.read_query('{"items": [{"tags": ["course:c2"]}]}')->'events'->0);
SELECT left(r->>'token', 3) AS token, jsonb_array_length(r->'events') AS events
FROM eventstore.read_query('{"items": [{"tags": ["nothing"]}]}') r;
SELECT count(*) > 0 AS every_event_matches_all, bool_and((e->>'global_position')::bigint > coalesce(prev, 0)) AS in_store_order
FROM (SELECT e, lag((e->>'global_position')::bigint) OVER () AS prev
      FROM jsonb_array_elements(eventstore.read_query('{"all": true}')->'events') e) x;
SELECT jsonb_array_length(eventstore.read_query('{"all": true}', max_count => 2)->'events');

-- A query is {"items": [...]} with at least one item, or {"all": true}.
SELECT dcb_error_of($$SELECT eventstore.read_query(NULL)$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('[]')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"items": []}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"items": [{}]}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"items": [{"types": []}]}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"items": [{"types": ["A"], "tag": ["x"]}]}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"items": [{"tags": "x"}]}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"items": [{"tags": [null]}]}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"all": false}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"all": true, "items": [{"tags": ["x"]}]}')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"all": true}', max_count => 0)$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"all": true}', max_count => 1000001)$$);
SELECT dcb_error_of(format($$SELECT eventstore.read_query('{"items": %s}')$$,
                           (SELECT jsonb_agg(jsonb_build_object('tags', jsonb_build_array(i::text))) FROM generate_series(1, 101) i)));
-- Deep or strange JSON is an error naming the place, never a crash.
SELECT dcb_error_of(format($$SELECT eventstore.read_query('{"items": [{"tags": [%s]}]}')$$, repeat('[', 5000) || repeat(']', 5000)));

-- Unique e-mail: without "after", a condition fails if any matching event exists.
SELECT stream_version FROM eventstore.append('account-1', '[{"type": "AccountRegistered", "data": {"email": "ada@example.com"}, "tags": ["email:ada@example.com"]}]',
    condition => '{"fail_if_events_match": {"items": [{"types": ["AccountRegistered"], "tags": ["email:ada@example.com"]}]}}');
SELECT dcb_error_of($$SELECT eventstore.append('account-2', '[{"type": "AccountRegistered", "data": {"email": "ada@example.com"}, "tags": ["email:ada@example.com"]}]',
    condition => '{"fail_if_events_match": {"items": [{"types": ["AccountRegistered"], "tags": ["email:ada@example.com"]}]}}')$$);
SELECT eventstore.stream_version('account-2') AS nothing_written;

-- Course subscription: decide on what read_query returned, append after its token. Each
-- statement below is its own transaction: the token carries the decision across them.
SELECT eventstore.read_query('{"items": [{"tags": ["course:c2"]}]}')->>'token' AS c2_token \gset
SELECT stream_version FROM eventstore.append_event('student-s2', 'StudentSubscribed', '{"course": "c2"}',
    tags => '{student:s2,course:c2}', event_id => 'a1f0c1de-0000-4000-8000-000000000001',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["course:c2"]}]}'::jsonb, 'after', :'c2_token'));
-- A second decision on the same, now stale, token fails, naming the event it did not see.
SELECT dcb_error_of(format($$SELECT eventstore.append_event('student-s3', 'StudentSubscribed', '{"course": "c2"}',
    tags => '{student:s3,course:c2}',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["course:c2"]}]}'::jsonb, 'after', %L))$$, :'c2_token'));
-- Retrying the first append (same event id) returns its original row, condition or not.
SELECT stream_version FROM eventstore.append_event('student-s2', 'StudentSubscribed', '{"course": "c2"}',
    tags => '{student:s2,course:c2}', event_id => 'a1f0c1de-0000-4000-8000-000000000001',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["course:c2"]}]}'::jsonb, 'after', :'c2_token'));
SELECT count(*) AS subscriptions FROM eventstore.read_stream('student-s2');
-- A fresh read sees it; a condition on another boundary is not affected by it.
SELECT eventstore.read_query('{"items": [{"tags": ["course:c2"]}]}')->>'token' AS c2_token \gset
SELECT stream_version FROM eventstore.append_event('student-s3', 'StudentSubscribed', '{"course": "c2"}',
    tags => '{student:s3,course:c2}',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["course:c2"]}]}'::jsonb, 'after', :'c2_token'));
SELECT stream_version FROM eventstore.append_event('student-s3', 'StudentSubscribed', '{"course": "c3"}',
    tags => '{student:s3,course:c3}',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["course:c3"]}]}'::jsonb, 'after', :'c2_token'));
-- {"all": true} with a token: anything appended since fails it.
SELECT eventstore.read_query('{"all": true}', max_count => 1000000)->>'token' AS all_token \gset
SELECT stream_version FROM eventstore.append('all-1', '[{"type": "A"}]',
    condition => jsonb_build_object('fail_if_events_match', '{"all": true}'::jsonb, 'after', :'all_token'));
SELECT dcb_error_of(format($$SELECT eventstore.append('all-2', '[{"type": "A"}]',
    condition => jsonb_build_object('fail_if_events_match', '{"all": true}'::jsonb, 'after', %L))$$, :'all_token'));
-- A read cut short by max_count saw only what it returned: the rest of its boundary is unseen.
SELECT eventstore.read_query('{"items": [{"tags": ["course:c1"]}]}', max_count => 1)->>'token' AS cut_token \gset
SELECT dcb_error_of(format($$SELECT eventstore.append('cut-1', '[{"type": "A"}]',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["course:c1"]}]}'::jsonb, 'after', %L))$$, :'cut_token'));

-- A condition is {"fail_if_events_match": <query>, "after": <token>}; a token is what
-- read_query returned, nothing else.
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '[]')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{}')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"all": true}, "before": "x"}')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"items": [{"tags": [""]}]}}')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"all": true}, "after": 42}')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"all": true}, "after": "42"}')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"all": true}, "after": "v1:9:5:"}')$$);
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"all": true}, "after": "v1:5:9:7,6"}')$$);
SELECT dcb_error_of($$SELECT eventstore.append_event('x-1', 'A', '{}', condition => '{"fail_if_events_match": {"items": [{"types": "A"}]}}')$$);
-- One conditional append locks at most 256 keys (its events' types and tags, one per item).
SELECT dcb_error_of(format($$SELECT eventstore.append('x-1', '%s', condition => '{"fail_if_events_match": {"items": [{"tags": ["x"]}]}}')$$,
                           (SELECT jsonb_agg(jsonb_build_object('type', 'A', 'tags', jsonb_build_array('t' || i))) FROM generate_series(1, 300) i)));
SELECT eventstore.stream_version('x-1') AS nothing_written;
-- JSON null as "after" is no token: then any matching event fails the condition.
SELECT dcb_error_of($$SELECT eventstore.append('x-1', '[{"type": "A"}]', condition => '{"fail_if_events_match": {"items": [{"tags": ["course:c1"]}]}, "after": null}')$$);

-- append_multi: several streams, each with its own expected version, all or nothing.
SELECT count(*) FROM eventstore.append_multi('[
  {"stream_id": "account-a", "expected_version": 0, "events": [{"type": "AccountOpened", "data": {"balance": 100}}]},
  {"stream_id": "account-b", "expected_version": 0, "events": [{"type": "AccountOpened", "data": {"balance": 0}}]}
]');
SELECT stream_id, stream_version FROM eventstore.append_multi('[
  {"stream_id": "account-b", "expected_version": 1, "events": [{"type": "MoneyReceived", "data": {"amount": 30}, "tags": ["transfer:t1"]}]},
  {"stream_id": "account-a", "expected_version": 1, "events": [{"type": "MoneySent", "data": {"amount": 30}, "tags": ["transfer:t1"]},
                                                               {"type": "FeeCharged", "data": {"amount": 1}}]}
]');
-- ES001 names the first stream, in the caller's order, whose version is wrong; nothing is written.
SELECT dcb_error_of($$SELECT eventstore.append_multi('[
  {"stream_id": "account-a", "expected_version": 3, "events": [{"type": "MoneySent"}]},
  {"stream_id": "account-c", "expected_version": -1, "events": [{"type": "MoneyReceived"}]},
  {"stream_id": "account-b", "expected_version": 1, "events": [{"type": "MoneyReceived"}]}
]')$$);
SELECT stream_id, version FROM eventstore.streams WHERE stream_id LIKE 'account-%' ORDER BY 1;
-- With a condition, as append takes one.
SELECT eventstore.read_query('{"items": [{"tags": ["transfer:t2"]}]}')->>'token' AS t2 \gset
SELECT stream_id, stream_version FROM eventstore.append_multi(format('[
  {"stream_id": "account-a", "expected_version": 3, "events": [{"type": "MoneySent", "tags": ["transfer:t2"], "id": "a1f0c1de-0000-4000-8000-000000000002"}]},
  {"stream_id": "account-b", "expected_version": 2, "events": [{"type": "MoneyReceived", "tags": ["transfer:t2"], "id": "a1f0c1de-0000-4000-8000-000000000003"}]}
]')::jsonb, jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["transfer:t2"]}]}'::jsonb, 'after', :'t2'));
-- The same call again is a retry: the original rows, whatever the versions and the condition say.
SELECT stream_id, stream_version FROM eventstore.append_multi(format('[
  {"stream_id": "account-a", "expected_version": 3, "events": [{"type": "MoneySent", "tags": ["transfer:t2"], "id": "a1f0c1de-0000-4000-8000-000000000002"}]},
  {"stream_id": "account-b", "expected_version": 2, "events": [{"type": "MoneyReceived", "tags": ["transfer:t2"], "id": "a1f0c1de-0000-4000-8000-000000000003"}]}
]')::jsonb, jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["transfer:t2"]}]}'::jsonb, 'after', :'t2'));
-- ... but not when only some of its streams' batches are stored (ES004), nor on another token.
SELECT dcb_error_of($$SELECT eventstore.append_multi('[
  {"stream_id": "account-a", "events": [{"type": "MoneySent", "id": "a1f0c1de-0000-4000-8000-000000000002"}]},
  {"stream_id": "account-c", "events": [{"type": "MoneyReceived", "id": "a1f0c1de-0000-4000-8000-000000000004"}]}
]')$$);
SELECT dcb_error_of(format($$SELECT eventstore.append_multi('[
  {"stream_id": "account-a", "events": [{"type": "MoneySent", "tags": ["transfer:t2"]}]},
  {"stream_id": "account-c", "events": [{"type": "MoneyReceived", "tags": ["transfer:t2"]}]}
]', jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["transfer:t2"]}]}'::jsonb, 'after', %L))$$, :'t2'));
SELECT stream_id, version FROM eventstore.streams WHERE stream_id LIKE 'account-%' ORDER BY 1;

-- Its argument: an array of {"stream_id", "expected_version", "events"}, each stream once.
SELECT dcb_error_of($$SELECT eventstore.append_multi(NULL)$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('{}')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[[]]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A"}]}, {"stream_id": "m-1", "events": [{"type": "B"}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "", "events": [{"type": "A"}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": 7, "events": [{"type": "A"}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"events": [{"type": "A"}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1"}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": []}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A"}], "expected_version": -2}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A"}], "expected_version": "1"}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A"}], "expected_version": 1e30}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A"}, {"data": {}}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A"}], "stream": "x"}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A", "id": "a1f0c1de-0000-4000-8000-0000000000ff"}]},
                                                      {"stream_id": "m-2", "events": [{"type": "A", "id": "a1f0c1de-0000-4000-8000-0000000000ff"}]}]')$$);
SELECT dcb_error_of(format($$SELECT eventstore.append_multi('%s')$$,
                           (SELECT jsonb_agg(jsonb_build_object('stream_id', 'm-' || i, 'events', '[{"type": "A"}]'::jsonb)) FROM generate_series(1, 1001) i)));
SELECT dcb_error_of(format($$SELECT eventstore.append_multi('[{"stream_id": "m-1", "events": [{"type": "A", "data": %s}]}]')$$,
                           repeat('[', 100) || repeat(']', 100)));
SELECT count(*) AS nothing_written FROM eventstore.streams WHERE stream_id LIKE 'm-%';

DROP FUNCTION dcb_events(jsonb);
DROP FUNCTION dcb_error_of(text);
