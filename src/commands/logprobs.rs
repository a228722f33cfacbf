//! `harness parity --logprobs`: the same fixed texts, teacher-forced, through two
//! engines; their log-probabilities compared position by position.
//!
//! The parent tokenizes the texts once (so both engines score the same ids) and writes
//! them to `texts.json`; each engine runs in its own child `harness logprobs` process
//! (hidden; two Python engines may need different environments), which loads it, asks
//! it for [`TextLogprobs`] through its own API (vLLM `prompt_logprobs`, SGLang
//! `input_token_logprobs`, a forward pass for HF, llama.cpp's logits) and writes
//! `logprobs.json` (the raw records). The parent compares the two files
//! ([`metrics::logprobs`]): max and mean |Δ|, where the largest ones are, top-1
//! agreement, each engine's mean log-probability. It exits 1 when the largest |Δ|
//! exceeds `--max-logprob-diff`.

use super::parity::Side;
use crate::cli::{LogprobsArgs, ParityArgs, RunArgs};
use crate::config::{self, ConfigError};
use crate::core::error::{UsageError, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE};
use crate::engine::{EngineError, EngineInfo, Registry, TextLogprobs};
use crate::metrics::{self, logprobs::LogprobParity};
use crate::process::{self, Loading};
use crate::terminal::{tail_lines, Capture, ENGINE_LOG};
use crate::workload::Tokenizer;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

/// Plain English prose the Gemma 3 270M base model reads without surprise: every
/// position is scored, so a longer text tests more of each engine's numerics.
pub const TEXTS: &[&str] = &[
    "The capital of France is Paris, a city on the river Seine. It is known for its museums, its cafes and the iron tower that was built for the world fair of 1889.",
    "Water boils at a temperature of one hundred degrees Celsius at sea level. At higher altitudes the air pressure is lower, so water boils at a lower temperature and food takes longer to cook.",
    "In computer science, a hash table is a data structure that maps keys to values. It uses a hash function to compute an index into an array of buckets, from which the desired value can be found.",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woodcutter and his daughter. Every morning they walked into the forest to gather wood for the winter.",
    "The largest planet in our solar system is Jupiter. It is a gas giant with a mass more than twice that of all the other planets combined, and it has dozens of moons, the largest of which is Ganymede.",
    "To make a cup of tea, boil fresh water and pour it over the tea leaves. Let it steep for three to five minutes, then remove the leaves and add milk or lemon if you like.",
];

/// Synthetic texts (no tokenizer: instrument engines) and their length.
const SYNTHETIC_TEXTS: usize = 6;
const SYNTHETIC_LEN: usize = 48;
/// Longest text scored, in tokens (every engine's default context holds it).
const MAX_TEXT_TOKENS: usize = 2048;
/// Largest differences listed.
const LARGEST: usize = 8;

const TEXTS_FILE: &str = "texts.json";
pub const LOGPROBS_FILE: &str = "logprobs.json";

/// What the figures mean, printed under them.
pub const DEFINITION: &str = "Teacher forcing: each engine is given the same token ids and reports, at every position after the \
first, the log-probability (natural log) it assigns to the text's token there and the token it ranks first; \
|Δ| = |log p(engine 1) - log p(engine 2)| per position; max and mean over all positions (each weighs the same); \
top-1 agreement = positions where both rank the same token first; mean log-prob = each engine's mean over all \
positions (minus its cross-entropy on the texts). Each engine in its own process.";

/// `logprobs.json`: one engine's answer, the raw record the comparison is made from.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogprobsFile {
    pub engine: EngineInfo,
    /// The texts scored, in order.
    pub texts: Vec<Vec<u32>>,
    /// One per text.
    pub scored: Vec<TextLogprobs>,
}

/// The hidden `harness logprobs` child: loads one engine, scores the texts, writes
/// `logprobs.json` and `engine.log` into `--out`.
pub fn child(a: LogprobsArgs) -> Result<i32> {
    let run = RunArgs {
        engine: Some(a.engine.clone()),
        model: a.model.clone(),
        engine_arg: a.engine_arg.clone(),
        python_env: a.python_env.clone(),
        ..Default::default()
    };
    let section = config::engine::parse(&run, &Registry::builtin())?;
    let texts: Vec<Vec<u32>> = std::fs::read(&a.texts)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| {
            UsageError(format!(
                "--texts {}: {e}; give a JSON list of token-id lists",
                a.texts.display()
            ))
        })?;
    std::fs::create_dir_all(&a.out).map_err(|e| {
        UsageError(format!(
            "--out {}: {e}; choose a writable directory",
            a.out.display()
        ))
    })?;
    let _cancel = process::install_interrupt();
    process::contain_engine_sigquit();
    let log = a.out.join(ENGINE_LOG);
    let mut capture =
        Capture::start(&log, false).with_context(|| format!("cannot write {}", log.display()))?;
    let t = Instant::now();
    let loaded = {
        let _loading = Loading::start(a.out.join(LOGPROBS_FILE));
        (section.spec.load)(&section.config)
    };
    let load_time_s = t.elapsed().as_secs_f64();
    let scored = loaded.and_then(|mut engine| {
        let info = EngineInfo {
            load_time_s,
            ..engine.info().clone()
        };
        let scored = engine.prompt_logprobs(&texts);
        let _ = engine.shutdown();
        scored.map(|s| (info, s))
    });
    capture.stop();
    process::kill_children(process::CHILD_GRACE);
    let (engine, scored) = match scored {
        Ok((info, Some(s))) => (info, s),
        Ok((_, None)) => {
            return Err(UsageError(format!(
                "{} cannot give teacher-forced log-probabilities (its API has none the harness reads); compare vllm, sglang, hf or llamacpp",
                a.engine
            ))
            .into())
        }
        Err(e @ EngineError::Usage(_)) => return Err(e.into()),
        Err(e) => bail!("{}: {}", a.engine, e.detail()),
    };
    let file = LogprobsFile {
        engine,
        texts,
        scored,
    };
    let path = a.out.join(LOGPROBS_FILE);
    std::fs::write(&path, serde_json::to_vec(&file)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(0)
}

/// The texts as token ids: `--prompts` or [`TEXTS`] through the tokenizer (with its
/// special prefix, as a prompt gets it), or synthetic ids without one.
fn texts(a: &ParityArgs, tokenizer: Option<&Path>) -> Result<Vec<Vec<u32>>> {
    let Some(path) = tokenizer else {
        return Ok((0..SYNTHETIC_TEXTS)
            .map(|k| {
                (0..SYNTHETIC_LEN)
                    .map(|i| 1 + ((k * 7919 + i * 104_729) % 32_000) as u32)
                    .collect()
            })
            .collect());
    };
    let tok = Tokenizer::from_file(path)?;
    let raw: Vec<String> = match &a.prompts {
        Some(p) => crate::workload::prompts::read_prompt_file(p)?
            .1
            .into_iter()
            .map(|e| e.text)
            .collect(),
        None => TEXTS.iter().map(|t| t.to_string()).collect(),
    };
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let ids = tok.encode(t)?;
        if ids.len() < 2 || ids.len() > MAX_TEXT_TOKENS {
            return Err(ConfigError::new(
                "prompts",
                format!(
                    "--prompts: text {} is {} tokens; each text needs 2 to {MAX_TEXT_TOKENS} tokens",
                    i + 1,
                    ids.len()
                ),
            )
            .into());
        }
        out.push(ids);
    }
    Ok(out)
}

/// Runs each side's child on the same texts and compares their answers.
pub(super) fn compare(
    a: &ParityArgs,
    sides: &[Side],
    dir: &Path,
    tokenizer: Option<&Path>,
) -> Result<i32> {
    let texts = texts(a, tokenizer)?;
    let texts_file = dir.join(TEXTS_FILE);
    std::fs::write(&texts_file, serde_json::to_vec(&texts)?)
        .with_context(|| format!("cannot write {}", texts_file.display()))?;
    let exe = std::env::current_exe().context("cannot find this harness's own executable")?;
    let mut files = Vec::new();
    for (k, s) in sides.iter().enumerate() {
        // Two sides may be one engine with different args: a directory each.
        let out = dir.join(format!("{}-{}", k + 1, s.spec.name));
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["logprobs", "--engine", s.spec.name, "--texts"])
            .arg(&texts_file)
            .arg("--out")
            .arg(&out);
        if let Some(m) = &s.model {
            cmd.arg("--model").arg(m);
        }
        for kv in &s.engine_args {
            cmd.arg("--engine-arg").arg(kv);
        }
        if let Some(env) = &s.python_env {
            cmd.arg("--python-env").arg(env);
        }
        let log = dir.join(format!("{}-{}.out", k + 1, s.spec.name));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        eprintln!(
            "scoring {} texts with {} (own process) ...",
            texts.len(),
            s.spec.name
        );
        let status = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .status()
            .with_context(|| format!("cannot start a child harness for {}", s.spec.name))?;
        if !status.success() {
            let code = status.code().unwrap_or(EXIT_INTERRUPTED);
            let mut tail = tail_lines(&log, 6);
            tail.extend(tail_lines(&out.join(ENGINE_LOG), 6));
            let msg = format!(
                "the {} scoring failed (exit {code}); its output ends:\n  | {}",
                s.spec.name,
                tail.join("\n  | ")
            );
            match code {
                EXIT_USAGE => return Err(UsageError(msg).into()),
                EXIT_INTERRUPTED => return Ok(EXIT_INTERRUPTED),
                _ => bail!(msg),
            }
        }
        let path = out.join(LOGPROBS_FILE);
        let file: LogprobsFile = std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice(&b)?))
            .with_context(|| format!("cannot read {}", path.display()))?;
        if file.texts != texts {
            bail!("{}: scored other texts than asked", path.display());
        }
        files.push(file);
    }
    let parity = metrics::logprobs::compare(&texts, &files[0].scored, &files[1].scored, LARGEST)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let decoder = tokenizer.map(Tokenizer::from_file).transpose()?;
    let names = [sides[0].spec.name, sides[1].spec.name];
    let text = render(
        &parity,
        &names,
        &files,
        decoder.as_ref(),
        a.max_logprob_diff,
    );
    print!("{text}");
    let pass = parity.max_abs_diff <= a.max_logprob_diff;
    let summary = dir.join("logprob-parity.json");
    let json = serde_json::json!({
        "engines": names,
        "definition": DEFINITION,
        "max_logprob_diff": a.max_logprob_diff,
        "pass": pass,
        "parity": parity,
    });
    std::fs::write(&summary, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("cannot write {}", summary.display()))?;
    Ok(if pass { 0 } else { EXIT_FAILED })
}

/// The report: one line per text, the largest differences, the totals and the verdict.
fn render(
    p: &LogprobParity,
    names: &[&str; 2],
    files: &[LogprobsFile],
    decoder: Option<&Tokenizer>,
    bound: f64,
) -> String {
    let tok = |t: u32| match decoder {
        Some(d) => format!("{:?}", d.decode(&[t]).unwrap_or_default()),
        None => format!("#{t}"),
    };
    let mut out = format!(
        "log-probabilities, teacher-forced: {} ({} {}, {}) vs {} ({} {}, {})\n",
        names[0],
        files[0].engine.name,
        files[0].engine.version,
        files[0].engine.dtype,
        names[1],
        files[1].engine.name,
        files[1].engine.version,
        files[1].engine.dtype,
    );
    out.push_str(&format!(
        "{:>3}  {:>9}  {:>10}  {:>5}  {:>10}  {:>11}\n",
        "#", "positions", "max |Δ|", "at", "mean |Δ|", "top-1 agree"
    ));
    for t in &p.texts {
        out.push_str(&format!(
            "{:>3}  {:>9}  {:>10.6}  {:>5}  {:>10.6}  {:>11}\n",
            t.text,
            t.positions,
            t.max_abs_diff,
            t.max_at.map_or("-".into(), |a| a.to_string()),
            t.mean_abs_diff,
            format!("{}/{}", t.top1_agree, t.positions)
        ));
    }
    if !p.largest.is_empty() {
        out.push_str("largest differences:\n");
        for d in &p.largest {
            out.push_str(&format!(
                "  text {} position {} token {}: {} {:.6} vs {} {:.6}, |Δ| {:.6}; top-1 {} / {}\n",
                d.text,
                d.position,
                tok(d.token),
                names[0],
                d.logprobs[0],
                names[1],
                d.logprobs[1],
                d.abs_diff,
                tok(d.top1[0]),
                tok(d.top1[1])
            ));
        }
    }
    out.push_str(&format!(
        "{} texts, {} positions: max |Δ| {:.6} nats, mean |Δ| {:.6}; top-1 agreement {}/{} ({:.1} %); mean log-prob {} {:.4} / {} {:.4}; bound --max-logprob-diff {}: {}\n",
        p.texts.len(),
        p.positions,
        p.max_abs_diff,
        p.mean_abs_diff,
        p.top1_agree,
        p.positions,
        p.top1_agreement() * 100.0,
        names[0],
        p.mean_logprob[0],
        names[1],
        p.mean_logprob[1],
        bound,
        if p.max_abs_diff <= bound { "pass" } else { "FAIL" }
    ));
    out.push_str(DEFINITION);
    out.push('\n');
    out
}
