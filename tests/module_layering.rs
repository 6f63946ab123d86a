//! The module graph of `src/` has no cycles, and the top-level modules keep the layering
//! written in `src/lib.rs`.
//!
//! The graph is built at file granularity: every `.rs` file of the library is a node
//! (`foo/mod.rs` and `foo.rs` are both node `foo`); test files (`*_tests.rs`, and files or
//! inline modules behind `#[cfg(test)]`) are left out. File A has an edge to B when A refers
//! to B, or to an item in B, through a `use` (`crate::`, `super::`, `self::`, a child module,
//! or a name an earlier `use` brought in) or a path in the code (`crate::a::b::f(`,
//! `super::x::Y`, `child::item`). A path is resolved to the longest prefix that is a module
//! file. `mod child;` alone is not an edge; a parent using an item of its child is.
//!
//! A plain text scan (comments, strings and characters blanked first) rather than a full
//! parser: it also sees paths inside macro calls, and it needs no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A module path without `crate`: `["controller", "builders", "pod"]`; the crate root is `[]`.
type Module = Vec<String>;

/// Which top-level modules each top-level module may use. Keep in step with the layering
/// paragraph of `src/lib.rs`. A module absent from this table fails the test: place it.
const LAYERS: &[(&str, &[&str])] = &[
    // Bottom: the resources and the client/builder-pod contract.
    ("api", &[]),
    ("contract", &["api"]),
    ("crypto", &[]),
    // Pure or nearly so: they never see the controller or the client.
    ("store", &["crypto"]),
    ("registry_login", &["crypto"]),
    ("index", &[]),
    ("snapshot", &["store"]),
    ("planner", &["api"]),
    ("upload", &["contract"]),
    ("simulate", &["api", "planner"]),
    ("crds", &["api"]),
    // The two programs users run against a cluster; neither uses the other.
    (
        "controller",
        &[
            "api",
            "contract",
            "crypto",
            "planner",
            "registry_login",
            "snapshot",
            "store",
        ],
    ),
    ("client", &["api", "contract", "upload"]),
    // Top: the command line, which wires everything together.
    (
        "cli",
        &[
            "api",
            "client",
            "contract",
            "controller",
            "crds",
            "crypto",
            "index",
            "planner",
            "registry_login",
            "simulate",
            "snapshot",
            "store",
            "upload",
        ],
    ),
];

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

/// The source with comments, string, byte-string, raw-string and character literals replaced
/// by spaces (newlines kept, so line numbers stay right).
fn blank_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        let prev_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (at(i) == 'r' || (at(i) == 'b' && at(i + 1) == 'r')) && {
            let mut k = i + if at(i) == 'b' { 2 } else { 1 };
            while at(k) == '#' {
                k += 1;
            }
            at(k) == '"'
        } {
            // Raw string: r"..", r#".."#, br#".."#.
            let mut k = i + if at(i) == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(k) == '#' {
                hashes += 1;
                k += 1;
            }
            k += 1; // opening quote
            loop {
                if k >= c.len() {
                    break;
                }
                if c[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#') {
                    k += 1 + hashes;
                    break;
                }
                k += 1;
            }
            for &ch in &c[i..k.min(c.len())] {
                blank(&mut out, ch);
            }
            i = k;
        } else if at(i) == '"' || (!prev_ident && at(i) == 'b' && at(i + 1) == '"') {
            let start = i;
            i += if at(i) == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
            for &ch in &c[start..i] {
                blank(&mut out, ch);
            }
        } else if at(i) == '\'' {
            // A character literal ('a', '\n', '\u{1F600}', '\'') or a lifetime ('a, 'static).
            let len = if at(i + 1) == '\\' {
                let mut k = i + 3;
                while k < c.len() && c[k] != '\'' && k < i + 12 {
                    k += 1;
                }
                k + 1 - i
            } else if at(i + 2) == '\'' {
                3
            } else {
                0
            };
            if len == 0 {
                out.push('\'');
                i += 1;
            } else {
                for _ in 0..len {
                    out.push(' ');
                }
                i += len;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn tokenize(src: &str) -> Vec<Token> {
    let text = blank_comments_and_literals(src);
    let c: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_string).unwrap_or(word);
            toks.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if ch.is_ascii_digit() {
            // Numbers (with suffixes such as `1u64` or `1e9`) are not identifiers.
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else if ch == '$'
            && c.get(i + 1..i + 6)
                .is_some_and(|w| w.iter().collect::<String>() == "crate")
        {
            // `$crate::` in a macro is `crate::`.
            i += 1;
        } else {
            toks.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    toks
}

fn is_ident(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(w), .. }) if w == word)
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(q), .. }) if *q == p)
}

/// Index just past the bracketed group that opens at `i` (`(`, `[` or `{`).
fn skip_group(toks: &[Token], i: usize) -> usize {
    let mut depth = 0i32;
    let mut k = i;
    while k < toks.len() {
        match toks[k].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
        k += 1;
    }
    toks.len()
}

/// Index just past the item that starts at `i`: up to a `;` outside brackets, or the end of
/// its first top-level `{ .. }` block (a `use` item always ends at its `;`).
fn skip_item(toks: &[Token], i: usize) -> usize {
    let is_use = is_ident(toks.get(i), "use")
        || (is_ident(toks.get(i), "pub")
            && toks[i..]
                .iter()
                .take(6)
                .any(|t| t.tok == Tok::Ident("use".into())));
    let mut k = i;
    while k < toks.len() {
        match toks[k].tok {
            Tok::Punct(';') => return k + 1,
            Tok::Punct('{') if !is_use => return skip_group(toks, k),
            Tok::Punct('(' | '[' | '{') => k = skip_group(toks, k),
            _ => k += 1,
        }
    }
    toks.len()
}

/// The tokens without `#[cfg(test)]` items, and the names of `#[cfg(test)] mod name;` files.
fn without_test_items(toks: &[Token]) -> (Vec<Token>, Vec<String>) {
    let mut kept = Vec::new();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = is_punct(toks.get(i), '#')
            && is_punct(toks.get(i + 1), '[')
            && is_ident(toks.get(i + 2), "cfg")
            && is_punct(toks.get(i + 3), '(')
            && is_ident(toks.get(i + 4), "test")
            && is_punct(toks.get(i + 5), ')')
            && is_punct(toks.get(i + 6), ']');
        if !cfg_test {
            kept.push(toks[i].clone());
            i += 1;
            continue;
        }
        let mut k = i + 7;
        // Further attributes on the same item.
        while is_punct(toks.get(k), '#') && is_punct(toks.get(k + 1), '[') {
            k = skip_group(toks, k + 1);
        }
        let mut m = k;
        while matches!(toks.get(m), Some(Token { tok: Tok::Ident(w), .. }) if w == "pub") {
            m += 1;
            if is_punct(toks.get(m), '(') {
                m = skip_group(toks, m);
            }
        }
        if is_ident(toks.get(m), "mod") && is_punct(toks.get(m + 2), ';') {
            if let Some(Token {
                tok: Tok::Ident(name),
                ..
            }) = toks.get(m + 1)
            {
                test_files.push(name.clone());
            }
        }
        i = skip_item(toks, k);
    }
    (kept, test_files)
}

// ---------------------------------------------------------------------------------------
// Paths

/// A path as written, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PathRef {
    segments: Vec<String>,
    line: usize,
    /// The name a `use` binds (`None` for a glob, `_` or a path in the code).
    binds: Option<String>,
}

/// Every path of a use tree, starting at `i` (just after `use`); returns the index after `;`.
fn parse_use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<PathRef>,
) -> usize {
    let mut path = prefix.to_vec();
    if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
        i += 1; // leading `::` (an extern crate)
        path.push("::".into());
    }
    let line = toks.get(i).map_or(0, |t| t.line);
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
                if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                let mut binds = path.last().cloned();
                if binds.as_deref() == Some("self") {
                    path.pop();
                    binds = path.last().cloned();
                }
                if is_ident(toks.get(i), "as") {
                    binds = match toks.get(i + 1).map(|t| &t.tok) {
                        Some(Tok::Ident(n)) if n != "_" => Some(n.clone()),
                        _ => None,
                    };
                    i += 2;
                }
                out.push(PathRef {
                    segments: path,
                    line,
                    binds,
                });
                return i;
            }
            Some(Tok::Punct('*')) => {
                out.push(PathRef {
                    segments: path,
                    line,
                    binds: None,
                });
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = parse_use_tree(toks, i, &path, out),
                    }
                }
            }
            _ => return i,
        }
    }
}

/// The paths of a file: those of its `use` items, and those written in its code (two or more
/// segments joined by `::`, not preceded by `::`).
fn paths(src: &str) -> (Vec<PathRef>, Vec<PathRef>, Vec<String>) {
    let (toks, test_files) = without_test_items(&tokenize(src));
    let mut uses = Vec::new();
    let mut inline = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if is_ident(toks.get(i), "use") {
            let mut k = parse_use_tree(&toks, i + 1, &[], &mut uses);
            while k < toks.len() && !is_punct(toks.get(k), ';') {
                k += 1;
            }
            i = k + 1;
            continue;
        }
        let starts_path = matches!(toks[i].tok, Tok::Ident(_))
            && toks.get(i + 1).map(|t| &t.tok) == Some(&Tok::PathSep)
            && (i == 0 || toks[i - 1].tok != Tok::PathSep);
        if !starts_path {
            i += 1;
            continue;
        }
        let line = toks[i].line;
        let mut segments = Vec::new();
        while let Some(Tok::Ident(w)) = toks.get(i).map(|t| &t.tok) {
            segments.push(w.clone());
            i += 1;
            if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                i += 1;
            } else {
                break;
            }
        }
        inline.push(PathRef {
            segments,
            line,
            binds: None,
        });
    }
    (uses, inline, test_files)
}

// ---------------------------------------------------------------------------------------
// The graph

struct Edge {
    to: Module,
    /// `src/a.rs:12 crate::b::X`: the first reference that makes the edge.
    evidence: String,
}

struct Graph {
    modules: BTreeSet<Module>,
    edges: BTreeMap<Module, BTreeMap<Module, Edge>>,
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn module_of(src_dir: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src_dir).expect("file under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The full path (without `crate`) that `path`, written in `module`, names; `None` for other
/// crates, the prelude and local names.
fn full_path(
    module: &Module,
    path: &[String],
    modules: &BTreeSet<Module>,
    aliases: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    Some(match path.first().map(String::as_str)? {
        "crate" => path[1..].to_vec(),
        "self" => module.iter().chain(&path[1..]).cloned().collect(),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = module.get(..module.len().checked_sub(ups)?)?;
            base.iter().chain(&path[ups..]).cloned().collect()
        }
        first => {
            let mut child = module.clone();
            child.push(first.to_string());
            if modules.contains(&child) {
                module.iter().chain(path).cloned().collect()
            } else {
                let target = aliases.get(first)?;
                target.iter().chain(&path[1..]).cloned().collect()
            }
        }
    })
}

/// Where `path`, written in `module`, points: the longest prefix of its full path that is a
/// module file.
fn resolve(
    module: &Module,
    path: &[String],
    modules: &BTreeSet<Module>,
    aliases: &BTreeMap<String, Vec<String>>,
) -> Option<Module> {
    let full = full_path(module, path, modules, aliases)?;
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

fn build_graph(src_dir: &Path, files: &[(PathBuf, String)]) -> Graph {
    let mut parsed = Vec::new();
    let mut test_modules = BTreeSet::new();
    for (file, src) in files {
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("_tests.rs"))
            || file.file_name().is_some_and(|n| n == "main.rs")
        {
            continue; // test files, and the binary (a crate of its own)
        }
        let module = module_of(src_dir, file);
        let (uses, inline, tests) = paths(src);
        for t in tests {
            let mut m = module.clone();
            m.push(t);
            test_modules.insert(m);
        }
        parsed.push((file.clone(), module, uses, inline));
    }
    parsed.retain(|(_, m, _, _)| !test_modules.iter().any(|t| m.starts_with(t)));
    let modules: BTreeSet<Module> = parsed.iter().map(|(_, m, _, _)| m.clone()).collect();
    let mut edges: BTreeMap<Module, BTreeMap<Module, Edge>> = BTreeMap::new();
    for (file, module, uses, inline) in &parsed {
        let shown = file
            .strip_prefix(src_dir.parent().unwrap_or(src_dir))
            .unwrap_or(file);
        let mut aliases = BTreeMap::new();
        let mut resolved = Vec::new();
        for u in uses {
            let target = resolve(module, &u.segments, &modules, &aliases);
            if let (Some(bound), Some(full)) =
                (&u.binds, full_path(module, &u.segments, &modules, &aliases))
            {
                // The full path the name stands for, so later paths through it resolve.
                aliases.insert(bound.clone(), full);
            }
            resolved.push((u, target));
        }
        for p in inline {
            resolved.push((p, resolve(module, &p.segments, &modules, &aliases)));
        }
        for (p, target) in resolved {
            let Some(target) = target else { continue };
            if &target == module {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .entry(target.clone())
                .or_insert_with(|| Edge {
                    to: target,
                    evidence: format!("{}:{} {}", shown.display(), p.line, p.segments.join("::")),
                });
        }
    }
    Graph { modules, edges }
}

fn load_src() -> (PathBuf, Vec<(PathBuf, String)>) {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src_dir, &mut files);
    files.sort();
    let files = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("readable source");
            (f, text)
        })
        .collect();
    (src_dir, files)
}

/// Every elementary cycle, each once, starting at its smallest module.
fn cycles(graph: &Graph) -> Vec<Vec<Module>> {
    let nodes: Vec<&Module> = graph.modules.iter().collect();
    let index: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|m| {
            graph.edges.get(*m).map_or(Vec::new(), |es| {
                es.keys().filter_map(|t| index.get(t).copied()).collect()
            })
        })
        .collect();
    let mut found = Vec::new();
    for start in 0..nodes.len() {
        let mut stack = vec![start];
        let mut on_path = vec![false; nodes.len()];
        on_path[start] = true;
        fn walk(
            succ: &[Vec<usize>],
            start: usize,
            stack: &mut Vec<usize>,
            on_path: &mut [bool],
            found: &mut Vec<Vec<usize>>,
        ) {
            let here = *stack.last().expect("non-empty path");
            for &next in &succ[here] {
                if found.len() >= 1000 {
                    return;
                }
                if next == start {
                    found.push(stack.clone());
                } else if next > start && !on_path[next] {
                    on_path[next] = true;
                    stack.push(next);
                    walk(succ, start, stack, on_path, found);
                    stack.pop();
                    on_path[next] = false;
                }
            }
        }
        let mut local = Vec::new();
        walk(&succ, start, &mut stack, &mut on_path, &mut local);
        found.extend(
            local
                .into_iter()
                .map(|c| c.into_iter().map(|i| nodes[i].clone()).collect()),
        );
    }
    found
}

// ---------------------------------------------------------------------------------------
// The checks

#[test]
fn src_has_no_import_cycles() {
    let (src_dir, files) = load_src();
    let graph = build_graph(&src_dir, &files);
    assert!(
        graph.modules.len() > 20,
        "the scan found only {} modules in src/",
        graph.modules.len()
    );
    let found = cycles(&graph);
    if found.is_empty() {
        return;
    }
    let mut report = format!(
        "{} import cycle(s) in src/. A cycle means neither module can be understood, tested or \
         changed without the other. Break each one by moving what both sides need (a constant, a \
         type, a helper) down into a lower module that both import (or into the lower of the two), \
         so every edge points one way; do not hide it behind a re-export.\n\n",
        found.len()
    );
    let mut edges_used = BTreeSet::new();
    for cycle in &found {
        let mut chain: Vec<String> = cycle.iter().map(name).collect();
        chain.push(name(&cycle[0]));
        let _ = writeln!(report, "  {}", chain.join(" -> "));
        for (i, from) in cycle.iter().enumerate() {
            edges_used.insert((from.clone(), cycle[(i + 1) % cycle.len()].clone()));
        }
    }
    let _ = writeln!(report, "\nwhere each edge comes from (first reference):");
    for (from, to) in &edges_used {
        let edge = &graph.edges[from][to];
        let _ = writeln!(
            report,
            "  {} -> {}: {}",
            name(from),
            name(&edge.to),
            edge.evidence
        );
    }
    panic!("{report}");
}

#[test]
fn top_level_modules_keep_the_layering_of_lib_rs() {
    let (src_dir, files) = load_src();
    let graph = build_graph(&src_dir, &files);
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut problems = Vec::new();
    let tops: BTreeSet<&str> = graph
        .modules
        .iter()
        .filter_map(|m| m.first().map(String::as_str))
        .collect();
    for top in &tops {
        if !layers.contains_key(top) {
            problems.push(format!(
                "  `{top}` is a new top-level module: add it to LAYERS in tests/module_layering.rs \
                 and to the layering paragraph of src/lib.rs"
            ));
        }
    }
    for (from, tos) in &graph.edges {
        for (to, edge) in tos {
            let (Some(f), Some(t)) = (from.first(), to.first()) else {
                continue;
            };
            if f == t {
                continue;
            }
            if layers
                .get(f.as_str())
                .is_some_and(|allowed| !allowed.contains(&t.as_str()))
            {
                problems.push(format!(
                    "  {} -> {}: {}",
                    name(from),
                    name(to),
                    edge.evidence
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the top-level layering written in src/lib.rs is broken. A module may use only the \
         modules below it (LAYERS in tests/module_layering.rs); move what both need down \
         (shared constants and names of the client and the builder pod go to `contract`), or \
         change the layering on purpose in both places:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The scanner itself, so the checks cannot pass by seeing nothing.

fn segs(refs: &[PathRef]) -> Vec<String> {
    refs.iter().map(|r| r.segments.join("::")).collect()
}

#[test]
fn grouped_nested_and_renamed_uses_are_all_seen() {
    let (uses, _, _) = paths(
        "use super::{a, b::{c, d as e, self}};\npub use crate::x::{y::*, z};\npub(crate) use self::k;\nuse std::fmt;",
    );
    assert_eq!(
        segs(&uses),
        [
            "super::a",
            "super::b::c",
            "super::b::d",
            "super::b",
            "crate::x::y",
            "crate::x::z",
            "self::k",
            "std::fmt"
        ]
    );
    assert_eq!(uses[2].binds.as_deref(), Some("e"));
    assert_eq!(uses[3].binds.as_deref(), Some("b"));
    assert_eq!(uses[4].binds, None);
    assert_eq!(uses[6].line, 3);
}

#[test]
fn paths_in_code_are_seen_whole_and_only_from_their_start() {
    let (uses, inline, _) = paths(
        "fn f() { let x = crate::x::y::z(1); super::p::Q::new(); ::std::mem::drop(x); v.iter().map(a::b) }",
    );
    assert!(uses.is_empty());
    assert_eq!(
        segs(&inline),
        ["crate::x::y::z", "super::p::Q::new", "a::b"]
    );
}

#[test]
fn comments_strings_and_chars_are_ignored() {
    let src = r####"
// use crate::commented::out;
/* use crate::block::{out}; /* nested crate::deeper::x */ */
/// Doc: crate::docs::x
fn f<'a>(s: &'a str) -> char {
    let _ = "crate::in_string::x \" crate::after_escape::y";
    let _ = r#"crate::raw::x "quoted" "#;
    let _ = b"crate::bytes::x";
    let _ = '"'; let _ = '\''; let _ = 'x';
    crate::real::one();
    '"'
}
"####;
    let (uses, inline, _) = paths(src);
    assert!(uses.is_empty());
    assert_eq!(segs(&inline), ["crate::real::one"]);
    assert_eq!(inline[0].line, 10);
}

#[test]
fn test_modules_and_test_items_are_left_out() {
    let src = "#[cfg(test)]\nmod tests {\n use super::*;\n use crate::only_tests::x;\n}\n\
               #[cfg(test)]\n#[path = \"x_tests.rs\"]\nmod x_tests;\n\
               #[cfg(test)]\nuse crate::test_use::{a, b};\n\
               fn g() { crate::kept::f(); }";
    let (uses, inline, test_files) = paths(src);
    assert!(uses.is_empty(), "{uses:?}");
    assert_eq!(segs(&inline), ["crate::kept::f"]);
    assert_eq!(test_files, ["x_tests"]);
}

#[test]
fn resolution_finds_the_longest_module_prefix_and_follows_use_names() {
    let files: Vec<(PathBuf, String)> = [
        ("src/lib.rs", "pub mod a; pub mod b;"),
        ("src/a/mod.rs", "pub mod c; pub use c::Thing;"),
        ("src/a/c.rs", "use super::helper; pub struct Thing;"),
        ("src/b.rs", "use crate::a; fn f() { a::c::Thing; }"),
        ("src/a/d_tests.rs", "use crate::b::x;"),
    ]
    .iter()
    .map(|(p, s)| (PathBuf::from("/r").join(p), s.to_string()))
    .collect();
    let graph = build_graph(Path::new("/r/src"), &files);
    let edges: Vec<String> = graph
        .edges
        .iter()
        .flat_map(|(f, ts)| {
            ts.keys()
                .map(move |t| format!("{} -> {}", name(f), name(t)))
        })
        .collect();
    assert_eq!(edges, ["a -> a::c", "a::c -> a", "b -> a", "b -> a::c"]);
    let found = cycles(&graph);
    assert_eq!(
        found,
        [vec![
            vec!["a".to_string()],
            vec!["a".to_string(), "c".to_string()]
        ]]
    );
}
