//! In-database tests of every function and error path (`cargo pgrx test`). Each test runs in
//! its own transaction, rolled back afterwards.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    extension_sql!(
        r#"
        -- The SQLSTATE and message a statement fails with, or NULL if it succeeds.
        CREATE FUNCTION tests.error_of(statement text) RETURNS text
            LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE statement;
            RETURN NULL;
        EXCEPTION WHEN OTHERS THEN
            RETURN SQLSTATE || ': ' || SQLERRM;
        END $$;
        "#,
        name = "test_helpers",
        requires = ["finalize"],
    );

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql).expect("query runs").expect("query returns a value")
    }

    fn run(sql: &str) {
        Spi::run(sql).expect("statement runs")
    }

    /// The SQLSTATE and message `statement` fails with (it must fail).
    fn error_of(statement: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT tests.error_of($1)", &[statement.into()])
            .expect("error_of runs")
            .unwrap_or_else(|| panic!("expected an error from: {statement}"))
    }

    fn assert_error(statement: &str, sqlstate: &str, fragments: &[&str]) {
        let error = error_of(statement);
        assert!(error.starts_with(&format!("{sqlstate}: ")), "wanted {sqlstate}, got {error}");
        for f in fragments {
            assert!(error.contains(f), "error {error:?} should mention {f:?}");
        }
    }

    fn count_events() -> i64 {
        one("SELECT count(*) FROM eventstore.events")
    }

    // ---------- append and append_event ----------

    #[pg_test]
    fn data_and_metadata_are_stored_exactly_as_given() {
        // Numbers keep their written precision, strings their escapes, large values survive
        // compression: the jsonb goes into the table as the caller passed it.
        run(
            r#"CREATE TEMP TABLE given AS SELECT '{"total": 120.50, "note": "caf\u00e9 \"x\"", "n": 1e3}'::jsonb AS d,
                     jsonb_build_object('blob', repeat('abc', 50000)) AS big"#,
        );
        run(r#"SELECT eventstore.append('exact-1', jsonb_build_array(
                   jsonb_build_object('type', 'A', 'data', d, 'metadata', jsonb_build_object('m', 1.0)),
                   jsonb_build_object('type', 'B', 'data', big),
                   jsonb_build_object('type', 'C', 'data', 'null'::jsonb, 'metadata', 'null'::jsonb),
                   jsonb_build_object('type', 'D', 'data', '[1.10, "x"]'::jsonb))) FROM given"#);
        run("SELECT eventstore.append_event('exact-2', 'E', d, jsonb_build_object('m', 2.50)) FROM given");
        run("SELECT eventstore.append_event('exact-2', 'F', big, NULL) FROM given");
        let stored: String = one(
            "SELECT string_agg(stream_id || '/' || stream_version || ' ' || left(data::text, 60) || ' ' || metadata::text, ' | '
                               ORDER BY stream_id, stream_version)
             FROM eventstore.events WHERE stream_id LIKE 'exact-%'",
        );
        assert_eq!(
            stored,
            r#"exact-1/1 {"n": 1000, "note": "café \"x\"", "total": 120.50} {"m": 1.0} | exact-1/2 {"blob": "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcab {} | exact-1/3 null {} | exact-1/4 [1.10, "x"] {} | exact-2/1 {"n": 1000, "note": "café \"x\"", "total": 120.50} {"m": 2.50} | exact-2/2 {"blob": "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcab {}"#
        );
        let big_equal: bool =
            one("SELECT bool_and(e.data = g.big) FROM eventstore.events e, given g
             WHERE e.event_type IN ('B', 'F')");
        assert!(big_equal);
    }

    #[pg_test]
    fn append_assigns_gapless_versions_and_increasing_positions() {
        run(r#"SELECT eventstore.append('order-1', '[{"type":"OrderPlaced","data":{"total":42}},
                                                    {"type":"PaymentCaptured"}]')"#);
        run(r#"SELECT eventstore.append('order-1', '[{"type":"OrderShipped"}]')"#);
        let versions: String = one(
            "SELECT string_agg(stream_version::text || ':' || event_type, ',' ORDER BY global_position)
             FROM eventstore.events WHERE stream_id = 'order-1'",
        );
        assert_eq!(versions, "1:OrderPlaced,2:PaymentCaptured,3:OrderShipped");
        let total: String =
            one("SELECT data->>'total' FROM eventstore.events WHERE stream_version = 1");
        assert_eq!(total, "42");
        assert_eq!(one::<i64>("SELECT eventstore.stream_version('order-1')"), 3);
        let category: String =
            one("SELECT category FROM eventstore.streams WHERE stream_id = 'order-1'");
        assert_eq!(category, "order");
    }

    #[pg_test]
    fn append_returns_the_rows_it_wrote() {
        let returned: String =
            one(r#"SELECT string_agg(stream_version::text, ',' ORDER BY stream_version)
               FROM eventstore.append('s-1', '[{"type":"A"},{"type":"B"},{"type":"C"}]')"#);
        assert_eq!(returned, "1,2,3");
        run(r#"CREATE TEMP TABLE returned AS
               SELECT * FROM eventstore.append('s-2', '[{"type":"A"},{"type":"B"}]')"#);
        let matches: i64 = one("SELECT count(*) FROM returned r JOIN eventstore.events e
               ON e.stream_id = 's-2' AND e.stream_version = r.stream_version
              AND e.event_id = r.event_id AND e.global_position = r.global_position");
        assert_eq!(matches, 2);
    }

    #[pg_test]
    fn append_event_fills_defaults_and_records_the_transaction() {
        run("SELECT eventstore.append_event('order-7', 'OrderPlaced', '{\"total\": 5}')");
        let row: bool = one("SELECT metadata = '{}'::jsonb AND data = '{\"total\": 5}'::jsonb
                    AND recorded_at = now() AND transaction_id = pg_current_xact_id()
                    AND event_id IS NOT NULL
             FROM eventstore.events WHERE stream_id = 'order-7'");
        assert!(row);
        run("SELECT eventstore.append_event('order-7', 'Tagged', 'null', '{\"by\": \"me\"}',
                                             expected_version => 1,
                                             event_id => '00000000-0000-4000-8000-000000000001')");
        let tagged: String =
            one("SELECT event_id::text || ' ' || (metadata->>'by') || ' ' || jsonb_typeof(data)
             FROM eventstore.events WHERE stream_id = 'order-7' AND stream_version = 2");
        assert_eq!(tagged, "00000000-0000-4000-8000-000000000001 me null");
    }

    #[pg_test]
    fn generated_ids_are_distinct() {
        run("SELECT eventstore.append('s-1', (SELECT jsonb_agg(jsonb_build_object('type', 'T'))
                                               FROM generate_series(1, 500)))");
        assert_eq!(one::<i64>("SELECT count(DISTINCT event_id) FROM eventstore.events"), 500);
    }

    // ---------- expected versions ----------

    #[pg_test]
    fn expected_version_modes() {
        // 0: stream must not exist
        run("SELECT eventstore.append_event('order-1', 'A', '{}', expected_version => 0)");
        assert_error(
            "SELECT eventstore.append_event('order-1', 'A', '{}', expected_version => 0)",
            "ES001",
            &["\"order-1\"", "expected 0", "actual 1"],
        );
        // -1: stream must exist
        assert_error(
            "SELECT eventstore.append_event('order-2', 'A', '{}', expected_version => -1)",
            "ES001",
            &["\"order-2\"", "expected -1", "actual 0"],
        );
        run("SELECT eventstore.append_event('order-1', 'B', '{}', expected_version => -1)");
        // N: exact
        run("SELECT eventstore.append_event('order-1', 'C', '{}', expected_version => 2)");
        assert_error(
            "SELECT eventstore.append_event('order-1', 'D', '{}', expected_version => 2)",
            "ES001",
            &["expected 2", "actual 3"],
        );
        // NULL: any
        run("SELECT eventstore.append_event('order-1', 'E', '{}', expected_version => NULL)");
        assert_eq!(one::<i64>("SELECT eventstore.stream_version('order-1')"), 4);
    }

    #[pg_test]
    fn a_failed_append_writes_nothing() {
        run("SELECT eventstore.append_event('order-1', 'A', '{}')");
        let before = count_events();
        assert_error(
            r#"SELECT eventstore.append('order-1', '[{"type":"B"},{"type":"C"}]', 5)"#,
            "ES001",
            &[],
        );
        assert_error(
            r#"SELECT eventstore.append('order-9', '[{"type":"B"},{"type":"C"}]', -1)"#,
            "ES001",
            &[],
        );
        assert_eq!(count_events(), before);
        assert_eq!(one::<i64>("SELECT eventstore.stream_version('order-1')"), 1);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM eventstore.streams WHERE stream_id = 'order-9'"),
            0
        );
    }

    #[pg_test]
    fn conflict_detail_and_hint_are_reported() {
        run("SELECT eventstore.append_event('order-1', 'A', '{}')");
        let detail: String = one(r#"DO $$ BEGIN
                 PERFORM eventstore.append_event('order-1', 'B', '{}', expected_version => 7);
               EXCEPTION WHEN SQLSTATE 'ES001' THEN
                 DECLARE d text; BEGIN
                   GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
                   PERFORM set_config('tests.detail', d, true);
                 END;
               END $$;
               SELECT current_setting('tests.detail')"#);
        assert!(detail.contains("is at version 1"), "{detail}");
    }

    // ---------- idempotency ----------

    const BATCH: &str = r#"'[{"type":"OrderPlaced","id":"11111111-1111-4111-8111-111111111111"},
                              {"type":"PaymentCaptured","id":"22222222-2222-4222-8222-222222222222"}]'"#;

    #[pg_test]
    fn retrying_a_stored_batch_returns_the_original_rows_and_writes_nothing() {
        let first: String = one(&format!(
            "SELECT string_agg(event_id || '@' || stream_version || '#' || global_position, ',')
             FROM eventstore.append('order-1', {BATCH}, 0)"
        ));
        run("SELECT eventstore.append_event('order-1', 'OrderShipped', '{}')");
        let before = count_events();
        // The retry's expected_version (0) no longer holds: still the original rows.
        let again: String = one(&format!(
            "SELECT string_agg(event_id || '@' || stream_version || '#' || global_position, ',')
             FROM eventstore.append('order-1', {BATCH}, 0)"
        ));
        assert_eq!(first, again);
        assert_eq!(count_events(), before);
        assert_eq!(one::<i64>("SELECT eventstore.stream_version('order-1')"), 3);
        // append_event with an explicit id retries the same way
        let id: String =
            one("SELECT event_id::text FROM eventstore.append_event('order-2', 'A', '{}',
                 event_id => '33333333-3333-4333-8333-333333333333')");
        let again: String = one(
            "SELECT event_id::text || stream_version FROM eventstore.append_event('order-2', 'A',
                 '{}', expected_version => 0, event_id => '33333333-3333-4333-8333-333333333333')",
        );
        assert_eq!(again, format!("{id}1"));
    }

    #[pg_test]
    fn any_other_reuse_of_an_id_is_es004() {
        run(&format!("SELECT eventstore.append('order-1', {BATCH})"));
        let before = count_events();
        // same ids, another stream
        assert_error(
            &format!("SELECT eventstore.append('order-2', {BATCH})"),
            "ES004",
            &["11111111-1111-4111-8111-111111111111", "\"order-1\""],
        );
        // one id reused inside a new batch
        assert_error(
            r#"SELECT eventstore.append('order-1', '[{"type":"X"},
                 {"type":"PaymentCaptured","id":"22222222-2222-4222-8222-222222222222"}]')"#,
            "ES004",
            &["22222222-2222-4222-8222-222222222222", "event 2 of stream \"order-1\""],
        );
        // same ids, other types
        assert_error(
            r#"SELECT eventstore.append('order-1', '[
                 {"type":"Other","id":"11111111-1111-4111-8111-111111111111"},
                 {"type":"PaymentCaptured","id":"22222222-2222-4222-8222-222222222222"}]')"#,
            "ES004",
            &[],
        );
        // same ids, other order
        assert_error(
            r#"SELECT eventstore.append('order-1', '[
                 {"type":"PaymentCaptured","id":"22222222-2222-4222-8222-222222222222"},
                 {"type":"OrderPlaced","id":"11111111-1111-4111-8111-111111111111"}]')"#,
            "ES004",
            &[],
        );
        assert_eq!(count_events(), before);
    }

    // ---------- bad input ----------

    #[pg_test]
    fn bad_input_is_22023_naming_the_argument_and_writes_nothing() {
        run("SELECT eventstore.append_event('order-1', 'A', '{}')");
        let before = count_events();
        let cases: &[(&str, &[&str])] = &[
            (r#"SELECT eventstore.append('order-1', '{"type":"A"}')"#, &["events", "JSON array"]),
            (r#"SELECT eventstore.append('order-1', '[]')"#, &["events", "at least one"]),
            (r#"SELECT eventstore.append('order-1', NULL)"#, &["events", "NULL"]),
            (r#"SELECT eventstore.append('order-1', '[{"data":{}}]')"#, &["events[0].type"]),
            (
                r#"SELECT eventstore.append('order-1', '[{"type":""}]')"#,
                &["events[0].type", "empty"],
            ),
            (
                r#"SELECT eventstore.append('order-1', '[{"type":"A"},{"type":"B","id":"xyz"}]')"#,
                &["events[1].id", "xyz"],
            ),
            (
                r#"SELECT eventstore.append('order-1', '[{"type":"A","metadata":"m"}]')"#,
                &["events[0].metadata", "object"],
            ),
            (r#"SELECT eventstore.append('order-1', '[{"type":"A","payload":1}]')"#, &["payload"]),
            (r#"SELECT eventstore.append('', '[{"type":"A"}]')"#, &["stream_id", "empty"]),
            (r#"SELECT eventstore.append(NULL, '[{"type":"A"}]')"#, &["stream_id", "NULL"]),
            (
                r#"SELECT eventstore.append('order-1', '[{"type":"A"}]', -2)"#,
                &["expected_version", "-2"],
            ),
            ("SELECT eventstore.append_event('order-1', '', '{}')", &["event_type", "empty"]),
            ("SELECT eventstore.append_event('order-1', NULL, '{}')", &["event_type"]),
            ("SELECT eventstore.append_event('order-1', 'A', NULL)", &["data", "NULL"]),
            (
                "SELECT eventstore.append_event('order-1', 'A', '{}', '[1]')",
                &["metadata", "object"],
            ),
            ("SELECT eventstore.append_event('', 'A', '{}')", &["stream_id"]),
            (
                "SELECT eventstore.append_event('order-1', 'A', '{}', '{}', -5)",
                &["expected_version"],
            ),
        ];
        for (statement, fragments) in cases {
            assert_error(statement, "22023", fragments);
        }
        assert_eq!(count_events(), before);
        assert_eq!(one::<i64>("SELECT eventstore.stream_version('order-1')"), 1);
    }

    // ---------- append-only ----------

    #[pg_test]
    fn event_store_tables_are_append_only_even_for_superusers() {
        run("SELECT eventstore.append_event('order-1', 'A', '{}')");
        run("INSERT INTO eventstore.snapshots VALUES ('order-1', 'summary', 1, '{}')");
        assert!(one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"));
        for table in ["events", "streams", "snapshots"] {
            for statement in [
                format!("UPDATE eventstore.{table} SET stream_id = 'x'"),
                format!("DELETE FROM eventstore.{table}"),
                // TRUNCATE is covered by pg_regress: it takes an exclusive lock before its
                // trigger fires, which would deadlock with the tests running beside this one.
            ] {
                assert_error(&statement, "ES003", &[&format!("eventstore.{table}")]);
            }
        }
        run("SET LOCAL session_replication_role = replica");
        assert_error("DELETE FROM eventstore.events", "ES003", &["DELETE"]);
        run("SET LOCAL session_replication_role = origin");
        assert_eq!(count_events(), 1);
    }

    // ---------- reads ----------

    #[pg_test]
    fn read_stream_forward_and_backward() {
        run(
            r#"SELECT eventstore.append('order-1', '[{"type":"A"},{"type":"B"},{"type":"C"},{"type":"D"}]')"#,
        );
        run(r#"SELECT eventstore.append('order-2', '[{"type":"X"}]')"#);
        let types = |sql: &str| -> String {
            one(&format!(
                "SELECT string_agg(event_type, '' ORDER BY ordinality) FROM {sql} WITH ORDINALITY"
            ))
        };
        assert_eq!(types("eventstore.read_stream('order-1')"), "ABCD");
        assert_eq!(types("eventstore.read_stream('order-1', 2)"), "BCD");
        assert_eq!(types("eventstore.read_stream('order-1', 2, 2)"), "BC");
        assert_eq!(types("eventstore.read_stream_backward('order-1')"), "DCBA");
        assert_eq!(types("eventstore.read_stream_backward('order-1', 3, 2)"), "CB");
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.read_stream('nope')"), 0);
        assert_eq!(one::<i64>("SELECT eventstore.stream_version('nope')"), 0);
        assert_error(
            "SELECT * FROM eventstore.read_stream('order-1', 0)",
            "22023",
            &["from_version"],
        );
        assert_error(
            "SELECT * FROM eventstore.read_stream('order-1', 1, -1)",
            "22023",
            &["max_count"],
        );
        assert_error("SELECT * FROM eventstore.read_stream('')", "22023", &["stream_id"]);
        assert_error(
            "SELECT * FROM eventstore.read_stream_backward('order-1', -3)",
            "22023",
            &["from_version"],
        );
    }

    #[pg_test]
    fn read_all_and_read_category_never_show_uncommitted_work() {
        // Everything in a pg_test is one open transaction: its events are not final yet, so
        // the gap-safe readers must not return them (committed cases: pg_regress, isolation).
        run(r#"SELECT eventstore.append('order-1', '[{"type":"A"}]')"#);
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.read_all()"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.read_category('order')"), 0);
        assert_error("SELECT * FROM eventstore.read_all('0', 0, -1)", "22023", &["max_count"]);
        assert_error("SELECT * FROM eventstore.read_category('')", "22023", &["category"]);
    }

    #[pg_test]
    fn category_is_the_part_before_the_first_dash() {
        assert_eq!(one::<String>("SELECT eventstore.category('order-42-b')"), "order");
        assert_eq!(one::<String>("SELECT eventstore.category('inventory')"), "inventory");
    }

    // ---------- dump configuration ----------

    #[pg_test]
    fn tables_and_sequence_are_dumped_with_the_database() {
        let dumped: String =
            one("SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
             FROM pg_extension, unnest(extconfig) c WHERE extname = 'pg_eventstore'");
        assert_eq!(
            dumped,
            "eventstore.event_declarations,eventstore.events,eventstore.global_position_seq,\
             eventstore.snapshots,eventstore.streams,eventstore.upcasters"
        );
    }
}
