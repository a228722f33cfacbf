//! `harness parity`: the same prompts, greedy, through two engines; token ids compared.
//!
//! Each engine runs in its own child `harness run` process, so two engines whose
//! Python environments can never share an interpreter (vLLM and SGLang pin different
//! torch builds) are compared all the same: each child saves the generated ids in its
//! `requests.jsonl` (`--save-token-ids`) and this process compares the files. For each
//! prompt it prints how many leading tokens are identical and, at the first
//! divergence, both engines' tokens decoded and, from engines that report them, both
//! engines' top-2 logit margins there (top-1 minus top-2 logit): a divergence where
//! both engines were near a tie is what different kernels or quantisation do; one
//! where either engine was sure is worth a look. It exits 1 when the share of
//! identical leading tokens over all prompts falls below `--threshold`. With
//! `--logprobs` it compares the engines' teacher-forced log-probabilities instead
//! ([`super::logprobs`]).

use crate::cli::ParityArgs;
use crate::config::{check_model, engine::parse_engine_args, model_dir, ConfigError};
use crate::core::error::{UsageError, EXIT_FAILED, EXIT_USAGE};
use crate::engine::{EngineConfig, EngineSpec, Registry};
use crate::terminal::tail_lines;
use crate::trace::{read_requests, REQUESTS_FILE};
use crate::workload::Tokenizer;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Plain-completion prompts: the Gemma 3 270M base model continues these coherently.
pub const PROMPTS: &[&str] = &[
    "The capital of France is",
    "Water boils at a temperature of",
    "The three primary colors are",
    "In computer science, a hash table is",
    "Once upon a time, in a small village,",
    "The largest planet in our solar system is",
];

/// Most tokens generated per prompt.
const MAX_OUTPUT_LEN: u32 = 4096;
/// Prompts submitted at once in each child.
const BATCH: usize = 64;
/// Synthetic prompts (no tokenizer: instrument engines) and their length.
const SYNTHETIC_PROMPTS: usize = 6;
const SYNTHETIC_INPUT_LEN: u32 = 16;

/// Top-2 margin (logits) below which a choice counts as a near-tie.
pub const NEAR_TIE: f32 = 1.0;

/// One engine's greedy output for a prompt.
#[derive(Clone, Debug, Default, PartialEq)]
struct Generated {
    ids: Vec<u32>,
    /// Per token, top-1 minus top-2 logit, when the engine reports it.
    margins: Option<Vec<f32>>,
}

/// Where two outputs first differ, and how sure each engine was there.
#[derive(Clone, Debug, PartialEq)]
struct Divergence {
    at: usize,
    margins: [Option<f32>; 2],
}

fn first_divergence(x: &Generated, y: &Generated) -> Option<Divergence> {
    let n = x.ids.len().max(y.ids.len());
    let at = x.ids.iter().zip(&y.ids).take_while(|(p, q)| p == q).count();
    (at < n).then(|| Divergence {
        at,
        margins: [x, y].map(|g| g.margins.as_ref().and_then(|m| m.get(at).copied())),
    })
}

/// "near-tie" when both engines were within [`NEAR_TIE`] of their runner-up, "decided"
/// when either was not, "" when a margin is missing.
fn verdict(m: [Option<f32>; 2]) -> &'static str {
    match m {
        [Some(a), Some(b)] if a < NEAR_TIE && b < NEAR_TIE => "near-tie",
        [Some(_), Some(_)] => "decided",
        _ => "",
    }
}

/// One side of the comparison: an engine and what its child gets.
pub(super) struct Side {
    pub(super) spec: &'static EngineSpec,
    pub(super) engine_args: Vec<String>,
    pub(super) python_env: Option<PathBuf>,
    pub(super) model: Option<PathBuf>,
}

/// `[ENGINE:|SIDE:]VALUE` flags: those prefixed with one of `names` go to that engine,
/// with `1:` or `2:` to that side (the same engine twice, e.g. TP=1 against TP=2), the
/// rest to both.
fn per_engine(values: &[String], names: &[&str]) -> Vec<Vec<String>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let side = (i + 1).to_string();
            values
                .iter()
                .filter_map(|v| match v.split_once(':') {
                    Some((e, rest)) if names.contains(&e) => (e == *n).then(|| rest.to_string()),
                    Some((e, rest)) if e == "1" || e == "2" => {
                        (e == side).then(|| rest.to_string())
                    }
                    _ => Some(v.clone()),
                })
                .collect()
        })
        .collect()
}

pub fn run(a: ParityArgs) -> Result<i32> {
    let registry = Registry::builtin();
    let names: Vec<&str> = a.engines.split(',').map(str::trim).collect();
    if names.len() != 2 || names[0].is_empty() || names[1].is_empty() {
        return Err(ConfigError::new(
            "engines",
            format!(
                "--engines {}: give exactly two engines, e.g. vllm,hf",
                a.engines
            ),
        )
        .into());
    }
    if !(0.0..=1.0).contains(&a.threshold) {
        return Err(ConfigError::new(
            "threshold",
            format!("--threshold {}: must be between 0 and 1", a.threshold),
        )
        .into());
    }
    if !(a.max_logprob_diff.is_finite() && a.max_logprob_diff >= 0.0) {
        return Err(ConfigError::new(
            "max-logprob-diff",
            format!(
                "--max-logprob-diff {}: must be a number of nats, 0 or more",
                a.max_logprob_diff
            ),
        )
        .into());
    }
    if !(1..=MAX_OUTPUT_LEN).contains(&a.output_len) {
        return Err(ConfigError::new(
            "output-len",
            format!(
                "--output-len {}: must be from 1 to {MAX_OUTPUT_LEN}",
                a.output_len
            ),
        )
        .into());
    }
    let args = per_engine(&a.engine_arg, &names);
    let envs = per_engine(&a.python_env, &names);
    let models = per_engine(&a.model, &names);
    let mut sides = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let spec = registry
            .lookup(n)
            .map_err(|e| ConfigError::new("engines", e))?;
        parse_engine_args(&args[i])?;
        let one = |values: &[String], flag: &'static str| match values {
            [] => Ok(None),
            [one] => Ok(Some(PathBuf::from(one))),
            _ => Err(ConfigError::new(
                flag,
                format!("--{flag}: more than one for {n}; give one DIR, or {n}:DIR"),
            )),
        };
        let python_env = one(&envs[i], "python-env")?;
        let model = one(&models[i], "model")?;
        match &model {
            Some(m) => check_model(spec, m)?,
            None if spec.model.needed() => {
                return Err(ConfigError::new(
                    "model",
                    format!(
                    "--model is required ({n} needs one); pass {}, for both engines or as {n}:DIR",
                    spec.model.describe()
                ),
                )
                .into())
            }
            None => {}
        }
        sides.push(Side {
            spec,
            engine_args: args[i].clone(),
            python_env,
            model,
        });
    }
    // One tokenizer for both sides: the same prompt ids, whichever model each loads.
    let tokenizer_path = a
        .tokenizer
        .clone()
        .or_else(|| {
            sides
                .iter()
                .find_map(|s| s.model.as_deref())
                .map(|m| model_dir(m).join("tokenizer.json"))
        })
        .filter(|t| t.is_file());
    if a.prompts.is_some() && tokenizer_path.is_none() {
        return Err(ConfigError::new("prompts", "--prompts needs a tokenizer: pass --model DIR (with tokenizer.json) or --tokenizer FILE",
        )
        .into());
    }
    // Fail before the first (slow) child when an engine cannot run here.
    for s in &sides {
        let cfg = EngineConfig {
            python_env: s.python_env.clone(),
            ..Default::default()
        };
        if let Some(why) = (s.spec.availability)(&cfg).problem {
            return Err(UsageError(format!("{} cannot run here: {why}", s.spec.name)).into());
        }
    }

    let (dir, keep) = match &a.out {
        Some(d) => (d.clone(), true),
        None => (
            std::env::temp_dir().join(format!("llm-harness-parity-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        UsageError(format!(
            "--out {}: {e}; choose a writable directory",
            dir.display()
        ))
    })?;
    let result = if a.logprobs {
        super::logprobs::compare(&a, &sides, &dir, tokenizer_path.as_deref())
    } else {
        compare(&a, &sides, &dir, tokenizer_path.as_deref())
    };
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn compare(a: &ParityArgs, sides: &[Side], dir: &Path, tokenizer: Option<&Path>) -> Result<i32> {
    // The workload both children build, from the same seed: the prompts as a file
    // (tokenized by each child with the same tokenizer.json), or synthetic ids.
    let workload: Vec<String> = match (tokenizer, &a.prompts) {
        (Some(_), Some(p)) => vec![
            "--dataset".into(),
            "prompts".into(),
            "--dataset-path".into(),
            p.display().to_string(),
        ],
        (Some(_), None) => {
            let file = dir.join("prompts.jsonl");
            let lines: Vec<String> = PROMPTS
                .iter()
                .map(|p| serde_json::json!({ "prompt": p }).to_string())
                .collect();
            std::fs::write(&file, lines.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", file.display()))?;
            vec![
                "--dataset".into(),
                "prompts".into(),
                "--dataset-path".into(),
                file.display().to_string(),
            ]
        }
        (None, _) => vec!["--input-len".into(), SYNTHETIC_INPUT_LEN.to_string()],
    };
    let count = match (&a.prompts, tokenizer) {
        (Some(p), Some(_)) => crate::workload::prompts::read_prompt_file(p)?.1.len(),
        (None, Some(_)) => PROMPTS.len(),
        (_, None) => SYNTHETIC_PROMPTS,
    };
    let mut outputs: Vec<BTreeMap<u64, Generated>> = Vec::new();
    // The same engine twice (TP=1 against TP=2) numbers its sides' directories.
    let same = sides.len() == 2 && sides[0].spec.name == sides[1].spec.name;
    for (i, s) in sides.iter().enumerate() {
        let name = if same {
            format!("{}-{}", i + 1, s.spec.name)
        } else {
            s.spec.name.to_string()
        };
        let out = dir.join(&name);
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = std::process::Command::new(
            std::env::current_exe().context("cannot find this harness's own executable")?,
        );
        cmd.args(["run", "--engine", s.spec.name]);
        if let Some(m) = &s.model {
            cmd.arg("--model").arg(m);
        }
        if let Some(t) = tokenizer {
            cmd.arg("--tokenizer").arg(t);
        }
        cmd.args(&workload)
            .args(["--output-len", &a.output_len.to_string(), "--ignore-eos"])
            .args(["--temperature", "0", "--seed", "0", "--warmup", "0"])
            .args(["--batch", &count.clamp(1, BATCH).to_string()])
            .args(["--num-requests", &count.to_string()])
            .args(["--save-token-ids", "--no-progress", "--out"])
            .arg(&out);
        for kv in &s.engine_args {
            cmd.arg("--engine-arg").arg(kv);
        }
        if let Some(env) = &s.python_env {
            cmd.arg("--python-env").arg(env);
        }
        let log = dir.join(format!("{name}.out"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        eprintln!("generating with {name} (own process) ...");
        let status = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .status()
            .with_context(|| format!("cannot start a child harness for {}", s.spec.name))?;
        if !status.success() {
            let tail = tail_lines(&log, 12).join("\n  | ");
            let code = status.code().unwrap_or(EXIT_FAILED);
            let msg = format!(
                "the {} run failed (exit {code}); its output ends:\n  | {tail}",
                s.spec.name
            );
            if code == EXIT_USAGE {
                return Err(UsageError(msg).into());
            }
            bail!(msg);
        }
        let records = read_requests(&out.join(REQUESTS_FILE))?;
        let mut ids = BTreeMap::new();
        for r in records {
            let ok = r.is_success();
            match (r.token_ids, ok) {
                (Some(t), true) => {
                    ids.insert(
                        r.id,
                        Generated {
                            ids: t,
                            margins: r.top2_margins,
                        },
                    );
                }
                _ => bail!(
                    "{}: request {} ended {:?} without token ids{}",
                    s.spec.name,
                    r.id,
                    r.finish_reason,
                    r.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            }
        }
        if ids.len() != count {
            bail!(
                "{}: {} of {count} prompts came back",
                s.spec.name,
                ids.len()
            );
        }
        outputs.push(ids);
    }

    let decoder = tokenizer.map(Tokenizer::from_file).transpose()?;
    let dec = |ids: &[u32], at: usize| -> String {
        ids.get(at).map_or("<end>".into(), |&t| match &decoder {
            Some(d) => format!("{:?}", d.decode(&[t]).unwrap_or_default()),
            None => format!("#{t}"),
        })
    };
    let (mut same_total, mut total) = (0usize, 0usize);
    let (mut near, mut decided) = (0usize, 0usize);
    println!(
        "{:>3}  {:>9}  first divergence ({} vs {}), top-2 logit margins there",
        "#", "identical", sides[0].spec.name, sides[1].spec.name
    );
    let margin = |m: Option<f32>| m.map_or("-".into(), |m| format!("{m:.3}"));
    for (i, (x, y)) in outputs[0].values().zip(outputs[1].values()).enumerate() {
        let n = x.ids.len().max(y.ids.len());
        let d = first_divergence(x, y);
        let same = d.as_ref().map_or(n, |d| d.at);
        same_total += same;
        total += n;
        let div = match &d {
            None => "-".to_string(),
            Some(d) => {
                let v = verdict(d.margins);
                match v {
                    "near-tie" => near += 1,
                    "decided" => decided += 1,
                    _ => {}
                }
                format!(
                    "token {same}: {} vs {}; margins {} / {}{}",
                    dec(&x.ids, same),
                    dec(&y.ids, same),
                    margin(d.margins[0]),
                    margin(d.margins[1]),
                    if v.is_empty() {
                        String::new()
                    } else {
                        format!(" ({v})")
                    }
                )
            }
        };
        println!("{:>3}  {:>4}/{:<4}  {div}", i, same, n);
    }
    let share = if total == 0 {
        1.0
    } else {
        same_total as f64 / total as f64
    };
    println!(
        "identical leading tokens: {same_total}/{total} ({:.1} %), greedy, {count} prompts × {} tokens, each engine in its own process; threshold {:.1} %",
        share * 100.0,
        a.output_len,
        a.threshold * 100.0
    );
    if near + decided > 0 {
        println!(
            "divergences: {near} near-tie (both margins < {NEAR_TIE} logit: kernels or quantisation can flip these), {decided} decided (an engine was sure: look closer)"
        );
    }
    Ok(if share + 1e-12 < a.threshold {
        EXIT_FAILED
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_and_margins() {
        let g = |ids: &[u32], m: Option<&[f32]>| Generated {
            ids: ids.to_vec(),
            margins: m.map(<[f32]>::to_vec),
        };
        let a = g(&[1, 2, 3, 4], Some(&[5.0, 4.0, 0.2, 1.0]));
        let b = g(&[1, 2, 9, 4], Some(&[5.0, 4.0, 0.3, 2.0]));
        let d = first_divergence(&a, &b).unwrap();
        assert_eq!(
            d,
            Divergence {
                at: 2,
                margins: [Some(0.2), Some(0.3)]
            }
        );
        assert_eq!(verdict(d.margins), "near-tie");
        assert_eq!(verdict([Some(0.2), Some(3.0)]), "decided");
        assert_eq!(verdict([Some(0.2), None]), "");
        assert_eq!(first_divergence(&a, &a), None);
        // A shorter output diverges where it ends; an engine without margins has none.
        let c = g(&[1, 2], None);
        let d = first_divergence(&a, &c).unwrap();
        assert_eq!(
            d,
            Divergence {
                at: 2,
                margins: [Some(0.2), None]
            }
        );
    }

    #[test]
    fn prefixed_values_go_to_one_engine() {
        let v: Vec<String> = ["max_num_seqs=4", "hf:max_batch=2", "vllm:seed=1", "a:b=c"]
            .map(String::from)
            .to_vec();
        let per = per_engine(&v, &["vllm", "hf"]);
        assert_eq!(per[0], ["max_num_seqs=4", "seed=1", "a:b=c"]);
        assert_eq!(per[1], ["max_num_seqs=4", "max_batch=2", "a:b=c"]);
        let envs = per_engine(&["vllm:/a".into(), "/b:x".into()], &["vllm", "sglang"]);
        assert_eq!(envs[0], ["/a", "/b:x"]);
        assert_eq!(envs[1], ["/b:x"]);
        // The same engine twice: a side number picks the side.
        let tp: Vec<String> = ["vllm:seed=1", "2:tensor_parallel_size=2"]
            .map(String::from)
            .to_vec();
        let per = per_engine(&tp, &["vllm", "vllm"]);
        assert_eq!(per[0], ["seed=1"]);
        assert_eq!(per[1], ["seed=1", "tensor_parallel_size=2"]);
    }
}
