//! One descriptor per summary metric: its name, unit, definition, how to read it from a
//! point's [`Summary`], its table columns, and whether plots and `harness compare` use
//! it. Every output iterates [`CATALOG`] (the flat keys of `summary.json` and
//! `summary.csv`, the columns of `requests.csv`, the terminal table and `report.html`,
//! the plots, `compare` and `served-vs-inproc`), so a metric added here appears in all
//! of them and nowhere else needs an edit.

use super::{Distribution, Estimate, RequestMetrics, Summary};

/// The unit of a metric's values.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    Ms,
    Seconds,
    TokPerS,
    ReqPerS,
    /// Requests, tokens, rounds: whole numbers.
    Count,
    /// A share from 0 to 1 (a hit rate).
    Fraction,
}

impl Unit {
    /// As printed beside a value (`ms`, `tok/s`).
    pub fn label(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Seconds => "s",
            Unit::TokPerS => "tok/s",
            Unit::ReqPerS => "req/s",
            Unit::Count | Unit::Fraction => "",
        }
    }

    /// As it ends a flat key of a distribution (`mean_ttft_ms`, vLLM's spelling).
    pub fn key_suffix(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Seconds => "s",
            Unit::TokPerS => "tok_s",
            Unit::ReqPerS => "req_s",
            Unit::Count => "n",
            Unit::Fraction => "frac",
        }
    }

    /// Decimals in the table.
    pub fn decimals(self) -> usize {
        match self {
            Unit::Count => 0,
            Unit::Fraction => 3,
            _ => 2,
        }
    }
}

/// How a metric is read from a point's summary.
#[derive(Copy, Clone)]
pub enum Reading {
    /// One number per point.
    Scalar(fn(&Summary) -> Option<f64>),
    /// A distribution over requests (or over gaps, for `itl`).
    Distribution(fn(&Summary) -> Option<&Distribution>),
}

/// A statistic of a distribution.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stat {
    Mean,
    Median,
    Std,
    P99,
    Min,
    Max,
    P90,
    P95,
}

impl Stat {
    /// In flat-key order: vLLM's (`mean`, `median`, `std`, `p99`) first, then ours.
    pub const ALL: [Stat; 8] = [
        Stat::Mean,
        Stat::Median,
        Stat::Std,
        Stat::P99,
        Stat::Min,
        Stat::Max,
        Stat::P90,
        Stat::P95,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::Median => "median",
            Stat::Std => "std",
            Stat::P99 => "p99",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
        }
    }

    /// In a table header (`TTFT p50`: the median, as tables usually say).
    pub fn header(self) -> &'static str {
        match self {
            Stat::Median => "p50",
            other => other.name(),
        }
    }

    pub fn of(self, d: &Distribution) -> Option<f64> {
        match self {
            Stat::Mean => d.mean,
            Stat::Median => d.median,
            Stat::Std => d.std,
            Stat::P99 => d.p99,
            Stat::Min => d.min,
            Stat::Max => d.max,
            Stat::P90 => d.p90,
            Stat::P95 => d.p95,
        }
    }
}

/// Which table shows a column: the default one (it fits 120 columns) or `--wide`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum View {
    Brief,
    Wide,
}

impl View {
    /// `--wide` given or not.
    pub fn of(wide: bool) -> View {
        if wide {
            View::Wide
        } else {
            View::Brief
        }
    }
}

/// What a table column shows of its metric.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The scalar's value.
    Value,
    /// The mean over rounds ± its 95 % half-width, `*` when noisy.
    Rounds,
    /// A statistic of the distribution.
    Stat(Stat),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub shown: Shown,
    pub view: View,
}

const fn col(shown: Shown, view: View) -> Column {
    Column { shown, view }
}

/// Which way a metric is better, for `harness compare`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// The mean over a point's rounds with its 95 % interval (see [`super::confidence`]).
#[derive(Copy, Clone)]
pub struct RoundsOf {
    pub estimate: fn(&Summary) -> &Estimate,
    /// How the rounds' samples are taken, for the definitions.
    pub definition: &'static str,
}

/// One summary metric. See the module docs.
#[derive(Copy, Clone)]
pub struct Metric {
    /// The key in `definitions` and the base of its flat keys.
    pub name: &'static str,
    /// Short name in table headers and plot titles (`TTFT`, `out tok/s`).
    pub label: &'static str,
    pub unit: Unit,
    pub definition: &'static str,
    pub reading: Reading,
    /// Its value for one request, for `requests.csv` (column `{name}_{unit}`).
    pub per_request: Option<fn(&RequestMetrics) -> Option<f64>>,
    /// The mean over rounds with its interval: keys `{name}_mean` (scalars) or
    /// `mean_{name}_{unit}` (distributions, whose mean key it shares), then `_ci95_low`,
    /// `_ci95_high` and `_cv`.
    pub rounds: Option<RoundsOf>,
    /// `harness compare` compares its rounds estimate, this way round.
    pub compare: Option<Better>,
    /// Table columns, in order.
    pub columns: &'static [Column],
    /// A p50/p99 panel of the latency plots (distributions).
    pub plot: bool,
    /// Keys only where a point has it (an engine's own stamps), else on every point.
    pub only_when_present: bool,
}

impl std::fmt::Debug for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metric")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Metric {
    /// A metric with one value per point; what only some metrics have is added with
    /// the builder methods below, so a new optional field edits no entry.
    pub const fn scalar(
        name: &'static str,
        label: &'static str,
        unit: Unit,
        definition: &'static str,
        value: fn(&Summary) -> Option<f64>,
    ) -> Metric {
        Metric::new(name, label, unit, definition, Reading::Scalar(value))
    }

    /// A metric distributed over requests (or gaps).
    pub const fn distribution(
        name: &'static str,
        label: &'static str,
        unit: Unit,
        definition: &'static str,
        value: fn(&Summary) -> Option<&Distribution>,
    ) -> Metric {
        Metric::new(name, label, unit, definition, Reading::Distribution(value))
    }

    const fn new(
        name: &'static str,
        label: &'static str,
        unit: Unit,
        definition: &'static str,
        reading: Reading,
    ) -> Metric {
        Metric {
            name,
            label,
            unit,
            definition,
            reading,
            per_request: None,
            rounds: None,
            compare: None,
            columns: &[],
            plot: false,
            only_when_present: false,
        }
    }

    /// Its value for one request, a column of `requests.csv`.
    pub const fn per_request(mut self, f: fn(&RequestMetrics) -> Option<f64>) -> Metric {
        self.per_request = Some(f);
        self
    }

    /// Its mean over rounds with the 95 % interval; `definition` says how rounds
    /// sample it.
    pub const fn rounds(
        mut self,
        estimate: fn(&Summary) -> &Estimate,
        definition: &'static str,
    ) -> Metric {
        self.rounds = Some(RoundsOf {
            estimate,
            definition,
        });
        self
    }

    /// `harness compare` compares its rounds estimate, `better` being the good way.
    pub const fn compare(mut self, better: Better) -> Metric {
        self.compare = Some(better);
        self
    }

    pub const fn columns(mut self, columns: &'static [Column]) -> Metric {
        self.columns = columns;
        self
    }

    /// A p50/p99 panel of the latency plots.
    pub const fn plot(mut self) -> Metric {
        self.plot = true;
        self
    }

    /// Keys only where a point has it.
    pub const fn only_when_present(mut self) -> Metric {
        self.only_when_present = true;
        self
    }

    /// The metric's flat keys with their values in `s`, in output order.
    pub fn values(&self, s: &Summary) -> Vec<(String, Option<f64>)> {
        let mut out = Vec::new();
        match self.reading {
            Reading::Scalar(f) => out.push((self.name.to_string(), f(s))),
            Reading::Distribution(f) => {
                let d = f(s);
                for stat in Stat::ALL {
                    out.push((self.stat_key(stat), d.and_then(|d| stat.of(d))));
                }
            }
        }
        if let Some(r) = &self.rounds {
            let e = (r.estimate)(s);
            let base = match self.reading {
                Reading::Scalar(_) => {
                    out.push((format!("{}_mean", self.name), e.mean));
                    self.name.to_string()
                }
                Reading::Distribution(_) => self.stat_key(Stat::Mean),
            };
            out.push((format!("{base}_ci95_low"), e.ci95_low));
            out.push((format!("{base}_ci95_high"), e.ci95_high));
            out.push((format!("{base}_cv"), e.cv));
        }
        out
    }

    /// `median_ttft_ms`.
    pub fn stat_key(&self, stat: Stat) -> String {
        format!("{}_{}_{}", stat.name(), self.name, self.unit.key_suffix())
    }

    /// Whether `s` has this metric at all (for [`Metric::only_when_present`]).
    pub fn present(&self, s: &Summary) -> bool {
        match self.reading {
            Reading::Scalar(f) => f(s).is_some(),
            Reading::Distribution(f) => f(s).is_some(),
        }
    }

    /// The `requests.csv` column, where the metric has a per-request value: its name
    /// with the unit (`ttft_ms`), a count by its name alone (`cached_prompt_tokens`).
    pub fn request_column(&self) -> Option<String> {
        self.per_request.map(|_| match self.unit {
            Unit::Count => self.name.to_string(),
            unit => format!("{}_{}", self.name, unit.key_suffix()),
        })
    }

    /// A column's header: `TTFT p99`, `out tok/s`.
    pub fn header(&self, c: &Column) -> String {
        match c.shown {
            Shown::Stat(stat) => format!("{} {}", self.label, stat.header()),
            Shown::Value | Shown::Rounds => self.label.to_string(),
        }
    }

    /// A column's cell for `s`; `-` where there is no value.
    pub fn cell(&self, c: &Column, s: &Summary) -> String {
        let d = self.unit.decimals();
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.d$}"));
        match c.shown {
            Shown::Value => match self.reading {
                Reading::Scalar(f) => num(f(s)),
                Reading::Distribution(_) => "-".into(),
            },
            Shown::Stat(stat) => match self.reading {
                Reading::Distribution(f) => num(f(s).and_then(|d| stat.of(d))),
                Reading::Scalar(_) => "-".into(),
            },
            Shown::Rounds => {
                let Some(r) = &self.rounds else {
                    return "-".into();
                };
                let e = (r.estimate)(s);
                if e.n == 0 {
                    // No rounds (nothing completed): the window value, if any.
                    return match self.reading {
                        Reading::Scalar(f) => num(f(s)),
                        Reading::Distribution(f) => num(f(s).and_then(|d| d.mean)),
                    };
                }
                let mark = if e.is_noisy() { " *" } else { "" };
                format!("{}{mark}", e.display(d))
            }
        }
    }

    /// The definitions this metric contributes: its own, and its rounds' as
    /// `{name}_rounds`.
    pub fn definitions(&self) -> Vec<(String, &'static str)> {
        let mut out = vec![(self.name.to_string(), self.definition)];
        if let Some(r) = &self.rounds {
            out.push((format!("{}_rounds", self.name), r.definition));
        }
        out
    }
}

/// Definitions of the methods several metrics share.
pub const METHODS: &[(&str, &str)] = &[
    (
        "statistics",
        "mean; std is the population std (ddof=0, as numpy/vLLM); percentiles by linear \
         interpolation between closest ranks (numpy's default): rank = q/100 * (N - 1); \
         median is the 50th percentile",
    ),
    (
        "intervals",
        "a mean over rounds with a 95 % Student-t confidence interval (ci95 = mean ± \
         t(0.975, n-1) × s / √n, s the sample std) and its coefficient of variation \
         (cv = s / mean); a CV above 10 % marks the point noisy",
    ),
];

use Shown::{Rounds as R, Stat as S, Value as V};
use View::{Brief as B, Wide as W};

/// The columns of TTFT and TPOT: p50 and p99 in the brief table, the mean in the wide.
const LATENCY: &[Column] = &[
    col(S(Stat::Median), B),
    col(S(Stat::P99), B),
    col(S(Stat::Mean), W),
];

/// Every summary metric, in output order.
pub static CATALOG: &[Metric] = &[
    Metric::scalar(
        "duration",
        "duration",
        Unit::Seconds,
        "throughput window: last finish - first submit over all requests of the point that \
         finished, failed ones included (s)",
        |s| s.duration,
    ),
    Metric::scalar(
        "completed",
        "ok",
        Unit::Count,
        "requests that ended with length or stop",
        |s| Some(s.completed as f64),
    ),
    Metric::scalar(
        "failed",
        "failed",
        Unit::Count,
        "requests that ended any other way (error, timeout, abort) or never finished; \
         counted by reason and listed, excluded from latencies and token totals",
        |s| Some(s.failed as f64),
    ),
    Metric::scalar(
        "total_input_tokens",
        "input tokens",
        Unit::Count,
        "prompt tokens (input_len) of completed requests",
        |s| Some(s.total_input_tokens as f64),
    ),
    Metric::scalar(
        "total_output_tokens",
        "output tokens",
        Unit::Count,
        "output tokens of completed requests",
        |s| Some(s.total_output_tokens as f64),
    ),
    Metric::scalar(
        "request_throughput",
        "req/s",
        Unit::ReqPerS,
        "completed / duration (req/s); null when duration is 0 or unknown",
        |s| s.request_throughput,
    )
    .columns(&[col(V, W)]),
    Metric::scalar(
        "request_goodput",
        "goodput req/s",
        Unit::ReqPerS,
        "completed requests meeting every given SLO (ttft <=, tpot <=, e2el <=) / duration \
         (req/s); a 1-token request has no tpot and passes the tpot SLO; null without --slo",
        |s| s.request_goodput,
    )
    .columns(&[col(V, B)]),
    Metric::scalar(
        "good_requests",
        "good",
        Unit::Count,
        "completed requests meeting every given SLO; null without --slo",
        |s| s.good_requests.map(|n| n as f64),
    ),
    Metric::scalar(
        "output_throughput",
        "out tok/s",
        Unit::TokPerS,
        "output tokens of completed requests / duration (tok/s)",
        |s| s.output_throughput,
    )
    .rounds(
        |s| &s.rounds.output_throughput,
        "mean output throughput over rounds with its interval (see intervals); batch mode: \
         per batch, its output tokens / (its last finish - its first submit); other modes: \
         per equal time window of the point's span (W = floor(sqrt(completed)) windows, 2 to \
         30), output tokens stamped in the window / window length, so the mean equals \
         output_throughput",
    )
    .compare(Better::Higher)
    .columns(&[col(R, B)]),
    Metric::scalar(
        "output_throughput_per_device",
        "out tok/s/dev",
        Unit::TokPerS,
        super::devices::DEFINITION,
        |s| s.per_device.as_ref().and_then(|p| p.output_throughput),
    )
    .rounds(
        |s| s.per_device.as_ref().map_or(&NO_ESTIMATE, |p| &p.rounds),
        "the rounds estimate of output_throughput, divided by the layout's devices",
    )
    .compare(Better::Higher)
    .columns(&[col(R, B)])
    .only_when_present(),
    Metric::scalar(
        "total_token_throughput",
        "total tok/s",
        Unit::TokPerS,
        "(prompt + output tokens) of completed requests / duration (tok/s)",
        |s| s.total_token_throughput,
    )
    .columns(&[col(V, W)]),
    // The table shows rounds in a column of its own, beside the point (as ok/failed).
    Metric::scalar(
        "rounds",
        "rounds",
        Unit::Count,
        "the samples of a point with a completed request: in batch mode each batch is a \
         round, in the other modes each request; a point runs until --min-rounds and \
         --min-duration are both met (or --max-duration), unless --num-requests or \
         --duration fix it",
        |s| Some(s.rounds.count as f64),
    ),
    Metric::scalar(
        "throughput_windows",
        "windows",
        Unit::Count,
        "equal time windows the output throughput's rounds were sampled over (null in batch \
         mode, where each batch is a sample)",
        |s| s.rounds.throughput_windows.map(|n| n as f64),
    ),
    Metric::distribution(
        "ttft",
        "TTFT",
        Unit::Ms,
        "time to first token: first token event - submit, per successful request (ms)",
        |s| Some(&s.ttft),
    )
    .per_request(|m| m.ttft_ms)
    .rounds(
        |s| &s.rounds.mean_ttft_ms,
        "mean TTFT over rounds with its interval (see intervals): batch mode, each batch's \
         mean TTFT; other modes, each request's TTFT (ms)",
    )
    .compare(Better::Lower)
    .columns(LATENCY)
    .plot(),
    Metric::distribution(
        "tpot",
        "TPOT",
        Unit::Ms,
        "time per output token: (e2el - ttft) / (output_tokens - 1), per request with >= 2 \
         output tokens; 1-token requests are excluded, as in vLLM; equal to \
         AIPerf/GenAI-Perf's ITL ((last - first token event) / (output_tokens - 1)) because \
         e2el ends at the last token event (ms)",
        |s| Some(&s.tpot),
    )
    .per_request(|m| m.tpot_ms)
    .rounds(
        |s| &s.rounds.mean_tpot_ms,
        "mean TPOT over rounds with its interval (see intervals): batch mode, each batch's \
         mean TPOT; other modes, each request's TPOT (ms)",
    )
    .compare(Better::Lower)
    .columns(LATENCY)
    .plot(),
    Metric::distribution(
        "itl",
        "ITL",
        Unit::Ms,
        "inter-token latency: every gap between consecutive token events, pooled over \
         successful requests (vLLM/SGLang ITL); one gap per event, so an event carrying k > 1 \
         tokens counts as one chunk, as vLLM counts streamed chunks (ms)",
        |s| Some(&s.itl),
    )
    .columns(&[col(S(Stat::P99), W)])
    .plot(),
    Metric::distribution(
        "e2el",
        "E2EL",
        Unit::Ms,
        "end-to-end latency: last token event - submit, per successful request (ms); a later \
         finish-only event carries no token and is not counted",
        |s| Some(&s.e2el),
    )
    .per_request(|m| m.e2el_ms)
    .columns(&[col(S(Stat::P99), W)]),
    Metric::distribution(
        "per_user_output_throughput",
        "per-user tok/s",
        Unit::TokPerS,
        "1 / tpot per request, in output tokens/s as one user sees them; requests without \
         tpot or with tpot = 0 (all tokens in one event) are excluded (tok/s)",
        |s| Some(&s.per_user_output_throughput),
    ),
    Metric::distribution(
        "engine_ttft_delta",
        "engine TTFT Δ",
        Unit::Ms,
        "harness first token stamp - engine's own first token stamp, per successful request \
         that carries one (ms); measures the harness's stamping lag, target p99 <= 1 ms",
        |s| s.engine_ttft_delta.as_ref(),
    )
    .per_request(|m| m.ttft_ms.zip(m.engine_ttft_ms).map(|(h, e)| h - e))
    .only_when_present(),
    Metric::scalar(
        "cached_prompt_tokens",
        "cached tokens",
        Unit::Count,
        "prompt tokens the engine served from its prefix cache instead of computing, as \
         the engine counts them per request (source: run.json engine.scheduler.\
         cached_prompt_tokens_source), summed over completed requests that report it; null \
         (not reported) where the engine does not say, never 0",
        |s| s.cached_prompt_tokens.map(|n| n as f64),
    )
    .per_request(|m| m.cached_prompt_tokens.map(f64::from))
    .only_when_present(),
    Metric::scalar(
        "prefix_cache_hit_rate",
        "cache hit",
        Unit::Fraction,
        "cached_prompt_tokens / input_len, both summed over the completed requests whose \
         engine reports cached prompt tokens (0 to 1); null (not reported) where the engine \
         does not say",
        |s| s.prefix_cache_hit_rate,
    )
    .compare(Better::Higher)
    .columns(&[col(V, B)])
    .only_when_present(),
    Metric::distribution(
        "queue_time",
        "queue",
        Unit::Ms,
        "open loops (rate, ramp, trace) and a conversation's later turns (due at the \
         previous turn's finish + think time): submit - scheduled arrival (intended_ns), per \
         submitted request whatever its outcome; under --max-concurrency it is the wait in \
         the client's FIFO queue for a free slot plus the driver's schedule_lag; absent \
         for requests without a scheduled arrival (batch and concurrency mode) (ms)",
        |s| s.queue_time.as_ref(),
    )
    .per_request(|m| m.queue_time_ms)
    .columns(&[col(S(Stat::P99), W)])
    .only_when_present(),
    Metric::distribution(
        "schedule_lag",
        "sched lag",
        Unit::Ms,
        "open loops: the driver's own lateness, submit - max(scheduled arrival, slot free), \
         per submitted request; slot free (slot_free_ns) is when the driver's poll returned \
         the finish that freed the slot a queued request took under --max-concurrency, \
         recorded only when after the arrival; without --max-concurrency it equals \
         queue_time (AIPerf's schedule lag) (ms)",
        |s| s.schedule_lag.as_ref(),
    )
    .per_request(|m| m.schedule_lag_ms)
    .columns(&[col(S(Stat::P99), W)])
    .only_when_present(),
    Metric::distribution(
        "ttft_from_arrival",
        "TTFT from arrival",
        Unit::Ms,
        "open loops: first token event - scheduled arrival (intended_ns), per successful \
         request: ttft + queue_time, the TTFT a user arriving on the schedule sees, \
         client-side queueing included (ms)",
        |s| s.ttft_from_arrival.as_ref(),
    )
    .per_request(|m| m.ttft_from_arrival_ms)
    .columns(&[col(S(Stat::Median), W), col(S(Stat::P99), W)])
    .only_when_present(),
    Metric::distribution(
        "conversation_duration",
        "conversation",
        Unit::Seconds,
        "--dataset conversations: per conversation with a turn in the point and every turn \
         finished, its first turn's submit to its last turn's finish, think times included \
         (s); the per-turn figures (ttft, input_len and prefix_cache_hit_rate by turn \
         index) are in summary.json's by_turn and turns.csv",
        |s| s.conversations.as_ref().map(|c| &c.duration),
    )
    .columns(&[col(S(Stat::Median), W)])
    .only_when_present(),
    Metric::scalar(
        "accuracy",
        "accuracy",
        Unit::Fraction,
        super::accuracy::DEFINITION,
        |s| s.accuracy.as_ref().and_then(|a| a.estimate.mean),
    )
    .rounds(
        |s| s.accuracy.as_ref().map_or(&NO_ESTIMATE, |a| &a.estimate),
        "scored workloads: the Wilson 95 % interval of correct / scored over the point's \
         scored requests (not rounds: each request is a trial); the half-width is half the \
         interval, what compare weighs",
    )
    .compare(Better::Higher)
    .columns(&[col(R, B)])
    .only_when_present(),
];

/// The estimate of a metric a point does not have.
static NO_ESTIMATE: Estimate = Estimate {
    n: 0,
    mean: None,
    ci95_half_width: None,
    ci95_low: None,
    ci95_high: None,
    cv: None,
};

/// Every definition of `catalog` and the shared methods, as `(name, definition)`.
pub fn definitions(catalog: &[Metric]) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> =
        catalog.iter().flat_map(Metric::definitions).collect();
    out.extend(METHODS.iter().map(|(k, v)| (k.to_string(), *v)));
    out
}

/// The metric named `name` in [`CATALOG`].
pub fn metric(name: &str) -> Option<&'static Metric> {
    CATALOG.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_and_definitions_are_unique_and_one_line() {
        let defs = definitions(CATALOG);
        let mut names: Vec<&str> = defs.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), defs.len(), "a definition named twice");
        assert!(defs.iter().all(|(_, d)| !d.contains('\n') && !d.is_empty()));
        let s = Summary::default();
        let mut keys: Vec<String> = CATALOG
            .iter()
            .flat_map(|m| m.values(&s).into_iter().map(|(k, _)| k))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a flat key made by two metrics");
    }

    #[test]
    fn keys_follow_vllms_names() {
        let ttft = metric("ttft").unwrap();
        let keys: Vec<String> = ttft
            .values(&Summary::default())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "mean_ttft_ms",
                "median_ttft_ms",
                "std_ttft_ms",
                "p99_ttft_ms",
                "min_ttft_ms",
                "max_ttft_ms",
                "p90_ttft_ms",
                "p95_ttft_ms",
                "mean_ttft_ms_ci95_low",
                "mean_ttft_ms_ci95_high",
                "mean_ttft_ms_cv",
            ]
        );
        let thr = metric("output_throughput").unwrap();
        let keys: Vec<String> = thr
            .values(&Summary::default())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "output_throughput",
                "output_throughput_mean",
                "output_throughput_ci95_low",
                "output_throughput_ci95_high",
                "output_throughput_cv",
            ]
        );
        assert_eq!(
            metric("per_user_output_throughput")
                .unwrap()
                .stat_key(Stat::P99),
            "p99_per_user_output_throughput_tok_s"
        );
    }
}
