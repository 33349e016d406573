//! Dynamic consistency boundaries (DCB): event tags, queries over types and tags, decision
//! tokens and append conditions, as plain Rust. The extension's `dcb` module runs what is
//! decided here; the argument that the locks below make conditional appends race-free is in
//! docs/dcb.md.
//!
//! - A [`Query`] is `{"all": true}` or `{"items": [...]}`; an item matches an event whose type
//!   is one of its `types` (absent: any) and whose tags include all of its `tags` (absent: any);
//!   items are OR'ed.
//! - A [`Token`] is the snapshot a `read_query` ran under (and, when the read was cut short by
//!   `max_count`, the last position it returned): an event is *seen* by the token when its
//!   transaction is visible in that snapshot (and its position is at most that last one).
//! - [`boundary_locks`] derives the advisory locks a conditional append takes: exclusive on one
//!   key per query item (or per type of a types-only item), shared on every type and tag of the
//!   events appended. A query item and an event it matches always share a key, in conflicting
//!   modes; two query items never conflict with each other, nor two events.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use crate::envelope::JsonView;
use crate::error::EsError;

/// At most this many tags on one event.
pub const MAX_EVENT_TAGS: usize = 100;
/// A tag or a query's type holds at most this many bytes (a GIN index entry must stay small).
pub const MAX_TAG_BYTES: usize = 1000;
/// At most this many items in a query, and this many types or tags in one item.
pub const MAX_QUERY_ITEMS: usize = 100;
pub const MAX_ITEM_VALUES: usize = 100;
/// At most this many distinct advisory locks for one conditional append: every lock stays in
/// PostgreSQL's shared lock table until commit (`max_locks_per_transaction` per connection).
pub const MAX_BOUNDARY_KEYS: usize = 256;
/// `read_query` returns at most this many events when `max_count` is NULL, and never more than
/// [`MAX_READ_COUNT`].
pub const DEFAULT_READ_COUNT: i64 = 10_000;
pub const MAX_READ_COUNT: i64 = 1_000_000;
/// A token lists at most this many running transactions (a snapshot lists at most one per
/// connection slot).
const MAX_TOKEN_XIPS: usize = 100_000;

/// The first key of every advisory lock a conditional append takes
/// (`pg_advisory_xact_lock(int4, int4)`): "ESDC" in ASCII. PostgreSQL keeps the two-int4 key
/// space apart from the single-bigint one, so only another user of this same class could meet
/// these locks (docs/dcb.md, Lock keys).
pub const LOCK_CLASS: i32 = 0x4553_4443;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryItem {
    /// `None`: any type.
    pub types: Option<Vec<String>>,
    /// `None`: any tags.
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    All,
    Items(Vec<QueryItem>),
}

impl QueryItem {
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.types.as_ref().is_none_or(|ts| ts.iter().any(|t| t == event_type))
            && self.tags.as_ref().is_none_or(|gs| gs.iter().all(|g| tags.contains(g)))
    }
}

impl Query {
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        match self {
            Query::All => true,
            Query::Items(items) => items.iter().any(|i| i.matches(event_type, tags)),
        }
    }
}

/// What an append condition says: fail if an event matching `query` exists that `after`'s read
/// did not see (without `after`: if any matching event exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub query: Query,
    pub after: Option<Token>,
}

/// A decision token: the snapshot of a `read_query` (as `pg_snapshot`: `xmin`, `xmax` and the
/// transactions running in between) and, for a read cut short, its last position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
    pub last_position: Option<i64>,
}

const TOKEN_PREFIX: &str = "v1:";

impl Token {
    /// The token's text: `v1:xmin:xmax:xip,xip,...` and, for a cut-short read, `:position`.
    pub fn to_text(&self) -> String {
        let mut s = format!("{TOKEN_PREFIX}{}", self.snapshot_text());
        if let Some(p) = self.last_position {
            let _ = write!(s, ":{p}");
        }
        s
    }

    /// The snapshot in `pg_snapshot`'s text form (`xmin:xmax:xip,...`).
    pub fn snapshot_text(&self) -> String {
        let xip: Vec<String> = self.xip.iter().map(u64::to_string).collect();
        format!("{}:{}:{}", self.xmin, self.xmax, xip.join(","))
    }

    /// Parse `text` (the `after` of a condition); 22023 naming `argument` unless it is a token
    /// as `read_query` writes them. The snapshot it holds is then valid `pg_snapshot` input.
    pub fn parse(argument: &str, text: &str) -> Result<Token, EsError> {
        let bad = |why: &str| {
            let shown: String = text.chars().take(60).collect();
            let more = if shown.len() < text.len() { "..." } else { "" };
            EsError::invalid(
                argument,
                format!("\"{shown}{more}\" is not a token from eventstore.read_query ({why})"),
            )
        };
        let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(|| bad("it must start with v1:"))?;
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 3 && parts.len() != 4 {
            return Err(bad("wrong number of fields"));
        }
        let number = |s: &str| -> Result<u64, EsError> {
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("a field is not a transaction id"));
            }
            s.parse::<u64>().map_err(|_| bad("a field is not a transaction id"))
        };
        let xmin = number(parts[0])?;
        let xmax = number(parts[1])?;
        if xmin == 0 || xmin > xmax {
            return Err(bad("xmin must be positive and at most xmax"));
        }
        let mut xip = Vec::new();
        if !parts[2].is_empty() {
            for x in parts[2].split(',') {
                if xip.len() == MAX_TOKEN_XIPS {
                    return Err(bad("too many running transactions"));
                }
                let x = number(x)?;
                if x < xmin || x >= xmax || xip.last().is_some_and(|&l| l >= x) {
                    return Err(bad("running transactions must ascend between xmin and xmax"));
                }
                xip.push(x);
            }
        }
        let last_position = match parts.get(3) {
            None => None,
            Some(p) => {
                let n = number(p)?;
                Some(i64::try_from(n).map_err(|_| bad("the position is out of range"))?)
            }
        };
        Ok(Token { xmin, xmax, xip, last_position })
    }

    /// Whether the read behind this token saw an event of transaction `xid` at `position`
    /// (what the extension's SQL computes with `pg_visible_in_snapshot`).
    pub fn sees(&self, xid: u64, position: i64) -> bool {
        let visible = xid < self.xmin || (xid < self.xmax && self.xip.binary_search(&xid).is_err());
        visible && self.last_position.is_none_or(|p| position <= p)
    }
}

fn kind_is<'a, V: JsonView<'a>>(argument: &str, v: V, want: &str) -> EsError {
    EsError::invalid(argument, format!("must be {want}, got {}", v.kind()))
}

/// An array of distinct, non-empty strings of at most [`MAX_TAG_BYTES`] bytes, at most `limit`
/// of them; `what` names one ("tag", "type") in messages.
fn string_set<'a, V: JsonView<'a>>(
    argument: &str,
    value: V,
    what: &str,
    limit: usize,
) -> Result<Vec<String>, EsError> {
    let unreadable = |e| EsError::json(e, argument);
    let Some(items) = value.elements().map_err(unreadable)? else {
        return Err(kind_is(argument, value, &format!("an array of {what}s (strings)")));
    };
    if items.len() > limit {
        return Err(EsError::invalid(
            argument,
            format!("has {} {what}s; the limit is {limit}", items.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{argument}[{i}]");
        let Some(s) = item.as_str().map_err(|e| EsError::json(e, &at))? else {
            return Err(kind_is(&at, item, &format!("a {what} (a string)")));
        };
        check_string(&at, what, s)?;
        if let Some(first) = out.iter().position(|o| o == s) {
            return Err(EsError::invalid(at, format!("repeats {argument}[{first}] (\"{s}\")")));
        }
        out.push(s.to_owned());
    }
    Ok(out)
}

fn check_string(at: &str, what: &str, s: &str) -> Result<(), EsError> {
    if s.is_empty() {
        return Err(EsError::invalid(at, format!("a {what} must not be empty")));
    }
    if s.len() > MAX_TAG_BYTES {
        return Err(EsError::invalid(
            at,
            format!("a {what} holds at most {MAX_TAG_BYTES} bytes, this one {}", s.len()),
        ));
    }
    Ok(())
}

/// An event's `"tags"` (`argument` is e.g. `events[2].tags`): JSON null means none.
pub fn parse_tags<'a, V: JsonView<'a>>(argument: &str, value: V) -> Result<Vec<String>, EsError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    string_set(argument, value, "tag", MAX_EVENT_TAGS)
}

/// `append_event`'s `tags text[]` (SQL NULL means none; a NULL element is refused).
pub fn check_tag_array(
    argument: &str,
    tags: Option<Vec<Option<String>>>,
) -> Result<Vec<String>, EsError> {
    let Some(tags) = tags else { return Ok(Vec::new()) };
    if tags.len() > MAX_EVENT_TAGS {
        return Err(EsError::invalid(
            argument,
            format!("has {} tags; the limit is {MAX_EVENT_TAGS}", tags.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.into_iter().enumerate() {
        let at = format!("{argument}[{}]", i + 1);
        let Some(tag) = tag else { return Err(EsError::invalid(at, "a tag must not be NULL")) };
        check_string(&at, "tag", &tag)?;
        if let Some(first) = out.iter().position(|o| *o == tag) {
            return Err(EsError::invalid(
                at,
                format!("repeats {argument}[{}] (\"{tag}\")", first + 1),
            ));
        }
        out.push(tag);
    }
    Ok(out)
}

/// A query (`argument` names it: `query`, `condition.fail_if_events_match`).
pub fn parse_query<'a, V: JsonView<'a>>(argument: &str, value: V) -> Result<Query, EsError> {
    let unreadable = |e| EsError::json(e, argument);
    let Some(members) = value.members().map_err(unreadable)? else {
        return Err(kind_is(argument, value, "an object: {\"items\": [...]} or {\"all\": true}"));
    };
    let (mut items, mut all) = (None, None);
    for (key, v) in members {
        match key {
            "items" => items = Some(v),
            "all" => all = Some(v),
            other => {
                return Err(EsError::invalid(
                    argument,
                    format!("unknown key \"{other}\" (a query has \"items\" or \"all\")"),
                ))
            }
        }
    }
    match (items, all) {
        (Some(_), Some(_)) => {
            Err(EsError::invalid(argument, "has both \"items\" and \"all\"; give one"))
        }
        (None, None) => Err(EsError::invalid(argument, "needs \"items\" or \"all\": true")),
        (None, Some(all)) => match all.as_bool() {
            Some(true) => Ok(Query::All),
            _ => Err(EsError::invalid(
                format!("{argument}.all"),
                "must be true (to match every event); otherwise give \"items\"",
            )),
        },
        (Some(items), None) => {
            let at = format!("{argument}.items");
            let Some(list) = items.elements().map_err(|e| EsError::json(e, &at))? else {
                return Err(kind_is(&at, items, "an array of query items"));
            };
            if list.is_empty() {
                return Err(EsError::invalid(
                    at,
                    "must hold at least one item (use {\"all\": true} to match every event)",
                ));
            }
            if list.len() > MAX_QUERY_ITEMS {
                return Err(EsError::invalid(
                    at,
                    format!("has {} items; the limit is {MAX_QUERY_ITEMS}", list.len()),
                ));
            }
            let mut parsed = Vec::with_capacity(list.len());
            for (i, item) in list.into_iter().enumerate() {
                parsed.push(parse_item(&format!("{at}[{i}]"), item)?);
            }
            Ok(Query::Items(parsed))
        }
    }
}

fn parse_item<'a, V: JsonView<'a>>(at: &str, item: V) -> Result<QueryItem, EsError> {
    let Some(members) = item.members().map_err(|e| EsError::json(e, at))? else {
        return Err(kind_is(at, item, "an object with \"types\" and/or \"tags\""));
    };
    let mut parsed = QueryItem { types: None, tags: None };
    for (key, v) in members {
        let field = format!("{at}.{key}");
        match key {
            "types" => {
                parsed.types =
                    Some(non_empty(&field, string_set(&field, v, "type", MAX_ITEM_VALUES)?)?)
            }
            "tags" => {
                parsed.tags =
                    Some(non_empty(&field, string_set(&field, v, "tag", MAX_ITEM_VALUES)?)?)
            }
            other => {
                return Err(EsError::invalid(
                    at,
                    format!("unknown key \"{other}\" (a query item has \"types\" and/or \"tags\")"),
                ))
            }
        }
    }
    if parsed.types.is_none() && parsed.tags.is_none() {
        return Err(EsError::invalid(at, "needs \"types\", \"tags\" or both"));
    }
    Ok(parsed)
}

fn non_empty(at: &str, v: Vec<String>) -> Result<Vec<String>, EsError> {
    if v.is_empty() {
        Err(EsError::invalid(at, "must not be empty (leave the key out to match any)"))
    } else {
        Ok(v)
    }
}

/// An append's `condition` (SQL NULL: none): `{"fail_if_events_match": <query>, "after":
/// <token>}`, `after` optional (JSON null is the same as absent).
pub fn parse_condition<'a, V: JsonView<'a>>(
    value: Option<V>,
) -> Result<Option<Condition>, EsError> {
    const ARG: &str = "condition";
    let Some(value) = value else { return Ok(None) };
    let Some(members) = value.members().map_err(|e| EsError::json(e, ARG))? else {
        return Err(kind_is(
            ARG,
            value,
            "an object: {\"fail_if_events_match\": <query>, \"after\": <token>}",
        ));
    };
    let (mut query, mut after) = (None, None);
    for (key, v) in members {
        match key {
            "fail_if_events_match" => query = Some(v),
            "after" => after = Some(v),
            other => {
                return Err(EsError::invalid(
                    ARG,
                    format!(
                        "unknown key \"{other}\" (a condition has \"fail_if_events_match\" and \
                         \"after\")"
                    ),
                ))
            }
        }
    }
    let Some(query) = query else {
        return Err(EsError::invalid(ARG, "needs \"fail_if_events_match\": <query>"));
    };
    let query = parse_query("condition.fail_if_events_match", query)?;
    let after = match after {
        None => None,
        Some(a) if a.is_null() => None,
        Some(a) => match a.as_str().map_err(|e| EsError::json(e, "condition.after"))? {
            Some(s) => Some(Token::parse("condition.after", s)?),
            None => {
                return Err(kind_is(
                    "condition.after",
                    a,
                    "a token (the \"token\" string eventstore.read_query returned)",
                ))
            }
        },
    };
    Ok(Some(Condition { query, after }))
}

/// One advisory lock: the second key (the first is [`LOCK_CLASS`]) and whether it is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BoundaryLock {
    pub key: i32,
    pub exclusive: bool,
}

/// A boundary key: FNV-1a (64-bit) over a kind byte and the name, folded to 32 bits. Stable
/// across builds and versions, so backends running different library versions during an
/// upgrade still meet on the same keys. Two names may share a key: that only makes unrelated
/// appends wait for each other now and then, never lets a conflict through.
pub fn lock_key(kind: u8, name: &str) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(kind).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h >> 32) ^ h) as u32 as i32
}

pub const KEY_TYPE: u8 = b'T';
pub const KEY_TAG: u8 = b'G';
pub const KEY_ALL: u8 = b'*';

/// The locks a conditional append with `query` that appends `events` (type and tags of each)
/// takes, in the order to take them (ascending key; one lock per key, exclusive when any use of
/// it is):
///
/// - each query item: exclusive on its first tag (every event it matches carries that tag), or
///   for an item of types alone, on each of its types; `{"all": true}`: exclusive on the one
///   key every appended event also locks;
/// - each appended event: shared on its type, on each of its tags and on the all-events key.
///
/// So an item and an event it matches always lock a key in common, one exclusive and one
/// shared, and whichever append commits first is seen by the other's check; items never exclude
/// items, nor events events. 22023 beyond [`MAX_BOUNDARY_KEYS`] distinct keys.
pub fn boundary_locks<'e>(
    query: &Query,
    events: impl IntoIterator<Item = (&'e str, &'e [String])>,
) -> Result<Vec<BoundaryLock>, EsError> {
    let mut keys: BTreeMap<i32, bool> = BTreeMap::new();
    let mut add = |key: i32, exclusive: bool| {
        *keys.entry(key).or_insert(exclusive) |= exclusive;
    };
    match query {
        Query::All => add(lock_key(KEY_ALL, ""), true),
        Query::Items(items) => {
            for item in items {
                match (&item.tags, &item.types) {
                    (Some(tags), _) => add(lock_key(KEY_TAG, &tags[0]), true),
                    (None, Some(types)) => {
                        for t in types {
                            add(lock_key(KEY_TYPE, t), true);
                        }
                    }
                    (None, None) => unreachable!("a parsed item has types or tags"),
                }
            }
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut any = false;
    for (event_type, tags) in events {
        any = true;
        if seen.insert(event_type) {
            add(lock_key(KEY_TYPE, event_type), false);
        }
        for tag in tags {
            add(lock_key(KEY_TAG, tag), false);
        }
    }
    if any {
        add(lock_key(KEY_ALL, ""), false);
    }
    if keys.len() > MAX_BOUNDARY_KEYS {
        return Err(EsError::invalid(
            "condition",
            format!(
                "this append's consistency boundary has {} keys (the distinct types and tags of \
                 its events, and one per query item); the limit is {MAX_BOUNDARY_KEYS}",
                keys.len()
            ),
        ));
    }
    Ok(keys.into_iter().map(|(key, exclusive)| BoundaryLock { key, exclusive }).collect())
}

/// `read_query`'s `max_count`: NULL is [`DEFAULT_READ_COUNT`]; else 1 to [`MAX_READ_COUNT`].
pub fn read_count(max_count: Option<i64>) -> Result<i64, EsError> {
    match max_count {
        None => Ok(DEFAULT_READ_COUNT),
        Some(n) if (1..=MAX_READ_COUNT).contains(&n) => Ok(n),
        Some(n) => Err(EsError::invalid(
            "max_count",
            format!(
                "{n} is out of range (1 to {MAX_READ_COUNT}, or NULL for {DEFAULT_READ_COUNT})"
            ),
        )),
    }
}

/// The SQL that matches a query against events aliased `e`, with its parameters numbered from
/// `$first`: the clause, a key naming its shape (statements are prepared once per shape), and
/// the parameters (each a `text[]`) in order. Every operator and function is schema-qualified.
///
/// An item with tags is `e.tags @> $n AND e.tags <> '{}'` (the second clause is the predicate
/// of the partial GIN index `events_by_tag`, so the planner may use it), with
/// `e.event_type = ANY($m)` for its types; an item of types alone goes through
/// `events_by_type`, an index on `hashtext(event_type)`.
pub fn match_sql(query: &Query, first: usize) -> (String, String, Vec<Vec<String>>) {
    let Query::Items(items) = query else {
        return ("true".into(), "all".into(), Vec::new());
    };
    let mut params: Vec<Vec<String>> = Vec::new();
    let mut param = |v: &Vec<String>| {
        params.push(v.clone());
        format!("${}::pg_catalog.text[]", first + params.len() - 1)
    };
    let mut clauses = Vec::with_capacity(items.len());
    let mut shape = String::new();
    for item in items {
        let clause = match (&item.tags, &item.types) {
            (Some(tags), types) => {
                let mut c = format!(
                    "(e.tags OPERATOR(pg_catalog.@>) {} \
                     AND e.tags OPERATOR(pg_catalog.<>) '{{}}'::pg_catalog.text[]",
                    param(tags)
                );
                shape.push('g');
                if let Some(types) = types {
                    let _ = write!(
                        c,
                        " AND e.event_type OPERATOR(pg_catalog.=) ANY ({})",
                        param(types)
                    );
                    shape.push('t');
                }
                c.push(')');
                c
            }
            (None, Some(types)) => {
                let p = param(types);
                shape.push('t');
                format!(
                    "(pg_catalog.hashtext(e.event_type) OPERATOR(pg_catalog.=) ANY (ARRAY(\
                     SELECT pg_catalog.hashtext(x) FROM pg_catalog.unnest({p}) AS x)) \
                     AND e.event_type OPERATOR(pg_catalog.=) ANY ({p}))"
                )
            }
            (None, None) => unreachable!("a parsed item has types or tags"),
        };
        clauses.push(clause);
        shape.push(',');
    }
    (format!("({})", clauses.join(" OR ")), shape, params)
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::{json, Value};

    fn query(v: Value) -> Result<Query, EsError> {
        parse_query("query", &v)
    }

    fn reason(r: Result<impl std::fmt::Debug, EsError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.sqlstate(), "22023", "{e}");
        e.to_string()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn items_are_ored_types_any_of_tags_all_of() {
        let q = query(json!({"items": [
            {"types": ["A", "B"]},
            {"tags": ["x", "y"]},
            {"types": ["C"], "tags": ["z"]},
        ]}))
        .unwrap();
        assert!(q.matches("A", &[]));
        assert!(q.matches("B", &strings(&["q"])));
        assert!(!q.matches("C", &strings(&["x"])));
        assert!(q.matches("Z", &strings(&["y", "x", "w"])));
        assert!(q.matches("C", &strings(&["z"])));
        assert!(!q.matches("D", &strings(&["z"])));
        assert_eq!(query(json!({"all": true})).unwrap(), Query::All);
        assert!(Query::All.matches("anything", &[]));
    }

    #[test]
    fn refuses_malformed_queries_naming_the_place() {
        assert!(reason(query(json!([]))).contains("invalid query: must be an object"));
        assert!(reason(query(json!({}))).contains("needs \"items\""));
        assert!(reason(query(json!({"all": false}))).contains("query.all"));
        assert!(reason(query(json!({"all": true, "items": []}))).contains("both"));
        assert!(reason(query(json!({"items": []}))).contains("at least one item"));
        assert!(reason(query(json!({"items": [{}]}))).contains("query.items[0]: needs"));
        let r = reason(query(json!({"items": [{"types": ["A"]}, {"types": []}]})));
        assert!(r.contains("query.items[1].types: must not be empty"), "{r}");
        let r = reason(query(json!({"items": [{"tags": ["a", ""]}]})));
        assert!(r.contains("query.items[0].tags[1]: a tag must not be empty"), "{r}");
        let r = reason(query(json!({"items": [{"tags": ["a", 3]}]})));
        assert!(
            r.contains("query.items[0].tags[1]: must be a tag (a string), got a number"),
            "{r}"
        );
        let r = reason(query(json!({"items": [{"tags": ["a", "a"]}]})));
        assert!(r.contains("repeats query.items[0].tags[0]"), "{r}");
        let r = reason(query(json!({"items": [{"types": "A"}]})));
        assert!(r.contains("must be an array of types"), "{r}");
        let r = reason(query(json!({"items": [{"type": ["A"]}]})));
        assert!(r.contains("unknown key \"type\""), "{r}");
        let many: Vec<Value> =
            (0..=MAX_QUERY_ITEMS).map(|i| json!({"tags": [i.to_string()]})).collect();
        assert!(reason(query(json!({"items": many}))).contains("the limit is 100"));
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        assert!(reason(query(json!({"items": [{"tags": [long]}]}))).contains("at most 1000 bytes"));
    }

    #[test]
    fn event_tags() {
        assert_eq!(parse_tags("events[0].tags", &json!(null)).unwrap(), Vec::<String>::new());
        assert_eq!(parse_tags("t", &json!(["a", "b"])).unwrap(), strings(&["a", "b"]));
        assert!(reason(parse_tags("events[3].tags", &json!("a")))
            .contains("events[3].tags: must be an array"));
        assert!(reason(parse_tags("events[3].tags", &json!([null]))).contains("events[3].tags[0]"));
        let many: Vec<String> = (0..=MAX_EVENT_TAGS).map(|i| i.to_string()).collect();
        assert!(reason(parse_tags("t", &json!(many))).contains("has 101 tags"));
        assert_eq!(check_tag_array("tags", None).unwrap(), Vec::<String>::new());
        let r = reason(check_tag_array("tags", Some(vec![Some("a".into()), None])));
        assert!(r.contains("tags[2]: a tag must not be NULL"), "{r}");
    }

    #[test]
    fn conditions() {
        let c = |v: Value| parse_condition(Some(&v));
        assert_eq!(parse_condition::<&Value>(None).unwrap(), None);
        let got = c(json!({"fail_if_events_match": {"all": true}})).unwrap().unwrap();
        assert_eq!(got, Condition { query: Query::All, after: None });
        let got = c(json!({"fail_if_events_match": {"all": true}, "after": "v1:5:9:6,8"})).unwrap();
        assert_eq!(got.unwrap().after.unwrap().xip, vec![6, 8]);
        assert!(reason(c(json!({"after": "v1:5:9:"}))).contains("needs \"fail_if_events_match\""));
        assert!(reason(c(json!({"fail_if_events_match": {"all": true}, "before": 1})))
            .contains("unknown key"));
        let r = reason(c(json!({"fail_if_events_match": {"all": true}, "after": 12})));
        assert!(r.contains("condition.after: must be a token"), "{r}");
        let r = reason(c(json!({"fail_if_events_match": {"items": [{}]}})));
        assert!(r.contains("condition.fail_if_events_match.items[0]"), "{r}");
        assert!(reason(c(json!("x"))).contains("invalid condition: must be an object"));
    }

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        let t = Token { xmin: 5, xmax: 9, xip: vec![6, 8], last_position: None };
        assert_eq!(t.to_text(), "v1:5:9:6,8");
        assert_eq!(Token::parse("a", "v1:5:9:6,8").unwrap(), t);
        let cut = Token { last_position: Some(42), ..t.clone() };
        assert_eq!(Token::parse("a", &cut.to_text()).unwrap(), cut);
        assert_eq!(Token::parse("a", "v1:7:7:").unwrap().xip, Vec::<u64>::new());
        for bad in [
            "",
            "5:9:",
            "v1:",
            "v1:5:9",
            "v1:9:5:",
            "v1:0:5:",
            "v1:5:9:9",
            "v1:5:9:4",
            "v1:5:9:7,6",
            "v1:5:9:6,6",
            "v1:5:9::",
            "v1:5:9::-1",
            "v1:+5:9:",
            "v1:5:9: 6",
            "v1:5:9:6:99999999999999999999",
            "v1:5:99999999999999999999999:",
        ] {
            let r = reason(Token::parse("condition.after", bad));
            assert!(r.starts_with("invalid condition.after:"), "{bad}: {r}");
        }
    }

    #[test]
    fn token_sees_what_its_snapshot_saw() {
        let t = Token { xmin: 5, xmax: 9, xip: vec![6, 8], last_position: None };
        assert!(t.sees(4, 1) && t.sees(5, 1) && t.sees(7, 1));
        assert!(!t.sees(6, 1) && !t.sees(8, 1) && !t.sees(9, 1) && !t.sees(100, 1));
        let cut = Token { last_position: Some(10), ..t };
        assert!(cut.sees(4, 10) && !cut.sees(4, 11));
    }

    fn locks(q: &Query, events: &[(&str, Vec<String>)]) -> Vec<BoundaryLock> {
        boundary_locks(q, events.iter().map(|(t, g)| (*t, g.as_slice()))).unwrap()
    }

    fn shared_with(a: &[BoundaryLock], b: &[BoundaryLock]) -> bool {
        // Some key that one locks exclusively and the other at all.
        a.iter().any(|x| b.iter().any(|y| x.key == y.key && (x.exclusive || y.exclusive)))
    }

    #[test]
    fn an_item_and_an_event_it_matches_always_conflict() {
        let event = ("Subscribed", strings(&["course:c1", "student:s1"]));
        for item in [
            json!({"types": ["Subscribed"]}),
            json!({"tags": ["course:c1"]}),
            json!({"tags": ["student:s1", "course:c1"]}),
            json!({"types": ["Other", "Subscribed"], "tags": ["course:c1"]}),
        ] {
            let decider = locks(&query(json!({"items": [item.clone()]})).unwrap(), &[]);
            let appender = locks(
                &query(json!({"items": [{"tags": ["unrelated"]}]})).unwrap(),
                std::slice::from_ref(&event),
            );
            assert!(shared_with(&decider, &appender), "{item}");
        }
        let all = locks(&Query::All, &[]);
        let appender =
            locks(&query(json!({"items": [{"tags": ["u"]}]})).unwrap(), &[("X", vec![])]);
        assert!(shared_with(&all, &appender));
    }

    #[test]
    fn disjoint_boundaries_share_no_conflicting_key() {
        let course = |c: &str, s: &str| {
            let q = query(json!({"items": [
                {"types": ["Subscribed"], "tags": [format!("course:{c}")]},
                {"types": ["Subscribed"], "tags": [format!("student:{s}")]},
            ]}))
            .unwrap();
            locks(
                &q,
                &[("Subscribed", strings(&[&format!("course:{c}"), &format!("student:{s}")]))],
            )
        };
        assert!(!shared_with(&course("c1", "s1"), &course("c2", "s2")));
        assert!(shared_with(&course("c1", "s1"), &course("c1", "s2")));
        assert!(shared_with(&course("c1", "s1"), &course("c2", "s1")));
        // sorted, one lock per key
        let l = course("c1", "s1");
        assert!(l.windows(2).all(|w| w[0].key < w[1].key));
    }

    #[test]
    fn too_many_keys_is_22023() {
        let tags: Vec<String> = (0..MAX_BOUNDARY_KEYS).map(|i| format!("t{i}")).collect();
        let r = boundary_locks(&Query::All, [("A", tags.as_slice())]);
        assert!(reason(r).contains("the limit is 256"));
    }

    #[test]
    fn keys_are_stable() {
        // Changing these would let two library versions miss each other's locks.
        assert_eq!(lock_key(KEY_TAG, "course:c1"), lock_key(KEY_TAG, "course:c1"));
        assert_ne!(lock_key(KEY_TAG, "a"), lock_key(KEY_TYPE, "a"));
        assert_eq!(lock_key(KEY_ALL, ""), 0x2962_3531);
        assert_eq!(lock_key(KEY_TAG, "course:c1"), lock_key(KEY_TAG, &String::from("course:c1")));
    }

    #[test]
    fn sql_names_each_item_once_and_binds_values() {
        let q = query(
            json!({"items": [{"types": ["A"]}, {"tags": ["x"], "types": ["B"]}, {"tags": ["y"]}]}),
        )
        .unwrap();
        let (sql, shape, params) = match_sql(&q, 3);
        assert_eq!(shape, "t,gt,g,");
        assert_eq!(
            params,
            vec![strings(&["A"]), strings(&["x"]), strings(&["B"]), strings(&["y"])]
        );
        assert!(sql.contains("$3::pg_catalog.text[]") && sql.contains("$6::pg_catalog.text[]"));
        assert!(!sql.contains("'A'") && !sql.contains("x'"));
        assert_eq!(match_sql(&Query::All, 1).0, "true");
    }

    #[test]
    fn read_counts() {
        assert_eq!(read_count(None).unwrap(), DEFAULT_READ_COUNT);
        assert_eq!(read_count(Some(5)).unwrap(), 5);
        assert!(reason(read_count(Some(0))).contains("out of range"));
        assert!(reason(read_count(Some(MAX_READ_COUNT + 1))).contains("out of range"));
    }
}
