//! Command-line interface (clap derive). The product's own form is
//! `harness --engine ENGINE --batch B`: engine flags with no subcommand run one point,
//! as `harness run` does. Every `run`/`sweep` flag can also come from a TOML file
//! (`--config FILE`) under the same name; flags override the file.

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const USAGE: &str =
    "harness --engine ENGINE [--model DIR] [--batch B | --concurrency C | --rate R] [OPTIONS]
       harness <COMMAND> [OPTIONS]";

const EXAMPLES: &str = "Examples:
  harness --engine vllm --model DIR --batch 32
  harness sweep --engine vllm --model DIR --batch 1,2,4,8,16,32,64
  harness search --engine vllm --model DIR --search concurrency=1:64 --slo ttft=500,tpot=50
  harness --engine calibration --concurrency 8 --min-duration 5
  harness --engine openai --engine-arg base_url=http://127.0.0.1:8000 --tokenizer FILE --concurrency 8
  harness served-vs-inproc --model DIR --batch 1,8 --output-len 64 --ignore-eos
  harness variants --model DIR --dataset arithmetic --batch 8 --variant vllm:dtype=float32 --variant vllm:dtype=bfloat16
  harness engines";

#[derive(Parser, Debug)]
#[command(
    name = "harness",
    version,
    about = "Measures LLM inference engines in-process: every token timed on the host",
    long_about = "Measures LLM inference engines in-process: every token timed on the host.\n\n\
                  `harness --engine ENGINE ...` runs one load point (the same as `harness run`); \
                  the subcommands sweep, re-render, list engines and compare token ids.",
    override_usage = USAGE,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: the flags of `harness run`.
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// The command to run: the subcommand, or `run` with the top-level flags.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one benchmark point (one load mode, one value).
    Run(RunArgs),
    /// Run many points (--batch/--concurrency/--rate LIST) on one loaded engine.
    Sweep(RunArgs),
    /// Find the highest concurrency or rate whose requests meet --slo, by bisection on
    /// one loaded engine; every probe is a point of the result.
    Search(SearchArgs),
    /// Re-render tables, CSV and JSON from a finished or interrupted run's directory.
    Report(ReportArgs),
    /// List the engines this build knows and whether each is usable here.
    Engines(EnginesArgs),
    /// Compare greedy token ids of two engines on the same prompts, or (--logprobs) their
    /// teacher-forced log-probabilities of the same texts.
    Parity(ParityArgs),
    /// One engine's teacher-forced log-probabilities of given texts (what `parity
    /// --logprobs` runs in a child process per engine).
    #[command(hide = true)]
    Logprobs(LogprobsArgs),
    /// Draw the plots (PNG and SVG) of a result directory, or of several overlaid.
    Plot(PlotArgs),
    /// The same points of several runs side by side: ratios against the first, whether
    /// each difference is beyond the runs' spread, overlay plots and compare.html.
    Compare(CompareArgs),
    /// The cost of serving: the same sweep on vLLM in-process (vllm) and behind its own
    /// OpenAI-compatible server (vllm-server), greedy, then TTFT/TPOT/ITL p50 and p99 and
    /// throughput side by side with the difference, and where it lies.
    #[command(name = "served-vs-inproc")]
    ServedVsInproc(ServedArgs),
    /// The same sweep over several engine settings (dtype, quantization, engine), each
    /// in its own child `harness sweep`, then throughput, load time and accuracy side
    /// by side, and `compare`'s table over them.
    Variants(VariantsArgs),
}

/// `variants`: `sweep`'s flags, shared by every variant, and the variants. `--engine`
/// and `--python-env` belong to each variant; `--model` and `--engine-arg` given here
/// apply to every variant that does not set its own.
#[derive(Args, Debug)]
pub struct VariantsArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// One engine setting: ENGINE, then its engine args (KEY=VALUE, comma-separated),
    /// and model=PATH, python-env=DIR, label=NAME. Repeatable, at least twice; the
    /// first is the baseline.
    #[arg(long = "variant", value_name = "ENGINE[:KEY=VALUE,..]")]
    pub variants: Vec<String>,
}

/// `served-vs-inproc`: `sweep`'s flags, and how many interleaved pairs to run.
#[derive(Args, Debug)]
pub struct ServedArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Pairs of runs (in-process and served), interleaved, alternating which goes first;
    /// with more than one, each difference comes with its spread over the pairs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: u32,
}

/// `search`: `run`'s flags (each probe is a point run with them), the dimension and
/// bracket searched, the resolution and the pass rule.
#[derive(Args, Debug, Default, Clone)]
pub struct SearchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The load to search and its bracket: concurrency=LO:HI (integers) or rate=LO:HI (requests/s).
    #[arg(long, value_name = "DIM=LO:HI")]
    pub search: Option<String>,
    /// Bisect until the highest passing and lowest failing values are this close
    /// (concurrency: an integer, default 1; rate: requests/s, default 1 % of HI).
    #[arg(long, value_name = "X")]
    pub resolution: Option<f64>,
    /// A probe passes when at least this fraction of its requests are good (succeeded
    /// and met every --slo), failed requests counted (default 0.9).
    #[arg(long, value_name = "F")]
    pub min_good_fraction: Option<f64>,
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
/// Written snake_case (`input_len`, as every other key of run.json); a config file
/// may spell a key as its flag too (`input-len`).
#[derive(Args, Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    #[serde(alias = "engine-arg")]
    pub engine_arg: Vec<String>,
    /// Python venv of the engine (default: its own, made by `scripts/setup.sh ENV`; see `harness engines`).
    #[arg(long, value_name = "DIR")]
    #[serde(alias = "python-env")]
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
    /// Open loop whose rate ramps per request over --num-requests, as `vllm bench serve`: linear or exponential.
    #[arg(long, value_name = "STRATEGY")]
    #[serde(alias = "ramp-up-strategy")]
    pub ramp_up_strategy: Option<String>,
    /// The ramp's rate (requests/s) at its first request.
    #[arg(long, value_name = "RPS")]
    #[serde(alias = "ramp-up-start-rps")]
    pub ramp_up_start_rps: Option<f64>,
    /// The ramp's rate (requests/s) at its last request.
    #[arg(long, value_name = "RPS")]
    #[serde(alias = "ramp-up-end-rps")]
    pub ramp_up_end_rps: Option<f64>,
    /// Open loops (--rate, a ramp, --dataset trace): at most C requests in flight; later arrivals wait client-side, first come first served.
    #[arg(long, value_name = "C")]
    #[serde(alias = "max-concurrency")]
    pub max_concurrency: Option<u32>,
    /// --dataset trace: multiplies every gap between arrivals (0.5 replays twice as fast; default 1).
    #[arg(long, value_name = "X")]
    #[serde(alias = "time-scale")]
    pub time_scale: Option<f64>,

    /// synthetic (default), sharegpt, prompts, shared-prefix, trace, conversations, scored (GSM8K or generic JSONL with answers) or arithmetic (a seeded set with answers).
    #[arg(long)]
    pub dataset: Option<String>,
    /// ShareGPT JSON (also for conversations), a prompt file (JSONL with "prompt"[, "max_tokens"], or text), a trace (Mooncake JSONL or BurstGPT CSV), or a scored JSONL ("question" and "answer" as GSM8K, or "prompt", "answer"[, "pattern"]).
    #[arg(long, value_name = "FILE")]
    #[serde(alias = "dataset-path")]
    pub dataset_path: Option<PathBuf>,
    /// Prompt tokens: N, uniform:MIN:MAX or normal:MEAN:STD (synthetic; default 128).
    #[arg(long, value_name = "DIST")]
    #[serde(alias = "input-len")]
    pub input_len: Option<Spec>,
    /// Output tokens: N, uniform:MIN:MAX or normal:MEAN:STD (default 128; for sharegpt it overrides the reply's length).
    #[arg(long, value_name = "DIST")]
    #[serde(alias = "output-len")]
    pub output_len: Option<Spec>,
    /// shared-prefix: groups of prompts, each sharing its system prompt (default 64).
    #[arg(long, value_name = "G")]
    #[serde(alias = "num-groups")]
    pub num_groups: Option<u32>,
    /// shared-prefix: prompts per group (default 16).
    #[arg(long, value_name = "P")]
    #[serde(alias = "prompts-per-group")]
    pub prompts_per_group: Option<u32>,
    /// shared-prefix: tokens of each group's system prompt, BOS included: N, uniform:MIN:MAX or normal:MEAN:STD (default 2048).
    #[arg(long, value_name = "DIST")]
    #[serde(alias = "system-prompt-len")]
    pub system_prompt_len: Option<Spec>,
    /// shared-prefix: tokens of each prompt's own question after it (default 128).
    #[arg(long, value_name = "DIST")]
    #[serde(alias = "question-len")]
    pub question_len: Option<Spec>,
    /// shared-prefix: grouped (a group's prompts in a row) or shuffled (default).
    #[arg(long, value_name = "ORDER")]
    #[serde(alias = "group-order")]
    pub group_order: Option<String>,
    /// scored, arithmetic: solved GSM8K examples before each question (scored: the file's first K GSM8K lines, then not asked; default 0).
    #[arg(long, value_name = "K")]
    pub fewshot: Option<u32>,
    /// conversations: turns per conversation: N, uniform:MIN:MAX or normal:MEAN:STD (default 4; from ShareGPT, the most kept).
    #[arg(long, value_name = "DIST")]
    pub turns: Option<Spec>,
    /// conversations: milliseconds between a reply and the next user message: 0 (default), N, uniform:MIN:MAX or normal:MEAN:STD.
    #[arg(long, value_name = "MS")]
    #[serde(alias = "think-time")]
    pub think_time: Option<Spec>,
    /// Seed of the workload, the arrivals and sampling (default 0).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Exactly this many measured requests per point (instead of the rounds and duration floors).
    #[arg(long)]
    #[serde(alias = "num-requests")]
    pub num_requests: Option<usize>,
    /// Submit for exactly this many seconds per point (instead of the floors).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Least rounds per point: whole batches (batch mode) or measured requests (default 3).
    #[arg(long, value_name = "N")]
    #[serde(alias = "min-rounds")]
    pub min_rounds: Option<u32>,
    /// Least measured seconds per point (default 10).
    #[arg(long, value_name = "SECONDS")]
    #[serde(alias = "min-duration")]
    pub min_duration: Option<f64>,
    /// Most seconds a point keeps submitting, so a slow engine still ends (default 300).
    #[arg(long, value_name = "SECONDS")]
    #[serde(alias = "max-duration")]
    pub max_duration: Option<f64>,
    /// Requests run before each point and excluded (default: one round: a batch, C requests, 1 s of arrivals).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Empty the engine's prefix cache after each point's warmup, where the engine can,
    /// so every point starts cold (the run says which points it did).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(alias = "fresh-cache")]
    pub fresh_cache: Option<bool>,

    /// Generate exactly the output length (no early EOS).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(alias = "ignore-eos")]
    pub ignore_eos: Option<bool>,
    /// Sampling temperature (default 0: greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Abort a request with no token for this long (default 600).
    #[arg(long, value_name = "SECONDS")]
    #[serde(alias = "request-timeout")]
    pub request_timeout: Option<f64>,
    /// Service-level objectives for goodput: ttft=MS,tpot=MS,e2el=MS.
    #[arg(long)]
    pub slo: Option<String>,
    /// Result directory (default results/ENGINE-YYYYmmdd-HHMMSS).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(alias = "no-progress")]
    pub no_progress: Option<bool>,
    /// Every column in the terminal table (the files always hold every figure).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub wide: Option<bool>,
    /// Stream the engine's own log (saved to engine.log) to the terminal too.
    #[arg(long, short = 'v', num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub verbose: Option<bool>,
    /// Profile the steady state: a profiler window over the first --profile-steps steps
    /// after warmup (torch.profiler for Python engines; on a GPU also the CUDA profiler's
    /// capture range and NVTX ranges for nsys/ncu).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub profile: Option<bool>,
    /// Points to profile, by label or index (default: every point), e.g. batch=8,batch=32.
    #[arg(long, value_name = "POINT[,POINT..]")]
    #[serde(alias = "profile-points")]
    pub profile_points: Option<String>,
    /// Engine steps each profiler window covers (default 20).
    #[arg(long, value_name = "N")]
    #[serde(alias = "profile-steps")]
    pub profile_steps: Option<u64>,
    /// Milliseconds between GPU (NVML) or RAPL telemetry samples (default 100).
    #[arg(long, value_name = "MS")]
    #[serde(alias = "gpu-sample-ms")]
    pub gpu_sample_ms: Option<u64>,
    /// Save each request's generated token ids in requests.jsonl (as `harness parity` does).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(alias = "save-token-ids")]
    pub save_token_ids: Option<bool>,
    /// Do not record each engine step (steps.jsonl, trace.json and the step figures);
    /// the timeline is on by default.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(alias = "no-timeline")]
    pub no_timeline: Option<bool>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A result directory (with run.json and requests.jsonl).
    pub dir: PathBuf,
    /// Recompute goodput under these SLOs instead of the run's.
    #[arg(long)]
    pub slo: Option<String>,
    /// Every column in the table.
    #[arg(long)]
    pub wide: bool,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Result directories; one gets DIR/plots, several are overlaid into --out.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the plots go (default: DIR/plots for one directory, results/plot-TIME for several).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Two or more result directories of the same workload; the first is the baseline.
    #[arg(required = true, num_args = 2.., value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where compare.html and the overlay plots go (default results/compare-TIME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compare runs of different parallel layouts (tp/pp/dp): each run's label shows
    /// its layout; read output_throughput_per_device.
    #[arg(long)]
    pub allow_different_layouts: bool,
}

#[derive(Args, Debug)]
pub struct EnginesArgs {
    /// Check the Python engines against this venv instead of each one's own.
    #[arg(long, value_name = "DIR")]
    pub python_env: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Two engines, comma-separated (e.g. vllm,hf). Each runs in its own child
    /// `harness` process, in its own Python env.
    #[arg(long, default_value = "vllm,hf")]
    pub engines: String,
    /// Model, for both engines, or for one as ENGINE:DIR (a GGUF for llamacpp against
    /// the checkpoint for hf) or SIDE:DIR (1: or 2:); not needed when neither engine
    /// takes one. Repeatable.
    #[arg(long, value_name = "[ENGINE:|SIDE:]DIR")]
    pub model: Vec<String>,
    /// tokenizer.json (default: the first model's tokenizer.json).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Prompt file (JSONL/text); default: a built-in set of English prompts.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Greedy tokens to generate per prompt.
    #[arg(long, default_value_t = 32)]
    pub output_len: u32,
    /// Least fraction of identical leading tokens (over all prompts) to pass.
    #[arg(long, default_value_t = 1.0)]
    pub threshold: f64,
    /// Engine option, for both engines, or for one as ENGINE:KEY=VALUE, or for one side
    /// as 1:KEY=VALUE or 2:KEY=VALUE (the same engine twice: --engines vllm,vllm
    /// --engine-arg 2:tensor_parallel_size=2). Repeatable.
    #[arg(long = "engine-arg", value_name = "[ENGINE:|SIDE:]KEY=VALUE")]
    pub engine_arg: Vec<String>,
    /// Python venv, for both engines, or for one as ENGINE:DIR or SIDE:DIR. Repeatable.
    #[arg(long, value_name = "[ENGINE:|SIDE:]DIR")]
    pub python_env: Vec<String>,
    /// Keep both runs' result directories here (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compare the engines' teacher-forced log-probabilities of fixed texts (--prompts,
    /// or a built-in set) position by position, instead of greedy token ids.
    #[arg(long)]
    pub logprobs: bool,
    /// With --logprobs: the largest |Δ log-probability| (nats) at any position that
    /// still passes.
    #[arg(long, default_value_t = 0.05, value_name = "NATS")]
    pub max_logprob_diff: f64,
}

/// `harness logprobs` (what `parity --logprobs` runs per engine, in its own process):
/// one engine's teacher-forced log-probabilities of the texts in a file.
#[derive(Args, Debug)]
pub struct LogprobsArgs {
    #[arg(long)]
    pub engine: String,
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    #[arg(long = "engine-arg", value_name = "KEY=VALUE")]
    pub engine_arg: Vec<String>,
    #[arg(long, value_name = "DIR")]
    pub python_env: Option<PathBuf>,
    /// A JSON list of texts, each a list of token ids.
    #[arg(long, value_name = "FILE")]
    pub texts: PathBuf,
    /// Directory for logprobs.json and engine.log.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
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
    fn engine_flags_without_a_subcommand_are_run() {
        let cli = Cli::try_parse_from(["harness", "--engine", "trtllm", "--batch", "32"]).unwrap();
        match cli.into_command() {
            Command::Run(a) => {
                assert_eq!(a.engine.as_deref(), Some("trtllm"));
                assert_eq!(a.batch, Some(Spec("32".into())));
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["harness", "sweep", "--engine", "x", "--batch", "1,2"]).unwrap();
        assert!(matches!(cli.into_command(), Command::Sweep(_)));
        // Flags before a subcommand are an error, not silently dropped.
        assert!(Cli::try_parse_from(["harness", "--engine", "x", "engines"]).is_err());
        // Nothing at all: the help, which leads with the product's own form.
        let e = Cli::try_parse_from(["harness"]).unwrap_err();
        assert!(e.to_string().contains("harness --engine ENGINE"), "{e}");
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
