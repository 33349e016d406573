//! Fails when the worker's layers (the top-level modules of `src/`, one folder each) import
//! each other in a circle, or when a layer imports one that is not below it in [`LAYERS`].
//!
//! Scans `src/**/*.rs` for `crate::<module>` paths (including `use crate::{a, b}` groups),
//! builds the graph of module → module dependencies and names the first cycle found. Test code
//! (`#[cfg(test)]` modules at the end of a file) is ignored: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first: each may import only those before it. `main` (the binary's root)
/// sits above them all. A new top-level module must be placed here.
const LAYERS: &[&str] = &[
    "model",       // Lsn, SourceTxn, Event: shared by every layer
    "pg",          // TLS and the one SQL connection factory
    "config",      // the TOML configuration
    "replication", // the replication-protocol connection
    "decode",      // pgoutput and envelopes: frames to source transactions
    "store",       // eventstore_worker.* SQL: schema, rows, commit-order map, locks
    "apply",       // the target: handlers, apply functions, batches, failures
    "lifecycle",   // catch-ups, rebuilds, status transitions
    "ops",         // status, metrics, commands, signals
    "stream",      // the live session: reader, batcher, feedback, acknowledgement
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/a.rs` and `src/a/**` are both `a`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let first = rel.components().next().expect("non-empty path");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// The source before its `#[cfg(test)]` module, with line comments removed.
fn production_code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod ").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Every top-level module named after `crate::` in `code`.
fn references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let close = group.find('}').unwrap_or(group.len());
            // Only the first segment of each item in the group: `{a::X, b, c::{Y, Z}}`.
            let mut depth = 0;
            let mut start = true;
            for (j, ch) in group[..close].char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        found.insert(ident_at(&group[j..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(rest);
            if !name.is_empty() {
                found.insert(name.to_string());
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let code = production_code(&fs::read_to_string(file).expect("readable source"));
        let edges = graph.entry(from.clone()).or_default();
        for to in references(&code) {
            if to != from && modules.contains(&to) {
                edges.insert(to);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the path `a -> b -> … -> a`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).expect("open node is on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn top_level_modules_import_one_way() {
    let graph = graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between the worker's modules: {}", cycle.join(" -> "));
    }
}

/// Every import that does not point to a lower layer, as `from -> to`.
fn upward_imports(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let level = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, tos) in graph {
        if from == "main" {
            continue;
        }
        let Some(from_level) = level(from) else {
            wrong.push(format!("{from} is not in LAYERS"));
            continue;
        };
        for to in tos {
            match level(to) {
                Some(l) if l < from_level => {}
                _ => wrong.push(format!("{from} -> {to}")),
            }
        }
    }
    wrong
}

#[test]
fn layers_import_only_layers_below_them() {
    let graph = graph();
    for layer in LAYERS {
        assert!(graph.contains_key(*layer), "LAYERS names {layer}, which is not a module of src/");
    }
    let wrong = upward_imports(&graph);
    assert!(wrong.is_empty(), "imports against the layer order (see LAYERS): {}", wrong.join(", "));
}

#[test]
fn the_scanner_sees_groups_and_cycles() {
    let refs = references("use crate::{a::X, b, c::{Y, Z}};\nlet x = crate::d::f();");
    assert_eq!(refs, ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect());
    let mut g = BTreeMap::new();
    g.insert("x".to_string(), BTreeSet::from(["y".to_string()]));
    g.insert("y".to_string(), BTreeSet::from(["x".to_string()]));
    assert_eq!(find_cycle(&g), Some(vec!["x".into(), "y".into(), "x".into()]));
    g.insert("y".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
    // `stream` above `model`: fine one way, not the other.
    let mut g = BTreeMap::new();
    g.insert("stream".to_string(), BTreeSet::from(["model".to_string()]));
    assert!(upward_imports(&g).is_empty());
    g.insert("model".to_string(), BTreeSet::from(["stream".to_string()]));
    g.insert("nowhere".to_string(), BTreeSet::new());
    assert_eq!(upward_imports(&g), ["model -> stream", "nowhere is not in LAYERS"]);
}
