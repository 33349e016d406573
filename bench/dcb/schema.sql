-- bench/dcb.sh: what the DCB benchmark's scripts call.
CREATE SCHEMA IF NOT EXISTS bench;

-- A course-subscription decision with an append condition: read the course's boundary, decide
-- (capacity), append under "nothing in this course since my read"; on ES005 decide again.
-- Returns the attempts it took (0: the course was full).
CREATE OR REPLACE FUNCTION bench.subscribe_dcb(course text, student text, capacity int)
    RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    q jsonb := jsonb_build_object('items', jsonb_build_array(
        jsonb_build_object('types', '["CourseDefined", "StudentSubscribed"]'::jsonb,
                           'tags', jsonb_build_array('course:' || course))));
    r jsonb;
    attempts int := 0;
BEGIN
    LOOP
        attempts := attempts + 1;
        r := eventstore.read_query(q);
        IF jsonb_array_length(r->'events') >= capacity THEN
            RETURN 0;
        END IF;
        BEGIN
            PERFORM eventstore.append_event('student-' || student, 'StudentSubscribed',
                jsonb_build_object('course', course), tags => ARRAY['course:' || course, 'student:' || student],
                condition => jsonb_build_object('fail_if_events_match', q, 'after', r->>'token'));
            RETURN attempts;
        EXCEPTION WHEN SQLSTATE 'ES005' THEN
            -- someone else subscribed to this course since the read: decide again
        END;
    END LOOP;
END $$;

-- What a user would write instead: the same check and insert, run at SERIALIZABLE (pgbench
-- retries its 40001s with --max-tries).
CREATE OR REPLACE FUNCTION bench.subscribe_serializable(course text, student text, capacity int)
    RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM eventstore.events
        WHERE tags @> ARRAY['course:' || course]
          AND event_type IN ('CourseDefined', 'StudentSubscribed')) >= capacity THEN
        RETURN 0;
    END IF;
    PERFORM eventstore.append_event('student-' || student, 'StudentSubscribed',
        jsonb_build_object('course', course), tags => ARRAY['course:' || course, 'student:' || student]);
    RETURN 1;
END $$;
