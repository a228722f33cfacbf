//! How sure a figure is: the mean of per-round samples with a 95 % confidence interval
//! (Student's t, n − 1 degrees of freedom) and the coefficient of variation.
//!
//! A round is a sample of the point: a whole batch in batch mode; in the other modes
//! each request for TTFT and TPOT, and for throughput one of W equal time windows of
//! the measured span (W = ⌊√completed⌋ clamped to 2..=30, batch means). See
//! [`super::summarize`].

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Coefficient of variation above which a figure is marked noisy.
pub const NOISY_CV: f64 = 0.10;

/// A mean over samples and how sure it is. Everything but `n` is `None` without
/// samples; the interval and CV need two.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Samples (rounds).
    pub n: usize,
    pub mean: Option<f64>,
    /// Half-width of the 95 % interval: mean ± this.
    pub ci95_half_width: Option<f64>,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    /// Sample standard deviation (n − 1) / mean.
    pub cv: Option<f64>,
}

impl Estimate {
    pub fn of(samples: &[f64]) -> Estimate {
        let samples: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        let n = samples.len();
        if n == 0 {
            return Estimate::default();
        }
        let mean = samples.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Estimate {
                n,
                mean: Some(mean),
                ..Default::default()
            };
        }
        let var = samples.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        let t = t_975(n - 1);
        let half = t * sd / (n as f64).sqrt();
        Estimate {
            n,
            mean: Some(mean),
            ci95_half_width: Some(half),
            ci95_low: Some(mean - half),
            ci95_high: Some(mean + half),
            cv: (mean != 0.0).then(|| sd / mean.abs()),
        }
    }

    /// The CV is above [`NOISY_CV`].
    pub fn is_noisy(&self) -> bool {
        self.cv.is_some_and(|c| c > NOISY_CV)
    }

    /// `12.34 ± 0.56` (or the mean alone with one sample, `-` with none).
    pub fn display(&self, decimals: usize) -> String {
        match (self.mean, self.ci95_half_width) {
            (Some(m), Some(h)) => format!("{m:.decimals$} ± {h:.decimals$}"),
            (Some(m), None) => format!("{m:.decimals$}"),
            _ => "-".into(),
        }
    }
}

/// The 97.5 % quantile of Student's t with `dof` degrees of freedom.
fn t_975(dof: usize) -> f64 {
    StudentsT::new(0.0, 1.0, dof as f64)
        .map(|t| t.inverse_cdf(0.975))
        // dof >= 1 always builds; the normal quantile is the large-sample limit.
        .unwrap_or(1.959_963_984_540_054)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_quantiles() {
        // Tables of Student's t: 12.706 (1), 4.303 (2), 2.262 (9), 2.045 (29).
        for (dof, q) in [(1, 12.706), (2, 4.303), (9, 2.262), (29, 2.045)] {
            assert!((t_975(dof) - q).abs() < 1e-3, "dof {dof}: {}", t_975(dof));
        }
    }

    #[test]
    fn hand_computed_interval() {
        // [10, 12, 14]: mean 12, s = 2, half = 4.303 × 2 / √3 = 4.9686.
        let e = Estimate::of(&[10.0, 12.0, 14.0]);
        assert_eq!((e.n, e.mean), (3, Some(12.0)));
        let h = e.ci95_half_width.unwrap();
        assert!((h - 4.9686).abs() < 1e-3, "{h}");
        assert!((e.ci95_low.unwrap() - (12.0 - h)).abs() < 1e-12);
        assert!((e.cv.unwrap() - 2.0 / 12.0).abs() < 1e-12);
        assert!(e.is_noisy());
        assert_eq!(e.display(1), "12.0 ± 5.0");
    }

    #[test]
    fn few_samples() {
        assert_eq!(Estimate::of(&[]), Estimate::default());
        let one = Estimate::of(&[5.0]);
        assert_eq!(
            (one.n, one.mean, one.ci95_half_width, one.cv),
            (1, Some(5.0), None, None)
        );
        assert_eq!(one.display(2), "5.00");
        let flat = Estimate::of(&[3.0, 3.0, 3.0, f64::NAN]);
        assert_eq!(
            (flat.n, flat.ci95_half_width, flat.cv),
            (3, Some(0.0), Some(0.0))
        );
        assert!(!flat.is_noisy());
    }

    #[test]
    fn the_interval_covers_the_true_mean_about_95_percent_of_the_time() {
        // 2000 seeded experiments of 5 samples from uniform(0, 1) (true mean 0.5).
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut u = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let covered = (0..2000)
            .filter(|_| {
                let s: Vec<f64> = (0..5).map(|_| u()).collect();
                let e = Estimate::of(&s);
                e.ci95_low.unwrap() <= 0.5 && 0.5 <= e.ci95_high.unwrap()
            })
            .count();
        let rate = covered as f64 / 2000.0;
        assert!((0.93..=0.97).contains(&rate), "coverage {rate}");
    }
}
