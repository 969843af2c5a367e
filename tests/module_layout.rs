//! The crate's modules import in one direction: no cycle among the top-level modules,
//! and within `src/controller/` no room imports one above it (the runtime runs the
//! reconcilers, which are built from the kit, which uses the context; the options are
//! plain data everyone reads). Read from the sources, tests left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms of `src/controller/`, from the top down: a room may import only those
/// after it (or itself).
const ROOMS: &[&[&str]] = &[
    &["runtime"],
    &["encryption_key", "oauth_client"],
    &["kit"],
    &["context"],
    &["options"],
];

/// A source file: its module path (`["controller", "kit"]`) and its code before tests.
struct Source {
    module: Vec<String>,
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&root).ok()?.with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            if module == ["main"] || module == ["lib"] {
                return None;
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code = before_tests
                .lines()
                .map(|line| line.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            Some(Source { module, code })
        })
        .collect()
}

fn collect(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The paths `code` names after `prefix` (not inside a longer path), each as its
/// segments: `super::{kit, context::{Context, Notice}}` gives `[kit]`,
/// `[context, Context]` and `[context, Notice]`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        paths.extend(tree(&code[at + prefix.len()..]));
    }
    paths
}

/// The paths of one use tree at the start of `text`: segments, then either the end of
/// the path or a `{…}` group of further trees.
fn tree(text: &str) -> Vec<Vec<String>> {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let head: Vec<String> = text[..end]
        .split("::")
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect();
    let Some(group) = text[end..].strip_prefix('{') else {
        return vec![head];
    };
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = 0;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..at]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .flat_map(tree)
        .filter(|tail| !tail.is_empty() && tail[0] != "self")
        .map(|tail| head.iter().cloned().chain(tail).collect())
        .chain(std::iter::once(head.clone()).filter(|head| !head.is_empty()))
        .collect()
}

/// The module `path` lands in, seen from `module`: `super::` climbs, `crate::` starts
/// at the root.
fn resolve(module: &[String], path: &[String], supers: usize) -> Vec<String> {
    let mut target: Vec<String> = module[..module.len().saturating_sub(supers)].to_vec();
    target.extend(path.iter().cloned());
    target
}

/// Every module a source imports, as module paths from the crate root.
fn imports(source: &Source) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for mut path in paths_after(&source.code, "crate::") {
        // The crate root re-exports the error module's types.
        if matches!(path.first().map(String::as_str), Some("Error" | "Result")) {
            path.insert(0, "error".to_owned());
        }
        found.push(resolve(&[], &path, 0));
    }
    for depth in 1..=3 {
        let prefix = "super::".repeat(depth);
        for path in paths_after(&source.code, &prefix) {
            if path.first().is_some_and(|first| first == "super") {
                continue;
            }
            found.push(resolve(&source.module, &path, depth));
        }
    }
    found
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = sources().iter().map(|s| s.module[0].clone()).collect();
    for source in sources() {
        let from = source.module[0].clone();
        for target in imports(&source) {
            let Some(to) = target.first().filter(|to| modules.contains(*to)) else {
                continue;
            };
            if *to != from {
                graph.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    assert!(
        graph.contains_key("controller"),
        "the graph was read: {graph:?}"
    );
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(module) = stack.pop() {
            assert_ne!(
                module, start,
                "{start} is part of an import cycle: {graph:#?}"
            );
            if seen.insert(module) {
                stack.extend(graph.get(module).into_iter().flatten());
            }
        }
    }
}

#[test]
fn no_room_of_the_controller_imports_one_above_it() {
    let rank = |room: &str| ROOMS.iter().position(|rooms| rooms.contains(&room));
    let mut checked = 0;
    for source in sources() {
        if source.module.len() < 2 || source.module[0] != "controller" {
            continue;
        }
        let from = source.module[1].as_str();
        let from_rank = rank(from).unwrap_or_else(|| panic!("controller/{from} is in no room"));
        for target in imports(&source) {
            if target.len() < 2 || target[0] != "controller" || target[1] == from {
                continue;
            }
            let to = target[1].as_str();
            // controller/mod.rs only re-exports for the crate's users: a room names the
            // room it imports from.
            let Some(to_rank) = rank(to) else {
                panic!("controller/{from} imports controller::{to}, which is in no room");
            };
            assert!(
                to_rank > from_rank,
                "controller/{from} imports controller::{to}, a room above or beside it"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} imports were read");
}
