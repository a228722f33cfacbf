//! The validated run configuration: flags merged over an optional TOML file, every
//! value checked before any engine loads. One small parser per section ([`engine`],
//! [`load`], [`workload`], [`stop`], [`slo`], [`output`], [`search`]); errors are one line naming
//! the flag and the fix and end the program with exit code 2.

pub mod engine;
pub mod instruments;
pub mod load;
pub mod output;
pub mod search;
pub mod slo;
pub mod stop;
pub mod workload;

pub use engine::{check_model, model_dir};

use crate::cli::{RunArgs, SearchArgs};
use crate::driver::{DriverOptions, LoadPoint};
use crate::engine::{EngineConfig, EngineSpec, Registry};
use crate::metrics::Slo;
use crate::workload::conversations::{ConversationSource, ConversationSpec};
use crate::workload::{LengthDist, WorkloadSpec};
use std::path::PathBuf;

/// Bad input in the flags or the config file: one line naming the flag and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The flag to fix, as typed after `--` (`input-len`; `config` for the file itself).
    pub flag: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(flag: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            flag,
            message: message.into(),
        }
    }
}

pub(crate) fn err<T>(flag: &'static str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(flag, message))
}

/// Most workload items built for one run; past it the driver cycles (and says so).
pub const MAX_WORKLOAD_ITEMS: usize = 65_536;
/// Most prompt tokens held for one run's workload (256 MiB of token ids).
pub const MAX_WORKLOAD_TOKENS: u64 = 1 << 26;

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub engine: &'static EngineSpec,
    pub engine_config: EngineConfig,
    /// tokenizer.json for the workload (None: synthetic ids without a model).
    pub tokenizer: Option<PathBuf>,
    pub workload: WorkloadSpec,
    /// The points to run, in order (`harness search`: the bracket's two ends; its
    /// probes are chosen as it goes, see [`RunConfig::search`]).
    pub points: Vec<LoadPoint>,
    /// `harness search`: the capacity search that chooses each point.
    pub search: Option<search::Search>,
    /// Driver options shared by every point; see [`RunConfig::driver_for`].
    pub driver: DriverOptions,
    /// `--warmup` as given (None: one round of each point).
    pub warmup: Option<usize>,
    pub slo: Slo,
    pub out: PathBuf,
    pub progress: bool,
    pub verbose: bool,
    /// The terminal table's columns (`--wide`).
    pub view: crate::metrics::catalog::View,
    pub instruments: instruments::Instruments,
    /// The merged flags, saved with the results as `config.toml` (re-runnable with --config).
    pub effective: RunArgs,
}

impl RunConfig {
    /// Driver options for one point: `--warmup` as given, else one round; an `--rate
    /// inf` point without an exact amount runs [`stop::INF_RATE_REQUESTS`] at once; a
    /// trace without one replays to its end.
    pub fn driver_for(&self, p: LoadPoint) -> DriverOptions {
        let mut d = self.driver.clone();
        let exact = d.stop.num_requests.is_some() || d.stop.duration.is_some();
        if !exact && matches!(p, LoadPoint::Rate { rate, .. } if rate.is_infinite()) {
            d.stop.num_requests = Some(stop::INF_RATE_REQUESTS);
        }
        if !exact && matches!(p, LoadPoint::Trace { .. }) {
            // Never reached: the trace ends first (it holds at most MAX_TRACE_LINES).
            d.stop.num_requests = Some(stop::MAX_REQUESTS);
        }
        d.warmup = self.warmup.unwrap_or_else(|| stop::default_warmup(p));
        d.profile = self.instruments.profile_plan(&self.points, p, &self.out);
        d
    }

    /// Workload items to build: every request of the run draws its own item (so no
    /// prompt is sent twice and prefix caches cannot shorten a later point's TTFT).
    /// Exact amounts are counted; floors are estimated generously (16 rounds, or
    /// twice the arrivals of the minimum duration). Past the end the driver cycles and
    /// the run says how many prompts were reused.
    pub fn workload_size(&self) -> usize {
        let per_point = |p: LoadPoint| -> usize {
            let d = self.driver_for(p);
            let s = &d.stop;
            let wave = match p {
                LoadPoint::Batch { batch } => batch as usize,
                LoadPoint::Concurrency { concurrency } => concurrency as usize,
                LoadPoint::Rate { .. } | LoadPoint::Ramp { .. } | LoadPoint::Trace { .. } => 1,
            };
            let measured = match (s.num_requests, s.duration, p) {
                // A trace builds what it holds (at most MAX_WORKLOAD_ITEMS lines).
                (_, _, LoadPoint::Trace { .. }) if self.driver.stop.num_requests.is_none() => {
                    MAX_WORKLOAD_ITEMS
                }
                (Some(n), _, _) => n,
                (None, Some(t), LoadPoint::Rate { rate, .. }) => {
                    (rate * t.as_secs_f64() * 2.0).ceil().min(1e9) as usize
                }
                (None, Some(_), _) => 16 * wave,
                (None, None, LoadPoint::Rate { rate, .. }) => {
                    ((rate * s.min_duration.as_secs_f64() * 2.0).ceil().min(1e9) as usize)
                        .max(s.min_rounds as usize)
                }
                (None, None, _) => wave * (s.min_rounds as usize).max(16),
            };
            d.warmup.saturating_add(measured)
        };
        let total = match &self.search {
            // Every probe at most the size of the bracket's top.
            Some(s) => per_point(s.point(s.spec.hi)).saturating_mul(s.spec.max_probes()),
            None => self
                .points
                .iter()
                .map(|&p| per_point(p))
                .fold(0usize, usize::saturating_add),
        };
        total.clamp(1, MAX_WORKLOAD_ITEMS)
    }
}

/// Reads `--config FILE` (if any) and lays the flags over it.
pub fn merge(cli: RunArgs) -> Result<RunArgs, ConfigError> {
    let Some(path) = cli.config.clone() else {
        return Ok(cli);
    };
    let text = std::fs::read_to_string(&path).or_else(|e| {
        err(
            "config",
            format!(
                "--config {}: {e}; pass an existing TOML file",
                path.display()
            ),
        )
    })?;
    let file: RunArgs = toml::from_str(&text).or_else(|e| {
        let msg = e.message().replace('\n', " ");
        let line = e
            .span()
            .and_then(|s| text.get(..s.start))
            .map(|before| before.matches('\n').count() + 1);
        err("config", match line {
            Some(l) => format!("--config {} line {l}: {msg}; keys are the flag names (e.g. engine, batch, input_len or input-len)", path.display()),
            None => format!("--config {}: {msg}", path.display()),
        })
    })?;
    macro_rules! over {
        ($($f:ident),*) => { RunArgs { $($f: cli.$f.or(file.$f),)* engine_arg: if cli.engine_arg.is_empty() { file.engine_arg } else { cli.engine_arg }, config: cli.config } };
    }
    Ok(over!(
        engine,
        model,
        tokenizer,
        python_env,
        batch,
        concurrency,
        rate,
        burstiness,
        ramp_up_strategy,
        ramp_up_start_rps,
        ramp_up_end_rps,
        max_concurrency,
        time_scale,
        dataset,
        dataset_path,
        input_len,
        output_len,
        num_groups,
        prompts_per_group,
        system_prompt_len,
        question_len,
        group_order,
        fewshot,
        turns,
        think_time,
        seed,
        num_requests,
        duration,
        min_rounds,
        min_duration,
        max_duration,
        warmup,
        fresh_cache,
        ignore_eos,
        temperature,
        request_timeout,
        slo,
        out,
        no_progress,
        verbose,
        wide,
        profile,
        profile_points,
        profile_steps,
        gpu_sample_ms,
        save_token_ids,
        no_timeline
    ))
}

/// Validates merged flags against the engines of `registry`. `sweep` allows lists of
/// load values; `run` takes one.
pub fn validate(a: RunArgs, sweep: bool, registry: &Registry) -> Result<RunConfig, ConfigError> {
    let engine = engine::parse(&a, registry)?;
    let points = load::parse(&a, sweep)?;
    let workload = workload::parse(&a, engine.spec)?;
    let stop = stop::parse(&a)?;
    let slo = slo::parse(&a)?;
    let output = output::parse(&a, engine.spec.name)?;
    let instruments = instruments::parse(&a, &points)?;
    let max_concurrency = load::max_concurrency(&a, &points)?;
    check_open_loop_amounts(&points, &stop.stop)?;
    let conversations = matches!(workload.spec, WorkloadSpec::Conversations(_));
    if conversations && points.iter().any(|p| matches!(p, LoadPoint::Ramp { .. })) {
        return err(
            "ramp-up-strategy",
            "a ramp's rate runs across --num-requests requests, but --dataset conversations starts conversations of several requests each; use --rate R (new conversations per second) or --concurrency C",
        );
    }
    let engine_config = EngineConfig {
        log_dir: Some(output.out.clone()),
        ..engine.config
    };
    let cfg = RunConfig {
        engine: engine.spec,
        engine_config,
        tokenizer: workload.tokenizer,
        workload: workload.spec,
        driver: DriverOptions {
            // Per point: see `RunConfig::driver_for`.
            warmup: 0,
            stop: stop.stop,
            request_timeout: stop.request_timeout,
            sampling: workload.sampling,
            seed: workload.seed,
            profile: None,
            fresh_cache: a.fresh_cache.unwrap_or(false),
            max_concurrency,
            timeline: !a.no_timeline.unwrap_or(false),
        },
        warmup: stop.warmup,
        points,
        search: None,
        slo,
        out: output.out,
        progress: output.progress,
        verbose: output.verbose,
        view: output.view,
        instruments,
        effective: RunArgs { config: None, ..a },
    };
    check_workload_memory(&cfg)?;
    let mut cfg = cfg;
    // An exact --num-requests replays the trace's first lines (warmup included).
    let first = cfg
        .driver
        .stop
        .num_requests
        .is_some()
        .then(|| cfg.workload_size());
    if let WorkloadSpec::Trace { lines, .. } = &mut cfg.workload {
        *lines = first;
    }
    Ok(cfg)
}

/// Validates `harness search`'s flags: the run's (merged over `--config`), then the
/// search's own. Every probe is a point run with the run's flags; the checks of a
/// point run on the bracket's two ends.
pub fn validate_search(a: SearchArgs, registry: &Registry) -> Result<RunConfig, ConfigError> {
    let run = merge(a.run)?;
    search::refuse_conflicts(&run)?;
    let spec = search::parse(a.search.as_deref(), a.resolution, a.min_good_fraction)?;
    let mut cfg = validate(search::ends_as_points(&run, &spec), true, registry)?;
    let burstiness = cfg
        .points
        .first()
        .and_then(|p| p.burstiness())
        .unwrap_or(1.0);
    cfg.search = Some(search::Search { spec, burstiness });
    // config.toml holds the run's own flags; the search is in run.json's `search`.
    cfg.effective = RunArgs {
        config: None,
        ..run
    };
    check_workload_memory(&cfg)?;
    Ok(cfg)
}

/// An open loop's arrivals must end: `--rate inf` (all at once) has no amount under
/// `--duration`, a ramp is defined over `--num-requests`, and rate × duration is at
/// most [`stop::MAX_REQUESTS`] arrivals.
fn check_open_loop_amounts(
    points: &[LoadPoint],
    stop: &crate::driver::Stop,
) -> Result<(), ConfigError> {
    for p in points {
        match *p {
            LoadPoint::Rate { rate, .. } if rate.is_infinite() && stop.duration.is_some() => {
                return err(
                    "rate",
                    "--rate inf sends every request at once, so --duration sets no amount and the queue would have no end; give --num-requests N with --rate inf (or a finite --rate)",
                );
            }
            LoadPoint::Rate { rate, .. } if rate.is_finite() => {
                if let Some(d) = stop.duration {
                    let n = rate * d.as_secs_f64();
                    if n > stop::MAX_REQUESTS as f64 {
                        return err(
                            "duration",
                            format!(
                                "--rate {rate} for --duration {} s is {n:.0} arrivals, above {} per point; lower --rate or --duration",
                                d.as_secs_f64(),
                                stop::MAX_REQUESTS
                            ),
                        );
                    }
                }
            }
            LoadPoint::Ramp { .. } if stop.num_requests.is_none() => {
                return err(
                    "ramp-up-strategy",
                    "a ramp's rate goes from its start to its end across --num-requests N requests (as in vllm bench serve); add --num-requests N",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The prompts of a run must fit in memory: items × longest input length.
fn check_workload_memory(cfg: &RunConfig) -> Result<(), ConfigError> {
    let longest = |d: &LengthDist| match *d {
        LengthDist::Fixed { len } => f64::from(len),
        LengthDist::Uniform { max, .. } => f64::from(max),
        LengthDist::Normal { mean, std } => mean + 6.0 * std,
    };
    let (flag, what, tokens) = match &cfg.workload {
        WorkloadSpec::Synthetic { input_len, .. }
        | WorkloadSpec::Conversations(ConversationSpec {
            source: ConversationSource::Synthetic { input_len, .. },
            ..
        }) => {
            let items = cfg.workload_size();
            let what = format!("--input-len {input_len} for {items} requests");
            ("input-len", what, longest(input_len) * items as f64)
        }
        // Every prompt is built in full (the groups' prompts share no memory).
        WorkloadSpec::SharedPrefix(s) => {
            let per = longest(&s.system_prompt_len) + longest(&s.question_len);
            let what = format!(
                "--system-prompt-len {} + --question-len {} for {} prompts",
                s.system_prompt_len,
                s.question_len,
                s.prompts()
            );
            ("system-prompt-len", what, per * s.prompts() as f64)
        }
        _ => return Ok(()), // dataset prompts are as long as the file's
    };
    if tokens > MAX_WORKLOAD_TOKENS as f64 {
        return err(flag, format!(
            "{what} is {tokens:.0} prompt tokens, above the limit of {MAX_WORKLOAD_TOKENS} per run; lower the lengths or the number of requests"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::Spec;

    /// Default flags with `f` applied (the section parsers' tests).
    pub(crate) fn with(f: impl FnOnce(&mut RunArgs)) -> RunArgs {
        let mut a = RunArgs::default();
        f(&mut a);
        a
    }

    fn calib(f: impl FnOnce(&mut RunArgs)) -> RunArgs {
        let mut a = RunArgs {
            engine: Some("calibration".into()),
            out: Some(std::env::temp_dir().join("llm-harness-config-test")),
            ..Default::default()
        };
        f(&mut a);
        a
    }

    #[test]
    fn sections_compose_into_a_run() {
        let c = validate(
            calib(|a| {
                a.batch = Some(Spec("2,4".into()));
                a.num_requests = Some(8);
            }),
            true,
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(c.engine.name, "calibration");
        assert_eq!(c.points.len(), 2);
        let d = c.driver_for(c.points[1]);
        assert_eq!((d.warmup, d.stop.num_requests), (4, Some(8)));
        // Exact counts: warmup + measured per point.
        assert_eq!(c.workload_size(), (2 + 8) + (4 + 8));
    }

    #[test]
    fn floors_size_the_workload_generously_and_inf_rate_is_exact() {
        let c = validate(
            calib(|a| a.batch = Some(Spec("8".into()))),
            false,
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(c.workload_size(), 8 + 8 * 16);
        let c = validate(
            calib(|a| a.rate = Some(Spec("inf".into()))),
            false,
            &Registry::builtin(),
        )
        .unwrap();
        let d = c.driver_for(c.points[0]);
        assert_eq!(d.stop.num_requests, Some(stop::INF_RATE_REQUESTS));
        assert_eq!(c.workload_size(), 1 + stop::INF_RATE_REQUESTS);
    }

    #[test]
    fn workload_memory_is_bounded() {
        let e = validate(
            calib(|a| {
                a.input_len = Some(Spec("16000000".into()));
                a.num_requests = Some(1000);
            }),
            false,
            &Registry::builtin(),
        )
        .unwrap_err()
        .message;
        assert!(e.contains("above the limit"), "{e}");
    }

    #[test]
    fn config_file_under_flags_and_its_line_numbers() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("run.toml");
        std::fs::write(
            &f,
            "engine = \"calibration\"\nbatch = [1, 2]\ninput-len = 64\n",
        )
        .unwrap();
        let m = merge(RunArgs {
            config: Some(f.clone()),
            input_len: Some(Spec("32".into())),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.batch, Some(Spec("1,2".into())));
        assert_eq!(m.input_len, Some(Spec("32".into())));
        std::fs::write(&f, "engine = \"calibration\"\n\nbogus = 1\n").unwrap();
        let e = merge(RunArgs {
            config: Some(f),
            ..Default::default()
        })
        .unwrap_err()
        .message;
        assert!(e.contains("line 3") && e.contains("bogus"), "{e}");
    }
}
