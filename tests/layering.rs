//! The shape of the crate, read from its sources: every `crate::` import points to a
//! lower layer. The flow Workload → Driver → Engine → Trace → Metrics → Report stays
//! visible in the imports: the leaf (`core`) imports nothing of the crate, the layers
//! above import only what lies below them, and the subcommands sit on top. Test code
//! (`#[cfg(test)] mod tests`) may import anything and is not read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import a module of a strictly lower layer
/// (or itself); modules of one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    // Shared types and helpers; the flag schema; the terminal and engine.log.
    &["core", "cli", "terminal"],
    // Process hygiene, machine load, where requests come from, what happened to them.
    &["process", "host", "workload", "trace"],
    // Pure metrics of a trace; the GPU's instruments.
    &["metrics", "gpu"],
    &["engine"],
    &["driver"],
    &["report"],
    &["config"],
    &["commands"],
    &["app"],
    &["main"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to: `src/engine/python/mod.rs` is
/// `engine`, `src/trace.rs` is `trace`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    Some(first.trim_end_matches(".rs").to_string())
}

/// The code of a file without its test module and comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().contains("mod tests"))
        {
            break;
        }
        // A comment line stays as an empty one, so line numbers hold.
        if !t.starts_with("//") {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The crate modules `code` names (`crate::engine::...`, `crate::{trace, metrics::X}`,
/// `llm_harness::...` in the binary), with the line each first appears on.
fn imports(code: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut push = |name: &str, line: usize| {
        let name = name.trim();
        if !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !out.iter().any(|(n, _)| n == name)
        {
            out.push((name.to_string(), line));
        }
    };
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find(prefix) {
        let start = at + i;
        at = start + prefix.len();
        // `$crate::` in a macro, or part of a longer identifier.
        if start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'$'
                || bytes[start - 1] == b'_')
        {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let rest = &code[at..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}}`: the names at the group's first level.
            let mut depth = 0;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push(name.split("::").next().unwrap_or(""), line);
                        name.clear();
                    }
                    c if depth == 0 => name.push(c),
                    _ => {}
                }
            }
            push(name.split("::").next().unwrap_or(""), line);
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            push(&name, line);
        }
    }
    out
}

/// Every import that points up, or across a layer, as `file:line: a -> b (why)`.
fn violations(files: &[(PathBuf, String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, module, text) in files {
        let Some(mine) = layer(module) else {
            out.push(format!(
                "{}: module `{module}` is in no layer; add it to LAYERS in tests/layering.rs",
                path.display()
            ));
            continue;
        };
        let prefix = if module == "main" {
            "llm_harness::"
        } else {
            "crate::"
        };
        for (target, line) in imports(&code(text), prefix) {
            if target == *module || target == "self" || target == "super" {
                continue;
            }
            match layer(&target) {
                Some(theirs) if theirs < mine => {}
                Some(theirs) => out.push(format!(
                    "{}:{line}: {module} (layer {mine}) imports {target} (layer {theirs}): {}",
                    path.display(),
                    if theirs == mine {
                        "modules of one layer must not import each other"
                    } else {
                        "an import that points up; move the shared type down (core) or the code up"
                    }
                )),
                None => out.push(format!(
                    "{}:{line}: {module} imports `{target}`, which is in no layer",
                    path.display()
                )),
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    let files: Vec<(PathBuf, String, String)> = paths
        .into_iter()
        .filter_map(|p| {
            let module = module_of(&src, &p)?;
            // lib.rs only declares the modules.
            (module != "lib").then(|| {
                let text = std::fs::read_to_string(&p).unwrap();
                let rel = p
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(&p)
                    .to_path_buf();
                (rel, module, text)
            })
        })
        .collect();
    let modules: BTreeSet<&str> = files.iter().map(|(_, m, _)| m.as_str()).collect();
    assert!(
        modules.len() >= 15,
        "read too few modules to mean anything: {modules:?}"
    );
    let bad = violations(&files);
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn an_upward_import_is_caught() {
    let f = |path: &str, module: &str, text: &str| {
        (PathBuf::from(path), module.to_string(), text.to_string())
    };
    let files = vec![
        // Fine: down, grouped, and a test module that may import anything.
        f(
            "src/report/mod.rs",
            "report",
            "use crate::{core::clock, metrics};\nuse crate::engine::EngineInfo;\n#[cfg(test)]\nmod tests {\n    use crate::commands::bench;\n}\n",
        ),
        // Up: metrics reads a driver type.
        f("src/metrics/mod.rs", "metrics", "use crate::core::request::FinishReason;\nuse crate::driver::LoadPoint;\n"),
        // Across: two modules of one layer.
        f("src/trace.rs", "trace", "use crate::{workload::Workload, core::clock};\n"),
        // Comments and `$crate` do not count.
        f("src/core/clock.rs", "core", "//! see [`crate::report`]\nmacro_rules! m { () => { $crate::app::run } }\n"),
        // A module nobody placed.
        f("src/extra.rs", "extra", ""),
    ];
    let bad = violations(&files);
    assert_eq!(bad.len(), 3, "{bad:#?}");
    assert!(
        bad[0].starts_with("src/metrics/mod.rs:2: metrics (layer 2) imports driver (layer 4)"),
        "{}",
        bad[0]
    );
    assert!(
        bad[1].starts_with("src/trace.rs:1: trace (layer 1) imports workload (layer 1)"),
        "{}",
        bad[1]
    );
    assert!(
        bad[2].contains("module `extra` is in no layer"),
        "{}",
        bad[2]
    );
}
