-- Upcasters are user code: who may register them, and whose rights they run with. Runs after
-- upcast.sql, on its store.
\set VERBOSITY terse
CREATE ROLE regress_up_writer;
CREATE ROLE regress_up_reader;
CREATE ROLE regress_up_outsider;
SELECT eventstore.grant_writer('regress_up_writer');
SELECT eventstore.grant_reader('regress_up_reader');
GRANT EXECUTE ON FUNCTION error_of(text) TO regress_up_writer, regress_up_reader, regress_up_outsider;

-- Registering and removing steps changes what every read returns: the extension owner's and
-- superusers' only. Nothing grants it; the registry table is not writable by anyone else.
CREATE FUNCTION public.stamp_reader(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN data || jsonb_build_object('read_by', current_user::text);
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'eventstore'::regnamespace
  AND p.proname IN ('register_upcaster', '_register_upcaster', 'unregister_upcaster', '_registry',
                    '_upcast_type', '_upcast_version', '_upcast_data', '_event_types', '_definition')
ORDER BY 1::text COLLATE "C";
SET ROLE regress_up_writer;
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.stamp_reader(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore._register_upcaster('PaymentCaptured', 1, 'public.stamp_reader(jsonb,jsonb)'::regprocedure, NULL)$$);
SELECT error_of($$SELECT eventstore.unregister_upcaster('OrderSubmitted', 3)$$);
SELECT error_of($$INSERT INTO eventstore.upcasters (event_type, from_version, upcaster) VALUES ('PaymentCaptured', 1, 'public.stamp_reader(jsonb,jsonb)')$$);
SELECT error_of($$DELETE FROM eventstore.upcasters$$);
SET ROLE regress_up_reader;
SELECT error_of($$SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.stamp_reader(jsonb,jsonb)')$$);
SELECT error_of($$SELECT eventstore.unregister_upcaster('OrderSubmitted', 3)$$);
SELECT error_of($$SELECT * FROM eventstore.upcasters$$);
-- Readers see the registry through event_types, and read upcast events everywhere.
SELECT type, current_version FROM eventstore.event_types;
SELECT stream_version, event_type, schema_version FROM eventstore.read_stream('order-1');
SELECT count(*) FROM eventstore.events_current WHERE event_type = 'OrderSubmitted';
SET ROLE regress_up_outsider;
SELECT error_of($$SELECT * FROM eventstore.event_types$$);
SELECT error_of($$SELECT * FROM eventstore.events_current$$);
SELECT error_of($$SELECT * FROM eventstore.read_stream('order-1')$$);
RESET ROLE;

-- An upcaster runs as the caller of the read, never as the extension's owner: here it stamps the
-- role it ran as into the data.
SELECT eventstore.register_upcaster('PaymentCaptured', 1, 'public.stamp_reader(jsonb,jsonb)');
GRANT EXECUTE ON FUNCTION public.stamp_reader TO regress_up_writer, regress_up_reader;
SET ROLE regress_up_reader;
SELECT data->>'read_by' AS read_by FROM eventstore.read_stream('order-1') WHERE event_type = 'PaymentCaptured';
SELECT data->>'read_by' AS read_by FROM eventstore.events_current WHERE event_type = 'PaymentCaptured';
SELECT eventstore.replay('order-1', 'eventstore.merge'::regproc)->>'read_by' AS read_by;
SET ROLE regress_up_writer;
-- aggregate saves its snapshot as the owner, but folds (and upcasts) as the caller.
SELECT state->>'read_by' AS read_by FROM eventstore.aggregate('order-1', 'eventstore.merge'::regproc, snapshot_every => 1);
-- Appending reads the registry (the version to store) and runs no upcaster.
SELECT stream_version FROM eventstore.append('order-1', '[{"type": "PaymentCaptured", "data": {"amount": 1}}]');
SELECT schema_version, data FROM eventstore.events WHERE stream_id = 'order-1' ORDER BY stream_version DESC LIMIT 1;
RESET ROLE;
-- Running an upcaster needs EXECUTE on it, as calling it would.
REVOKE EXECUTE ON FUNCTION public.stamp_reader FROM regress_up_reader, PUBLIC;
SET ROLE regress_up_reader;
SELECT error_of($$SELECT * FROM eventstore.read_stream('order-1')$$);
SELECT error_of($$SELECT eventstore.replay('order-1', 'eventstore.merge'::regproc)$$);
SELECT count(*) FROM eventstore.read_stream('order-1', upcast => false);
RESET ROLE;

-- An upcaster is outside the extension's internal write scope: one made VOLATILE after it was
-- registered (CREATE OR REPLACE) is refused at read time, and even called directly by a
-- superuser it could not move a stream (ES003).
CREATE OR REPLACE FUNCTION public.stamp_reader(data jsonb, metadata jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE eventstore.streams SET version = version + 100;
    RETURN data;
END $$;
SELECT error_of($$SELECT * FROM eventstore.read_stream('order-1')$$);
SELECT error_of($$SELECT public.stamp_reader('{}', '{}')$$);
SELECT eventstore.stream_version('order-1');

-- Rights come from grant_writer and grant_reader, and go with revoke_access.
SELECT eventstore.revoke_access('regress_up_writer');
SELECT eventstore.revoke_access('regress_up_reader');
SELECT count(*) AS privileges_left
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'eventstore'::regnamespace
  AND a.grantee IN ('regress_up_writer'::regrole, 'regress_up_reader'::regrole);
DROP FUNCTION public.stamp_reader(jsonb, jsonb);
REVOKE ALL ON FUNCTION error_of(text) FROM regress_up_writer, regress_up_reader, regress_up_outsider;
DROP ROLE regress_up_writer, regress_up_reader, regress_up_outsider;
