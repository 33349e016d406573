//! Schema evolution: the rules of the upcaster registry, in plain Rust.
//!
//! A step upcasts events of one type from `from_version` to `from_version + 1`, optionally
//! renaming the type at that step. Steps compose: an event stored at `(type, version)` goes
//! through every step from there on, following renames, and is read at the end of that route.
//!
//! Versions continue across a rename: `OrderPlaced` v2 renamed at its step 2 -> 3 becomes
//! `OrderSubmitted` v3, and `OrderSubmitted`'s own steps start at 3. So every type has a *base*
//! version (1, or the version a rename brings it in at) and a *current* version: the last
//! version at which its events still carry its name. `append` stores an event of a type at
//! its current version unless told otherwise, and refuses versions outside `base..=current`.
//!
//! What registration keeps true (so every route is a contiguous walk): a type's steps are
//! `base, base + 1, ...` without gaps; at most its last step renames; a rename's new type has no
//! steps of its own yet and is no other step's new type; only the last step of a route is
//! removed. A registry read from the table that breaks these (rows inserted by hand) still
//! gives finite routes: every step raises the version.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::error::EsError;

/// One registered step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub event_type: String,
    pub from_version: i32,
    /// The type's name from `from_version + 1` on; None keeps it.
    pub new_type: Option<String>,
    /// The upcaster, as `regprocedure` prints it.
    pub upcaster: String,
    /// What identifies the upcaster's behaviour (its definition, not its OID): part of the
    /// fingerprints snapshots are checked against.
    pub definition: String,
}

impl Step {
    /// The type's name after this step.
    pub fn to_type(&self) -> &str {
        self.new_type.as_deref().unwrap_or(&self.event_type)
    }
}

/// What reading an event stored at some `(type, version)` gives: the steps it goes through
/// (indexes into [`Registry::steps`]) and the type and version it ends at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub steps: Vec<usize>,
    pub event_type: String,
    pub version: i32,
}

/// The registry as the extension reads it from `eventstore.upcasters`, with every route worked
/// out once so that a read looks an event up in one hash probe.
#[derive(Debug, Default)]
pub struct Registry {
    steps: Vec<Step>,
    /// type -> from_version -> step
    by_type: HashMap<String, HashMap<i32, usize>>,
    /// type -> stored version -> its route; only (type, version) pairs some step starts at.
    routes: HashMap<String, HashMap<i32, Route>>,
    /// new type -> the step that renames into it (the first one, if rows break the rules).
    renamed_into: HashMap<String, usize>,
}

impl Registry {
    pub fn new(steps: Vec<Step>) -> Self {
        let mut by_type: HashMap<String, HashMap<i32, usize>> = HashMap::new();
        let mut renamed_into = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            by_type.entry(s.event_type.clone()).or_default().entry(s.from_version).or_insert(i);
            if let Some(t) = &s.new_type {
                renamed_into.entry(t.clone()).or_insert(i);
            }
        }
        let mut registry = Registry { steps, by_type, routes: HashMap::new(), renamed_into };
        let mut routes: HashMap<String, HashMap<i32, Route>> = HashMap::new();
        for (t, versions) in &registry.by_type {
            for &v in versions.keys() {
                if let Some(route) = registry.walk(t, v) {
                    routes.entry(t.clone()).or_default().insert(v, route);
                }
            }
        }
        registry.routes = routes;
        registry
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// No steps at all: every read returns events as stored.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn step(&self, event_type: &str, version: i32) -> Option<usize> {
        self.by_type.get(event_type)?.get(&version).copied()
    }

    /// Follow the steps from `(event_type, version)`. Terminates: each step raises the version.
    fn walk(&self, event_type: &str, version: i32) -> Option<Route> {
        let (mut t, mut v, mut steps) = (event_type, version, Vec::new());
        while let Some(i) = self.step(t, v) {
            let Some(next) = v.checked_add(1) else { break };
            steps.push(i);
            t = self.steps[i].to_type();
            v = next;
        }
        (!steps.is_empty()).then(|| Route { steps, event_type: t.to_owned(), version: v })
    }

    /// The route of an event stored at `(event_type, version)`; None when it is read as stored.
    pub fn route(&self, event_type: &str, version: i32) -> Option<&Route> {
        self.routes.get(event_type)?.get(&version)
    }

    /// Does any step start at a version of this type? (Cheap test before [`Self::route`].)
    pub fn has_steps(&self, event_type: &str) -> bool {
        self.routes.contains_key(event_type)
    }

    /// The version a type's events start at: 1, or the version a rename brings it in at.
    pub fn base_version(&self, event_type: &str) -> i32 {
        match self.renamed_into.get(event_type) {
            Some(&i) => self.steps[i].from_version.saturating_add(1),
            None => 1,
        }
    }

    /// The last version at which the type's events carry its name: where `append` stores them.
    pub fn current_version(&self, event_type: &str) -> i32 {
        let mut v = self.base_version(event_type);
        while let Some(i) = self.step(event_type, v) {
            if self.steps[i].new_type.is_some() {
                break;
            }
            match v.checked_add(1) {
                Some(next) => v = next,
                None => break,
            }
        }
        v
    }

    /// The steps an event of this type at its base version goes through: its whole chain, into
    /// the types it is renamed to.
    pub fn chain(&self, event_type: &str) -> Vec<&Step> {
        self.walk(event_type, self.base_version(event_type))
            .map(|r| r.steps.iter().map(|&i| &self.steps[i]).collect())
            .unwrap_or_default()
    }

    /// The chain as `eventstore.event_types` shows it.
    pub fn chain_json(&self, event_type: &str) -> Value {
        Value::Array(
            self.chain(event_type)
                .into_iter()
                .map(|s| {
                    let mut step = json!({
                        "type": s.event_type,
                        "from": s.from_version,
                        "to": s.from_version.saturating_add(1),
                        "upcaster": s.upcaster,
                    });
                    if let Some(t) = &s.new_type {
                        step["new_type"] = json!(t);
                    }
                    step
                })
                .collect(),
        )
    }

    /// Every type the registry names (as a step's type or a new type), sorted.
    pub fn types(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| std::iter::once(s.event_type.as_str()).chain(s.new_type.as_deref()))
            .collect();
        set.into_iter().collect()
    }

    /// Identifies how events stored as this type are read: "" when they are read as stored,
    /// else a hash of every step of its chain (types, versions, upcasters and their
    /// definitions). A snapshot folded under other fingerprints than today's is not used.
    pub fn fingerprint(&self, event_type: &str) -> String {
        let chain = self.chain(event_type);
        if chain.is_empty() {
            return String::new();
        }
        let mut text = String::new();
        for s in chain {
            for part in [
                s.event_type.as_str(),
                &s.from_version.to_string(),
                s.new_type.as_deref().unwrap_or(""),
                &s.upcaster,
                &s.definition,
            ] {
                text.push_str(&part.len().to_string());
                text.push(':');
                text.push_str(part);
            }
        }
        format!(
            "{:016x}{:016x}",
            fnv1a64(0xcbf2_9ce4_8422_2325, text.as_bytes()),
            fnv1a64(0x6c62_272e_07bb_0142, text.as_bytes())
        )
    }

    /// The version `append` stores event `index` of type `event_type` at: `given`, which must
    /// lie in `base..=current`, or the current version.
    pub fn append_version(
        &self,
        index: Option<usize>,
        event_type: &str,
        given: Option<i32>,
    ) -> Result<i32, EsError> {
        let current = self.current_version(event_type);
        let Some(v) = given else { return Ok(current) };
        let argument = match index {
            Some(i) => format!("events[{i}].schema_version"),
            None => "schema_version".to_owned(),
        };
        if v < 1 {
            return Err(EsError::invalid(argument, format!("must be at least 1, got {v}")));
        }
        if v > current {
            return Err(EsError::invalid(
                argument,
                format!("{v} is above the current version of {event_type} ({current})"),
            ));
        }
        let base = self.base_version(event_type);
        if v < base {
            let from = &self.steps[self.renamed_into[event_type]];
            return Err(EsError::invalid(
                argument,
                format!(
                    "{event_type} begins at version {base} (renamed from {} version {}); \
                     store older events under their old type",
                    from.event_type, from.from_version
                ),
            ));
        }
        Ok(v)
    }

    /// May a step from `from_version` of `event_type` (renaming to `new_type`) be added?
    pub fn check_register(
        &self,
        event_type: &str,
        from_version: i32,
        new_type: Option<&str>,
    ) -> Result<(), EsError> {
        if from_version < 1 || from_version == i32::MAX {
            return Err(EsError::invalid(
                "from_version",
                format!("must be between 1 and {}, got {from_version}", i32::MAX - 1),
            ));
        }
        if self.step(event_type, from_version).is_some() {
            return Err(EsError::invalid(
                "from_version",
                format!(
                    "{event_type} already has an upcaster from version {from_version} \
                     (unregister it first)"
                ),
            ));
        }
        let current = self.current_version(event_type);
        if from_version != current {
            let renamed =
                self.step(event_type, current).and_then(|i| self.steps[i].new_type.as_deref());
            let reason = match renamed {
                Some(t) => format!(
                    "{event_type} is renamed to {t} after version {current}; register further \
                     steps for {t}"
                ),
                None => format!(
                    "{event_type} is at version {current}, so its next step is from version \
                     {current}"
                ),
            };
            return Err(EsError::invalid("from_version", reason));
        }
        if let Some(t) = new_type {
            if t.trim().is_empty() {
                return Err(EsError::invalid("new_type", "must not be empty"));
            }
            if t == event_type {
                return Err(EsError::invalid("new_type", "must differ from event_type"));
            }
            if self.by_type.contains_key(t) {
                return Err(EsError::invalid(
                    "new_type",
                    format!("{t} already has upcasters of its own"),
                ));
            }
            if let Some(&i) = self.renamed_into.get(t) {
                let s = &self.steps[i];
                return Err(EsError::invalid(
                    "new_type",
                    format!(
                        "{t} is already the new name of {} after version {}",
                        s.event_type, s.from_version
                    ),
                ));
            }
        }
        Ok(())
    }

    /// May the step from `from_version` of `event_type` be removed? Only the last step of a
    /// chain. Returns the type and version the step's events were stored as beyond it (the
    /// extension checks that none are stored there).
    pub fn check_unregister(
        &self,
        event_type: &str,
        from_version: i32,
    ) -> Result<(String, i32), EsError> {
        let Some(i) = self.step(event_type, from_version) else {
            return Err(EsError::invalid(
                "from_version",
                format!("{event_type} has no upcaster from version {from_version}"),
            ));
        };
        let step = &self.steps[i];
        let to = (step.to_type().to_owned(), from_version.saturating_add(1));
        if let Some(next) = self.step(&to.0, to.1) {
            let next = &self.steps[next];
            return Err(EsError::invalid(
                "from_version",
                format!(
                    "only the last step of a chain can be removed: {} from version {} follows it",
                    next.event_type, next.from_version
                ),
            ));
        }
        Ok(to)
    }
}

/// FNV-1a, 64 bits, from `seed`: a stable hash (std's is not stable across releases).
fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn step(t: &str, from: i32, new_type: Option<&str>) -> Step {
        Step {
            event_type: t.into(),
            from_version: from,
            new_type: new_type.map(Into::into),
            upcaster: format!("public.{}_v{from}(jsonb,jsonb)", t.to_lowercase()),
            definition: format!("def {t} {from}"),
        }
    }

    /// OrderPlaced v1 -> v2 -> (renamed) OrderSubmitted v3 -> v4.
    fn orders() -> Registry {
        Registry::new(vec![
            step("OrderPlaced", 1, None),
            step("OrderPlaced", 2, Some("OrderSubmitted")),
            step("OrderSubmitted", 3, None),
        ])
    }

    #[test]
    fn routes_compose_across_renames() {
        let r = orders();
        let route = r.route("OrderPlaced", 1).unwrap();
        assert_eq!(route.steps, vec![0, 1, 2]);
        assert_eq!((route.event_type.as_str(), route.version), ("OrderSubmitted", 4));
        let route = r.route("OrderPlaced", 2).unwrap();
        assert_eq!((route.steps.len(), route.version), (2, 4));
        assert_eq!(r.route("OrderSubmitted", 3).unwrap().steps, vec![2]);
        assert_eq!(r.route("OrderSubmitted", 4), None, "current: read as stored");
        assert_eq!(r.route("PaymentCaptured", 1), None);
        assert!(!r.has_steps("PaymentCaptured") && r.has_steps("OrderPlaced"));
    }

    #[test]
    fn versions_continue_across_a_rename() {
        let r = orders();
        assert_eq!((r.base_version("OrderPlaced"), r.current_version("OrderPlaced")), (1, 2));
        assert_eq!((r.base_version("OrderSubmitted"), r.current_version("OrderSubmitted")), (3, 4));
        assert_eq!(r.current_version("PaymentCaptured"), 1);
        assert_eq!(Registry::default().current_version("OrderPlaced"), 1);
        assert_eq!(r.types(), vec!["OrderPlaced", "OrderSubmitted"]);
        assert_eq!(r.chain("OrderPlaced").len(), 3);
        assert_eq!(r.chain("OrderSubmitted").len(), 1);
        assert_eq!(r.chain_json("OrderSubmitted")[0]["to"], 4);
        assert_eq!(r.chain_json("OrderPlaced")[1]["new_type"], "OrderSubmitted");
    }

    #[test]
    fn append_versions_lie_between_base_and_current() {
        let r = orders();
        assert_eq!(r.append_version(Some(0), "OrderPlaced", None).unwrap(), 2);
        assert_eq!(r.append_version(Some(0), "OrderPlaced", Some(1)).unwrap(), 1);
        assert_eq!(r.append_version(None, "OrderSubmitted", None).unwrap(), 4);
        let e = r.append_version(Some(3), "OrderPlaced", Some(3)).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert_eq!(
            e.to_string(),
            "invalid events[3].schema_version: 3 is above the current version of OrderPlaced (2)"
        );
        let e = r.append_version(None, "OrderSubmitted", Some(2)).unwrap_err().to_string();
        assert!(e.starts_with("invalid schema_version: OrderSubmitted begins at version 3"), "{e}");
        let e = r.append_version(Some(0), "X", Some(0)).unwrap_err().to_string();
        assert_eq!(e, "invalid events[0].schema_version: must be at least 1, got 0");
        assert_eq!(r.append_version(Some(0), "X", Some(1)).unwrap(), 1);
    }

    #[test]
    fn registration_extends_a_chain_at_its_end() {
        let r = orders();
        assert!(r.check_register("OrderSubmitted", 4, None).is_ok());
        assert!(r.check_register("PaymentCaptured", 1, Some("PaymentTaken")).is_ok());
        let reason = |t, v, n| r.check_register(t, v, n).unwrap_err().to_string();
        assert!(reason("OrderPlaced", 1, None).contains("already has an upcaster from version 1"));
        assert!(reason("OrderPlaced", 3, None).contains("renamed to OrderSubmitted"));
        assert!(reason("OrderSubmitted", 5, None).contains("its next step is from version 4"));
        assert!(reason("PaymentCaptured", 2, None).contains("at version 1"));
        assert!(reason("PaymentCaptured", 0, None).contains("between 1 and"));
        assert!(reason("PaymentCaptured", 1, Some("OrderPlaced")).contains("of its own"));
        let renamed = Registry::new(vec![step("A", 1, Some("B"))]);
        let e = renamed.check_register("C", 1, Some("B")).unwrap_err().to_string();
        assert!(e.contains("B is already the new name of A after version 1"), "{e}");
        assert!(reason("PaymentCaptured", 1, Some("PaymentCaptured")).contains("must differ"));
        assert!(reason("PaymentCaptured", 1, Some(" ")).contains("must not be empty"));
        assert!(r.check_register("X", i32::MAX, None).is_err());
    }

    #[test]
    fn only_the_last_step_is_removed() {
        let r = orders();
        assert_eq!(r.check_unregister("OrderSubmitted", 3).unwrap(), ("OrderSubmitted".into(), 4));
        let e = r.check_unregister("OrderPlaced", 2).unwrap_err().to_string();
        assert!(e.contains("OrderSubmitted from version 3 follows it"), "{e}");
        assert!(r
            .check_unregister("OrderPlaced", 7)
            .unwrap_err()
            .to_string()
            .contains("no upcaster"));
        let r = Registry::new(vec![step("A", 1, None), step("A", 2, Some("B"))]);
        assert_eq!(r.check_unregister("A", 2).unwrap(), ("B".into(), 3));
    }

    #[test]
    fn fingerprints_follow_the_chain_and_definitions() {
        let r = orders();
        assert_eq!(r.fingerprint("PaymentCaptured"), "");
        let placed = r.fingerprint("OrderPlaced");
        assert_eq!(placed.len(), 32);
        assert_ne!(placed, r.fingerprint("OrderSubmitted"));
        // A step appended at the end of the chain changes every type whose events reach it.
        let mut steps = r.steps().to_vec();
        steps.push(step("OrderSubmitted", 4, None));
        let longer = Registry::new(steps.clone());
        assert_ne!(longer.fingerprint("OrderPlaced"), placed);
        // So does a new definition of one upcaster; the same registry gives the same values.
        steps[0].definition.push('!');
        assert_ne!(
            Registry::new(steps.clone()).fingerprint("OrderPlaced"),
            longer.fingerprint("OrderPlaced")
        );
        assert_eq!(orders().fingerprint("OrderPlaced"), placed);
    }

    #[test]
    fn rows_that_break_the_rules_still_give_finite_routes() {
        let r = Registry::new(vec![
            step("A", 1, Some("B")),
            step("B", 2, Some("A")),
            step("A", 3, None),
            step("A", i32::MAX, None),
        ]);
        let route = r.route("A", 1).unwrap();
        assert_eq!((route.event_type.as_str(), route.version), ("A", 4));
        assert_eq!(r.route("A", i32::MAX), None);
        let _ = (r.current_version("A"), r.current_version("B"), r.chain("B"), r.fingerprint("A"));
    }
}
