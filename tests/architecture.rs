//! The dependency rules of ARCHITECTURE.md, read from the code itself:
//!
//! 1. No import cycles between modules (each `.rs` file is a module; a path
//!    `crate::a::b::C` is an import of the deepest module file it names).
//! 2. The steering core (`src/policy/`) and the balancing core
//!    (`src/balance/`) are pure: no tokio, reqwest, hyper, axum, sockets,
//!    config, server, control, health service, snapshot, DNS, zone or
//!    metrics module.
//!
//! Imports are read from `use` statements (groups included) and from
//! `crate::`/`super::` paths written inline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`policy::steps::geo`) of a file under src/.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("main.rs") {
            out.push(p);
        }
    }
}

/// The code without comments, string literals and `#[cfg(test)]` modules
/// (tests may import what the code may not).
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('x' or '\n'); lifetimes pass through.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree (`crate::{a::B, c::{D, E}}`) into full paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(join(prefix, path));
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// Every path the code names: `use` trees and inline `crate::`/`super::`.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            if let Some(end) = after.find(';') {
                expand(&after[..end], "", &mut out);
            }
        }
        rest = after;
    }
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(start) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            out.push(tail[..end].trim_end_matches(':').to_string());
            rest = &tail[start.len()..];
        }
    }
    out
}

/// Resolves a path to the deepest module of `modules` it names.
fn resolve(path: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segs: Vec<String> = Vec::new();
    let mut parts = path.split("::").peekable();
    match parts.peek().copied() {
        Some("crate") => {
            parts.next();
        }
        Some("super") => {
            // `super` from a mod.rs is its parent folder's module; from a
            // file, the module that declares it.
            segs = me.to_vec();
            while parts.peek() == Some(&"super") {
                parts.next();
                segs.pop();
            }
        }
        Some("self") => {
            parts.next();
            segs = me.to_vec();
        }
        Some(first) => {
            // A bare path names a child module (`pub use steps::Step` in
            // a mod.rs), or something outside the crate.
            let mut child = me.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            segs = me.to_vec();
        }
        None => return None,
    }
    segs.extend(parts.map(str::to_string));
    (0..=segs.len())
        .rev()
        .map(|n| segs[..n].to_vec())
        .find(|m| modules.contains(m))
}

struct Graph {
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    /// Every path each module names, for the purity rule.
    named: BTreeMap<Vec<String>, Vec<String>>,
}

fn read_graph() -> Graph {
    // GEOLB_SRC reads another tree (e.g. an older checkout) with the same rules.
    let src = std::env::var_os("GEOLB_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    let mut named = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        // `super` in a file module is relative to its parent; in a mod.rs
        // to the folder's parent. module_of drops "mod", so the file's
        // own path is the right base for both after one pop.
        let text = std::fs::read_to_string(f).expect("read");
        let code = code_only(&text);
        let ps = paths(&code);
        let set: BTreeSet<Vec<String>> = ps
            .iter()
            .filter_map(|p| resolve(p, &me, &modules))
            .filter(|m| *m != me && !me.starts_with(m))
            .collect();
        edges.insert(me.clone(), set);
        named.insert(me, ps);
    }
    Graph { edges, named }
}

/// A cycle in the graph, if any, as a list of modules.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        mark: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        mark.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            match mark.get(m).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c: Vec<String> = stack[at..].iter().map(|s| s.join("::")).collect();
                    c.push(m.join("::"));
                    return Some(c);
                }
                Mark::New => {
                    if let Some(c) = visit(m, edges, mark, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        mark.insert(n.clone(), Mark::Done);
        None
    }
    let mut mark = BTreeMap::new();
    for n in edges.keys() {
        if mark.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut mark, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn m(s: &str) -> Vec<String> {
    s.split("::").map(str::to_string).collect()
}

#[test]
fn the_reader_sees_imports_and_the_cycle_finder_finds_cycles() {
    let g = read_graph();
    // Known edges, so this test cannot pass by reading nothing.
    let has = |a: &str, b: &str| g.edges.get(&m(a)).is_some_and(|e| e.contains(&m(b)));
    assert!(
        has("snapshot::steering", "policy::steps::geo"),
        "{:?}",
        g.edges.get(&m("snapshot::steering"))
    );
    assert!(
        has("dns::udp", "snapshot"),
        "a path through a re-export names its module"
    );
    assert!(
        has("policy::run", "policy::scratch"),
        "super:: paths resolve"
    );
    assert!(has("control", "health::service") || has("control", "health"));
    // A planted cycle is found.
    let mut e = g.edges.clone();
    e.entry(m("policy::topology"))
        .or_default()
        .insert(m("server"));
    let c = find_cycle(&e).expect("planted cycle");
    assert!(c.contains(&"server".to_string()), "{c:?}");
    // Between folders too: a file of one module importing another module
    // that imports the first is a cycle even when no two files are.
    let mut e = g.edges.clone();
    e.entry(m("geo::index")).or_default().insert(m("dns::udp"));
    assert!(find_cycle(&top_level(&e)).is_some());
}

/// The same graph between the modules of `src/` (a folder with all its
/// files is one module: `dns`, `snapshot`, ...).
fn top_level(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut top: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, tos) in edges {
        let Some(f) = from.first() else { continue };
        let entry = top.entry(vec![f.clone()]).or_default();
        for t in tos {
            if let Some(t) = t.first().filter(|t| *t != f) {
                entry.insert(vec![t.clone()]);
            }
        }
    }
    top
}

#[test]
fn no_import_cycles_between_modules() {
    let g = read_graph();
    if let Some(c) = find_cycle(&g.edges) {
        panic!("import cycle between files: {}", c.join(" -> "));
    }
    if let Some(c) = find_cycle(&top_level(&g.edges)) {
        panic!("import cycle between modules of src/: {}", c.join(" -> "));
    }
}

/// The modules under `top` import none of the runtime, socket, file,
/// thread or lock crates and paths, and no crate module outside `allowed`;
/// at least `min_files` of them were read.
fn assert_pure(top: &str, allowed_crate_modules: &[&str], min_files: usize) {
    let g = read_graph();
    let forbidden_crates = [
        "tokio", "reqwest", "hyper", "axum", "socket2", "mio", "libc",
    ];
    let forbidden_std = [
        "std::net::UdpSocket",
        "std::net::TcpStream",
        "std::net::TcpListener",
        "std::fs",
        "std::thread",
        "std::sync::Mutex",
    ];
    let mut bad = Vec::new();
    let mut seen = 0;
    for (module, paths) in &g.named {
        if module.first().map(String::as_str) != Some(top) {
            continue;
        }
        seen += 1;
        for p in paths {
            let first = p.split("::").next().unwrap_or("");
            let crate_mod = p
                .strip_prefix("crate::")
                .map(|r| r.split("::").next().unwrap_or(""));
            let wrong = forbidden_crates.contains(&first)
                || forbidden_std.iter().any(|s| p.starts_with(s))
                || crate_mod.is_some_and(|c| !allowed_crate_modules.contains(&c));
            if wrong {
                bad.push(format!("{}: {p}", module.join("::")));
            }
        }
    }
    assert!(seen >= min_files, "read only {seen} {top} modules");
    assert!(bad.is_empty(), "{top} must stay pure:\n{}", bad.join("\n"));
}

#[test]
fn the_steering_core_imports_no_runtime_sockets_config_or_server() {
    assert_pure("policy", &["policy", "geo"], 10);
}

#[test]
fn the_balancing_core_imports_no_runtime_sockets_config_or_server() {
    assert_pure("balance", &["balance"], 5);
}
