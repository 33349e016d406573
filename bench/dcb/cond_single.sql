\set k random(1, 9000000000000000000)
SELECT stream_version FROM eventstore.append_event('acct-' || :client_id, 'Registered', '{"n": 1}',
    tags => ARRAY['key:' || :k],
    condition => jsonb_build_object('fail_if_events_match',
        jsonb_build_object('items', jsonb_build_array(jsonb_build_object('types', '["Registered"]'::jsonb, 'tags', jsonb_build_array('key:' || :k))))));
