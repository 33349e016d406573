-- Physical floor for tiny_ours.sql.
\set r random(1, 1000000000000000)
INSERT INTO bench.events (stream_id, stream_version, event_id, event_type, data)
VALUES ('s-' || :client_id || '-' || :r, 1, gen_random_uuid(), 'E', '{}')
RETURNING event_id, stream_version, global_position;
