-- Who may use the DCB functions (docs/security.md): a writer appends to several streams and
-- under conditions; a reader runs read_query and nothing that writes (42501); any other role
-- nothing. The write functions run as the owner with a pinned search_path, as append does.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_eventstore;
RESET client_min_messages;
CREATE FUNCTION dcb_error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'global position [0-9]+', 'global position N');
END $$;
CREATE ROLE regress_dcb_writer;
CREATE ROLE regress_dcb_reader;
CREATE ROLE regress_dcb_outsider;
SELECT eventstore.grant_writer('regress_dcb_writer');
SELECT eventstore.grant_reader('regress_dcb_reader');
GRANT EXECUTE ON FUNCTION dcb_error_of(text) TO regress_dcb_writer, regress_dcb_reader, regress_dcb_outsider;

SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer, p.proconfig, p.provolatile
FROM pg_proc p WHERE p.pronamespace = 'eventstore'::regnamespace
  AND p.proname IN ('append', 'append_event', 'append_multi', 'read_query')
ORDER BY p.oid::regprocedure::text COLLATE "C";

SET ROLE regress_dcb_writer;
SELECT stream_id, stream_version FROM eventstore.append_multi('[
  {"stream_id": "priv-a", "events": [{"type": "Opened", "tags": ["priv"]}]},
  {"stream_id": "priv-b", "events": [{"type": "Opened", "tags": ["priv"]}]}]');
SELECT eventstore.read_query('{"items": [{"tags": ["priv"]}]}')->>'token' AS token \gset
SELECT stream_version FROM eventstore.append('priv-a', '[{"type": "Closed", "tags": ["priv"]}]',
    condition => jsonb_build_object('fail_if_events_match', '{"items": [{"tags": ["priv"]}]}'::jsonb, 'after', :'token'));
SELECT stream_version FROM eventstore.append_event('priv-b', 'Closed', '{}', tags => '{priv-b}',
    condition => '{"fail_if_events_match": {"items": [{"tags": ["priv-b"]}]}}');
SELECT jsonb_array_length(eventstore.read_query('{"items": [{"tags": ["priv"]}]}')->'events') AS events;

SET ROLE regress_dcb_reader;
SELECT jsonb_array_length(eventstore.read_query('{"items": [{"tags": ["priv"]}]}')->'events') AS events;
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "priv-a", "events": [{"type": "X"}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.append('priv-a', '[{"type": "X"}]', condition => '{"fail_if_events_match": {"all": true}}')$$);
SELECT dcb_error_of($$SELECT eventstore.append_event('priv-a', 'X', '{}', tags => '{priv}')$$);

SET ROLE regress_dcb_outsider;
SELECT dcb_error_of($$SELECT eventstore.read_query('{"all": true}')$$);
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "priv-a", "events": [{"type": "X"}]}]')$$);
RESET ROLE;

-- revoke_access takes the new functions away too.
SELECT eventstore.revoke_access('regress_dcb_writer');
SET ROLE regress_dcb_writer;
SELECT dcb_error_of($$SELECT eventstore.append_multi('[{"stream_id": "priv-a", "events": [{"type": "X"}]}]')$$);
SELECT dcb_error_of($$SELECT eventstore.read_query('{"all": true}')$$);
RESET ROLE;
SELECT eventstore.stream_version('priv-a') AS "priv-a", eventstore.stream_version('priv-b') AS "priv-b";

SELECT eventstore.revoke_access('regress_dcb_reader');
REVOKE ALL ON FUNCTION dcb_error_of(text) FROM regress_dcb_writer, regress_dcb_reader, regress_dcb_outsider;
DROP ROLE regress_dcb_writer, regress_dcb_reader, regress_dcb_outsider;
DROP FUNCTION dcb_error_of(text);
