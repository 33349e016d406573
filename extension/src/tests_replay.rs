//! In-database tests of replay, aggregate, merge and snapshots (`cargo pgrx test`). Each test
//! runs in one transaction, so every event has the same `recorded_at`; the temporal case with
//! events in separate transactions is in sql/regress/sql/replay.sql.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use serde_json::{json, Value};

    extension_sql!(
        r#"
        -- Counts events and lists their types: a PL/pgSQL reducer.
        CREATE FUNCTION tests.count_types(state jsonb, event eventstore.events)
            RETURNS jsonb LANGUAGE plpgsql AS $$
        BEGIN
            RETURN jsonb_build_object(
                'n', coalesce((state->>'n')::int, 0) + 1,
                'types', coalesce(state->'types', '[]') || to_jsonb(event.event_type),
                'last', event.stream_version);
        END $$;

        -- Sums data.amount: a SQL-language reducer.
        CREATE FUNCTION tests.total(state jsonb, event eventstore.events)
            RETURNS jsonb LANGUAGE sql IMMUTABLE
            RETURN jsonb_build_object('total', coalesce((state->>'total')::numeric, 0)
                                               + coalesce((event.data->>'amount')::numeric, 0));

        -- Shallow merge in PL/pgSQL, for comparison with eventstore.merge.
        CREATE FUNCTION tests.concat(state jsonb, event eventstore.events)
            RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN RETURN state || event.data; END $$;

        -- eventstore.merge called through the function manager (replay only short-cuts the
        -- function itself).
        CREATE FUNCTION tests.merge_via_sql(state jsonb, event eventstore.events)
            RETURNS jsonb LANGUAGE sql RETURN eventstore.merge(state, event);

        -- Fails on the event of type 'Boom' with a custom SQLSTATE.
        CREATE FUNCTION tests.boom(state jsonb, event eventstore.events)
            RETURNS jsonb LANGUAGE plpgsql AS $$
        BEGIN
            IF event.event_type = 'Boom' THEN
                RAISE EXCEPTION 'reducer refused event %', event.stream_version
                    USING ERRCODE = 'AB123';
            END IF;
            RETURN state;
        END $$;

        -- Returns NULL on 'Reset' events; strict, so it is skipped while the state is NULL.
        CREATE FUNCTION tests.nullify(state jsonb, event eventstore.events)
            RETURNS jsonb LANGUAGE plpgsql STRICT AS $$
        BEGIN
            IF event.event_type = 'Reset' THEN RETURN NULL; END IF;
            RETURN state || jsonb_build_object('seen', event.stream_version);
        END $$;

        -- Signatures that do not fit.
        CREATE FUNCTION tests.wrong_args(state jsonb, n int) RETURNS jsonb
            LANGUAGE sql RETURN state;
        CREATE FUNCTION tests.wrong_return(state jsonb, event eventstore.events)
            RETURNS text LANGUAGE sql RETURN 'x';
        "#,
        name = "tests_replay_reducers",
        requires = ["replay"],
    );

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql).expect("query runs").expect("query returns a value")
    }

    fn json(sql: &str) -> Value {
        one::<JsonB>(sql).0
    }

    fn run(sql: &str) {
        Spi::run(sql).expect("statement runs")
    }

    fn assert_error(statement: &str, sqlstate: &str, fragments: &[&str]) {
        let error =
            Spi::get_one_with_args::<String>("SELECT tests.error_of($1)", &[statement.into()])
                .expect("error_of runs")
                .unwrap_or_else(|| panic!("expected an error from: {statement}"));
        assert!(error.starts_with(&format!("{sqlstate}: ")), "wanted {sqlstate}, got {error}");
        for f in fragments {
            assert!(error.contains(f), "error {error:?} should mention {f:?}");
        }
    }

    /// `stream`: five events with amounts 10..50. Each test uses its own streams: tests run
    /// concurrently, and appends to one stream wait for each other.
    fn order_stream(stream: &str) {
        Spi::run_with_args(
            r#"SELECT eventstore.append($1, '[
            {"type": "OrderPlaced",     "data": {"amount": 10, "customer": {"id": 7}}},
            {"type": "ItemAdded",       "data": {"amount": 20, "items": ["a"]}},
            {"type": "ItemAdded",       "data": {"amount": 30, "items": ["a", "b"]}},
            {"type": "PaymentCaptured", "data": {"amount": 40, "customer": {"vip": true}}},
            {"type": "OrderShipped",    "data": {"amount": 50, "status": "shipped"}}]')"#,
            &[stream.into()],
        )
        .expect("append runs");
    }

    // ---------- replay ----------

    #[pg_test]
    fn replay_folds_with_a_plpgsql_reducer() {
        order_stream("replay-rfwapr");
        let state = json("SELECT eventstore.replay('replay-rfwapr', 'tests.count_types(jsonb, eventstore.events)')");
        assert_eq!(
            state,
            json!({"n": 5, "last": 5, "types": ["OrderPlaced", "ItemAdded", "ItemAdded",
                                                  "PaymentCaptured", "OrderShipped"]})
        );
    }

    #[pg_test]
    fn replay_folds_with_a_sql_reducer() {
        order_stream("replay-rfwasr");
        let state = json(
            "SELECT eventstore.replay('replay-rfwasr', 'tests.total(jsonb, eventstore.events)')",
        );
        assert_eq!(state, json!({"total": 150}));
        let state = json(
            "SELECT eventstore.replay('replay-rfwasr', 'tests.total(jsonb, eventstore.events)',
                                      initial_state => '{\"total\": 1000}', until_version => 2)",
        );
        assert_eq!(state, json!({"total": 1030}));
    }

    #[pg_test]
    fn replay_with_merge_deep_merges_the_data() {
        order_stream("replay-rwmdmtd");
        run(r#"SELECT eventstore.append_event('replay-rwmdmtd', 'Noted', 'null')"#);
        let expected = json!({"amount": 50, "customer": {"id": 7, "vip": true},
                              "items": ["a", "b"], "status": "shipped"});
        let fast = json("SELECT eventstore.replay('replay-rwmdmtd', 'eventstore.merge(jsonb, eventstore.events)')");
        assert_eq!(fast, expected);
        // The Rust fold and the function called per event agree.
        let slow = json("SELECT eventstore.replay('replay-rwmdmtd', 'tests.merge_via_sql(jsonb, eventstore.events)')");
        assert_eq!(slow, expected);
        // A shallow || loses the nested customer id.
        let shallow = json("SELECT eventstore.replay('replay-rwmdmtd', 'tests.concat(jsonb, eventstore.events)', until_version => 5)");
        assert_eq!(shallow["customer"], json!({"vip": true}));
        let partial = json(
            "SELECT eventstore.replay('replay-rwmdmtd', 'eventstore.merge(jsonb, eventstore.events)',
                                      '{\"note\": \"start\"}', until_version => 2)",
        );
        assert_eq!(
            partial,
            json!({"note": "start", "amount": 20, "customer": {"id": 7}, "items": ["a"]})
        );
    }

    #[pg_test]
    fn merge_reads_binary_jsonb_like_the_text_path() {
        // Numbers of every shape, strings that need escaping or are not ASCII, containers
        // nested in arrays, empty ones, > 32 keys (jsonb stores an offset every 32 entries),
        // values stored with a 1-byte header, and data large enough to be compressed.
        run(r#"SELECT eventstore.append('replay-binary', jsonb_build_array(
            jsonb_build_object('type', 'A', 'data', '{"i": 42, "neg": -7, "dec": 1.50, "small": 0.0001,
                "zero": 0, "negdec": -0.5, "big": 123456789012345678901234567890, "exp": 1e20,
                "tiny": 1.5e-10, "frac": 3.14159265358979, "int10000": 10000, "wide": 100000000.00001}'::jsonb),
            jsonb_build_object('type', 'B', 'data', '{"s": "quote\" backslash\\\\ tab\t nl\n", "u": "ünïcødé ✓ 🚀",
                "e": "", "t": true, "f": false, "n": null, "arr": [1, "two", {"three": [3.0, null]}, [], {}],
                "obj": {}, "nested": {"a": {"b": {"c": [1, 2, {"d": -0.000123}]}}}}'::jsonb),
            jsonb_build_object('type', 'C', 'data', (SELECT jsonb_object_agg('k' || i, i * 1.25) FROM generate_series(1, 70) i)),
            jsonb_build_object('type', 'D', 'data', jsonb_build_object('long', repeat('x', 5000), 'nested', jsonb_build_object('a', jsonb_build_object('z', 1)))),
            jsonb_build_object('type', 'E', 'data', '[1, 2]'::jsonb),
            jsonb_build_object('type', 'F', 'data', '"scalar"'::jsonb),
            jsonb_build_object('type', 'G', 'data', '{"nested": {"a": {"y": 2}, "b": 5.5}, "i": {"now": "object"}}'::jsonb)))"#);
        let fast = json("SELECT eventstore.replay('replay-binary', 'eventstore.merge(jsonb, eventstore.events)')");
        let slow = json("SELECT eventstore.replay('replay-binary', 'tests.merge_via_sql(jsonb, eventstore.events)')");
        assert_eq!(fast, slow);
        assert_eq!(
            fast["nested"],
            json!({"a": {"b": {"c": [1, 2, {"d": -0.000123}]}, "z": 1, "y": 2}, "b": 5.5})
        );
        // 70 * 1.25 as numeric keeps its scale: merge's numbers are numeric's own text.
        assert_eq!(fast["k70"].to_string(), "87.50");
        // Every prefix agrees too (each starts from the text of the previous state).
        for v in 1..=7 {
            let fast = json(&format!("SELECT eventstore.replay('replay-binary', 'eventstore.merge(jsonb, eventstore.events)', until_version => {v})"));
            let slow = json(&format!("SELECT eventstore.replay('replay-binary', 'tests.merge_via_sql(jsonb, eventstore.events)', until_version => {v})"));
            assert_eq!(fast, slow, "after version {v}");
        }
        // The same state as jsonb's own text of the data, for the numbers.
        let text = json("SELECT data FROM eventstore.events WHERE stream_id = 'replay-binary' AND stream_version = 1");
        let first = json("SELECT eventstore.replay('replay-binary', 'eventstore.merge(jsonb, eventstore.events)', NULL, until_version => 1)");
        assert_eq!(first, text);
    }

    #[pg_test]
    fn merge_is_callable_directly() {
        order_stream("replay-micd");
        let merged = json(
            "SELECT eventstore.merge('{\"customer\": {\"name\": \"Ada\"}, \"x\": 1}', e)
             FROM eventstore.events e WHERE stream_version = 1",
        );
        assert_eq!(merged, json!({"customer": {"id": 7, "name": "Ada"}, "x": 1, "amount": 10}));
        let from_null = json(
            "SELECT eventstore.merge(NULL, e) FROM eventstore.events e WHERE stream_version = 5",
        );
        assert_eq!(from_null, json!({"amount": 50, "status": "shipped"}));
        let unchanged = json("SELECT eventstore.merge('{\"a\": 1}', NULL)");
        assert_eq!(unchanged, json!({"a": 1}));
    }

    #[pg_test]
    fn replay_of_nothing_is_the_initial_state() {
        order_stream("replay-ronitis");
        let reducer = "'tests.count_types(jsonb, eventstore.events)'";
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-ronitis-404', {reducer})")),
            json!({})
        );
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-ronitis-404', {reducer}, '[1]')")),
            json!([1])
        );
        assert_eq!(
            json(&format!(
                "SELECT eventstore.replay('replay-ronitis', {reducer}, until_version => 0)"
            )),
            json!({})
        );
        let null: Option<JsonB> = Spi::get_one(&format!(
            "SELECT eventstore.replay('replay-ronitis-404', {reducer}, NULL)"
        ))
        .unwrap();
        assert!(null.is_none());
    }

    #[pg_test]
    fn strict_reducers_are_skipped_on_a_null_state_and_may_return_null() {
        run(
            r#"SELECT eventstore.append('replay-srasoansamrn-s', '[{"type":"A"},{"type":"Reset"},{"type":"B"}]')"#,
        );
        let r = "'tests.nullify(jsonb, eventstore.events)'";
        let state: Option<JsonB> =
            Spi::get_one(&format!("SELECT eventstore.replay('replay-srasoansamrn-s', {r})"))
                .unwrap();
        assert!(state.is_none(), "Reset returns NULL and the strict reducer stays skipped");
        assert_eq!(
            json(&format!(
                "SELECT eventstore.replay('replay-srasoansamrn-s', {r}, until_version => 1)"
            )),
            json!({"seen": 1})
        );
    }

    #[pg_test]
    fn replay_honours_as_of() {
        order_stream("replay-rhao");
        let r = "'tests.total(jsonb, eventstore.events)'";
        // All events of this transaction are recorded at now().
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rhao', {r}, as_of => now())")),
            json!({"total": 150})
        );
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rhao', {r}, as_of => now() - interval '1 second')")),
            json!({})
        );
        // A snapshot of events recorded after as_of is not used either.
        run("SELECT eventstore.save_snapshot('replay-rhao', 'tests.total', 3, '{\"total\": -1}')");
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rhao', {r}, as_of => now() - interval '1 second')")),
            json!({})
        );
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rhao', {r}, as_of => now())")),
            json!({"total": 89})
        );
    }

    // ---------- snapshots ----------

    #[pg_test]
    fn replay_starts_from_the_newest_snapshot_within_bounds() {
        order_stream("replay-rsftnswb");
        let r = "'tests.total(jsonb, eventstore.events)'";
        // Deliberately wrong states, so the result shows which snapshot was used.
        run("SELECT eventstore.save_snapshot('replay-rsftnswb', 'tests.total', 2, '{\"total\": 1000}')");
        run("SELECT eventstore.save_snapshot('replay-rsftnswb', 'tests.total', 4, '{\"total\": 5000}')");
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rsftnswb', {r})")),
            json!({"total": 5050})
        );
        // until_version 3: the snapshot at 4 lies beyond it and must not be used.
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rsftnswb', {r}, until_version => 3)")),
            json!({"total": 1030})
        );
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rsftnswb', {r}, until_version => 4)")),
            json!({"total": 5000})
        );
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rsftnswb', {r}, until_version => 1)")),
            json!({"total": 10})
        );
        // A snapshot name with no snapshots replays from the start; initial_state is used only
        // then.
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rsftnswb', {r}, '{{\"total\": 1}}', snapshot_name => 'none')")),
            json!({"total": 151})
        );
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rsftnswb', {r}, '{{\"total\": 1}}')")),
            json!({"total": 5050})
        );
    }

    #[pg_test]
    fn merge_replay_uses_snapshots_too() {
        order_stream("replay-mrust");
        run(
            r#"SELECT eventstore.save_snapshot('replay-mrust', 'eventstore.merge', 4, '{"from": "snapshot"}')"#,
        );
        let state = json("SELECT eventstore.replay('replay-mrust', 'eventstore.merge(jsonb, eventstore.events)')");
        assert_eq!(state, json!({"from": "snapshot", "amount": 50, "status": "shipped"}));
        let state = json("SELECT eventstore.replay('replay-mrust', 'eventstore.merge(jsonb, eventstore.events)', until_version => 4)");
        assert_eq!(state, json!({"from": "snapshot"}));
    }

    #[pg_test]
    fn snapshots_save_load_replace_and_delete() {
        order_stream("replay-sslrad");
        run("SELECT eventstore.save_snapshot('replay-sslrad', 'v1', 2, '{\"at\": 2}')");
        run("SELECT eventstore.save_snapshot('replay-sslrad', 'v1', 4, '{\"at\": 4}')");
        run("SELECT eventstore.save_snapshot('replay-sslrad', 'v2', 5, '{\"at\": 5}')");
        let loaded: String = one(
            "SELECT stream_version || ' ' || state::text FROM eventstore.load_snapshot('replay-sslrad', 'v1')",
        );
        assert_eq!(loaded, "4 {\"at\": 4}");
        let loaded: String = one("SELECT stream_version || ' ' || state::text
             FROM eventstore.load_snapshot('replay-sslrad', 'v1', max_version => 3)");
        assert_eq!(loaded, "2 {\"at\": 2}");
        let none: i64 =
            one("SELECT count(*) FROM eventstore.load_snapshot('replay-sslrad', 'v1', 1)");
        assert_eq!(none, 0);
        // Saving the same snapshot again replaces its state.
        run("SELECT eventstore.save_snapshot('replay-sslrad', 'v1', 4, '{\"at\": \"4 again\"}')");
        let replaced: Value =
            json("SELECT state FROM eventstore.load_snapshot('replay-sslrad', 'v1')");
        assert_eq!(replaced, json!({"at": "4 again"}));
        assert_eq!(one::<i64>("SELECT eventstore.delete_snapshots('v1')"), 2);
        assert_eq!(one::<i64>("SELECT eventstore.delete_snapshots('v1')"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.snapshots"), 1);
    }

    #[pg_test]
    fn snapshots_stay_append_only_outside_the_api() {
        order_stream("replay-ssaoota");
        run("SELECT eventstore.save_snapshot('replay-ssaoota', 'v1', 2, '{}')");
        assert_error("DELETE FROM eventstore.snapshots", "ES003", &["eventstore.snapshots"]);
        assert_error(
            "UPDATE eventstore.snapshots SET state = '{}'",
            "ES003",
            &["eventstore.snapshots"],
        );
    }

    // ---------- aggregate ----------

    #[pg_test]
    fn aggregate_returns_current_state_and_snapshots_every_n_events() {
        order_stream("replay-arcsasene");
        let r = "'tests.total(jsonb, eventstore.events)'";
        let row: String = one(&format!(
            "SELECT stream_version || ' ' || state::text
             FROM eventstore.aggregate('replay-arcsasene', {r}, snapshot_every => 3)"
        ));
        assert_eq!(row, "5 {\"total\": 150}");
        let saved: String = one(
            "SELECT string_agg(snapshot_name || '@' || stream_version || '=' || state::text, ',')
             FROM eventstore.snapshots",
        );
        assert_eq!(saved, "tests.total@5={\"total\": 150}");
        // Two more events: fewer than 3 past the snapshot, so no new one.
        run(
            r#"SELECT eventstore.append('replay-arcsasene', '[{"type":"A","data":{"amount":1}},{"type":"B","data":{"amount":2}}]')"#,
        );
        let row: String = one(&format!(
            "SELECT stream_version || ' ' || state::text
             FROM eventstore.aggregate('replay-arcsasene', {r}, snapshot_every => 3)"
        ));
        assert_eq!(row, "7 {\"total\": 153}");
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.snapshots"), 1);
        // Two is enough when snapshot_every is 2.
        run(&format!(
            "SELECT * FROM eventstore.aggregate('replay-arcsasene', {r}, snapshot_every => 2)"
        ));
        assert_eq!(one::<i64>("SELECT max(stream_version) FROM eventstore.snapshots"), 7);
        // NULL never saves; an absent stream is version 0 with the initial state.
        run(r#"SELECT eventstore.append_event('replay-arcsasene', 'C', '{"amount": 3}')"#);
        run(&format!(
            "SELECT * FROM eventstore.aggregate('replay-arcsasene', {r}, snapshot_every => NULL)"
        ));
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.snapshots"), 2);
        let row: String = one(&format!(
            "SELECT stream_version || ' ' || state::text FROM eventstore.aggregate('replay-arcsasene-404', {r})"
        ));
        assert_eq!(row, "0 {}");
    }

    #[pg_test]
    fn aggregate_with_merge() {
        order_stream("replay-awm");
        let row: String = one(
            "SELECT stream_version || ' ' || (state->'customer')::text
             FROM eventstore.aggregate('replay-awm', 'eventstore.merge(jsonb, eventstore.events)', snapshot_every => 1)",
        );
        assert_eq!(row, "5 {\"id\": 7, \"vip\": true}");
        let name: String = one("SELECT snapshot_name FROM eventstore.snapshots");
        assert_eq!(name, "eventstore.merge");
    }

    // ---------- errors ----------

    #[pg_test]
    fn reducer_errors_keep_their_sqlstate() {
        run(
            r#"SELECT eventstore.append('replay-rekts-s', '[{"type":"A"},{"type":"Boom"},{"type":"C"}]')"#,
        );
        let r = "'tests.boom(jsonb, eventstore.events)'";
        assert_error(
            &format!("SELECT eventstore.replay('replay-rekts-s', {r})"),
            "AB123",
            &["reducer refused event 2"],
        );
        assert_error(
            &format!("SELECT * FROM eventstore.aggregate('replay-rekts-s', {r})"),
            "AB123",
            &["reducer refused event 2"],
        );
        // After the error, the same backend replays normally.
        assert_eq!(
            json(&format!("SELECT eventstore.replay('replay-rekts-s', {r}, until_version => 1)")),
            json!({})
        );
        let n = json("SELECT eventstore.replay('replay-rekts-s', 'tests.count_types(jsonb, eventstore.events)')");
        assert_eq!(n["n"], json!(3));
    }

    #[pg_test]
    fn reducers_that_do_not_fit_are_rejected_by_name() {
        order_stream("replay-rtdnfarbn");
        assert_error(
            "SELECT eventstore.replay('replay-rtdnfarbn', 'tests.wrong_args(jsonb, int)')",
            "22023",
            &[
                "invalid reducer",
                "tests.wrong_args(jsonb,integer)",
                "(state jsonb, event eventstore.events) RETURNS jsonb",
            ],
        );
        assert_error(
            "SELECT eventstore.replay('replay-rtdnfarbn', 'tests.wrong_return(jsonb, eventstore.events)')",
            "22023",
            &["tests.wrong_return(jsonb,eventstore.events)"],
        );
        assert_error(
            "SELECT * FROM eventstore.aggregate('replay-rtdnfarbn', 'tests.wrong_args(jsonb, int)')",
            "22023",
            &["tests.wrong_args"],
        );
        assert_error(
            "SELECT eventstore.replay('replay-rtdnfarbn', 999999999::regprocedure)",
            "22023",
            &["no function has OID 999999999"],
        );
        assert_error(
            "SELECT eventstore.replay('replay-rtdnfarbn', 'tests.nope(jsonb, eventstore.events)')",
            "42883",
            &["nope"],
        );
    }

    #[pg_test]
    fn invalid_arguments_are_22023() {
        order_stream("replay-iaa2");
        let r = "'eventstore.merge(jsonb, eventstore.events)'";
        assert_error(&format!("SELECT eventstore.replay(NULL, {r})"), "22023", &["stream_id"]);
        assert_error(&format!("SELECT eventstore.replay('', {r})"), "22023", &["stream_id"]);
        assert_error(
            "SELECT eventstore.replay('replay-iaa2', NULL)",
            "22023",
            &["reducer", "NULL"],
        );
        assert_error(
            &format!("SELECT eventstore.replay('replay-iaa2', {r}, until_version => -1)"),
            "22023",
            &["until_version"],
        );
        assert_error(
            &format!("SELECT eventstore.replay('replay-iaa2', {r}, snapshot_name => '')"),
            "22023",
            &["snapshot_name"],
        );
        assert_error(
            &format!("SELECT * FROM eventstore.aggregate('replay-iaa2', {r}, snapshot_every => 0)"),
            "22023",
            &["snapshot_every"],
        );
        assert_error(
            &format!("SELECT * FROM eventstore.aggregate(NULL, {r})"),
            "22023",
            &["stream_id"],
        );
        assert_error(
            "SELECT eventstore.save_snapshot('replay-iaa2', 'v1', 6, '{}')",
            "22023",
            &[
                "invalid stream_version",
                "stream \"replay-iaa2\" has no version 6 (it is at version 5)",
            ],
        );
        assert_error(
            "SELECT eventstore.save_snapshot('replay-iaa2-404', 'v1', 1, '{}')",
            "22023",
            &["does not exist"],
        );
        assert_error(
            "SELECT eventstore.save_snapshot('replay-iaa2', 'v1', 0, '{}')",
            "22023",
            &["stream_version"],
        );
        assert_error(
            "SELECT eventstore.save_snapshot('replay-iaa2', 'v1', NULL, '{}')",
            "22023",
            &["stream_version"],
        );
        assert_error(
            "SELECT eventstore.save_snapshot('replay-iaa2', 'v1', 1, NULL)",
            "22023",
            &["state"],
        );
        assert_error(
            "SELECT eventstore.save_snapshot('replay-iaa2', '', 1, '{}')",
            "22023",
            &["snapshot_name"],
        );
        assert_error(
            "SELECT eventstore.save_snapshot(NULL, 'v1', 1, '{}')",
            "22023",
            &["stream_id"],
        );
        assert_error("SELECT eventstore.delete_snapshots(NULL)", "22023", &["snapshot_name"]);
        assert_eq!(one::<i64>("SELECT count(*) FROM eventstore.snapshots"), 0);
    }
}
