//! The documents stay true to the code: every metric of the catalogue has its heading in
//! docs/metrics.md, the README stays a front door, and every relative link resolves.

use llm_harness::metrics::catalog::{definitions, CATALOG};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_catalogue_definition_has_a_heading_in_docs_metrics() {
    let doc = read("docs/metrics.md");
    let missing: Vec<String> = definitions(CATALOG)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !doc.contains(&format!("### `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md has no `### `name`` heading for: {missing:?}"
    );
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 150,
        "README.md is {lines} lines; manuals go in docs/"
    );
    // The two commands come first.
    let first_block = readme.split("```").nth(1).unwrap_or_default();
    assert!(
        first_block.contains("scripts/quickstart.sh") && first_block.contains("scripts/test.sh"),
        "{first_block}"
    );
}

fn markdown_files() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        // `](target)` of inline links; targets with a scheme or only an anchor are skipped.
        for part in text.split("](").skip(1) {
            let Some(target) = part.split(')').next() else {
                continue;
            };
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().unwrap().join(path);
            if !resolved.exists() {
                broken.push(format!(
                    "{}: {target}",
                    file.strip_prefix(root()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
}
