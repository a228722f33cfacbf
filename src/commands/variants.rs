//! `harness variants`: one workload over several engine settings, side by side: the
//! precision and quantization sweeps (`dtype=float32` against `dtype=bfloat16`, a GGUF
//! against its checkpoint) that were done by hand. Each `--variant ENGINE[:KEY=VALUE,..]`
//! runs as its own child `harness sweep` (its own process, its own engine load), one
//! after another, all with the same flags, config file, seeds and tokenizer, so every
//! variant is sent the same prompt token ids. Then one table gives, per variant and
//! point, the engine and its version, the dtype it reports, its load time, output
//! throughput, TTFT and TPOT p50 and, on a scored workload, accuracy with its Wilson
//! interval; `harness compare`'s table over the same directories follows (ratios
//! against the first variant, beyond or within the runs' spread).
//!
//! This module owns the `--variant` grammar ([`parse_variant`]), the children and the
//! side-by-side table ([`report`]); the figures are read through the metrics catalogue.

use crate::cli::{RunArgs, VariantsArgs};
use crate::config::{self, ConfigError};
use crate::core::error::{UsageError, EXIT_FAILED, EXIT_INTERRUPTED};
use crate::engine::Registry;
use crate::metrics::accuracy;
use crate::metrics::catalog::{self, Column, Metric, Reading, Shown, Stat, View};
use crate::metrics::Summary;
use crate::report::{self, RunResult, INSTRUMENT_BANNER};
use anyhow::{Context, Result};
use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Most variants one command runs (the child directories are numbered `01`..`99`).
const MAX_VARIANTS: usize = 99;

/// Characters of a label kept in its directory name.
const MAX_DIR_LABEL: usize = 48;

/// One `--variant`: an engine and what it loads with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variant {
    /// The `--variant` text as given (trimmed).
    pub spec: String,
    pub engine: String,
    /// Its engine args, `KEY=VALUE` each, in order (the child's `--engine-arg`s).
    pub engine_args: Vec<String>,
    /// `model=PATH`: the child's `--model` (default: the top-level `--model`).
    pub model: Option<PathBuf>,
    /// `python-env=DIR`: the child's `--python-env`.
    pub python_env: Option<PathBuf>,
    /// The row's name: `label=NAME`, else the spec text.
    pub label: String,
}

fn bad(spec: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(
        "variant",
        format!(
            "--variant '{spec}': {why}; expected ENGINE[:KEY=VALUE,..] (e.g. vllm:dtype=bfloat16,label=bf16)"
        ),
    )
}

/// Whether a segment starts a new `KEY=VALUE`: a key (a letter or `_`, then letters,
/// digits, `_`, `-` or `.`) before its first `=`. Anything else (`"b":2}` of a JSON
/// value) is the rest of the previous value.
fn starts_pair(segment: &str) -> bool {
    let Some((key, _)) = segment.split_once('=') else {
        return false;
    };
    let mut c = key.trim().chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
}

/// Parses `ENGINE[:KEY=VALUE,KEY=VALUE..]`. The list is split on commas, but a segment
/// that does not start with `KEY=` is glued back to the previous value, so a JSON value
/// keeps its commas. `model=`, `python-env=` and `label=` are the variant's own; every
/// other key is an engine arg.
pub fn parse_variant(text: &str) -> Result<Variant, ConfigError> {
    let spec = text.trim();
    if spec.is_empty() {
        return Err(bad(spec, "empty"));
    }
    let (engine, rest) = match spec.split_once(':') {
        Some((e, r)) => (e.trim(), Some(r)),
        None => (spec, None),
    };
    if engine.is_empty() {
        return Err(bad(spec, "no engine before ':'"));
    }
    if !engine
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(spec, format!("'{engine}' is not an engine name")));
    }
    let mut pairs: Vec<String> = Vec::new();
    if let Some(rest) = rest {
        if rest.trim().is_empty() {
            return Err(bad(spec, "nothing after ':'"));
        }
        if rest.trim_end().ends_with(',') {
            return Err(bad(spec, "ends with ','"));
        }
        for segment in rest.split(',') {
            if starts_pair(segment) {
                pairs.push(segment.trim_start().to_string());
            } else if let Some(last) = pairs.last_mut() {
                last.push(',');
                last.push_str(segment);
            } else {
                return Err(bad(spec, format!("'{segment}' is not KEY=VALUE")));
            }
        }
    }
    let mut v = Variant {
        spec: spec.to_string(),
        engine: engine.to_string(),
        ..Default::default()
    };
    let mut label = None;
    for pair in pairs {
        // `starts_pair` found the `=`.
        let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
        let (key, value) = (key.trim(), value.trim());
        let reserved = match key {
            "model" => Some(&mut v.model),
            "python-env" | "python_env" => Some(&mut v.python_env),
            "label" => None,
            _ => {
                v.engine_args.push(format!("{key}={value}"));
                continue;
            }
        };
        if value.is_empty() {
            return Err(bad(spec, format!("{key}= needs a value")));
        }
        match reserved {
            Some(slot) if slot.is_some() => return Err(bad(spec, format!("{key}= given twice"))),
            Some(slot) => *slot = Some(PathBuf::from(value)),
            None if label.is_some() => return Err(bad(spec, "label= given twice")),
            None => label = Some(value.to_string()),
        }
    }
    v.label = label.unwrap_or_else(|| v.spec.clone());
    Ok(v)
}

/// The child's result directory under `--out`: `NN-LABEL`, with the label's characters
/// other than letters, digits and `._=-` as `-`.
fn dir_name(index: usize, label: &str) -> String {
    let slug: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_DIR_LABEL)
        .collect();
    format!("{:02}-{slug}", index + 1)
}

/// The engine args of a variant's child: the top-level `--engine-arg`s whose key the
/// variant does not set itself, then the variant's own (so its own value wins whatever
/// order the engine reads them in).
fn engine_args(common: &[String], own: &[String]) -> Vec<String> {
    let key = |kv: &String| kv.split_once('=').map(|(k, _)| k.trim().to_string());
    let own_keys: Vec<String> = own.iter().filter_map(key).collect();
    common
        .iter()
        .filter(|kv| !key(kv).is_some_and(|k| own_keys.contains(&k)))
        .chain(own)
        .cloned()
        .collect()
}

/// The flags every child shares, written as their `--config` file. The engine is each
/// variant's, so `--engine` and `--python-env` are refused here; `--model` and
/// `--engine-arg` are defaults each child's command line overrides or extends.
fn shared_args(a: &RunArgs) -> Result<RunArgs, ConfigError> {
    if let Some(e) = &a.engine {
        return Err(ConfigError::new(
            "engine",
            format!("--engine {e}: each --variant names its engine (--variant ENGINE[:KEY=VALUE,..]); drop --engine"),
        ));
    }
    if let Some(p) = &a.python_env {
        return Err(ConfigError::new(
            "python-env",
            format!(
                "--python-env {}: give it per variant (--variant ENGINE:python-env=DIR); drop --python-env",
                p.display()
            ),
        ));
    }
    Ok(RunArgs {
        config: None,
        engine: None,
        model: None,
        python_env: None,
        engine_arg: Vec::new(),
        out: None,
        ..a.clone()
    })
}

/// A variant made ready to run: the child's flags beyond the shared file.
struct Child {
    variant: Variant,
    model: Option<PathBuf>,
    engine_args: Vec<String>,
    /// Its directory's name under `--out`.
    dir: String,
}

/// The tokenizer.json beside a model (a GGUF file's directory), where there is one.
fn beside(model: &Path) -> Option<PathBuf> {
    let t = config::model_dir(model).join("tokenizer.json");
    t.is_file().then_some(t)
}

fn same_file_contents(a: &Path, b: &Path) -> bool {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(a) != len(b) {
        return false;
    }
    matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

/// The one tokenizer every child gets, what the output says of it, and warnings: the
/// top-level `--tokenizer`, else the first variant's model's tokenizer.json (the first
/// that has one). A variant whose own model carries a different tokenizer.json is
/// warned about: it is sent ids of another vocabulary's making.
fn shared_tokenizer(
    given: Option<&Path>,
    children: &[Child],
) -> (Option<PathBuf>, String, Vec<String>) {
    let own: Vec<Option<PathBuf>> = children
        .iter()
        .map(|c| c.model.as_deref().and_then(beside))
        .collect();
    let (tokenizer, line) = match given {
        Some(t) => (
            Some(t.to_path_buf()),
            format!("{} (--tokenizer), for every variant", t.display()),
        ),
        None => match own.iter().position(Option::is_some) {
            Some(i) => {
                let t = own[i].clone();
                let whose = if i == 0 {
                    "the first variant's model's".to_string()
                } else {
                    format!(
                        "variant {}'s model's (the first with one)",
                        children[i].variant.label
                    )
                };
                let path = t.as_ref().map_or(String::new(), |t| t.display().to_string());
                (t, format!("{path} ({whose} tokenizer.json), for every variant"))
            }
            None => (
                None,
                "none (no variant's model has a tokenizer.json): synthetic token ids, the same for every variant".to_string(),
            ),
        },
    };
    let mut warnings = Vec::new();
    if let Some(t) = &tokenizer {
        for (c, o) in children.iter().zip(&own) {
            if let Some(o) = o.as_deref().filter(|o| !same_file_contents(o, t)) {
                warnings.push(format!(
                    "variant {}: its model's {} differs from {}, which every variant is sent token ids of; check that the two vocabularies agree",
                    c.variant.label,
                    o.display(),
                    t.display()
                ));
            }
        }
    }
    (tokenizer, line, warnings)
}

/// A flag error of one variant's child, named after the variant when the flag is one
/// the variant sets.
fn of_variant(v: &Variant, e: ConfigError) -> ConfigError {
    if matches!(e.flag, "engine" | "model" | "python-env" | "engine-arg") {
        ConfigError::new("variant", format!("--variant {}: {}", v.spec, e.message))
    } else {
        e
    }
}

/// The figures of the table, read from the catalogue: output throughput, TTFT and TPOT
/// at p50. Accuracy follows where a run was scored.
const FIGURES: [(&str, Shown); 3] = [
    ("output_throughput", Shown::Value),
    ("ttft", Shown::Stat(Stat::Median)),
    ("tpot", Shown::Stat(Stat::Median)),
];

fn figures() -> Vec<(&'static Metric, Column)> {
    FIGURES
        .iter()
        .filter_map(|&(name, shown)| {
            catalog::metric(name).map(|m| {
                (
                    m,
                    Column {
                        shown,
                        view: View::Brief,
                    },
                )
            })
        })
        .collect()
}

/// `TTFT p50 (ms)`; `out tok/s` already says its unit.
fn header(m: &Metric, c: &Column) -> String {
    let h = m.header(c);
    let unit = m.unit.label();
    if unit.is_empty() || h.contains(unit) {
        h
    } else {
        format!("{h} ({unit})")
    }
}

/// The figure's key (as in summary.json) and value.
fn value(m: &Metric, c: &Column, s: &Summary) -> (String, Option<f64>) {
    match (c.shown, m.reading) {
        (Shown::Stat(stat), Reading::Distribution(f)) => {
            (m.stat_key(stat), f(s).and_then(|d| stat.of(d)))
        }
        (_, Reading::Scalar(f)) => (m.name.to_string(), f(s)),
        (_, Reading::Distribution(f)) => (m.stat_key(Stat::Mean), f(s).and_then(|d| d.mean)),
    }
}

/// Accuracy keys of `s` as summary.json spells them (`accuracy`, `accuracy_ci95_low`,
/// `accuracy_ci95_high`).
fn accuracy_values(s: &Summary) -> Vec<(String, Option<f64>)> {
    catalog::metric("accuracy")
        .map(|m| {
            m.values(s)
                .into_iter()
                .filter(|(k, _)| {
                    k == "accuracy" || k == "accuracy_ci95_low" || k == "accuracy_ci95_high"
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What one variant left: its child's exit code (`None`: not run) and results.
pub struct Outcome {
    pub variant: Variant,
    pub dir: String,
    pub code: Option<i32>,
    pub run: Option<RunResult>,
}

/// A row of the table and of variants.json: one point of one variant (one row with no
/// point where the variant left no results).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub variant: String,
    pub spec: String,
    pub dir: String,
    pub engine: Option<String>,
    pub engine_version: Option<String>,
    pub engine_args: Vec<String>,
    pub model: Option<String>,
    pub dtype: Option<String>,
    pub load_time_s: Option<f64>,
    pub point: Option<String>,
    /// Catalogue figures under their summary.json keys (`output_throughput`,
    /// `median_ttft_ms`, `median_tpot_ms`, `accuracy`, `accuracy_ci95_low`, ...).
    #[serde(flatten)]
    pub figures: BTreeMap<String, Option<f64>>,
    pub accuracy_correct: Option<usize>,
    pub accuracy_scored: Option<usize>,
    pub exit_code: Option<i32>,
}

/// What the columns mean, with the method (one paragraph).
pub fn definitions(scored: bool) -> String {
    let mut d = String::from(
        "Each variant ran as its own child `harness sweep` (its own process and engine load), one after \
         another in the order given, with the same flags, config file (variants.toml), seeds and tokenizer, \
         so every variant was sent the same prompt token ids. variant: its label= or the --variant text; \
         engine: name and version from the child's run.json; dtype: the weights' dtype as the engine reports \
         it (run.json engine.dtype; `-` where it reports none); load s: the engine's load, from the call that \
         loads it to its return (run.json engine.load_time_s); point: the load point;",
    );
    for (m, c) in figures() {
        let what = match c.shown {
            Shown::Stat(s) => format!("{} over the point of {}", s.name(), m.name),
            _ => m.name.to_string(),
        };
        d.push_str(&format!(" {}: {what}, {};", header(m, &c), m.definition));
    }
    if scored {
        d.push_str(&format!(
            " accuracy (95 % CI): correct/scored = share [Wilson 95 % interval], {};",
            accuracy::DEFINITION.trim_end_matches('.')
        ));
    }
    d.push_str(
        " exit: the child's exit code (0 ok; 1 the engine or some requests failed; 2 it refused its \
         input; 130 interrupted; `not run` after an interruption). The table below it is `harness compare` \
         over the same directories: means over rounds with their 95 % intervals, ratios against the \
         first variant, beyond or within the two runs' spread.",
    );
    d
}

/// The side-by-side table, as text and rows.
pub struct Report {
    pub rows: Vec<Row>,
    pub text: String,
    /// The labels of the variants whose engine is an instrument (the calibration engine).
    pub instruments: Vec<String>,
}

/// Builds the table from every variant's outcome (the first is the baseline);
/// `tokenizer` says which tokenizer.json they all used.
pub fn report(outcomes: &[Outcome], tokenizer: &str) -> Report {
    let figs = figures();
    let scored = outcomes.iter().any(|o| {
        o.run
            .as_ref()
            .is_some_and(|r| r.points.iter().any(|p| p.summary.accuracy.is_some()))
    });
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for o in outcomes {
        let exit = o.code.map_or("not run".to_string(), |c| c.to_string());
        let mut base = Row {
            variant: o.variant.label.clone(),
            spec: o.variant.spec.clone(),
            dir: o.dir.clone(),
            engine: None,
            engine_version: None,
            engine_args: o.variant.engine_args.clone(),
            model: None,
            dtype: None,
            load_time_s: None,
            point: None,
            figures: BTreeMap::new(),
            accuracy_correct: None,
            accuracy_scored: None,
            exit_code: o.code,
        };
        let Some(run) = o.run.as_ref().filter(|r| !r.points.is_empty()) else {
            let mut c = vec![o.variant.label.clone()];
            c.extend(vec!["-".to_string(); 4 + figs.len()]);
            if scored {
                c.push("-".into());
            }
            c.push(exit);
            cells.push(c);
            rows.push(base);
            continue;
        };
        let e = &run.meta.engine;
        base.engine = Some(e.name.clone());
        base.engine_version = Some(e.version.clone());
        base.model = run.meta.model.clone();
        base.dtype = Some(e.dtype.clone());
        base.load_time_s = Some(e.load_time_s);
        for p in &run.points {
            let s = &p.summary;
            let mut row = Row {
                point: Some(p.point.label()),
                ..base.clone()
            };
            let mut c = vec![
                o.variant.label.clone(),
                format!("{} {}", e.name, e.version),
                e.dtype.clone(),
                format!("{:.2}", e.load_time_s),
                p.point.label(),
            ];
            for (m, col) in &figs {
                let (k, v) = value(m, col, s);
                row.figures.insert(k, v);
                c.push(m.cell(col, s));
            }
            if scored {
                row.figures.extend(accuracy_values(s));
                row.accuracy_correct = s.accuracy.as_ref().map(|a| a.correct);
                row.accuracy_scored = s.accuracy.as_ref().map(|a| a.scored);
                c.push(
                    s.accuracy
                        .as_ref()
                        .map_or("-".into(), accuracy::Accuracy::describe),
                );
            }
            c.push(exit.clone());
            cells.push(c);
            rows.push(row);
        }
    }
    let mut head: Vec<String> = ["variant", "engine", "dtype", "load s", "point"]
        .map(String::from)
        .to_vec();
    head.extend(figs.iter().map(|(m, c)| header(m, c)));
    if scored {
        head.push("accuracy (95 % CI)".into());
    }
    head.push("exit".into());
    let mut t = Table::new();
    t.load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(head.clone());
    for c in cells {
        t.add_row(c);
    }
    for i in 3..head.len() {
        if i != 4 {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    let workload = outcomes
        .iter()
        .find_map(|o| o.run.as_ref())
        .map_or("?".to_string(), |r| r.meta.workload.description.clone());
    // Every output of an instrument's run says so; here, of which variants.
    let instruments: Vec<String> = outcomes
        .iter()
        .filter(|o| o.run.as_ref().is_some_and(RunResult::instrument))
        .map(|o| o.variant.label.clone())
        .collect();
    let banner = match instruments.len() {
        0 => String::new(),
        k if k == outcomes.len() => format!("*** {INSTRUMENT_BANNER} ***\n"),
        _ => format!(
            "*** {INSTRUMENT_BANNER} *** (variants {})\n",
            instruments.join(", ")
        ),
    };
    let text = format!(
        "{banner}Variants: {} engine settings on one workload: {workload}\nTokenizer: {tokenizer}\n{t}\n{}\n",
        outcomes.len(),
        definitions(scored)
    );
    Report {
        rows,
        text,
        instruments,
    }
}

pub fn run(args: VariantsArgs) -> Result<i32> {
    let merged = config::merge(args.run)?;
    let shared = shared_args(&merged)?;
    let n = args.variants.len();
    if n < 2 {
        return Err(ConfigError::new(
            "variant",
            format!("--variant given {n} time(s): give at least 2, the first being the baseline (e.g. --variant vllm:dtype=float32 --variant vllm:dtype=bfloat16)"),
        )
        .into());
    }
    if n > MAX_VARIANTS {
        return Err(ConfigError::new(
            "variant",
            format!("--variant given {n} times: at most {MAX_VARIANTS}; split the sweep"),
        )
        .into());
    }
    let mut children: Vec<Child> = Vec::new();
    for (i, text) in args.variants.iter().enumerate() {
        let variant = parse_variant(text)?;
        if let Some(other) = children.iter().find(|c| c.variant.label == variant.label) {
            return Err(ConfigError::new(
                "variant",
                format!(
                    "--variant {}: its label '{}' is also {}'s; give each a label=NAME of its own",
                    variant.spec, variant.label, other.variant.spec
                ),
            )
            .into());
        }
        children.push(Child {
            model: variant.model.clone().or_else(|| merged.model.clone()),
            engine_args: engine_args(&merged.engine_arg, &variant.engine_args),
            dir: dir_name(i, &variant.label),
            variant,
        });
    }
    let out = merged.out.clone().unwrap_or_else(|| {
        PathBuf::from("results").join(format!(
            "variants-{}",
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ))
    });
    if out.join("variants.json").exists() {
        return Err(ConfigError::new(
            "out",
            format!(
                "--out {}: already holds a variants run; choose another --out or remove it",
                out.display()
            ),
        )
        .into());
    }
    // One tokenizer for all, so every variant is sent the same prompt token ids.
    let (tokenizer, tokenizer_line, warnings) =
        shared_tokenizer(merged.tokenizer.as_deref(), &children);
    let shared = RunArgs {
        tokenizer,
        ..shared
    };
    // Validate every variant now, so bad input fails before the first (slow) load.
    let registry = Registry::builtin();
    let probe = |c: &Child| RunArgs {
        engine: Some(c.variant.engine.clone()),
        model: c.model.clone(),
        python_env: c.variant.python_env.clone(),
        engine_arg: c.engine_args.clone(),
        out: Some(out.join(&c.dir)),
        ..shared.clone()
    };
    for c in &children {
        // Also refuses an engine that cannot run here (no venv), with its reason.
        config::validate(probe(c), true, &registry).map_err(|e| of_variant(&c.variant, e))?;
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    std::fs::create_dir_all(&out).map_err(|e| {
        UsageError(format!(
            "--out {}: {e}; choose a writable directory",
            out.display()
        ))
    })?;
    let cfg_file = out.join("variants.toml");
    let toml = toml::to_string(&shared).context("cannot write the children's config")?;
    std::fs::write(&cfg_file, toml)
        .with_context(|| format!("cannot write {}", cfg_file.display()))?;
    let cancel = crate::process::install_interrupt();
    let exe = std::env::current_exe().context("cannot find this harness's own executable")?;
    let mut codes: Vec<Option<i32>> = vec![None; n];
    let mut interrupted = false;
    for (i, c) in children.iter().enumerate() {
        if cancel.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let d = out.join(&c.dir);
        eprintln!(
            "== variant {} of {n}, {}: harness sweep --engine {} --out {}",
            i + 1,
            c.variant.label,
            c.variant.engine,
            d.display()
        );
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("sweep")
            .arg("--config")
            .arg(&cfg_file)
            .arg("--engine")
            .arg(&c.variant.engine);
        // `--flag=VALUE`: a value starting with `-` stays a value.
        let flag = |name: &str, v: &Path| {
            let mut a = OsString::from(format!("--{name}="));
            a.push(v);
            a
        };
        if let Some(m) = &c.model {
            cmd.arg(flag("model", m));
        }
        if let Some(p) = &c.variant.python_env {
            cmd.arg(flag("python-env", p));
        }
        for kv in &c.engine_args {
            cmd.arg(format!("--engine-arg={kv}"));
        }
        cmd.arg(flag("out", &d));
        let status = cmd
            .status()
            .with_context(|| format!("cannot start a child harness for {}", c.variant.label))?;
        match status.code() {
            Some(EXIT_INTERRUPTED) | None => {
                codes[i] = Some(EXIT_INTERRUPTED);
                interrupted = true;
                break;
            }
            Some(code) => {
                if code != 0 {
                    let next = if i + 1 < n {
                        "; going on with the next"
                    } else {
                        ""
                    };
                    eprintln!(
                        "warning: variant {} exited {code} (see above){next}",
                        c.variant.label
                    );
                }
                codes[i] = Some(code);
            }
        }
    }
    let mut notes = Vec::new();
    let outcomes: Vec<Outcome> = children
        .into_iter()
        .zip(&codes)
        .map(|(c, &code)| {
            let d = out.join(&c.dir);
            let run = match code {
                None => None,
                Some(_) => match RunResult::load(&d, None) {
                    Ok((r, _)) => Some(r),
                    Err(e) => {
                        notes.push(format!(
                            "variant {}: no readable results ({e})",
                            c.variant.label
                        ));
                        None
                    }
                },
            };
            Outcome {
                variant: c.variant,
                dir: c.dir,
                code,
                run,
            }
        })
        .collect();
    let rep = report(&outcomes, &tokenizer_line);
    let mut text = rep.text.clone();
    for w in warnings.iter().chain(&notes) {
        text.push_str(&format!("Note: {w}\n"));
    }
    text.push('\n');
    let (runs, names): (Vec<RunResult>, Vec<String>) = outcomes
        .iter()
        .filter_map(|o| Some((o.run.clone()?, o.variant.label.clone())))
        .unzip();
    let compared = if runs.len() < 2 {
        "harness compare: fewer than two variants left results.\n".to_string()
    } else {
        match report::compare::compare(&runs, &names, true) {
            Ok(c) => format!(
                "harness compare over the same directories (the first is the baseline):\n{}",
                c.table()
            ),
            // Never for children of one config file; said rather than fatal, since
            // the table above holds every variant's own figures.
            Err(e) => format!("harness compare: {e}\n"),
        }
    };
    text.push_str(&compared);
    println!("{text}");
    write(&out, &outcomes, &rep, &tokenizer_line, &text)?;
    println!("variants: {}", out.join("variants.txt").display());
    if interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    let failed = outcomes
        .iter()
        .filter(|o| o.code != Some(0) || o.run.is_none())
        .count();
    if failed > 0 {
        eprintln!(
            "Error: {failed} of {n} variants failed or left no results (see the exit column)"
        );
        return Ok(EXIT_FAILED);
    }
    Ok(0)
}

fn write(
    out: &Path,
    outcomes: &[Outcome],
    rep: &Report,
    tokenizer: &str,
    text: &str,
) -> Result<()> {
    report::write_atomic(&out.join("variants.txt"), text.as_bytes())?;
    let scored = rep.rows.iter().any(|r| r.accuracy_scored.is_some());
    let json = serde_json::json!({
        "variants": outcomes.iter().map(|o| serde_json::json!({
            "label": o.variant.label,
            "spec": o.variant.spec,
            "engine": o.variant.engine,
            "engine_args": o.variant.engine_args,
            "model": o.variant.model,
            "python_env": o.variant.python_env,
            "dir": o.dir,
            "exit_code": o.code,
        })).collect::<Vec<_>>(),
        "tokenizer": tokenizer,
        "instrument_note": (!rep.instruments.is_empty()).then_some(INSTRUMENT_BANNER),
        "instrument_variants": rep.instruments,
        "rows": rep.rows,
        "definitions": definitions(scored),
    });
    let bytes = serde_json::to_vec_pretty(&json).context("cannot render variants.json")?;
    report::write_atomic(&out.join("variants.json"), &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &Variant) -> Vec<&str> {
        v.engine_args.iter().map(String::as_str).collect()
    }

    #[test]
    fn an_engine_alone_is_a_variant_named_after_its_text() {
        let v = parse_variant(" vllm ").unwrap();
        assert_eq!((v.engine.as_str(), v.label.as_str()), ("vllm", "vllm"));
        assert!(v.engine_args.is_empty() && v.model.is_none() && v.python_env.is_none());
    }

    #[test]
    fn engine_args_and_reserved_keys() {
        let v = parse_variant(
            "hf:dtype=float32, max_batch=4,model=/m/ckpt,python-env=/v/hf,label=fp32",
        )
        .unwrap();
        assert_eq!(v.engine, "hf");
        assert_eq!(args(&v), ["dtype=float32", "max_batch=4"]);
        assert_eq!(v.model, Some(PathBuf::from("/m/ckpt")));
        assert_eq!(v.python_env, Some(PathBuf::from("/v/hf")));
        assert_eq!(v.label, "fp32");
        // Without label=, the row is the text; a value may hold `=` and `:`.
        let v = parse_variant("llamacpp:model=/m/q4.gguf,x=a=b:c").unwrap();
        assert_eq!(v.label, "llamacpp:model=/m/q4.gguf,x=a=b:c");
        assert_eq!(args(&v), ["x=a=b:c"]);
        assert_eq!(
            parse_variant("vllm:python_env=/v").unwrap().python_env,
            Some(PathBuf::from("/v"))
        );
    }

    #[test]
    fn a_json_value_keeps_its_commas() {
        let v =
            parse_variant(r#"vllm:compilation_config={"level": 0, "sizes": [1,2]},dtype=bfloat16"#)
                .unwrap();
        assert_eq!(
            args(&v),
            [
                r#"compilation_config={"level": 0, "sizes": [1,2]}"#,
                "dtype=bfloat16"
            ]
        );
        // A JSON string holding `=` is not a key either.
        let v = parse_variant(r#"vllm:c={"a":"x=y","b":1}"#).unwrap();
        assert_eq!(args(&v), [r#"c={"a":"x=y","b":1}"#]);
    }

    #[test]
    fn empty_or_malformed_variants_name_the_flag() {
        for (text, needle) in [
            ("", "empty"),
            ("  ", "empty"),
            (":dtype=half", "no engine before ':'"),
            ("vllm:", "nothing after ':'"),
            ("vllm:dtype", "'dtype' is not KEY=VALUE"),
            ("vllm:{\"a\":1}", "is not KEY=VALUE"),
            ("vllm:dtype=half,", "ends with ','"),
            ("vl lm:dtype=half", "'vl lm' is not an engine name"),
            ("vllm:label=", "label= needs a value"),
            ("vllm:model=a,model=b", "model= given twice"),
            ("vllm:label=a,label=b", "label= given twice"),
        ] {
            let e = parse_variant(text).unwrap_err();
            assert_eq!(e.flag, "variant", "{text}");
            assert!(
                e.message.starts_with("--variant '") && e.message.contains(needle),
                "{text}: {e}"
            );
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn the_variants_own_engine_args_win_over_the_shared_ones() {
        let common = ["max_num_seqs=8".to_string(), "dtype=float32".to_string()];
        let own = ["dtype=bfloat16".to_string()];
        assert_eq!(
            engine_args(&common, &own),
            ["max_num_seqs=8", "dtype=bfloat16"]
        );
        assert_eq!(engine_args(&[], &own), ["dtype=bfloat16"]);
    }

    #[test]
    fn directories_are_numbered_and_plain() {
        assert_eq!(dir_name(0, "vllm:dtype=float32"), "01-vllm-dtype=float32");
        assert_eq!(dir_name(11, "a/b c"), "12-a-b-c");
        assert_eq!(dir_name(1, &"x".repeat(100)).len(), 3 + MAX_DIR_LABEL);
    }

    #[test]
    fn engine_and_python_env_belong_to_the_variants() {
        let e = shared_args(&RunArgs {
            engine: Some("vllm".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "engine");
        assert!(e.message.contains("--variant ENGINE"), "{e}");
        let e = shared_args(&RunArgs {
            python_env: Some("/v".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.flag, "python-env");
        let s = shared_args(&RunArgs {
            model: Some("/m".into()),
            engine_arg: vec!["a=1".into()],
            out: Some("/o".into()),
            seed: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((s.model, s.out, s.seed), (None, None, Some(3)));
        assert!(s.engine_arg.is_empty());
    }

    #[test]
    fn a_variant_that_left_nothing_is_a_row_of_dashes() {
        let (run, _) = crate::report::tests::run(false);
        let outcome = |label: &str, code, run| Outcome {
            variant: parse_variant(&format!("calibration:label={label}")).unwrap(),
            dir: format!("01-{label}"),
            code,
            run,
        };
        let rep = report(
            &[
                outcome("a", Some(0), Some(run.clone())),
                outcome("b", Some(1), None),
                outcome("c", None, None),
            ],
            "t.json",
        );
        // One row per point of a, one each for b and c.
        assert_eq!(rep.rows.len(), run.points.len() + 2);
        let a = &rep.rows[0];
        assert_eq!(a.engine.as_deref(), Some("vllm"));
        assert!(a.figures.contains_key("median_ttft_ms"), "{a:?}");
        assert!(a.figures.contains_key("output_throughput"), "{a:?}");
        assert!(!a.figures.contains_key("accuracy"), "unscored: {a:?}");
        let b = &rep.rows[run.points.len()];
        assert_eq!((b.point.as_ref(), b.exit_code), (None, Some(1)));
        assert!(rep.text.contains("not run"), "{}", rep.text);
        assert!(rep.text.contains("TTFT p50 (ms)"), "{}", rep.text);
        assert!(rep.text.contains("Tokenizer: t.json"), "{}", rep.text);
        assert!(!rep.text.contains("accuracy (95 % CI)"), "{}", rep.text);
    }
}
