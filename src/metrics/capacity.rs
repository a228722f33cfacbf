//! Capacity under SLOs (`harness search`): which load to probe next, given the probes
//! so far, and what answer a list of probes gives. Pure: no engine, no clock, no I/O.
//!
//! The method is bisection, as in `vllm bench sweep serve_sla`, MLPerf LoadGen's
//! FindPeakPerformance and AIPerf's adaptive search: probe the bracket's low end (if it
//! fails, no load in the bracket meets the target); probe its high end (if it passes,
//! the capacity is at least the high end); then probe halfway between the highest
//! passing and the lowest failing value until they are within the resolution. A probe
//! passes when its **good fraction** (good requests / requests, every request of the
//! probe counted, failed ones never good) is at least the target.
//!
//! The command ([`SearchSpec::next`]) and the report ([`SearchSpec::result`]) call the
//! same functions, so `harness report DIR` recomputes the answer from requests.jsonl.

use super::Summary;
use serde::{Deserialize, Serialize};

/// The load dimension a search varies.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Closed loop: requests in flight (integers).
    Concurrency,
    /// Open loop: requests/s.
    Rate,
}

impl Dimension {
    /// As the flag names it (`--concurrency`, `--rate`).
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Concurrency => "concurrency",
            Dimension::Rate => "rate",
        }
    }
}

/// What a search looks for: the dimension, its bracket `[lo, hi]`, the resolution the
/// answer is bisected to, and the least good fraction a probe needs to pass. The SLO
/// that makes a request good is the run's own (`--slo`).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    pub dimension: Dimension,
    pub lo: f64,
    pub hi: f64,
    pub resolution: f64,
    pub min_good_fraction: f64,
}

/// How one probe went.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Its good fraction is at least the target.
    Pass,
    /// Below the target, or it had no requests to show the target met.
    Fail,
    /// The run ended during it (engine failure, Ctrl-C): it decides nothing.
    CutShort,
}

/// One probe of a search, with the counts its verdict comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The index of its point in the run (`point` in requests.jsonl).
    pub point: usize,
    /// The load probed (concurrency or requests/s).
    pub value: f64,
    /// Measured requests, failed ones included.
    pub requests: usize,
    /// Requests that succeeded and met every SLO.
    pub good_requests: usize,
    /// `good_requests / requests` (None without requests).
    pub good_fraction: Option<f64>,
    pub verdict: Verdict,
}

/// Where a search ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Bisected: the highest passing and lowest failing values are within the resolution.
    Found,
    /// The bracket's low end fails: no value in the bracket meets the target.
    NoneFeasible,
    /// The bracket's high end passes: the capacity is at least `hi`.
    AtLeastHi,
    /// Stopped before any of those (engine failure, Ctrl-C, or probes that contradict
    /// the bisection when re-rendered under another SLO).
    Unfinished,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Found => "found",
            Outcome::NoneFeasible => "none_feasible",
            Outcome::AtLeastHi => "at_least_hi",
            Outcome::Unfinished => "unfinished",
        }
    }
}

/// A search's answer and every probe behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub outcome: Outcome,
    /// The highest passing value below every failing one (the capacity when `found`).
    pub highest_passing: Option<f64>,
    /// The lowest failing value.
    pub lowest_failing: Option<f64>,
    /// In the order they ran.
    pub probes: Vec<Probe>,
}

/// A probe's counts from its summary: every measured request, failed ones included
/// (a failed request is never good).
pub fn counts(s: &Summary) -> (usize, usize) {
    (s.completed + s.failed, s.good_requests.unwrap_or(0))
}

/// Relative slack on the resolution, so that a rate bisected to exactly the resolution
/// is not split once more by rounding.
const SLACK: f64 = 1e-9;

impl SearchSpec {
    /// Whether a probe with these counts passes. No requests shows nothing met.
    pub fn verdict(&self, requests: usize, good: usize) -> Verdict {
        if requests > 0 && good as f64 / requests as f64 >= self.min_good_fraction {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    /// The most probes a search can take: both ends, then one per halving of the
    /// bracket down to the resolution.
    pub fn max_probes(&self) -> usize {
        let halvings = ((self.hi - self.lo) / self.resolution).log2().ceil();
        2 + if halvings.is_finite() && halvings > 0.0 {
            halvings as usize
        } else {
            0
        }
    }

    /// The highest passing value below the lowest failing one, and that failing one,
    /// over the probes that decided something.
    fn bounds(probes: &[(f64, Verdict)]) -> (Option<f64>, Option<f64>) {
        let fail = probes
            .iter()
            .filter(|(_, v)| *v == Verdict::Fail)
            .map(|(x, _)| *x)
            .min_by(f64::total_cmp);
        let pass = probes
            .iter()
            .filter(|(x, v)| *v == Verdict::Pass && fail.is_none_or(|f| *x < f))
            .map(|(x, _)| *x)
            .max_by(f64::total_cmp);
        (pass, fail)
    }

    fn converged(&self, pass: f64, fail: f64) -> bool {
        fail - pass <= self.resolution * (1.0 + SLACK)
    }

    /// The value to probe next, or None when the search is over. `probes`: the values
    /// probed so far with their verdicts, in order.
    pub fn next(&self, probes: &[(f64, Verdict)]) -> Option<f64> {
        if probes.iter().any(|(_, v)| *v == Verdict::CutShort) {
            return None;
        }
        if probes.is_empty() {
            return Some(self.lo);
        }
        // Never more than the bisection needs, whatever the verdicts.
        if probes.len() >= self.max_probes() {
            return None;
        }
        match Self::bounds(probes) {
            (None, _) => None, // the low end failed
            (Some(p), None) if p >= self.hi => None,
            (Some(_), None) => Some(self.hi),
            (Some(p), Some(f)) if self.converged(p, f) => None,
            (Some(p), Some(f)) => {
                let mid = match self.dimension {
                    // Integers: rounded down, strictly inside (p, f) since the
                    // resolution is at least 1 and f - p exceeds it.
                    Dimension::Concurrency => ((p + f) / 2.0).floor(),
                    Dimension::Rate => (p + f) / 2.0,
                };
                (mid > p && mid < f).then_some(mid)
            }
        }
    }

    /// The answer the probes give: `probes` as [`Probe`]s in run order; `cut_short`
    /// when the run ended during its last probe.
    pub fn result(&self, mut probes: Vec<Probe>, cut_short: bool) -> SearchResult {
        if cut_short {
            if let Some(last) = probes.last_mut() {
                last.verdict = Verdict::CutShort;
            }
        }
        let decided: Vec<(f64, Verdict)> = probes
            .iter()
            .filter(|p| p.verdict != Verdict::CutShort)
            .map(|p| (p.value, p.verdict))
            .collect();
        let (pass, fail) = Self::bounds(&decided);
        let lo_failed = decided
            .iter()
            .any(|(x, v)| *v == Verdict::Fail && *x <= self.lo);
        let outcome = match (pass, fail) {
            (None, Some(_)) if lo_failed => Outcome::NoneFeasible,
            (Some(p), None) if p >= self.hi => Outcome::AtLeastHi,
            (Some(p), Some(f)) if self.converged(p, f) => Outcome::Found,
            _ => Outcome::Unfinished,
        };
        SearchResult {
            outcome,
            highest_passing: pass,
            lowest_failing: fail,
            probes,
        }
    }

    /// One line: the method, then the answer, e.g. "bisection on concurrency over [1,
    /// 64], resolution 1, pass = good fraction >= 0.9 under ttft <= 150 ms: capacity
    /// concurrency=4 (concurrency=5 fails); 8 probes".
    pub fn describe(&self, slo: &str, r: &SearchResult) -> String {
        let d = self.dimension.name();
        let at = |v: f64| format!("{d}={}", trim(v));
        let answer = match (r.outcome, r.highest_passing, r.lowest_failing) {
            (Outcome::Found, Some(p), Some(f)) => {
                format!("capacity {} ({} fails)", at(p), at(f))
            }
            (Outcome::NoneFeasible, _, _) => format!(
                "none feasible in the bracket ({} fails already)",
                at(self.lo)
            ),
            (Outcome::AtLeastHi, _, _) => format!(
                "capacity >= {} (the bracket's top passes; raise HI)",
                at(self.hi)
            ),
            (_, p, f) => format!(
                "unfinished; so far highest passing {}, lowest failing {}",
                p.map_or_else(|| "none".into(), at),
                f.map_or_else(|| "none".into(), at)
            ),
        };
        format!(
            "bisection on {d} over [{}, {}], resolution {}, a probe passes when good requests / requests >= {} under {slo}: {answer}; {} probes",
            trim(self.lo),
            trim(self.hi),
            trim(self.resolution),
            trim(self.min_good_fraction),
            r.probes.len()
        )
    }
}

/// A value without trailing zeros (`4`, `2.5`, `0.125`).
fn trim(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dimension: Dimension, lo: f64, hi: f64, resolution: f64) -> SearchSpec {
        SearchSpec {
            dimension,
            lo,
            hi,
            resolution,
            min_good_fraction: 0.9,
        }
    }

    /// Runs a search against a load whose capacity is `cap` (every value <= cap
    /// passes); returns the values probed and the result.
    fn search(s: &SearchSpec, cap: f64) -> (Vec<f64>, SearchResult) {
        let mut done: Vec<(f64, Verdict)> = Vec::new();
        while let Some(v) = s.next(&done) {
            let verdict = if v <= cap {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            done.push((v, verdict));
            assert!(done.len() <= s.max_probes(), "{done:?}");
        }
        let probes = done
            .iter()
            .enumerate()
            .map(|(i, &(value, verdict))| Probe {
                point: i,
                value,
                requests: 10,
                good_requests: if verdict == Verdict::Pass { 10 } else { 0 },
                good_fraction: Some(if verdict == Verdict::Pass { 1.0 } else { 0.0 }),
                verdict,
            })
            .collect();
        (done.iter().map(|d| d.0).collect(), s.result(probes, false))
    }

    #[test]
    fn concurrency_bisects_to_the_exact_integer() {
        let s = spec(Dimension::Concurrency, 1.0, 64.0, 1.0);
        for cap in [1.0, 2.0, 4.0, 5.0, 31.0, 32.0, 63.0] {
            let (probed, r) = search(&s, cap);
            assert_eq!(r.outcome, Outcome::Found, "{cap}: {probed:?}");
            assert_eq!(
                (r.highest_passing, r.lowest_failing),
                (Some(cap), Some(cap + 1.0)),
                "{probed:?}"
            );
            assert!(probed.iter().all(|v| v.fract() == 0.0), "{probed:?}");
        }
        let (probed, _) = search(&s, 4.0);
        assert_eq!(probed, [1.0, 64.0, 32.0, 16.0, 8.0, 4.0, 6.0, 5.0]);
        assert_eq!(s.max_probes(), 8);
    }

    #[test]
    fn the_ends_of_the_bracket_decide_first() {
        let s = spec(Dimension::Concurrency, 2.0, 16.0, 1.0);
        let (probed, r) = search(&s, 1.0);
        assert_eq!((probed, r.outcome), (vec![2.0], Outcome::NoneFeasible));
        assert_eq!((r.highest_passing, r.lowest_failing), (None, Some(2.0)));
        let (probed, r) = search(&s, 100.0);
        assert_eq!((probed, r.outcome), (vec![2.0, 16.0], Outcome::AtLeastHi));
        assert_eq!(r.highest_passing, Some(16.0));
        // A resolution as wide as the bracket: only the ends.
        let wide = spec(Dimension::Concurrency, 2.0, 16.0, 14.0);
        let (probed, r) = search(&wide, 8.0);
        assert_eq!((probed, r.outcome), (vec![2.0, 16.0], Outcome::Found));
    }

    #[test]
    fn rate_bisects_to_within_the_resolution() {
        let s = spec(Dimension::Rate, 1.0, 100.0, 1.0);
        for cap in [1.5, 37.3, 99.2] {
            let (probed, r) = search(&s, cap);
            let (p, f) = (r.highest_passing.unwrap(), r.lowest_failing.unwrap());
            assert_eq!(r.outcome, Outcome::Found, "{probed:?}");
            assert!(p <= cap && cap < f && f - p <= 1.0, "{cap}: {p} {f}");
        }
    }

    #[test]
    fn a_probe_cut_short_ends_the_search_and_decides_nothing() {
        let s = spec(Dimension::Concurrency, 1.0, 64.0, 1.0);
        let done = [(1.0, Verdict::Pass), (64.0, Verdict::CutShort)];
        assert_eq!(s.next(&done), None);
        let probe = |point, value, good| Probe {
            point,
            value,
            requests: 4,
            good_requests: good,
            good_fraction: Some(good as f64 / 4.0),
            verdict: s.verdict(4, good),
        };
        let r = s.result(vec![probe(0, 1.0, 4), probe(1, 64.0, 0)], true);
        assert_eq!(r.outcome, Outcome::Unfinished);
        assert_eq!(r.probes[1].verdict, Verdict::CutShort);
        assert_eq!((r.highest_passing, r.lowest_failing), (Some(1.0), None));
        let line = s.describe("ttft <= 100 ms", &r);
        assert!(
            line.contains(
                "unfinished; so far highest passing concurrency=1, lowest failing none; 2 probes"
            ),
            "{line}"
        );
    }

    #[test]
    fn the_verdict_is_the_good_fraction_against_the_target() {
        let s = spec(Dimension::Concurrency, 1.0, 8.0, 1.0);
        assert_eq!(s.verdict(10, 9), Verdict::Pass);
        assert_eq!(s.verdict(10, 8), Verdict::Fail);
        assert_eq!(s.verdict(0, 0), Verdict::Fail);
    }

    #[test]
    fn the_line_states_method_and_answer() {
        let s = spec(Dimension::Concurrency, 1.0, 64.0, 1.0);
        let (_, r) = search(&s, 4.0);
        assert_eq!(
            s.describe("ttft <= 150 ms", &r),
            "bisection on concurrency over [1, 64], resolution 1, a probe passes when good requests / requests >= 0.9 under ttft <= 150 ms: capacity concurrency=4 (concurrency=5 fails); 8 probes"
        );
        assert_eq!(trim(0.125), "0.125");
        assert_eq!(trim(2.50), "2.5");
    }
}
