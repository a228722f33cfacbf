//! Energy from telemetry samples, as pure functions: the delta of a cumulative energy
//! counter (NVML's total energy in mJ, RAPL's energy_uj, which wraps), the
//! trapezoid integral of sampled power where no counter exists, and joules per
//! output token.

/// One telemetry reading of one device at `at_ns` (CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PowerSample {
    pub at_ns: u64,
    /// Instantaneous power (W), if the device reports it.
    pub power_w: Option<f64>,
    /// Cumulative energy counter (J), if the device has one.
    pub energy_j: Option<f64>,
}

/// How an energy figure was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnergySource {
    /// The device's cumulative energy counter (exact up to its resolution).
    Counter,
    /// Sampled power integrated over time (trapezoids between samples).
    PowerIntegral,
}

impl EnergySource {
    pub fn describe(self) -> &'static str {
        match self {
            EnergySource::Counter => "energy counter delta",
            EnergySource::PowerIntegral => "sampled power integrated over time (trapezoid)",
        }
    }
}

/// Energy (J) used between the first and last of `samples`, which are in time order.
/// Uses the counter when every sample has one (a counter that goes backwards wrapped
/// around at `wrap_j`, as RAPL's does), else integrates power. `None` with fewer
/// than two usable samples.
pub fn energy_between(samples: &[PowerSample], wrap_j: Option<f64>) -> Option<(f64, EnergySource)> {
    if samples.len() >= 2 && samples.iter().all(|s| s.energy_j.is_some()) {
        let mut total = 0.0;
        for w in samples.windows(2) {
            let (a, b) = (w[0].energy_j.unwrap_or(0.0), w[1].energy_j.unwrap_or(0.0));
            total += if b >= a {
                b - a
            } else {
                // Wrapped: the rest of the range, then from zero.
                wrap_j.map_or(0.0, |max| max - a + b)
            };
        }
        return Some((total, EnergySource::Counter));
    }
    let powered: Vec<&PowerSample> = samples.iter().filter(|s| s.power_w.is_some()).collect();
    if powered.len() < 2 {
        return None;
    }
    let joules = powered
        .windows(2)
        .map(|w| {
            let dt = w[1].at_ns.saturating_sub(w[0].at_ns) as f64 / 1e9;
            dt * (w[0].power_w.unwrap_or(0.0) + w[1].power_w.unwrap_or(0.0)) / 2.0
        })
        .sum();
    Some((joules, EnergySource::PowerIntegral))
}

/// The samples of `all` (in time order) that cover `[from_ns, to_ns]`: those inside,
/// plus the last one before and the first one after, so an integral spans the window.
pub fn window(all: &[PowerSample], from_ns: u64, to_ns: u64) -> &[PowerSample] {
    if all.is_empty() || to_ns < from_ns {
        return &[];
    }
    let start = all.partition_point(|s| s.at_ns < from_ns).saturating_sub(1);
    let end = (all.partition_point(|s| s.at_ns <= to_ns) + 1).min(all.len());
    &all[start..end.max(start)]
}

/// Joules per output token; `None` without tokens.
pub fn joules_per_token(joules: f64, tokens: u64) -> Option<f64> {
    (tokens > 0).then(|| joules / tokens as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: u64, w: Option<f64>, j: Option<f64>) -> PowerSample {
        PowerSample {
            at_ns: t_ms * 1_000_000,
            power_w: w,
            energy_j: j,
        }
    }

    #[test]
    fn counter_deltas_and_wraparound() {
        let samples = [
            s(0, None, Some(10.0)),
            s(100, None, Some(30.0)),
            s(200, None, Some(35.5)),
        ];
        assert_eq!(
            energy_between(&samples, None),
            Some((25.5, EnergySource::Counter))
        );
        // RAPL-style wrap at 100 J: 90 → 5 is 15 J, not -85.
        let wrapped = [
            s(0, None, Some(80.0)),
            s(100, None, Some(90.0)),
            s(200, None, Some(5.0)),
        ];
        assert_eq!(
            energy_between(&wrapped, Some(100.0)),
            Some((25.0, EnergySource::Counter))
        );
    }

    #[test]
    fn power_integral_when_there_is_no_counter() {
        // 100 W for 1 s, then a ramp to 300 W over 1 s: 100 + 200 = 300 J.
        let samples = [
            s(0, Some(100.0), None),
            s(1000, Some(100.0), None),
            s(2000, Some(300.0), None),
        ];
        let (j, src) = energy_between(&samples, None).unwrap();
        assert!((j - 300.0).abs() < 1e-9 && src == EnergySource::PowerIntegral);
        // A counter missing in one sample falls back to power.
        let mixed = [s(0, Some(50.0), Some(1.0)), s(1000, Some(50.0), None)];
        assert_eq!(
            energy_between(&mixed, None).map(|e| e.1),
            Some(EnergySource::PowerIntegral)
        );
        assert_eq!(energy_between(&[s(0, Some(1.0), None)], None), None);
        assert_eq!(joules_per_token(300.0, 150), Some(2.0));
        assert_eq!(joules_per_token(1.0, 0), None);
    }

    #[test]
    fn a_window_includes_its_neighbours() {
        let all: Vec<PowerSample> = (0..10).map(|i| s(i * 100, Some(1.0), None)).collect();
        let ms = 1_000_000;
        let w = window(&all, 250 * ms, 520 * ms);
        assert_eq!(w.first().unwrap().at_ns, 200_000_000);
        assert_eq!(w.last().unwrap().at_ns, 600_000_000);
        assert_eq!(window(&all, 0, 0).len(), 2);
        assert!(window(&[], 0, 10).is_empty());
        assert_eq!(window(&all, 5_000 * ms, 6_000 * ms).len(), 1);
    }
}
