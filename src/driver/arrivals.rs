//! Open-loop arrival times: seeded Poisson or gamma-distributed gaps at a steady rate
//! ([`Arrivals`]), the same with a rate that ramps per request as `vllm bench serve`'s
//! `--ramp-up-strategy` ([`Ramp`]), and a recorded trace's own clock ([`TraceClock`]).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

/// Arrival offsets (ns after the start of the point), drawn on demand so an open-loop
/// point can run as long as its floors ask without sizing a list up front.
///
/// Gaps are gamma-distributed with shape `burstiness` and mean `1/rate` seconds, as in
/// vLLM's `bench serve` (`burstiness = 1` is a Poisson process; lower is burstier).
/// The first request arrives at offset 0. `rate = inf` sends everything at once.
/// Same `(rate, burstiness, seed)` → the same offsets, on every machine.
pub struct Arrivals {
    rng: ChaCha8Rng,
    /// `None`: fixed gaps of `1/rate` (also the fallback if the shape is invalid).
    gamma: Option<Gamma<f64>>,
    rate: f64,
    t: f64,
    first: bool,
}

impl Arrivals {
    pub fn new(rate: f64, burstiness: f64, seed: u64) -> Arrivals {
        Arrivals {
            rng: ChaCha8Rng::seed_from_u64(seed),
            // Validated by the config (rate > 0, burstiness > 0).
            gamma: Gamma::new(burstiness, 1.0 / (rate * burstiness)).ok(),
            rate,
            t: 0.0,
            first: true,
        }
    }
}

impl Iterator for Arrivals {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.rate.is_infinite() {
            return Some(0);
        }
        if !std::mem::replace(&mut self.first, false) {
            self.t += match &self.gamma {
                Some(g) => g.sample(&mut self.rng),
                None => 1.0 / self.rate,
            };
        }
        // Saturates (at ~584 years) rather than wrapping.
        Some((self.t * 1e9).round().min(u64::MAX as f64) as u64)
    }
}

/// How a ramp's rate goes from its start to its end (`--ramp-up-strategy`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampStrategy {
    Linear,
    Exponential,
}

impl RampStrategy {
    pub fn name(self) -> &'static str {
        match self {
            RampStrategy::Linear => "linear",
            RampStrategy::Exponential => "exponential",
        }
    }

    /// The rate of request `i` of `n`, as vLLM's `_get_current_request_rate`:
    /// progress = i / max(n - 1, 1); linear: start + (end - start) × progress;
    /// exponential: start × (end / start)^progress.
    pub fn rate(self, start: f64, end: f64, i: usize, n: usize) -> f64 {
        let progress = i as f64 / n.saturating_sub(1).max(1) as f64;
        match self {
            RampStrategy::Linear => start + (end - start) * progress,
            RampStrategy::Exponential => start * (end / start).powf(progress),
        }
    }
}

/// Arrival offsets of a ramp over `n` requests: request 0 at offset 0, then the gap
/// before request `i` is gamma-distributed with shape `burstiness` and mean
/// 1 / rate(i) ([`RampStrategy::rate`]). vLLM draws the same gaps but also delays its
/// first request by one gap; here every open loop starts at offset 0. Past `n` the
/// rate stays at its end.
pub struct Ramp {
    rng: ChaCha8Rng,
    strategy: RampStrategy,
    start: f64,
    end: f64,
    burstiness: f64,
    n: usize,
    i: usize,
    t: f64,
}

impl Ramp {
    /// Validated by the config: 0 < start <= end <= MAX_RATE, burstiness > 0.
    pub fn new(
        strategy: RampStrategy,
        start: f64,
        end: f64,
        burstiness: f64,
        n: usize,
        seed: u64,
    ) -> Ramp {
        Ramp {
            rng: ChaCha8Rng::seed_from_u64(seed),
            strategy,
            start,
            end,
            burstiness,
            n,
            i: 0,
            t: 0.0,
        }
    }
}

impl Iterator for Ramp {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.i > 0 {
            let rate = self.strategy.rate(
                self.start,
                self.end,
                self.i.min(self.n.saturating_sub(1)),
                self.n,
            );
            self.t += match Gamma::new(self.burstiness, 1.0 / (rate * self.burstiness)) {
                Ok(g) => g.sample(&mut self.rng),
                Err(_) => 1.0 / rate,
            };
        }
        self.i += 1;
        Some((self.t * 1e9).round().min(u64::MAX as f64) as u64)
    }
}

/// A recorded trace's arrivals: `offsets` are ns after the trace's first line, the
/// replay starts at line `from` (offset 0 there) and `time_scale` multiplies every
/// gap (0.5 replays twice as fast). Ends with the trace.
pub struct TraceClock<'w> {
    offsets: std::slice::Iter<'w, u64>,
    base: u64,
    time_scale: f64,
}

impl<'w> TraceClock<'w> {
    pub fn new(offsets: &'w [u64], from: usize, time_scale: f64) -> TraceClock<'w> {
        let rest = offsets.get(from..).unwrap_or(&[]);
        TraceClock {
            base: rest.first().copied().unwrap_or(0),
            offsets: rest.iter(),
            time_scale,
        }
    }
}

impl Iterator for TraceClock<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        let o = self.offsets.next()?;
        let scaled = (o.saturating_sub(self.base) as f64 * self.time_scale).round();
        Some(scaled.min(u64::MAX as f64) as u64)
    }
}

/// The first `n` offsets of [`Arrivals`].
pub fn arrival_offsets(rate: f64, burstiness: f64, seed: u64, n: usize) -> Vec<u64> {
    Arrivals::new(rate, burstiness, seed).take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_mean_rate() {
        let a = arrival_offsets(10.0, 1.0, 42, 20_000);
        // Pinned: a change of RNG or sampler changes every open-loop run's arrivals.
        assert_eq!(a[..4], [0, 87_588_338, 236_982_013, 302_148_377]);
        assert_ne!(a, arrival_offsets(10.0, 1.0, 43, 20_000));
        assert_eq!(a[0], 0);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        // Mean gap 100 ms; the standard error over 20k gaps is 0.7 ms.
        let mean_gap_ms = *a.last().unwrap() as f64 / 1e6 / 19_999.0;
        assert!((mean_gap_ms - 100.0).abs() < 3.0, "{mean_gap_ms}");
    }

    #[test]
    fn burstiness_changes_spread_not_mean() {
        let cv = |b: f64| {
            let a = arrival_offsets(100.0, b, 7, 20_000);
            let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
            let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let v = gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64;
            (m / 1e6, v.sqrt() / m)
        };
        let (m1, cv1) = cv(1.0);
        let (m4, cv4) = cv(4.0);
        assert!((m1 - 10.0).abs() < 0.5 && (m4 - 10.0).abs() < 0.5);
        // Gamma CV = 1/sqrt(shape): 1.0 for Poisson, 0.5 for shape 4.
        assert!(
            (cv1 - 1.0).abs() < 0.05 && (cv4 - 0.5).abs() < 0.05,
            "{cv1} {cv4}"
        );
    }

    #[test]
    fn ramp_rates_follow_vllms_formula() {
        let (s, e) = (10.0, 1000.0);
        assert_eq!(RampStrategy::Linear.rate(s, e, 0, 11), 10.0);
        assert_eq!(RampStrategy::Linear.rate(s, e, 5, 11), 505.0);
        assert_eq!(RampStrategy::Linear.rate(s, e, 10, 11), 1000.0);
        assert!((RampStrategy::Exponential.rate(s, e, 5, 11) - 100.0).abs() < 1e-9);
        assert_eq!(RampStrategy::Exponential.rate(s, e, 10, 11), 1000.0);
        // One request: progress is 0, the start rate.
        assert_eq!(RampStrategy::Linear.rate(s, e, 0, 1), 10.0);
        // Near-constant gaps (shape 1000): each gap is 1 / rate(i) to a few %.
        let a: Vec<u64> = Ramp::new(RampStrategy::Linear, 100.0, 200.0, 1000.0, 101, 3)
            .take(101)
            .collect();
        assert_eq!(a[0], 0);
        // Past its n requests the ramp holds its end rate, never beyond it.
        let past: Vec<u64> = Ramp::new(RampStrategy::Linear, 100.0, 200.0, 1000.0, 3, 3)
            .take(50)
            .collect();
        let last_gap = (past[49] - past[48]) as f64 / 1e9;
        assert!((last_gap - 1.0 / 200.0).abs() < 0.001, "{last_gap}");
        let truth: f64 = (1..101)
            .map(|i| 1.0 / RampStrategy::Linear.rate(100.0, 200.0, i, 101))
            .sum();
        let got = a[100] as f64 / 1e9;
        assert!((got - truth).abs() / truth < 0.01, "{got} vs {truth}");
    }

    #[test]
    fn trace_clock_starts_at_zero_and_scales_gaps() {
        let offsets = [0, 1_000, 3_000, 7_000];
        let c: Vec<u64> = TraceClock::new(&offsets, 1, 0.5).collect();
        assert_eq!(c, vec![0, 1_000, 3_000]);
        assert_eq!(TraceClock::new(&offsets, 9, 1.0).next(), None);
    }

    #[test]
    fn infinite_rate_is_all_at_once() {
        assert_eq!(arrival_offsets(f64::INFINITY, 1.0, 0, 3), vec![0, 0, 0]);
    }
}
