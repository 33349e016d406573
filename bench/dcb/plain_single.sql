\set k random(1, 9000000000000000000)
SELECT stream_version FROM eventstore.append_event('acct-' || :client_id, 'Registered', '{"n": 1}',
    tags => ARRAY['key:' || :k]);
