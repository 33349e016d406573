\set a random(1, 1000)
BEGIN;
SELECT stream_version FROM eventstore.append('from-' || :client_id || '-' || :a, '[{"type": "MoneySent", "data": {"amount": 1}}]');
SELECT stream_version FROM eventstore.append('to-' || :client_id || '-' || :a, '[{"type": "MoneyReceived", "data": {"amount": 1}}]');
COMMIT;
