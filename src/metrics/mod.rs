//! Metrics: pure functions from a trace to a summary. No I/O, no clock.
//!
//! [`summarize`] computes a point's [`Summary`]; every summary metric is described once,
//! in [`catalog::CATALOG`] (its definition, unit, keys, table columns), and every
//! output renders from that list, so the output always states how each number was
//! computed. Names follow vLLM's `vllm bench` (`ttft`, `tpot`, `itl`, `e2el`); AIPerf
//! / GenAI-Perf's "ITL", (last − first token) / (n − 1), is `tpot` here (the same
//! figure, one name); `per_user_output_throughput`, `engine_ttft_delta` and the round
//! estimates ([`confidence`]) are ours. Per-point measurements that do not come from
//! the trace (the harness's own cost, the machine's load) are
//! [`Measure`](crate::core::measure::Measure)s.
//!
//! Only successful requests ([`RequestTrace::is_success`]) enter latency distributions
//! and token totals. Every other request (error, timeout, abort, or never finished) is
//! counted by reason and listed in [`Summary::failures`]; none is dropped silently.

pub mod accuracy;
pub mod capacity;
pub mod catalog;
pub mod confidence;
pub mod conversations;
pub mod devices;
pub mod logprobs;
pub mod steps;

pub use confidence::Estimate;

use crate::core::request::{FinishReason, RequestId};
use crate::core::stats::percentile;
use crate::trace::RequestTrace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A bad `--slo` value; the message names the bad part and the valid keys.
    #[error("--slo: {0}")]
    Slo(String),
}

/// Service-level objectives for goodput, in milliseconds; `None` = not constrained.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Slo {
    /// No objective given: goodput is not computed.
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }

    /// Whether a request with these metrics meets every given objective. A request
    /// without a value for a constrained metric fails it, except tpot: a 1-token
    /// request has no tpot and passes the tpot objective.
    pub fn is_met(&self, m: &RequestMetrics) -> bool {
        let within = |limit: Option<f64>, value: Option<f64>, missing_ok: bool| match limit {
            None => true,
            Some(l) => value.map_or(missing_ok, |v| v <= l),
        };
        within(self.ttft_ms, m.ttft_ms, false)
            && within(self.tpot_ms, m.tpot_ms, m.output_tokens <= 1)
            && within(self.e2el_ms, m.e2el_ms, false)
    }
}

const SLO_KEYS: &str =
    "valid keys: ttft, tpot, e2el (alias e2e), values in ms, e.g. ttft=500,tpot=50";

/// Parses `--slo ttft=500,tpot=50,e2el=2000` (milliseconds; `e2e` is accepted for
/// `e2el`, and a trailing `ms` on a value is allowed).
pub fn parse_slo(s: &str) -> Result<Slo, MetricsError> {
    let mut slo = Slo::default();
    if s.trim().is_empty() {
        return Err(MetricsError::Slo(format!("empty; {SLO_KEYS}")));
    }
    for part in s.split(',') {
        let part = part.trim();
        let Some((key, value)) = part.split_once('=') else {
            return Err(MetricsError::Slo(format!(
                "`{part}` is not KEY=MS; {SLO_KEYS}"
            )));
        };
        let key = key.trim();
        let slot = match key.to_ascii_lowercase().as_str() {
            "ttft" => &mut slo.ttft_ms,
            "tpot" => &mut slo.tpot_ms,
            "e2el" | "e2e" => &mut slo.e2el_ms,
            _ => {
                return Err(MetricsError::Slo(format!(
                    "unknown key `{key}` in `{part}`; {SLO_KEYS}"
                )))
            }
        };
        let raw = value.trim();
        let num = raw.strip_suffix("ms").unwrap_or(raw).trim();
        let ms = match num.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => v,
            _ => {
                return Err(MetricsError::Slo(format!(
                    "`{part}`: `{raw}` is not a positive number of milliseconds"
                )))
            }
        };
        if slot.is_some() {
            return Err(MetricsError::Slo(format!(
                "`{key}` given twice; {SLO_KEYS}"
            )));
        }
        *slot = Some(ms);
    }
    Ok(slo)
}

/// Summary statistics of one metric over requests (or, for `itl`, over gaps).
/// Milliseconds for latencies, tok/s for `per_user_output_throughput`. All `None`
/// when `count` is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: usize,
    pub mean: Option<f64>,
    /// Population standard deviation (ddof = 0), as numpy and vLLM.
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Sorts `values` in place and summarizes them.
pub fn distribution(values: &mut [f64]) -> Distribution {
    if values.is_empty() {
        return Distribution::default();
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    // Two passes, as numpy: the mean first, then the mean squared deviation.
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Distribution {
        count: values.len(),
        mean: Some(mean),
        std: Some(var.sqrt()),
        min: values.first().copied(),
        median: percentile(values, 50.0),
        p90: percentile(values, 90.0),
        p95: percentile(values, 95.0),
        p99: percentile(values, 99.0),
        max: values.last().copied(),
    }
}

/// One request that did not complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub id: RequestId,
    /// `None`: the request never finished (still in flight when the run ended).
    pub reason: Option<FinishReason>,
    /// First line of the error message, if any.
    pub error: Option<String>,
}

/// First line of an error message, trimmed.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Metrics of one load point. See [`catalog::CATALOG`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests that ended with length or stop.
    pub completed: usize,
    /// Every other request: error, timeout, abort, unfinished.
    pub failed: usize,
    /// Reason name ([`FinishReason::name`]) → count, over the failed requests.
    pub failed_by_reason: BTreeMap<String, usize>,
    pub failures: Vec<Failure>,
    /// Prompt tokens of completed requests.
    pub total_input_tokens: u64,
    /// Output tokens of completed requests.
    pub total_output_tokens: u64,
    /// Seconds from the first submit to the last finish; `None` when zero or unknown.
    pub duration: Option<f64>,
    pub request_throughput: Option<f64>,
    pub output_throughput: Option<f64>,
    pub total_token_throughput: Option<f64>,
    /// `None` without an SLO.
    pub request_goodput: Option<f64>,
    /// `None` without an SLO.
    pub good_requests: Option<usize>,
    pub ttft: Distribution,
    pub tpot: Distribution,
    pub itl: Distribution,
    pub e2el: Distribution,
    pub per_user_output_throughput: Distribution,
    /// `None` when no successful request carries an engine first-token stamp.
    pub engine_ttft_delta: Option<Distribution>,
    /// Prompt tokens served from the engine's prefix cache, over completed requests
    /// that report it; `None` when none does.
    #[serde(default)]
    pub cached_prompt_tokens: Option<u64>,
    /// `cached_prompt_tokens` / their prompt tokens, over the same requests.
    #[serde(default)]
    pub prefix_cache_hit_rate: Option<f64>,
    /// Requests with a scheduled arrival (open loops, and a conversation's later turns):
    /// submit − scheduled arrival, over every submitted request. `None` without any.
    #[serde(default)]
    pub queue_time: Option<Distribution>,
    /// Open loops: submit − max(scheduled arrival, slot free), every submitted request.
    #[serde(default)]
    pub schedule_lag: Option<Distribution>,
    /// Open loops: first token − scheduled arrival, per successful request.
    #[serde(default)]
    pub ttft_from_arrival: Option<Distribution>,
    /// The point's rounds and how sure its main figures are.
    #[serde(default)]
    pub rounds: Rounds,
    /// `--dataset conversations`: the requests by turn index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_turn: Option<Vec<conversations::TurnSummary>>,
    /// `--dataset conversations`: the point's conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<conversations::ConversationSummary>,
    /// Scored workloads: the point's task accuracy, from its `scores.jsonl` lines
    /// ([`accuracy::summarize`]); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<accuracy::Accuracy>,
    /// A layout over several devices: the point's figures per device
    /// ([`devices::per_device`]); `None` on one device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_device: Option<devices::PerDevice>,
}

/// The rounds of a point and the estimates over them. See [`catalog::CATALOG`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rounds {
    /// Rounds with a completed request (batches, or completed requests).
    pub count: usize,
    /// Equal time windows the throughput was sampled over (`None` in batch mode,
    /// where each batch is a sample).
    pub throughput_windows: Option<usize>,
    pub output_throughput: Estimate,
    pub mean_tpot_ms: Estimate,
    pub mean_ttft_ms: Estimate,
}

impl Rounds {
    /// Throughput's CV is above [`confidence::NOISY_CV`].
    pub fn is_noisy(&self) -> bool {
        self.output_throughput.is_noisy()
    }
}

/// One request's own metrics (a row of `requests.csv`); computed for any request,
/// successful or not, from whatever tokens it received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestMetrics {
    pub ttft_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
    /// `None` below 2 output tokens.
    pub tpot_ms: Option<f64>,
    pub output_tokens: u64,
    /// The engine's own first-token stamp − submit, when the engine reports one.
    pub engine_ttft_ms: Option<f64>,
    /// Prompt tokens served from the engine's prefix cache, when it reports them.
    #[serde(default)]
    pub cached_prompt_tokens: Option<u32>,
    /// Submit − scheduled arrival (open loops).
    pub queue_time_ms: Option<f64>,
    /// Submit − max(scheduled arrival, slot free) (open loops).
    pub schedule_lag_ms: Option<f64>,
    /// First token − scheduled arrival (open loops).
    pub ttft_from_arrival_ms: Option<f64>,
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn signed_ns_to_ms(a: u64, b: u64) -> f64 {
    (a as i128 - b as i128) as f64 / 1e6
}

/// The metrics of one request. See [`catalog::CATALOG`].
pub fn per_request(r: &RequestTrace) -> RequestMetrics {
    let n = r.output_tokens();
    let first = r.token_ns.first().copied();
    let last = r.token_ns.last().copied();
    let per_token = match (first, last) {
        (Some(f), Some(l)) if n >= 2 => Some((l - f.min(l)) as f64 / (n - 1) as f64 / 1e6),
        _ => None,
    };
    let engine_ttft_ms = r
        .engine
        .as_ref()
        .and_then(|e| e.first_token_ns)
        .map(|e| signed_ns_to_ms(e.0, r.submit_ns.0));
    let intended = r.intended_ns;
    // The later of arrival and slot free: when the driver could first have submitted.
    let ready = intended.map(|i| r.slot_free_ns.map_or(i, |f| f.max(i)));
    RequestMetrics {
        ttft_ms: first.map(ns_to_ms),
        e2el_ms: last.map(ns_to_ms),
        tpot_ms: per_token,
        output_tokens: n,
        engine_ttft_ms,
        cached_prompt_tokens: r.cached_prompt_tokens,
        queue_time_ms: intended.map(|i| signed_ns_to_ms(r.submit_ns.0, i.0)),
        schedule_lag_ms: ready.map(|t| signed_ns_to_ms(r.submit_ns.0, t.0)),
        ttft_from_arrival_ms: intended
            .zip(r.first_token_ns())
            .map(|(i, f)| signed_ns_to_ms(f.0, i.0)),
    }
}

/// `cached_prompt_tokens` summed over `requests` that report them, and that sum over
/// the same requests' prompt tokens; both `None` when none reports (not reported,
/// never 0).
pub(crate) fn prefix_cache<'a>(
    requests: impl Iterator<Item = &'a RequestTrace>,
) -> (Option<u64>, Option<f64>) {
    let mut cache: Option<(u64, u64)> = None;
    for r in requests {
        if let Some(c) = r.cached_prompt_tokens {
            let (cached, prompt) = cache.get_or_insert((0, 0));
            *cached += u64::from(c);
            *prompt += u64::from(r.input_len);
        }
    }
    (
        cache.map(|(c, _)| c),
        cache.and_then(|(c, p)| (p > 0).then(|| c as f64 / p as f64)),
    )
}

/// `x / duration`, or `None` when there is no usable window.
fn rate(x: f64, duration: Option<f64>) -> Option<f64> {
    duration.map(|d| x / d)
}

/// Summarizes the requests of one load point (warmup excluded by the caller).
pub fn summarize(records: &[RequestTrace], slo: &Slo) -> Summary {
    let mut s = Summary::default();
    let (mut ttft, mut tpot, mut itl, mut e2el, mut per_user, mut delta) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut queue, mut lag, mut from_arrival) = (Vec::new(), Vec::new(), Vec::new());
    let mut good = 0usize;
    let mut first_submit: Option<u64> = None;
    let mut last_finish: Option<u64> = None;

    for r in records {
        if let Some(f) = r.finish_ns {
            first_submit = Some(first_submit.map_or(r.submit_ns.0, |t| t.min(r.submit_ns.0)));
            last_finish = Some(last_finish.map_or(f.0, |t| t.max(f.0)));
        }
        let m = per_request(r);
        // Every submitted request waited and was submitted, whatever its outcome.
        queue.extend(m.queue_time_ms);
        lag.extend(m.schedule_lag_ms);
        if !r.is_success() {
            s.failed += 1;
            *s.failed_by_reason
                .entry(FinishReason::name(r.finish_reason).to_string())
                .or_insert(0) += 1;
            s.failures.push(Failure {
                id: r.id,
                reason: r.finish_reason,
                error: r.error.as_deref().map(|e| first_line(e).to_string()),
            });
            continue;
        }
        s.completed += 1;
        from_arrival.extend(m.ttft_from_arrival_ms);
        s.total_input_tokens += u64::from(r.input_len);
        s.total_output_tokens += m.output_tokens;
        ttft.extend(m.ttft_ms);
        e2el.extend(m.e2el_ms);
        tpot.extend(m.tpot_ms);
        if let Some(t) = m.tpot_ms.filter(|&t| t > 0.0) {
            per_user.push(1e3 / t);
        }
        itl.extend(
            r.token_ns
                .windows(2)
                .map(|w| ns_to_ms(w[1].saturating_sub(w[0]))),
        );
        if let (Some(h), Some(e)) = (
            r.first_token_ns(),
            r.engine.as_ref().and_then(|e| e.first_token_ns),
        ) {
            delta.push(signed_ns_to_ms(h.0, e.0));
        }
        if slo.is_met(&m) {
            good += 1;
        }
    }

    s.duration = match (first_submit, last_finish) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
        _ => None,
    };
    s.request_throughput = rate(s.completed as f64, s.duration);
    s.output_throughput = rate(s.total_output_tokens as f64, s.duration);
    s.total_token_throughput = rate(
        (s.total_input_tokens + s.total_output_tokens) as f64,
        s.duration,
    );
    if !slo.is_empty() {
        s.good_requests = Some(good);
        s.request_goodput = rate(good as f64, s.duration);
    }
    s.ttft = distribution(&mut ttft);
    s.tpot = distribution(&mut tpot);
    s.itl = distribution(&mut itl);
    s.e2el = distribution(&mut e2el);
    s.per_user_output_throughput = distribution(&mut per_user);
    s.engine_ttft_delta = (!delta.is_empty()).then(|| distribution(&mut delta));
    (s.cached_prompt_tokens, s.prefix_cache_hit_rate) =
        prefix_cache(records.iter().filter(|r| r.is_success()));
    s.queue_time = (!queue.is_empty()).then(|| distribution(&mut queue));
    s.schedule_lag = (!lag.is_empty()).then(|| distribution(&mut lag));
    s.ttft_from_arrival = (!from_arrival.is_empty()).then(|| distribution(&mut from_arrival));
    s.rounds = rounds(records, s.duration.and(first_submit));
    s.by_turn = conversations::by_turn(records);
    s.conversations = conversations::conversations(records);
    s
}

/// The point's rounds and the estimates over them (see [`catalog::CATALOG`]).
/// `span_start` is the first submit of the point (None: no window).
fn rounds(records: &[RequestTrace], span_start: Option<u64>) -> Rounds {
    let ok: Vec<&RequestTrace> = records.iter().filter(|r| r.is_success()).collect();
    if ok.is_empty() {
        return Rounds::default();
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    if ok.iter().all(|r| r.round.is_some()) {
        // Batch mode: one sample per batch.
        let mut by_round: BTreeMap<u32, Vec<&RequestTrace>> = BTreeMap::new();
        for r in &ok {
            by_round.entry(r.round.unwrap_or(0)).or_default().push(r);
        }
        let (mut thr, mut tpot, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
        for reqs in by_round.values() {
            let start = reqs.iter().map(|r| r.submit_ns.0).min().unwrap_or(0);
            let end = reqs
                .iter()
                .filter_map(|r| r.finish_ns.map(|f| f.0))
                .max()
                .unwrap_or(0);
            let tokens: u64 = reqs.iter().map(|r| r.output_tokens()).sum();
            if end > start {
                thr.push(tokens as f64 / ((end - start) as f64 / 1e9));
            }
            let m: Vec<RequestMetrics> = reqs.iter().map(|r| per_request(r)).collect();
            let tp: Vec<f64> = m.iter().filter_map(|m| m.tpot_ms).collect();
            let tt: Vec<f64> = m.iter().filter_map(|m| m.ttft_ms).collect();
            tpot.extend(mean(&tp));
            ttft.extend(mean(&tt));
        }
        return Rounds {
            count: by_round.len(),
            throughput_windows: None,
            output_throughput: Estimate::of(&thr),
            mean_tpot_ms: Estimate::of(&tpot),
            mean_ttft_ms: Estimate::of(&ttft),
        };
    }
    // Other modes: each request is a round for TTFT and TPOT; throughput is sampled
    // over equal windows of the span, by the stamp of each token event.
    let m: Vec<RequestMetrics> = ok.iter().map(|r| per_request(r)).collect();
    let tpot: Vec<f64> = m.iter().filter_map(|m| m.tpot_ms).collect();
    let ttft: Vec<f64> = m.iter().filter_map(|m| m.ttft_ms).collect();
    let end = records
        .iter()
        .filter_map(|r| r.finish_ns.map(|f| f.0))
        .max();
    let mut thr = Vec::new();
    let mut windows = None;
    if let (Some(start), Some(end)) = (span_start, end) {
        let w = ((ok.len() as f64).sqrt().floor() as usize).clamp(2, 30);
        let len = (end - start) as f64 / w as f64;
        let mut tokens = vec![0u64; w];
        for r in &ok {
            for (i, &off) in r.token_ns.iter().enumerate() {
                let at = (r.submit_ns.0 + off).saturating_sub(start) as f64;
                let k = ((at / len) as usize).min(w - 1);
                tokens[k] += u64::from(r.count_at(i));
            }
        }
        thr = tokens.iter().map(|&t| t as f64 / (len / 1e9)).collect();
        windows = Some(w);
    }
    Rounds {
        count: ok.len(),
        throughput_windows: windows,
        output_throughput: Estimate::of(&thr),
        mean_tpot_ms: Estimate::of(&tpot),
        mean_ttft_ms: Estimate::of(&ttft),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::MonoNs;
    use crate::core::request::EngineStamps;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_000_000_000;

    /// A request submitted at `submit_ms` (after T0) with one event per token at
    /// `offsets_ms` after submit, finished at `finish_ms` (after T0).
    fn req(
        id: u64,
        prompt: u32,
        submit_ms: u64,
        offsets_ms: &[u64],
        finish_ms: Option<u64>,
        reason: Option<FinishReason>,
    ) -> RequestTrace {
        let submit = MonoNs(T0 + submit_ms * MS);
        let mut r = RequestTrace::new(id, 0, prompt, 16, submit);
        for &o in offsets_ms {
            r.record_tokens(1, MonoNs(submit.0 + o * MS));
        }
        r.finish_ns = finish_ms.map(|f| MonoNs(T0 + f * MS));
        r.finish_reason = reason;
        r
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// r0: submit 0, tokens at +100, +120, +150 ms, finish 150.
    /// r1: submit 10, tokens at +200, +210, +250, +260, +280, finish 500 (finish-only event).
    /// r2: submit 20, tokens at +150, +190, finish 215. r0 and r1 carry engine stamps.
    fn three() -> Vec<RequestTrace> {
        let ok = Some(FinishReason::Length);
        let mut r0 = req(0, 10, 0, &[100, 120, 150], Some(150), ok);
        r0.engine = Some(EngineStamps {
            first_token_ns: Some(MonoNs(T0 + 99 * MS + MS / 2)),
            ..Default::default()
        });
        let mut r1 = req(
            1,
            20,
            10,
            &[200, 210, 250, 260, 280],
            Some(500),
            Some(FinishReason::Stop),
        );
        r1.engine = Some(EngineStamps {
            first_token_ns: Some(MonoNs(T0 + 209 * MS)),
            ..Default::default()
        });
        let r2 = req(2, 30, 20, &[150, 190], Some(215), ok);
        vec![r0, r1, r2]
    }

    #[test]
    fn three_requests_every_field() {
        let s = summarize(&three(), &Slo::default());
        assert_eq!(s.completed, 3);
        assert_eq!(s.failed, 0);
        assert!(s.failures.is_empty() && s.failed_by_reason.is_empty());
        assert_eq!(s.total_input_tokens, 60);
        assert_eq!(s.total_output_tokens, 10);
        assert_eq!(s.duration, Some(0.5));
        assert_eq!(s.request_throughput, Some(6.0));
        assert_eq!(s.output_throughput, Some(20.0));
        assert_eq!(s.total_token_throughput, Some(140.0));
        assert_eq!(s.request_goodput, None);
        assert_eq!(s.good_requests, None);

        // ttft [100, 200, 150]
        let t = &s.ttft;
        assert_eq!(t.count, 3);
        assert_eq!(t.mean, Some(150.0));
        assert_eq!(t.std, Some((5000.0f64 / 3.0).sqrt()));
        assert_eq!(
            (t.min, t.median, t.max),
            (Some(100.0), Some(150.0), Some(200.0))
        );
        assert!(close(t.p90, 190.0) && close(t.p95, 195.0) && close(t.p99, 199.0));

        // e2el [150, 280, 190]
        let e = &s.e2el;
        assert_eq!(e.mean, Some(620.0 / 3.0));
        assert_eq!(
            (e.min, e.median, e.max),
            (Some(150.0), Some(190.0), Some(280.0))
        );
        assert!(close(e.p90, 262.0)); // 190 + 0.8 * 90

        // tpot [50/2, 80/4, 40/1] = [25, 20, 40]: (e2el - ttft) / (n - 1), which is also
        // (last - first token) / (n - 1), AIPerf's ITL, by hand from the offsets above.
        assert_eq!(s.tpot.count, 3);
        assert_eq!(s.tpot.mean, Some(85.0 / 3.0));
        assert_eq!(
            (s.tpot.min, s.tpot.median, s.tpot.max),
            (Some(20.0), Some(25.0), Some(40.0))
        );

        // itl, pooled: [20, 30] + [10, 40, 10, 20] + [40]
        let i = &s.itl;
        assert_eq!(i.count, 7);
        assert_eq!(i.mean, Some(170.0 / 7.0));
        assert_eq!(
            (i.min, i.median, i.max),
            (Some(10.0), Some(20.0), Some(40.0))
        );
        assert!(close(i.p90, 40.0)); // rank 5.4 between 40 and 40

        // per user: 1000 / tpot = [40, 50, 25]
        let u = &s.per_user_output_throughput;
        assert_eq!(u.mean, Some(115.0 / 3.0));
        assert_eq!(
            (u.min, u.median, u.max),
            (Some(25.0), Some(40.0), Some(50.0))
        );

        // engine: 100 - 99.5 and 210 - 209
        let d = s.engine_ttft_delta.unwrap();
        assert_eq!(d.count, 2);
        assert_eq!(d.mean, Some(0.75));
        assert_eq!((d.min, d.max), (Some(0.5), Some(1.0)));
    }

    #[test]
    fn prefix_cache_hit_rate_counts_only_requests_that_report() {
        let mut rs = three();
        // No engine says: not reported, never 0.
        let s = summarize(&rs, &Slo::default());
        assert_eq!(
            (s.cached_prompt_tokens, s.prefix_cache_hit_rate),
            (None, None)
        );
        // Two of three say (prompts of 10 and 20 tokens): 6 cached of 30.
        rs[0].cached_prompt_tokens = Some(0);
        rs[1].cached_prompt_tokens = Some(6);
        let s = summarize(&rs, &Slo::default());
        assert_eq!(s.cached_prompt_tokens, Some(6));
        let (p0, p1) = (rs[0].input_len, rs[1].input_len);
        assert!(close(s.prefix_cache_hit_rate, 6.0 / f64::from(p0 + p1)));
        assert_eq!(per_request(&rs[1]).cached_prompt_tokens, Some(6));
        // A failed request's cache hits are not counted.
        rs[1].finish_reason = Some(FinishReason::Error);
        let s = summarize(&rs, &Slo::default());
        assert_eq!(
            (s.cached_prompt_tokens, s.prefix_cache_hit_rate),
            (Some(0), Some(0.0))
        );
    }

    #[test]
    fn queue_time_and_schedule_lag_from_the_arrival_and_the_slot() {
        // Arrived at 0, its slot freed at 30 ms, submitted at 31 ms, first token +100.
        let mut r = req(
            0,
            10,
            31,
            &[100, 110],
            Some(141),
            Some(FinishReason::Length),
        );
        r.intended_ns = Some(MonoNs(T0));
        r.slot_free_ns = Some(MonoNs(T0 + 30 * MS));
        let m = per_request(&r);
        assert!(close(m.queue_time_ms, 31.0));
        assert!(close(m.schedule_lag_ms, 1.0));
        assert!(close(m.ttft_from_arrival_ms, 131.0));
        // Without a slot wait the lag is the whole queue time.
        r.slot_free_ns = None;
        assert!(close(per_request(&r).schedule_lag_ms, 31.0));
        let s = summarize(&[r], &Slo::default());
        assert_eq!(s.queue_time.as_ref().map(|d| d.count), Some(1));
        assert!(close(s.ttft_from_arrival.unwrap().median, 131.0));
        // Batch and concurrency runs have none of them.
        let s = summarize(&three(), &Slo::default());
        assert!(
            s.queue_time.is_none() && s.schedule_lag.is_none() && s.ttft_from_arrival.is_none()
        );
    }

    #[test]
    fn per_request_fields() {
        let rs = three();
        let m = per_request(&rs[0]);
        assert_eq!(
            m,
            RequestMetrics {
                ttft_ms: Some(100.0),
                e2el_ms: Some(150.0),
                tpot_ms: Some(25.0),
                output_tokens: 3,
                engine_ttft_ms: Some(99.5),
                cached_prompt_tokens: None,
                ..Default::default()
            }
        );
        assert_eq!(per_request(&rs[2]).engine_ttft_ms, None);
    }

    #[test]
    fn one_token_outputs() {
        let ok = Some(FinishReason::Stop);
        let rs = vec![
            req(0, 5, 0, &[40], Some(40), ok),
            req(1, 5, 0, &[60], Some(100), ok),
        ];
        let s = summarize(&rs, &Slo::default());
        assert_eq!(s.completed, 2);
        assert_eq!(s.ttft.count, 2);
        assert_eq!(s.ttft.mean, Some(50.0));
        assert_eq!(s.e2el.mean, Some(50.0));
        assert_eq!(s.tpot, Distribution::default());
        assert_eq!(s.itl, Distribution::default());
        assert_eq!(s.per_user_output_throughput.count, 0);
        assert_eq!(s.engine_ttft_delta, None);
        let m = per_request(&rs[0]);
        assert_eq!(m.tpot_ms, None);
        assert_eq!(s.output_throughput, Some(20.0)); // 2 tokens / 0.1 s
    }

    #[test]
    fn failures_counted_listed_and_excluded() {
        let mut rs = three();
        let mut t = req(3, 40, 0, &[50], Some(1000), Some(FinishReason::Timeout));
        t.error = Some("no token within 30s\n  detail line".into());
        let e = req(4, 40, 0, &[], Some(300), Some(FinishReason::Error));
        let a = req(5, 40, 0, &[30, 60], Some(400), Some(FinishReason::Abort));
        let u = req(6, 40, 0, &[30], None, None);
        rs.extend([t, e, a, u]);
        let s = summarize(&rs, &Slo::default());
        assert_eq!(s.completed, 3);
        assert_eq!(s.failed, 4);
        let by: Vec<(&str, usize)> = s
            .failed_by_reason
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            by,
            vec![
                ("abort", 1),
                ("error", 1),
                ("timeout", 1),
                ("unfinished", 1)
            ]
        );
        assert_eq!(
            s.failures[0],
            Failure {
                id: 3,
                reason: Some(FinishReason::Timeout),
                error: Some("no token within 30s".into())
            }
        );
        assert_eq!(
            s.failures.iter().map(|f| f.id).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        assert_eq!(s.failures[3].reason, None);
        // Latencies and token totals are those of the three completed requests...
        let ok = summarize(&three(), &Slo::default());
        assert_eq!(
            (s.ttft.clone(), s.itl.clone(), s.e2el.clone()),
            (ok.ttft, ok.itl, ok.e2el)
        );
        assert_eq!(s.total_output_tokens, 10);
        // ...but the window runs to the failed requests' last finish (1000 ms).
        assert_eq!(s.duration, Some(1.0));
        assert_eq!(s.request_throughput, Some(3.0));
    }

    #[test]
    fn zero_or_no_duration_gives_no_throughput() {
        let s = summarize(&[], &Slo::default());
        assert_eq!((s.completed, s.failed), (0, 0));
        assert_eq!(s.duration, None);
        assert_eq!(s.request_throughput, None);
        assert_eq!(s.ttft.mean, None);

        // Finish stamped at the submit instant: zero-length window.
        let rs = vec![req(0, 5, 0, &[0], Some(0), Some(FinishReason::Length))];
        let s = summarize(&rs, &parse_slo("ttft=1").unwrap());
        assert_eq!(s.duration, None);
        assert_eq!(s.output_throughput, None);
        assert_eq!(s.total_token_throughput, None);
        assert_eq!(s.request_goodput, None);
        assert_eq!(s.good_requests, Some(1));
        assert_eq!(s.ttft.mean, Some(0.0));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"request_throughput\":null"), "{json}");

        // No request finished at all.
        let rs = vec![req(0, 5, 0, &[10], None, None)];
        assert_eq!(summarize(&rs, &Slo::default()).duration, None);
    }

    #[test]
    fn multi_token_events() {
        // Events: 1 token at +100, 3 tokens at +130, 2 tokens at +190 ms → n = 6.
        let submit = MonoNs(T0);
        let mut r = RequestTrace::new(0, 0, 8, 16, submit);
        r.record_tokens(1, MonoNs(T0 + 100 * MS));
        r.record_tokens(3, MonoNs(T0 + 130 * MS));
        r.record_tokens(2, MonoNs(T0 + 190 * MS));
        r.finish_ns = Some(MonoNs(T0 + 200 * MS));
        r.finish_reason = Some(FinishReason::Length);
        let m = per_request(&r);
        assert_eq!(m.output_tokens, 6);
        assert_eq!(m.ttft_ms, Some(100.0));
        assert_eq!(m.e2el_ms, Some(190.0));
        assert_eq!(m.tpot_ms, Some(18.0)); // 90 / 5
        let s = summarize(&[r.clone()], &Slo::default());
        assert_eq!(s.total_output_tokens, 6);
        assert_eq!(s.output_throughput, Some(30.0)); // 6 / 0.2 s
                                                     // One gap per event, not per token: [30, 60].
        assert_eq!(s.itl.count, 2);
        assert_eq!((s.itl.min, s.itl.max), (Some(30.0), Some(60.0)));

        // All tokens in one event: tpot 0, no per-user rate (it would be infinite).
        let mut one = RequestTrace::new(1, 0, 8, 16, submit);
        one.record_tokens(4, MonoNs(T0 + 50 * MS));
        one.finish_ns = Some(MonoNs(T0 + 50 * MS));
        one.finish_reason = Some(FinishReason::Length);
        let s = summarize(&[one], &Slo::default());
        assert_eq!(s.tpot.mean, Some(0.0));
        assert_eq!(s.itl.count, 0);
        assert_eq!(s.per_user_output_throughput.count, 0);
    }

    #[test]
    fn distribution_sorts_and_summarizes() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        let d = distribution(&mut v);
        assert_eq!(v, x); // sorted in place
        assert_eq!(d.count, 4);
        assert_eq!(d.mean, Some(2.5));
        assert_eq!(d.std, Some(1.25f64.sqrt())); // np.std([1,2,3,4]) = 1.118033988749895
        assert_eq!(distribution(&mut []), Distribution::default());
    }

    #[test]
    fn goodput_with_each_slo() {
        let rs = three(); // ttft [100, 200, 150], tpot [25, 20, 40], e2el [150, 280, 190]
        let good = |s: &str| {
            let s = summarize(&rs, &parse_slo(s).unwrap());
            (s.good_requests, s.request_goodput)
        };
        assert_eq!(good("ttft=150"), (Some(2), Some(4.0)));
        assert_eq!(good("tpot=25"), (Some(2), Some(4.0)));
        assert_eq!(good("e2el=200"), (Some(2), Some(4.0)));
        assert_eq!(good("e2e=149.9"), (Some(0), Some(0.0)));
        assert_eq!(good("ttft=150,tpot=25"), (Some(1), Some(2.0)));
        assert_eq!(good("ttft=1000,tpot=1000,e2el=1000"), (Some(3), Some(6.0)));

        // A 1-token request has no tpot and passes a tpot SLO, but not a ttft it misses.
        let one = vec![req(0, 5, 0, &[40], Some(100), Some(FinishReason::Stop))];
        let s = summarize(&one, &parse_slo("tpot=1").unwrap());
        assert_eq!(s.good_requests, Some(1));
        let s = summarize(&one, &parse_slo("tpot=1,ttft=39").unwrap());
        assert_eq!(s.good_requests, Some(0));
        // Failed requests are never good.
        let bad = vec![req(0, 5, 0, &[1], Some(100), Some(FinishReason::Error))];
        assert_eq!(
            summarize(&bad, &parse_slo("ttft=1000").unwrap()).good_requests,
            Some(0)
        );
    }

    #[test]
    fn parse_slo_values_and_errors() {
        assert_eq!(
            parse_slo("ttft=500, tpot=50ms,e2e=2000").unwrap(),
            Slo {
                ttft_ms: Some(500.0),
                tpot_ms: Some(50.0),
                e2el_ms: Some(2000.0)
            }
        );
        assert_eq!(parse_slo("E2EL=1.5").unwrap().e2el_ms, Some(1.5));
        let err = |s: &str| parse_slo(s).unwrap_err().to_string();
        let e = err("ttf=500");
        assert!(
            e.contains("unknown key `ttf`") && e.contains("ttft, tpot, e2el"),
            "{e}"
        );
        let e = err("ttft=abc");
        assert!(
            e.contains("`ttft=abc`") && e.contains("positive number"),
            "{e}"
        );
        assert!(err("ttft=-5").contains("positive number"));
        assert!(err("ttft=0").contains("positive number"));
        assert!(err("ttft=inf").contains("positive number"));
        assert!(err("ttft").contains("not KEY=MS"));
        assert!(err("").contains("empty"));
        assert!(err("e2e=1,e2el=2").contains("given twice"));
        assert!(err("ttft=1,").contains("not KEY=MS"));
        for e in [err("x=1"), err("ttft=x"), err("ttft")] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn batch_rounds_are_samples() {
        let ok = Some(FinishReason::Length);
        let mut rs = vec![
            req(0, 5, 0, &[100, 200], Some(200), ok),
            req(1, 5, 0, &[100, 300], Some(300), ok),
            req(2, 5, 400, &[100, 200], Some(600), ok),
            req(3, 5, 400, &[100, 200], Some(600), ok),
        ];
        for (i, r) in rs.iter_mut().enumerate() {
            r.round = Some(i as u32 / 2);
        }
        let r = summarize(&rs, &Slo::default()).rounds;
        assert_eq!((r.count, r.throughput_windows), (2, None));
        // Round 0: 4 tokens over 0.3 s; round 1: 4 tokens over 0.2 s.
        let t = &r.output_throughput;
        assert_eq!(t.n, 2);
        assert!(close(t.mean, (4.0 / 0.3 + 20.0) / 2.0));
        // Mean TPOT per batch: (100 + 200) / 2 and 100; TTFT 100 in both.
        assert!(close(r.mean_tpot_ms.mean, 125.0));
        assert!(close(r.mean_ttft_ms.mean, 100.0));
        assert_eq!(r.mean_ttft_ms.ci95_half_width, Some(0.0));
        assert!(r.output_throughput.ci95_half_width.unwrap() > 0.0);
    }

    #[test]
    fn time_windows_average_to_the_output_throughput() {
        let s = summarize(&three(), &Slo::default());
        let r = &s.rounds;
        // 3 requests: floor(sqrt 3) = 1, clamped to 2 windows over [0, 500] ms.
        assert_eq!((r.count, r.throughput_windows), (3, Some(2)));
        // r0 tokens at 100, 120, 150; r1 at 210, 220, 260, 270, 290; r2 at 170, 210.
        // [0, 250): 3 + 2 + 2 = 7 tokens; [250, 500): 3 tokens; 0.25 s windows.
        assert!(close(
            r.output_throughput.mean,
            s.output_throughput.unwrap()
        ));
        let h = r.output_throughput.ci95_half_width.unwrap();
        // s = |28 - 12| / √2, half = 12.706 × s / √2 = 12.706 × 8.
        assert!((h - 12.706 * 8.0).abs() < 0.01, "{h}");
        assert_eq!(r.mean_tpot_ms.n, 3);
        assert!(close(r.mean_tpot_ms.mean, 85.0 / 3.0));
    }

    #[test]
    fn every_summary_field_is_in_the_catalog() {
        // A Summary field without a descriptor would be computed and never shown.
        let json = serde_json::to_value(Summary::default()).unwrap();
        let named: Vec<&str> = catalog::CATALOG.iter().map(|m| m.name).collect();
        for field in json.as_object().unwrap().keys() {
            let shown = named.contains(&field.as_str())
                // Lists, rendered by the JSON exporter beside the flat keys.
                || ["failed_by_reason", "failures"].contains(&field.as_str());
            assert!(shown, "{field}");
        }
    }
}
