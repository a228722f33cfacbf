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

/// Energy (J) used in `[from_ns, to_ns]`, from `samples` in time order. Uses the
/// counter when every sample has one (a counter that goes backwards wrapped around at
/// `wrap_j`, as RAPL's does), else integrates power. Both are taken as piecewise linear
/// between samples, so the window's edges are interpolated rather than rounded out to
/// the nearest samples; outside the samples' span nothing is counted. `None` with fewer
/// than two usable samples.
pub fn energy_in(
    samples: &[PowerSample],
    from_ns: u64,
    to_ns: u64,
    wrap_j: Option<f64>,
) -> Option<(f64, EnergySource)> {
    if samples.len() >= 2 && samples.iter().all(|s| s.energy_j.is_some()) {
        // Unwrap the counter into a non-decreasing cumulative series.
        let mut offset = 0.0;
        let mut prev: Option<f64> = None;
        let series: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| {
                let e = s.energy_j.unwrap_or(0.0);
                if prev.is_some_and(|p| e < p) {
                    offset += wrap_j.unwrap_or(0.0);
                }
                prev = Some(e);
                (s.at_ns as f64, e + offset)
            })
            .collect();
        let at = |t: f64| interpolate(&series, t);
        return Some((at(to_ns as f64) - at(from_ns as f64), EnergySource::Counter));
    }
    let series: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.at_ns as f64, s.power_w?)))
        .collect();
    if series.len() < 2 {
        return None;
    }
    let (a, b) = (from_ns as f64, to_ns as f64);
    let mut joules = 0.0;
    for w in series.windows(2) {
        let ((t0, p0), (t1, p1)) = (w[0], w[1]);
        let (lo, hi) = (t0.max(a), t1.min(b));
        if hi <= lo || t1 <= t0 {
            continue;
        }
        let p = |t: f64| p0 + (p1 - p0) * (t - t0) / (t1 - t0);
        joules += (hi - lo) / 1e9 * (p(lo) + p(hi)) / 2.0;
    }
    Some((joules, EnergySource::PowerIntegral))
}

/// The piecewise-linear value of `series` (time, value) at `t`, clamped to its span.
fn interpolate(series: &[(f64, f64)], t: f64) -> f64 {
    let i = series.partition_point(|&(x, _)| x <= t);
    match (i.checked_sub(1).map(|j| series[j]), series.get(i)) {
        (None, Some(&(_, v))) | (Some((_, v)), None) => v,
        (Some((t0, v0)), Some(&(t1, v1))) if t1 > t0 => v0 + (v1 - v0) * (t - t0) / (t1 - t0),
        (Some((_, v)), Some(_)) => v,
        (None, None) => 0.0,
    }
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

    const MS: u64 = 1_000_000;

    #[test]
    fn counter_deltas_and_wraparound() {
        let samples = [
            s(0, None, Some(10.0)),
            s(100, None, Some(30.0)),
            s(200, None, Some(35.5)),
        ];
        assert_eq!(
            energy_in(&samples, 0, 200 * MS, None),
            Some((25.5, EnergySource::Counter))
        );
        // Edges interpolated: 50–150 ms is half of 20 J plus half of 5.5 J.
        let (j, _) = energy_in(&samples, 50 * MS, 150 * MS, None).unwrap();
        assert!((j - 12.75).abs() < 1e-9, "{j}");
        // Outside the samples' span nothing counts.
        assert_eq!(
            energy_in(&samples, 300 * MS, 400 * MS, None).map(|e| e.0),
            Some(0.0)
        );
        // RAPL-style wrap at 100 J: 90 → 5 is 15 J, not -85.
        let wrapped = [
            s(0, None, Some(80.0)),
            s(100, None, Some(90.0)),
            s(200, None, Some(5.0)),
        ];
        assert_eq!(
            energy_in(&wrapped, 0, 200 * MS, Some(100.0)),
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
        let (j, src) = energy_in(&samples, 0, 2000 * MS, None).unwrap();
        assert!((j - 300.0).abs() < 1e-9 && src == EnergySource::PowerIntegral);
        // The second half of the ramp: 200 W → 300 W over 0.5 s = 125 J.
        let (j, _) = energy_in(&samples, 1500 * MS, 2000 * MS, None).unwrap();
        assert!((j - 125.0).abs() < 1e-9, "{j}");
        // A counter missing in one sample falls back to power.
        let mixed = [s(0, Some(50.0), Some(1.0)), s(1000, Some(50.0), None)];
        assert_eq!(
            energy_in(&mixed, 0, 1000 * MS, None).map(|e| e.1),
            Some(EnergySource::PowerIntegral)
        );
        assert_eq!(energy_in(&[s(0, Some(1.0), None)], 0, 10, None), None);
        assert_eq!(joules_per_token(300.0, 150), Some(2.0));
        assert_eq!(joules_per_token(1.0, 0), None);
    }
}
