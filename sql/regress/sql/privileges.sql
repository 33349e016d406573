-- Who may do what: writes go only through the API. grant_writer and grant_reader are the only
-- grants a role needs; no role but the owner holds a write privilege on a store table.
DROP EXTENSION IF EXISTS pg_eventstore CASCADE;
CREATE EXTENSION pg_eventstore;
CREATE OR REPLACE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE ROLE regress_writer;
CREATE ROLE regress_reader;
CREATE ROLE regress_outsider;
SELECT eventstore.grant_writer('regress_writer');
SELECT eventstore.grant_reader('regress_reader');
GRANT EXECUTE ON FUNCTION error_of(text) TO regress_writer, regress_reader, regress_outsider;

-- Nothing of the extension is executable by PUBLIC; the write functions run as the owner with a
-- pinned search_path; replay is VOLATILE (its reducer may write).
SELECT p.oid::regprocedure AS executable_by_public
FROM pg_proc p
WHERE p.pronamespace = 'eventstore'::regnamespace
  AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a
                                   WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer, p.proconfig, p.provolatile
FROM pg_proc p WHERE p.pronamespace = 'eventstore'::regnamespace
  AND (p.prosecdef OR p.proname IN ('replay', 'aggregate'))
ORDER BY p.oid::regprocedure::text COLLATE "C";

-- A writer appends, reads, replays and aggregates (which saves snapshots) with nothing else.
CREATE FUNCTION public.tally(state jsonb, event eventstore.events) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1);
GRANT EXECUTE ON FUNCTION public.tally TO regress_writer, regress_reader;
SET ROLE regress_writer;
SELECT stream_version FROM eventstore.append('acct-1', '[{"type": "Opened"}, {"type": "Deposited", "data": {"amount": 10}}]');
SELECT stream_version FROM eventstore.append_event('acct-1', 'Deposited', '{"amount": 5}', expected_version => 2);
SELECT stream_version, event_type FROM eventstore.read_stream('acct-1');
SELECT count(*) FROM eventstore.read_all();
SELECT eventstore.replay('acct-1', 'public.tally'::regproc);
SELECT * FROM eventstore.aggregate('acct-1', 'public.tally'::regproc, snapshot_every => 1);
SELECT stream_version, state, fingerprint IS NOT NULL AS folded_by_aggregate FROM eventstore.snapshots;

-- ... and cannot write any table, take positions, or save, plant or delete snapshots.
SELECT error_of($$INSERT INTO eventstore.events (stream_id, stream_version, event_id, event_type) VALUES ('acct-1', 9, gen_random_uuid(), 'Forged')$$);
SELECT error_of($$INSERT INTO eventstore.events (stream_id, stream_version, event_id, event_type, recorded_at) VALUES ('acct-1', 4, gen_random_uuid(), 'Backdated', '2000-01-01')$$);
SELECT error_of($$INSERT INTO eventstore.streams (stream_id, category, version) VALUES ('squat-1', 'squat', 0)$$);
SELECT error_of($$UPDATE eventstore.streams SET version = 100$$);
SELECT error_of($$INSERT INTO eventstore.snapshots (stream_id, snapshot_name, stream_version, state) VALUES ('acct-1', 'public.tally', 1000000, '{"n": 1000000}')$$);
SELECT error_of($$SELECT nextval('eventstore.global_position_seq')$$);
SELECT error_of($$SELECT eventstore.save_snapshot('acct-1', 'public.tally', 3, '{"n": 1000000}')$$);
SELECT error_of($$SELECT eventstore.delete_snapshots('public.tally')$$);
SELECT error_of($$SELECT eventstore.grant_writer('regress_outsider')$$);

-- A reader reads and replays, and cannot append (42501).
SET ROLE regress_reader;
SELECT stream_version, event_type FROM eventstore.read_stream_backward('acct-1', max_count => 1);
SELECT eventstore.replay('acct-1', 'public.tally'::regproc);
SELECT eventstore.stream_version('acct-1');
SELECT error_of($$SELECT eventstore.append_event('acct-1', 'Withdrawn', '{}')$$);
SELECT error_of($$SELECT eventstore.append('acct-1', '[{"type": "Withdrawn"}]')$$);
SELECT error_of($$SELECT * FROM eventstore.aggregate('acct-1', 'public.tally'::regproc)$$);

-- A role with neither grant can do nothing.
SET ROLE regress_outsider;
SELECT error_of($$SELECT * FROM eventstore.read_stream('acct-1')$$);
SELECT error_of($$SELECT eventstore.append_event('acct-1', 'Withdrawn', '{}')$$);
RESET ROLE;

-- revoke_access undoes a grant.
SELECT eventstore.revoke_access('regress_writer');
SET ROLE regress_writer;
SELECT error_of($$SELECT eventstore.append_event('acct-1', 'Withdrawn', '{}')$$);
SELECT error_of($$SELECT * FROM eventstore.read_stream('acct-1')$$);
RESET ROLE;

-- replay never trusts a snapshot its reducer's definition did not fold: after the reducer
-- changes, the old snapshot is ignored; one planted with a forged fingerprint too.
SELECT eventstore.replay('acct-1', 'public.tally'::regproc);
CREATE OR REPLACE FUNCTION public.tally(state jsonb, event eventstore.events) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 10);
SELECT eventstore.replay('acct-1', 'public.tally'::regproc);
INSERT INTO eventstore.snapshots (stream_id, snapshot_name, stream_version, state, fingerprint)
VALUES ('acct-1', 'public.tally', 2, '{"n": -1}', md5('forged'));
SELECT eventstore.replay('acct-1', 'public.tally'::regproc);
-- An administrator's snapshot (save_snapshot, no fingerprint) is trusted under its name.
SELECT eventstore.save_snapshot('acct-1', 'by-hand', 2, '{"n": 100}');
SELECT eventstore.replay('acct-1', 'public.tally'::regproc, snapshot_name => 'by-hand');

-- A writer cannot lift the limits for its own session.
SET ROLE regress_reader;
SELECT error_of($$SET eventstore.max_json_depth = 1000$$);
SELECT error_of($$SET eventstore.max_append_events = 1000000$$);
RESET ROLE;

DROP FUNCTION public.tally;
REVOKE ALL ON FUNCTION error_of(text) FROM regress_writer, regress_reader, regress_outsider;
SELECT eventstore.revoke_access('regress_reader');
DROP ROLE regress_writer, regress_reader, regress_outsider;
