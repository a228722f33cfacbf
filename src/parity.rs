//! `harness parity`: the same prompts, greedy, through two engines; token ids compared.
//!
//! For each prompt it prints how many leading tokens are identical and, at the first
//! divergence, both engines' tokens decoded. It exits 1 when the share of identical
//! leading tokens over all prompts falls below `--threshold`.

use crate::cli::ParityArgs;
use crate::config::{check_model_dir, ConfigError};
use crate::engine::{registry, Engine, EngineConfig, GenRequest, TokenEvent};
use crate::error::EXIT_FAILED;
use crate::workload::{self, Tokenizer};
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Plain-completion prompts: the Gemma 3 270M base model continues these coherently.
const PROMPTS: &[&str] = &[
    "The capital of France is",
    "Water boils at a temperature of",
    "The three primary colors are",
    "In computer science, a hash table is",
    "Once upon a time, in a small village,",
    "The largest planet in our solar system is",
];

pub fn run(a: ParityArgs) -> Result<i32> {
    let names: Vec<&str> = a.engines.split(',').map(str::trim).collect();
    if names.len() != 2 {
        return Err(ConfigError(format!(
            "--engines {}: give exactly two engines, e.g. vllm,hf",
            a.engines
        ))
        .into());
    }
    let specs = names
        .iter()
        .map(|n| {
            registry::find_engine(n).ok_or_else(|| {
                ConfigError(format!(
                    "unknown engine '{n}'; known engines: {}",
                    registry::engine_names()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_model_dir(&a.model)?;
    if !(0.0..=1.0).contains(&a.threshold) {
        return Err(ConfigError(format!(
            "--threshold {}: must be between 0 and 1",
            a.threshold
        ))
        .into());
    }
    let mut engine_args = Vec::new();
    for kv in &a.engine_arg {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("--engine-arg '{kv}': expected KEY=VALUE")))?;
        engine_args.push((k.trim().to_string(), v.trim().to_string()));
    }
    let tokenizer = Tokenizer::from_model_dir(&a.model)?;
    let prompts: Vec<Vec<u32>> = match &a.prompts {
        Some(path) => workload::prompts::read_prompt_file(path)?
            .1
            .iter()
            .map(|e| tokenizer.encode(&e.text))
            .collect::<Result<_, _>>()?,
        None => PROMPTS
            .iter()
            .map(|p| tokenizer.encode(p))
            .collect::<Result<_, _>>()?,
    };
    let config = EngineConfig {
        model: Some(a.model.clone()),
        engine_args,
        python_env: a.python_env.clone(),
    };
    let mut outputs = Vec::new();
    for spec in &specs {
        eprintln!("generating with {} ...", spec.name);
        let mut engine =
            (spec.load)(&config).with_context(|| format!("engine {} failed to load", spec.name))?;
        let out = generate(engine.as_mut(), &prompts, a.output_len);
        let shut = engine.shutdown();
        let out = out.with_context(|| format!("engine {} failed", spec.name))?;
        shut.with_context(|| format!("engine {} failed to shut down", spec.name))?;
        outputs.push(out);
    }
    crate::process::kill_children();

    let (mut same_total, mut total) = (0usize, 0usize);
    println!(
        "{:>3}  {:>9}  first divergence ({} vs {})",
        "#", "identical", names[0], names[1]
    );
    for (i, (x, y)) in outputs[0].iter().zip(&outputs[1]).enumerate() {
        let n = x.len().max(y.len());
        let same = x.iter().zip(y).take_while(|(p, q)| p == q).count();
        same_total += same;
        total += n;
        let div = if same == n {
            "-".to_string()
        } else {
            let dec = |ids: &[u32], at: usize| -> String {
                ids.get(at).map_or("<end>".into(), |&t| {
                    format!("{:?}", tokenizer.decode(&[t]).unwrap_or_default())
                })
            };
            format!("token {same}: {} vs {}", dec(x, same), dec(y, same))
        };
        println!("{:>3}  {:>4}/{:<4}  {div}", i, same, n);
    }
    let share = if total == 0 {
        1.0
    } else {
        same_total as f64 / total as f64
    };
    println!(
        "identical leading tokens: {same_total}/{total} ({:.1} %), greedy, {} prompts × {} tokens; threshold {:.1} %",
        share * 100.0,
        prompts.len(),
        a.output_len,
        a.threshold * 100.0
    );
    Ok(if share + 1e-12 < a.threshold {
        EXIT_FAILED
    } else {
        0
    })
}

/// Greedy generation of `n` tokens for every prompt, all submitted at once.
fn generate(engine: &mut dyn Engine, prompts: &[Vec<u32>], n: u32) -> Result<Vec<Vec<u32>>> {
    for (i, p) in prompts.iter().enumerate() {
        engine.submit(&GenRequest {
            id: i as u64,
            prompt: p.clone().into(),
            max_tokens: n,
            min_tokens: n,
            ignore_eos: true,
            temperature: 0.0,
            seed: Some(0),
            return_token_ids: true,
        })?;
    }
    let mut out: Vec<Option<Vec<u32>>> = vec![None; prompts.len()];
    let mut events: Vec<TokenEvent> = Vec::new();
    while out.iter().any(Option::is_none) {
        events.clear();
        engine.poll(Duration::from_millis(100), &mut events)?;
        for ev in events.drain(..) {
            if let Some(f) = ev.finish {
                let Some(slot) = out.get_mut(ev.request as usize) else {
                    continue;
                };
                match (f.token_ids, f.error) {
                    (_, Some(e)) => bail!("request {} failed: {e}", ev.request),
                    (Some(ids), None) => *slot = Some(ids),
                    (None, None) => bail!(
                        "the engine returned no token ids for request {}",
                        ev.request
                    ),
                }
            }
        }
    }
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}
