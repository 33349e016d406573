-- Minimal shape: one event with empty data per transaction, a new stream per call.
\set r random(1, 1000000000000000)
SELECT * FROM eventstore.append_event('s-' || :client_id || '-' || :r, 'E', '{}');
