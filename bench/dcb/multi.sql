\set a random(1, 1000)
SELECT count(*) FROM eventstore.append_multi(jsonb_build_array(
    jsonb_build_object('stream_id', 'from-' || :client_id || '-' || :a, 'events', '[{"type": "MoneySent", "data": {"amount": 1}}]'::jsonb),
    jsonb_build_object('stream_id', 'to-' || :client_id || '-' || :a, 'events', '[{"type": "MoneyReceived", "data": {"amount": 1}}]'::jsonb)));
