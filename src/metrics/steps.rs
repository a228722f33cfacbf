//! Step figures: what a point's engine steps held, from its `steps.jsonl` records. Pure
//! functions of the records, as the rest of [`super`].
//!
//! A step's *batch* is the requests it computed (prefill + decode requests) where the
//! engine reports them, else its `running` gauge. Time-weighted means weight each step
//! by the wall time it closes, from the previous poll's return to its own (the driver's
//! gap plus the engine call), so the weights tile the busy part of the phase. Step time
//! is the host time of the engine call. "Step time against batch composition" is a
//! least-squares line through the decode-only steps, step ms = fixed + per_seq · decode
//! requests (the calibration engine's `decode_ms + decode_ms_per_seq·R` is its known
//! answer), and the mean step time of each decode batch size. A record that folds
//! several engine steps (the driver fell behind) counts its mean batch and stays out
//! of the step-time figures, since its call covered more than one step.

use crate::core::measure::{Figure, Measure};
use crate::trace::StepRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The decode-only steps of one batch size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeBatch {
    /// Decode requests in the step.
    pub batch: u32,
    pub steps: u64,
    /// Mean host time of the engine call (ms).
    pub step_ms: f64,
}

/// A point's steps, summarised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Where the engine's fields come from and what it cannot give (the engine's
    /// `step_stats_source`); `None`: only the harness's own timing of each poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Step records (polls with requests in flight).
    pub steps: u64,
    /// Engine steps they covered, where the engine counts them.
    pub engine_steps: Option<u64>,
    pub batch_mean: Option<f64>,
    pub waiting_mean: Option<f64>,
    pub waiting_peak: Option<u32>,
    pub kv_usage_mean: Option<f64>,
    pub kv_usage_peak: Option<f64>,
    pub preemptions: Option<u64>,
    pub prefill_tokens: Option<u64>,
    pub decode_tokens: Option<u64>,
    pub prefill_tokens_per_step: Option<f64>,
    pub decode_tokens_per_step: Option<f64>,
    /// Share of the steps that computed prompt tokens.
    pub prefill_step_share: Option<f64>,
    /// Mean engine-call ms of steps with prefill and of decode-only steps.
    pub prefill_step_ms: Option<f64>,
    pub decode_step_ms: Option<f64>,
    /// The decode-only line: step ms = fixed + per_seq · decode requests (≥ 2 sizes).
    pub decode_step_ms_fixed: Option<f64>,
    pub decode_step_ms_per_seq: Option<f64>,
    /// Decode-only steps by batch size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_decode_batch: Vec<DecodeBatch>,
    /// Prefix-cache hits / lookups over the steps, as the engine counts them per step.
    pub prefix_hit_rate: Option<f64>,
    /// Speculative decoding: accepted / drafted tokens.
    pub spec_acceptance: Option<f64>,
    /// The driver's own time before each step (µs): mean and largest.
    pub gap_us_mean: Option<f64>,
    pub gap_us_max: Option<f64>,
}

/// Sums a field over the records that report it; `None` when none does.
fn total<T: Into<u64>>(steps: &[StepRecord], f: impl Fn(&StepRecord) -> Option<T>) -> Option<u64> {
    steps
        .iter()
        .filter_map(|s| f(s).map(Into::into))
        .fold(None, |acc, v| Some(acc.unwrap_or(0) + v))
}

/// Mean of a field over the records that report it.
fn mean(steps: &[StepRecord], f: impl Fn(&StepRecord) -> Option<f64>) -> Option<f64> {
    let (sum, n) = steps
        .iter()
        .filter_map(f)
        .fold((0.0, 0u64), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Time-weighted mean of a field over the records that report it.
fn weighted(steps: &[StepRecord], f: impl Fn(&StepRecord) -> Option<f64>) -> Option<f64> {
    let (sum, w) = steps.iter().fold((0.0, 0.0), |(s, w), r| match f(r) {
        Some(v) => {
            let t = (r.gap_ns + r.engine_call_ns()) as f64;
            (s + v * t, w + t)
        }
        None => (s, w),
    });
    (w > 0.0).then(|| sum / w)
}

/// The requests a step computed (see the module docs); a record that folds several
/// engine steps gives their mean.
pub fn batch(s: &StepRecord) -> Option<f64> {
    match (s.engine.prefill_requests, s.engine.decode_requests) {
        (Some(p), Some(d)) => {
            Some(f64::from(p + d) / f64::from(s.engine.engine_steps.unwrap_or(1).max(1)))
        }
        _ => s.engine.running.map(f64::from),
    }
}

/// One engine step in the record (or the engine does not count them): its call time
/// is that step's, so it enters the step-time figures.
fn single(s: &StepRecord) -> bool {
    s.engine.engine_steps.is_none_or(|n| n == 1)
}

fn call_ms(s: &StepRecord) -> f64 {
    s.engine_call_ns() as f64 / 1e6
}

/// A point's step figures; `source` is the engine's `step_stats_source`.
pub fn summarize(steps: &[StepRecord], source: Option<String>) -> StepSummary {
    let has_prefill = |s: &StepRecord| {
        s.engine
            .prefill_tokens
            .map(|t| t > 0)
            .or(s.engine.prefill_requests.map(|r| r > 0))
    };
    let decode_only: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| {
            single(s)
                && has_prefill(s) == Some(false)
                && s.engine.decode_requests.is_some_and(|d| d > 0)
        })
        .collect();
    let mut by_batch: BTreeMap<u32, (u64, f64)> = BTreeMap::new();
    for s in &decode_only {
        let row = by_batch
            .entry(s.engine.decode_requests.unwrap_or(0))
            .or_default();
        row.0 += 1;
        row.1 += call_ms(s);
    }
    let (fixed, per_seq) = line(
        decode_only
            .iter()
            .map(|s| (f64::from(s.engine.decode_requests.unwrap_or(0)), call_ms(s))),
    )
    .unzip();
    let prefill_flags: Vec<bool> = steps.iter().filter_map(has_prefill).collect();
    let hits = total(steps, |s| s.engine.prefix_hits);
    let queried = total(steps, |s| s.engine.prefix_queried).filter(|&q| q > 0);
    let drafted = total(steps, |s| s.engine.spec_draft_tokens).filter(|&d| d > 0);
    StepSummary {
        source,
        steps: steps.len() as u64,
        engine_steps: total(steps, |s| s.engine.engine_steps),
        batch_mean: weighted(steps, batch),
        waiting_mean: weighted(steps, |s| s.engine.waiting.map(f64::from)),
        waiting_peak: steps.iter().filter_map(|s| s.engine.waiting).max(),
        kv_usage_mean: weighted(steps, |s| s.engine.kv_usage),
        kv_usage_peak: steps
            .iter()
            .filter_map(|s| s.engine.kv_usage)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
        preemptions: total(steps, |s| s.engine.preempted),
        prefill_tokens: total(steps, |s| s.engine.prefill_tokens),
        decode_tokens: total(steps, |s| s.engine.decode_tokens),
        prefill_tokens_per_step: mean(steps, |s| s.engine.prefill_tokens.map(f64::from)),
        decode_tokens_per_step: mean(steps, |s| s.engine.decode_tokens.map(f64::from)),
        prefill_step_share: (!prefill_flags.is_empty()).then(|| {
            prefill_flags.iter().filter(|&&p| p).count() as f64 / prefill_flags.len() as f64
        }),
        prefill_step_ms: mean(steps, |s| {
            (single(s) && has_prefill(s) == Some(true)).then(|| call_ms(s))
        }),
        decode_step_ms: (!decode_only.is_empty()).then(|| {
            decode_only.iter().map(|s| call_ms(s)).sum::<f64>() / decode_only.len() as f64
        }),
        decode_step_ms_fixed: fixed,
        decode_step_ms_per_seq: per_seq,
        by_decode_batch: by_batch
            .into_iter()
            .map(|(batch, (n, ms))| DecodeBatch {
                batch,
                steps: n,
                step_ms: ms / n as f64,
            })
            .collect(),
        prefix_hit_rate: queried.map(|q| hits.unwrap_or(0) as f64 / q as f64),
        spec_acceptance: drafted.map(|d| {
            total(steps, |s| s.engine.spec_accepted_tokens).unwrap_or(0) as f64 / d as f64
        }),
        gap_us_mean: mean(steps, |s| Some(s.gap_ns as f64 / 1e3)),
        gap_us_max: steps.iter().map(|s| s.gap_ns).max().map(|g| g as f64 / 1e3),
    }
}

/// Least squares y = a + b·x; `None` unless x takes at least two values.
fn line(points: impl Iterator<Item = (f64, f64)>) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points.collect();
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if pts.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

impl Measure for StepSummary {
    const NAME: &'static str = "steps";
    const DEFINITION: &'static str = "the measured phase's engine steps (steps.jsonl: one \
        record per poll with requests in flight; engine fields as the engine reports them, \
        its `source` says from where): step_batch_mean = requests computed per step \
        (prefill + decode requests, else the engine's running count), weighted by the \
        wall time each step closes (driver gap + engine call); waiting_mean likewise, \
        waiting_peak the largest; kv_usage_mean/peak = share of the KV cache in use after \
        the step; preemptions = their sum; prefill/decode_tokens_per_step = means over \
        steps; prefill_step_share = steps that computed prompt tokens / steps; \
        prefill/decode_step_ms = mean host time of the engine call of steps with prefill \
        / decode-only steps; decode_step_ms_fixed + decode_step_ms_per_seq·R = the least \
        squares line of decode-only step ms against their decode requests R; \
        step_gap_us_mean = the driver's own time before a step";

    fn figures(&self) -> Vec<Figure> {
        let pct = |v: Option<f64>| v.map(|v| v * 100.0);
        vec![
            Figure::new("steps", Some(self.steps as f64), ""),
            Figure::new("step_batch_mean", self.batch_mean, "").column("batch/step", 1),
            Figure::new("step_waiting_mean", self.waiting_mean, ""),
            Figure::new("step_waiting_peak", self.waiting_peak.map(f64::from), "")
                .column("waiting max", 0),
            Figure::new("kv_usage_mean_pct", pct(self.kv_usage_mean), "%"),
            Figure::new("kv_usage_peak_pct", pct(self.kv_usage_peak), "%").column("KV peak %", 1),
            Figure::new("preemptions", self.preemptions.map(|p| p as f64), "").column("preempt", 0),
            Figure::new("prefill_tokens_per_step", self.prefill_tokens_per_step, ""),
            Figure::new("decode_tokens_per_step", self.decode_tokens_per_step, ""),
            Figure::new("prefill_step_share_pct", pct(self.prefill_step_share), "%")
                .column("prefill steps %", 1),
            Figure::new("prefill_step_ms", self.prefill_step_ms, "ms"),
            Figure::new("decode_step_ms", self.decode_step_ms, "ms"),
            Figure::new("decode_step_ms_fixed", self.decode_step_ms_fixed, "ms"),
            Figure::new("decode_step_ms_per_seq", self.decode_step_ms_per_seq, "ms"),
            Figure::new("step_prefix_hit_rate", self.prefix_hit_rate, ""),
            Figure::new("spec_acceptance", self.spec_acceptance, ""),
            Figure::new("step_gap_us_mean", self.gap_us_mean, "us"),
            Figure::new("step_gap_us_max", self.gap_us_max, "us"),
        ]
    }

    fn warning(&self) -> Option<String> {
        self.preemptions
            .filter(|&p| p > 0)
            .map(|p| format!("the engine preempted {p} request(s): its KV cache ran short"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::MonoNs;
    use crate::core::step::StepStats;

    fn rec(step: u64, start_ms: u64, ms: u64, gap_us: u64, engine: StepStats) -> StepRecord {
        StepRecord {
            point: 0,
            step,
            start_ns: MonoNs(start_ms * 1_000_000),
            end_ns: MonoNs((start_ms + ms) * 1_000_000),
            gap_ns: gap_us * 1_000,
            in_flight: 0,
            events: 0,
            tokens: 0,
            finished: 0,
            gpu_ms: None,
            engine,
        }
    }

    fn decode(r: u32, running: u32, waiting: u32, kv: f64) -> StepStats {
        StepStats {
            running: Some(running),
            waiting: Some(waiting),
            prefill_requests: Some(0),
            prefill_tokens: Some(0),
            decode_requests: Some(r),
            decode_tokens: Some(r),
            kv_usage: Some(kv),
            preempted: Some(0),
            ..StepStats::one_step()
        }
    }

    #[test]
    fn figures_of_a_known_schedule() {
        let prefill = StepStats {
            running: Some(2),
            waiting: Some(1),
            prefill_requests: Some(2),
            prefill_tokens: Some(64),
            decode_requests: Some(0),
            decode_tokens: Some(0),
            preempted: Some(1),
            kv_usage: Some(0.5),
            ..StepStats::one_step()
        };
        // A 20 ms prefill, then decode steps of 10 + 1·R ms at R = 2, 2, 4.
        let steps = vec![
            rec(0, 0, 20, 0, prefill),
            rec(1, 20, 12, 0, decode(2, 2, 1, 0.25)),
            rec(2, 32, 12, 0, decode(2, 2, 1, 0.25)),
            rec(3, 44, 14, 0, decode(4, 4, 0, 0.75)),
        ];
        let s = summarize(&steps, None);
        assert_eq!(s.steps, 4);
        assert_eq!(s.engine_steps, Some(4));
        // Weights 20, 12, 12, 14 ms.
        let batch = (2.0 * 20.0 + 2.0 * 12.0 + 2.0 * 12.0 + 4.0 * 14.0) / 58.0;
        assert!((s.batch_mean.unwrap() - batch).abs() < 1e-12);
        assert_eq!(s.waiting_peak, Some(1));
        assert_eq!(s.kv_usage_peak, Some(0.75));
        assert_eq!(s.preemptions, Some(1));
        assert_eq!(s.prefill_tokens, Some(64));
        assert_eq!(s.decode_tokens, Some(8));
        assert_eq!(s.prefill_step_share, Some(0.25));
        assert_eq!(s.prefill_step_ms, Some(20.0));
        assert!((s.decode_step_ms.unwrap() - 38.0 / 3.0).abs() < 1e-12);
        assert!((s.decode_step_ms_fixed.unwrap() - 10.0).abs() < 1e-9);
        assert!((s.decode_step_ms_per_seq.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(s.by_decode_batch.len(), 2);
        assert_eq!(s.by_decode_batch[0].steps, 2);
        assert!(s.warning().unwrap().contains("preempted 1"));
    }

    #[test]
    fn what_the_engine_does_not_report_stays_absent() {
        let steps = vec![
            rec(0, 0, 5, 3, StepStats::default()),
            rec(1, 5, 5, 1, StepStats::default()),
        ];
        let s = summarize(&steps, None);
        assert_eq!(s.steps, 2);
        assert_eq!(s.engine_steps, None);
        assert_eq!(s.batch_mean, None);
        assert_eq!(s.preemptions, None);
        assert_eq!(s.kv_usage_peak, None);
        assert_eq!(s.prefill_step_share, None);
        assert_eq!(s.decode_step_ms_per_seq, None);
        assert_eq!(s.prefix_hit_rate, None);
        assert_eq!(s.gap_us_mean, Some(2.0));
        assert!(s.warning().is_none());
        assert!(s
            .figures()
            .iter()
            .find(|f| f.key == "preemptions")
            .unwrap()
            .value
            .is_none());
    }
}
