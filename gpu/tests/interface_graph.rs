//! The import graph of gpu's interface, read from the sources: the
//! interface modules import only each other, never a backend, and they
//! import each other without a loop. Backends (cpu, cuda, rocm, vulkan,
//! faulty, and whatever they share) depend on the interface, never the
//! reverse; `detect` knows every backend and is the one place that may.
//!
//! Only code counts: comments (doc links included) and each module's
//! `#[cfg(test)] mod tests`, whose fixtures may open a CPU device, are
//! left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The interface modules, each a file `gpu/src/<name>.rs`.
const INTERFACE: [&str; 13] = [
    "device",
    "error",
    "executor",
    "handle",
    "health",
    "health_monitor",
    "host",
    "info",
    "job",
    "kernel",
    "kernel_actor",
    "launch",
    "pool",
];

/// A module's source without comments and without its unit tests.
fn code_of(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate-level names a module's code reaches through `crate::`: the
/// first path segment of each `crate::x` path, and each first segment in a
/// `use crate::{x, y::z}` group.
fn crate_names(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |text: &str| -> String {
        text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

/// What each root re-export in lib.rs (`pub use module::{A, b}`) comes
/// from, so that `crate::CpuDevice` counts as an import of `cpu`.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut from = BTreeMap::new();
    let code = code_of(lib);
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else { continue };
        let Some((module, items)) = path.split_once("::") else { continue };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            if !item.is_empty() {
                from.insert(item.to_owned(), module.trim().to_owned());
            }
        }
    }
    from
}

/// The interface's import graph: module -> the crate modules its code names.
fn interface_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let reexports = root_reexports(&lib);
    INTERFACE
        .iter()
        .map(|module| {
            let path = src.join(format!("{module}.rs"));
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let imports = crate_names(&code_of(&source))
                .into_iter()
                .map(|name| reexports.get(&name).cloned().unwrap_or(name))
                .filter(|name| name != module)
                .collect();
            (module.to_string(), imports)
        })
        .collect()
}

/// A loop in `graph`, as the modules along it, if there is one.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_interface_names_no_backend() {
    let graph = interface_graph();
    for (module, imports) in &graph {
        eprintln!("{module} -> {}", imports.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let outside: Vec<String> = graph
        .iter()
        .flat_map(|(module, imports)| {
            imports
                .iter()
                .filter(|name| !INTERFACE.contains(&name.as_str()))
                .map(move |name| format!("{module} -> {name}"))
        })
        .collect();
    assert!(outside.is_empty(), "interface modules reach outside the interface: {outside:?}");
}

#[test]
fn the_interface_imports_itself_without_a_loop() {
    let graph = interface_graph();
    assert_eq!(find_loop(&graph), None, "a loop in the interface's imports");
}

#[test]
fn the_checker_sees_backend_imports_groups_and_loops() {
    let code = code_of(
        "use crate::cpu::CpuDevice;\n\
         use crate::{error::GpuError, info::{BackendKind, DeviceId}};\n\
         // use crate::vulkan; (a comment)\n\
         fn f() { crate::faulty::x(); }\n\
         #[cfg(test)]\nmod tests { use crate::rocm; }\n",
    );
    let names: Vec<String> = crate_names(&code).into_iter().collect();
    assert_eq!(names, ["cpu", "error", "faulty", "info"]);
    let reexports = root_reexports("pub use cpu::CpuDevice;\npub use job::{Job, Op};\n");
    assert_eq!(reexports.get("CpuDevice").map(String::as_str), Some("cpu"));
    assert_eq!(reexports.get("Op").map(String::as_str), Some("job"));
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(find_loop(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
