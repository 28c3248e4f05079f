//! The crate docs' module map (`src/lib.rs`) is the engine's layering: each entry names the modules it
//! imports after a `→`, bottom-up. This test reads the map and the sources and fails when they disagree,
//! or when a module names one that comes after it in the map (an import circle in the making). Doc links
//! count as imports on purpose: a link upward is the first step of an arrow the wrong way.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Modules in map order with the imports the map declares for each.
fn declared() -> Vec<(String, BTreeSet<String>)> {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let map: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| !l.contains("# Module map"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    map.split(" - [`")
        .skip(1)
        .map(|entry| {
            let name = entry.split('`').next().unwrap().to_string();
            let deps = match entry.split_once('→') {
                Some((_, deps)) => deps.split(',').map(|d| d.trim().to_string()).collect(),
                None => BTreeSet::new(),
            };
            (name, deps)
        })
        .collect()
}

/// Every module other than itself that each module's sources (comments included) name as `crate::…`.
fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let mut found = BTreeMap::new();
    collect(&src(), &mut found);
    found.remove("lib");
    found
}

fn collect(dir: &Path, found: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, found);
            continue;
        }
        let relative = path.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
        let module = relative.split(['/', '.']).next().unwrap().to_string();
        let text = fs::read_to_string(&path).unwrap();
        let names = found.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                names.insert(name);
            }
        }
    }
}

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_module_map_lists_every_module_with_exactly_its_imports() {
    let declared = declared();
    let actual = actual();
    let listed: BTreeSet<_> = declared.iter().map(|(m, _)| m.clone()).collect();
    let present: BTreeSet<_> = actual.keys().cloned().collect();
    assert_eq!(listed, present, "modules in the map vs modules in src/");
    for (module, deps) in &declared {
        assert_eq!(
            &actual[module], deps,
            "imports of `{module}`: the sources vs the module map"
        );
    }
}

#[test]
fn every_module_imports_only_modules_before_it_in_the_map() {
    let mut below = BTreeSet::new();
    for (module, deps) in declared() {
        let upward: Vec<_> = deps.difference(&below).collect();
        assert!(
            upward.is_empty(),
            "`{module}` imports {upward:?}, listed after it: a circle in the making"
        );
        below.insert(module);
    }
}
