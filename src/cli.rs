//! Command-line interface (clap derive). Every `run`/`sweep` flag can also come from a
//! TOML file (`--config FILE`) under the same name; flags override the file.

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "harness",
    version,
    about = "Measures LLM inference engines in-process: every token timed on the host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one benchmark point (one load mode, one value).
    Run(RunArgs),
    /// Run many points (--batch/--concurrency/--rate LIST) on one loaded engine.
    Sweep(RunArgs),
    /// Re-render tables, CSV and JSON from a finished or interrupted run's directory.
    Report(ReportArgs),
    /// List the engines this build knows and whether each is usable here.
    Engines(EnginesArgs),
    /// Compare greedy token ids of two engines on the same prompts.
    Parity(ParityArgs),
}

/// A flag value that a TOML file may give as a string, a number or a list
/// (`batch = [1, 2, 4]`, `input-len = 128`, `input-len = "uniform:96:160"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Spec(pub String);

impl std::str::FromStr for Spec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Spec, Self::Err> {
        Ok(Spec(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Spec, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
            L(Vec<Raw>),
        }
        fn flat(r: Raw) -> String {
            match r {
                Raw::S(s) => s,
                Raw::I(i) => i.to_string(),
                Raw::F(f) => f.to_string(),
                Raw::L(l) => l.into_iter().map(flat).collect::<Vec<_>>().join(","),
            }
        }
        Raw::deserialize(d).map(|r| Spec(flat(r)))
    }
}

/// Flags of `run` and `sweep`. All optional here: defaults are applied after the
/// config file is merged, so "not given" and "given as the default" stay distinct.
#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RunArgs {
    /// TOML file with any of these flags (same names); flags given here override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Engine to load (see `harness engines`).
    #[arg(long)]
    pub engine: Option<String>,
    /// Model directory (config.json, weights, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// tokenizer.json for token counts (default: MODEL/tokenizer.json).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Engine option passed to the engine (vLLM: an EngineArgs field). Repeatable.
    #[arg(long = "engine-arg", value_name = "KEY=VALUE")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub engine_arg: Vec<String>,
    /// Python venv of the engine (default: the one scripts/setup.sh made).
    #[arg(long, value_name = "DIR")]
    pub python_env: Option<PathBuf>,

    /// Batch mode: B requests at once, wait for all, repeat. A list in `sweep`.
    #[arg(long, value_name = "B[,B..]")]
    pub batch: Option<Spec>,
    /// Closed loop: C requests in flight. A list in `sweep`.
    #[arg(long, value_name = "C[,C..]")]
    pub concurrency: Option<Spec>,
    /// Open loop: requests/s with seeded arrivals ("inf" = all at once). A list in `sweep`.
    #[arg(long, value_name = "R[,R..]")]
    pub rate: Option<Spec>,
    /// Gamma shape of open-loop gaps: 1 = Poisson (default), < 1 burstier.
    #[arg(long)]
    pub burstiness: Option<f64>,

    /// synthetic (default), sharegpt or prompts.
    #[arg(long)]
    pub dataset: Option<String>,
    /// ShareGPT JSON, or a prompt file (JSONL with "prompt"[, "max_tokens"], or text).
    #[arg(long, value_name = "FILE")]
    pub dataset_path: Option<PathBuf>,
    /// Prompt tokens: N, uniform:MIN:MAX or normal:MEAN:STD (synthetic; default 128).
    #[arg(long, value_name = "DIST")]
    pub input_len: Option<Spec>,
    /// Output tokens: N, uniform:MIN:MAX or normal:MEAN:STD (default 128; for sharegpt it overrides the reply's length).
    #[arg(long, value_name = "DIST")]
    pub output_len: Option<Spec>,
    /// Seed of the workload, the arrivals and sampling (default 0).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Measured requests per point (default: one batch; 4×C; 10 s of arrivals).
    #[arg(long)]
    pub num_requests: Option<usize>,
    /// Stop submitting after this many seconds (instead of --num-requests).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Requests run before each point and excluded (default: one batch / C / 1 s of arrivals).
    #[arg(long)]
    pub warmup: Option<usize>,

    /// Generate exactly the output length (no early EOS).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ignore_eos: Option<bool>,
    /// Sampling temperature (default 0: greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Abort a request with no token for this long (default 600).
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout: Option<f64>,
    /// Service-level objectives for goodput: ttft=MS,tpot=MS,e2el=MS.
    #[arg(long)]
    pub slo: Option<String>,
    /// Result directory (default results/ENGINE-YYYYmmdd-HHMMSS).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_progress: Option<bool>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A result directory (with run.json and requests.jsonl).
    pub dir: PathBuf,
    /// Recompute goodput under these SLOs instead of the run's.
    #[arg(long)]
    pub slo: Option<String>,
}

#[derive(Args, Debug)]
pub struct EnginesArgs {
    /// Python venv to check the Python engines against.
    #[arg(long, value_name = "DIR")]
    pub python_env: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Two engines, comma-separated (e.g. vllm,hf).
    #[arg(long, default_value = "vllm,hf")]
    pub engines: String,
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompt file (JSONL/text); default: a built-in set of English prompts.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Greedy tokens to generate per prompt.
    #[arg(long, default_value_t = 32)]
    pub output_len: u32,
    /// Least fraction of identical leading tokens (over all prompts) to pass.
    #[arg(long, default_value_t = 1.0)]
    pub threshold: f64,
    #[arg(long = "engine-arg", value_name = "KEY=VALUE")]
    pub engine_arg: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub python_env: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn spec_accepts_toml_scalars_and_lists() {
        #[derive(Deserialize)]
        struct T {
            a: Spec,
            b: Spec,
            c: Spec,
        }
        let t: T = toml::from_str("a = [1, 2, 4]\nb = 128\nc = \"uniform:1:2\"").unwrap();
        assert_eq!(
            (t.a.0.as_str(), t.b.0.as_str(), t.c.0.as_str()),
            ("1,2,4", "128", "uniform:1:2")
        );
    }
}
