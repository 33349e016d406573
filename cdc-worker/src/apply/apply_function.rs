//! A projection's handlers compiled into one PL/pgSQL function in the target database, so that a
//! batch costs one statement per projection instead of one per event.
//!
//! The function takes the batch as two arrays (handler numbers and envelopes) and runs, for each
//! event in order, its handler's SQL unchanged: the envelope is assigned to the function's first
//! parameter, and `$1` in a PL/pgSQL statement refers to the first parameter, exactly as it
//! refers to the bound envelope when the handler runs as a prepared statement. Only plain
//! data-modifying statements (INSERT, UPDATE, DELETE, MERGE, WITH) that return no rows are
//! compiled; PL/pgSQL rejects a statement whose rows go nowhere (a bare SELECT), so those
//! handlers, and any that do not compile, keep running one statement per event.
//!
//! Everything here is text: names are derived (never spliced from the configuration), the SQL of
//! a handler is placed in the body verbatim, and the body's dollar-quote tag is chosen so that no
//! handler contains it.

use std::ops::Range;

/// Schema of the worker's state in the target database (see `schema.sql`).
const SCHEMA: &str = "eventstore_worker";

/// Statement kinds the function may run: data-modifying statements whose meaning in PL/pgSQL is
/// the same as at top level. (A statement that returns rows is excluded by the caller, which
/// knows that from the prepared statement.)
const COMPILABLE: &[&str] = &["insert", "update", "delete", "merge", "with"];

/// Argument types of every apply function, as `DROP FUNCTION` needs them.
const ARGUMENTS: &str = "(jsonb, integer[], jsonb[])";

/// Which path a function serves. The live path, a catch-up and a build can apply the same
/// projection at the same time (a build resolving table names to its shadow schema, possibly with
/// another version of the handlers), so each has a function of its own; the live one keeps the
/// name it always had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applier {
    Live,
    CatchUp,
    Build,
}

impl Applier {
    fn prefix(self) -> &'static str {
        match self {
            Applier::Live => "apply",
            Applier::CatchUp => "catchup",
            Applier::Build => "build",
        }
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (the name must not change between runs).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The function's schema-qualified, quoted name for a projection and path: a readable part made
/// of the projection name's ASCII letters, digits and underscores, plus a hash of the exact name
/// so that distinct projections never share a function. Always a valid identifier of ≤ 63 bytes.
pub fn function_name(projection: &str, applier: Applier) -> String {
    let readable: String = projection
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(32)
        .collect();
    format!(
        "{SCHEMA}.\"{}_{readable}_{:012x}\"",
        applier.prefix(),
        fnv1a64(projection.as_bytes()) >> 16
    )
}

/// One piece of SQL text between top-level semicolons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    range: Range<usize>,
    /// The first token, lower-cased, when it is a word.
    first_word: Option<String>,
    /// Whether it holds anything but whitespace and comments.
    significant: bool,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// End of a quoted literal starting at `start` (the opening quote), like PostgreSQL's lexer:
/// a doubled quote stands for itself and, with `backslash_escapes`, so does `\` + any byte.
fn skip_quoted(b: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if backslash_escapes => i += 2,
            c if c == quote => {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Splits SQL text at its top-level semicolons (not those inside strings, quoted identifiers,
/// dollar quotes or comments). `None` when a literal or comment is unterminated.
/// `standard_conforming_strings` is the server setting: when off, `\'` escapes a quote inside
/// '...' too.
fn split(sql: &str, standard_conforming_strings: bool) -> Option<Vec<Piece>> {
    let b = sql.as_bytes();
    let mut pieces = Vec::new();
    let mut piece = Piece { range: 0..0, first_word: None, significant: false };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let token_start = i;
        match c {
            b';' => {
                piece.range.end = i;
                i += 1;
                pieces.push(std::mem::replace(
                    &mut piece,
                    Piece { range: i..i, first_word: None, significant: false },
                ));
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return None,
                    }
                }
                continue;
            }
            b'\'' => i = skip_quoted(b, i, b'\'', !standard_conforming_strings)?,
            b'"' => i = skip_quoted(b, i, b'"', false)?,
            b'$' => {
                // $tag$...$tag$ (tag empty or an identifier without '$'), otherwise a parameter.
                let tag_len =
                    b[i + 1..].iter().take_while(|&&c| is_ident_cont(c) && c != b'$').count();
                let tag_ok = tag_len == 0 || is_ident_start(b[i + 1]);
                if tag_ok && b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &b[i..i + tag_len + 2];
                    let body = i + tag.len();
                    let close = b[body..].windows(tag.len()).position(|w| w == tag)?;
                    i = body + close + tag.len();
                } else {
                    i += 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                }
            }
            c if is_ident_start(c) => {
                while i < b.len() && is_ident_cont(b[i]) {
                    i += 1;
                }
                if piece.first_word.is_none() && !piece.significant {
                    piece.first_word = Some(sql[token_start..i].to_ascii_lowercase());
                }
                // E'...': backslash escapes whatever the setting.
                if matches!(&b[token_start..i], b"E" | b"e") && b.get(i) == Some(&b'\'') {
                    i = skip_quoted(b, i, b'\'', true)?;
                }
            }
            _ => i += 1,
        }
        piece.significant = true;
    }
    piece.range.end = b.len();
    pieces.push(piece);
    Some(pieces)
}

/// The statement a handler's SQL holds, without trailing semicolons and comments after them,
/// when it is one data-modifying statement the apply function can run; `None` otherwise.
/// `returns_rows` comes from the prepared statement (a SELECT, or DML with RETURNING).
pub fn compilable(
    sql: &str,
    returns_rows: bool,
    standard_conforming_strings: bool,
) -> Option<&str> {
    if returns_rows {
        return None;
    }
    let pieces = split(sql, standard_conforming_strings)?;
    let mut significant = pieces.iter().filter(|p| p.significant);
    let statement = significant.next()?;
    if significant.next().is_some() {
        return None;
    }
    COMPILABLE.contains(&statement.first_word.as_deref()?).then(|| &sql[statement.range.clone()])
}

/// `CREATE OR REPLACE FUNCTION` (and `REVOKE` from `PUBLIC`) for a projection's apply function. `handlers` are the
/// statements (as returned by [`compilable`]) in the order of their numbers: the function runs
/// `handlers[k]` for an event whose number is `k`.
pub fn create_function(projection: &str, applier: Applier, handlers: &[&str]) -> String {
    let mut tag = "$es_apply$".to_owned();
    let mut n = 0;
    while handlers.iter().any(|h| h.contains(tag.as_str())) {
        n += 1;
        tag = format!("$es_apply{n}$");
    }
    // `#variable_conflict use_column`: a column of a handler's table named like one of the
    // function's variables stays the column, as it is at top level.
    // An event whose number is NULL is not this projection's (the envelopes may be shared by
    // several projections' functions in one call).
    let mut body = String::from(
        "\n#variable_conflict use_column\nDECLARE\n    _es_handler integer;\nBEGIN\n    \
         FOR _es_i IN 1 .. pg_catalog.cardinality(_es_envelopes) LOOP\n        \
         _es_handler := _es_handlers[_es_i];\n        \
         CONTINUE WHEN _es_handler IS NULL;\n        \
         _es_envelope := _es_envelopes[_es_i];\n        \
         CASE _es_handler\n",
    );
    for (k, statement) in handlers.iter().enumerate() {
        // The statement on lines of its own: a trailing `--` comment ends before the `;`.
        body.push_str(&format!("        WHEN {k} THEN\n{statement}\n;\n"));
    }
    body.push_str("        END CASE;\n    END LOOP;\nEND\n");
    // Security invoker, and only for the worker's role: nobody else has a reason to call it.
    let name = function_name(projection, applier);
    format!(
        "CREATE OR REPLACE FUNCTION {name}(_es_envelope jsonb, _es_handlers integer[], _es_envelopes jsonb[])\n\
         RETURNS void LANGUAGE plpgsql VOLATILE AS {tag}{body}{tag};\n\
         REVOKE ALL ON FUNCTION {name}{ARGUMENTS} FROM PUBLIC"
    )
}

/// The statement the worker prepares to apply a run of events through the function:
/// `$1` the handler numbers, `$2` the envelopes.
pub fn call(projection: &str, applier: Applier) -> String {
    format!("SELECT {}(NULL, $1, $2)", function_name(projection, applier))
}

/// Drops the function, if there is one.
pub fn drop_function(projection: &str, applier: Applier) -> String {
    format!("DROP FUNCTION IF EXISTS {}{ARGUMENTS}", function_name(projection, applier))
}

/// One statement that applies a batch to several projections, one after the other, with the
/// envelopes bound (and parsed by the server) once: `$1`..`$n` the handler numbers of each
/// projection (NULL where it has no handler for the event), `$n+1` the envelopes.
pub fn call_together(projections: &[&str], applier: Applier) -> String {
    let envelopes = projections.len() + 1;
    let calls: Vec<String> = projections
        .iter()
        .enumerate()
        .map(|(k, p)| format!("{}(NULL, ${}, ${envelopes})", function_name(p, applier), k + 1))
        .collect();
    format!("SELECT {}", calls.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_quoted_identifiers_with_a_hash() {
        let live = |p| function_name(p, Applier::Live);
        let a = live("order_summary");
        assert!(a.starts_with("eventstore_worker.\"apply_order_summary_"), "{a}");
        assert!(a.len() - "eventstore_worker.".len() - 2 <= 63);
        assert_ne!(live("Order Summary"), live("order_summary"));
        assert_ne!(live("a-b"), live("a_b"));
        let odd = live("x\"; DROP TABLE t; --");
        assert!(odd.starts_with("eventstore_worker.\"apply_x___drop_table_t_____"), "{odd}");
        for applier in [Applier::Live, Applier::CatchUp, Applier::Build] {
            let long = function_name(&"é".repeat(100), applier);
            assert!(long.len() - "eventstore_worker.".len() - 2 <= 63, "{long}");
        }
        // Each path has its own function.
        assert!(function_name("p", Applier::CatchUp).starts_with("eventstore_worker.\"catchup_p_"));
        assert!(function_name("p", Applier::Build).starts_with("eventstore_worker.\"build_p_"));
        // Stable across runs and builds: the function is found again after a restart.
        assert_eq!(live("order_summary"), live("order_summary"));
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn takes_plain_dml_and_strips_trailing_semicolons() {
        let c = |sql| compilable(sql, false, true);
        assert_eq!(c("INSERT INTO t VALUES ($1)"), Some("INSERT INTO t VALUES ($1)"));
        assert_eq!(
            c("  update t set a = $1->>'a';  ; -- done\n"),
            Some("  update t set a = $1->>'a'")
        );
        assert_eq!(
            c("-- lead\n/* block /* nested */ ; */ DELETE FROM t WHERE k = $1->>'k' -- tail"),
            Some("-- lead\n/* block /* nested */ ; */ DELETE FROM t WHERE k = $1->>'k' -- tail")
        );
        assert_eq!(
            c("WITH x AS (SELECT 1) INSERT INTO t SELECT $1 FROM x;"),
            Some("WITH x AS (SELECT 1) INSERT INTO t SELECT $1 FROM x")
        );
        assert_eq!(
            c("MERGE INTO t USING (SELECT $1 AS e) s ON false WHEN NOT MATCHED THEN DO NOTHING"),
            Some("MERGE INTO t USING (SELECT $1 AS e) s ON false WHEN NOT MATCHED THEN DO NOTHING")
        );
    }

    #[test]
    fn semicolons_inside_literals_do_not_split() {
        let c = |sql| compilable(sql, false, true);
        let sql = "INSERT INTO t VALUES ($1, 'a;b''c;', \"we;ird\", $x$ ; $y$ ; $x$, $$;$$, E'\\';', U&'d;')";
        assert_eq!(c(sql), Some(sql));
        // $1 and identifiers with '$' are not dollar quotes.
        let sql = "UPDATE t SET a$b = $1->>'a' WHERE c = $1::text";
        assert_eq!(c(sql), Some(sql));
        // With standard_conforming_strings off, \' does not end '...'.
        let sql = "INSERT INTO t VALUES ('it\\'s; fine', $1)";
        assert_eq!(compilable(sql, false, false), Some(sql));
        assert_eq!(compilable(sql, false, true), None);
    }

    #[test]
    fn leaves_the_rest_to_the_statement_path() {
        let c = |sql| compilable(sql, false, true);
        assert_eq!(compilable("SELECT f($1)", true, true), None);
        assert_eq!(compilable("INSERT INTO t VALUES ($1) RETURNING 1", true, true), None);
        assert_eq!(c("SELECT f($1)"), None, "not a data-modifying statement");
        assert_eq!(c("CALL p($1)"), None);
        assert_eq!(c("(INSERT INTO t VALUES ($1))"), None);
        assert_eq!(c("INSERT INTO t VALUES ($1); DELETE FROM t"), None);
        assert_eq!(c(";INSERT INTO t VALUES ($1)"), Some("INSERT INTO t VALUES ($1)"));
        assert_eq!(c("INSERT INTO t VALUES ('unterminated"), None);
        assert_eq!(c("INSERT INTO t VALUES ($1) /* unterminated"), None);
        assert_eq!(c("INSERT INTO t VALUES ($q$ unterminated"), None);
        assert_eq!(c("   -- nothing\n"), None);
    }

    #[test]
    fn function_text_keeps_handlers_verbatim_under_a_fresh_tag() {
        let h = [
            "INSERT INTO t VALUES ($1) -- c",
            "UPDATE t SET s = $es_apply$x$es_apply$ WHERE k = $1->>'k'",
        ];
        let name = function_name("p", Applier::Build);
        let sql = create_function("p", Applier::Build, &h);
        assert!(sql.starts_with(&format!("CREATE OR REPLACE FUNCTION {name}(_es_envelope jsonb,")));
        assert!(sql.contains("AS $es_apply1$\n"), "{sql}");
        assert!(sql.contains("END\n$es_apply1$;\n"), "{sql}");
        assert!(
            sql.ends_with(&format!(
                "REVOKE ALL ON FUNCTION {name}(jsonb, integer[], jsonb[]) FROM PUBLIC"
            )),
            "{sql}"
        );
        assert!(sql.contains("WHEN 0 THEN\nINSERT INTO t VALUES ($1) -- c\n;\n"), "{sql}");
        assert!(sql.contains(&format!("WHEN 1 THEN\n{}\n;\n", h[1])), "{sql}");
        assert_eq!(call("p", Applier::Build), format!("SELECT {name}(NULL, $1, $2)"));
        assert_eq!(
            drop_function("p", Applier::Build),
            format!("DROP FUNCTION IF EXISTS {name}(jsonb, integer[], jsonb[])")
        );
        let live = |p| function_name(p, Applier::Live);
        assert_eq!(
            call_together(&["p", "q"], Applier::Live),
            format!("SELECT {}(NULL, $1, $3), {}(NULL, $2, $3)", live("p"), live("q"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_text_splits_without_panicking(sql in "[ -~\\n]{0,80}", scs in any::<bool>()) {
            let _ = compilable(&sql, false, scs);
        }

        #[test]
        fn literals_and_trailers_never_change_the_statement(
            lit in "[ -~]{0,20}",
            tail in proptest::collection::vec(proptest::sample::select(vec![";", "--x;\n", "/*;*/", " ", "\n"]), 0..6),
        ) {
            // Any literal, correctly quoted, stays inside the one statement found; what follows
            // the first top-level semicolon is dropped.
            let head = format!("INSERT INTO t VALUES ($1, '{}')", lit.replace('\'', "''"));
            let sql = format!("{head}{}", tail.concat());
            let before_semicolon: String = tail.iter().take_while(|t| **t != ";").copied().collect();
            let expected = format!("{head}{before_semicolon}");
            prop_assert_eq!(compilable(&sql, false, true), Some(expected.as_str()));
        }
    }
}
