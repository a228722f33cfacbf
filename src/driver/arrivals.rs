//! Open-loop arrival times: seeded Poisson or gamma-distributed gaps.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

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
    fn infinite_rate_is_all_at_once() {
        assert_eq!(arrival_offsets(f64::INFINITY, 1.0, 0, 3), vec![0, 0, 0]);
    }
}
