//! The shape of the product library, checked from its source: `src/lib.rs` lists only product
//! modules, and the top-level modules import each other without a cycle, so each can be read
//! (and changed) knowing only the ones below it. A `crate::<module>` path anywhere in a file of
//! module A, other than A itself, is an edge from A to that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the product library may hold: the service and what operators run against it.
const PRODUCT: &[&str] = &[
    "admin",
    "api",
    "app",
    "cache",
    "clock",
    "config",
    "console",
    "decode",
    "deps",
    "fleet",
    "ingest",
    "proto",
    "reconcile",
    "rules",
    "salesforce",
    "sfid",
    "source",
    "store",
    "telemetry",
    "worker",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules `src/lib.rs` declares.
fn declared() -> Vec<String> {
    std::fs::read_to_string(src().join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

/// Every `.rs` file of a module: `src/<m>.rs` or the tree under `src/<m>/`.
fn files(module: &str) -> Vec<PathBuf> {
    let single = src().join(format!("{module}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src().join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules that `module`'s code names through `crate::`.
fn imports(module: &str, all: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in files(module) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            // `$crate::` in a macro names this crate too.
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != module && all.contains(&name) {
                out.insert(name);
            }
        }
        // `crate::{a, b::c}` groups.
        for (i, _) in text.match_indices("crate::{") {
            let group = &text[i + "crate::{".len()..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != module && all.contains(&name) {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn the_library_holds_only_the_product() {
    let declared = declared();
    for m in &declared {
        assert!(
            PRODUCT.contains(&m.as_str()),
            "src/lib.rs declares `{m}`, which is not a product module: tools belong to the binary \
             (src/bin/sfcdc/), the emulator to its crate"
        );
    }
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let all: BTreeSet<String> = declared().into_iter().collect();
    let graph: BTreeMap<String, BTreeSet<String>> =
        all.iter().map(|m| (m.clone(), imports(m, &all))).collect();
    // Peel off modules that import nothing left; whatever remains is on or above a cycle.
    let mut left = graph.clone();
    loop {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for m in leaves {
            left.remove(&m);
        }
    }
    let cycle: BTreeMap<&String, Vec<&String>> = left
        .iter()
        .map(|(m, deps)| (m, deps.iter().filter(|d| left.contains_key(*d)).collect()))
        .collect();
    assert!(
        left.is_empty(),
        "these modules import each other in a cycle: {cycle:?}"
    );
}
