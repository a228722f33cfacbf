//! The stop section: how long each point runs and what is excluded. Either an exact
//! amount (`--num-requests` or `--duration`), or floors (`--min-rounds` and
//! `--min-duration`, both met) under a cap (`--max-duration`), as hyperfine's
//! `--runs` versus `--min-runs`; plus `--warmup` and `--request-timeout`.

use super::{err, ConfigError};
use crate::cli::RunArgs;
use crate::driver::{LoadPoint, Stop};
use std::time::Duration;

/// Default floors: never a point from one sample (hyperfine and MLPerf LoadGen use
/// such floors), and a cap so a slow engine still ends.
pub const DEFAULT_MIN_ROUNDS: u32 = 3;
pub const DEFAULT_MIN_DURATION_S: f64 = 10.0;
pub const DEFAULT_MAX_DURATION_S: f64 = 300.0;
pub const DEFAULT_REQUEST_TIMEOUT_S: f64 = 600.0;
/// Longest any time flag may be (one day).
pub const MAX_SECONDS: f64 = 86_400.0;
/// Most requests (measured or warmup) one point may ask for.
pub const MAX_REQUESTS: usize = 1_000_000;
/// Most rounds `--min-rounds` may ask for.
pub const MAX_ROUNDS: u32 = 100_000;
/// Requests of an `--rate inf` point (all at once) unless `--num-requests` is given.
pub const INF_RATE_REQUESTS: usize = 64;

#[derive(Clone, Debug)]
pub struct StopSection {
    pub stop: Stop,
    /// `--warmup` as given (None: one round of each point).
    pub warmup: Option<usize>,
    pub request_timeout: Duration,
}

pub fn parse(a: &RunArgs) -> Result<StopSection, ConfigError> {
    if a.num_requests.is_some() && a.duration.is_some() {
        return err(
            "num-requests",
            "--num-requests and --duration conflict: give one stop condition",
        );
    }
    let exact = a.num_requests.is_some() || a.duration.is_some();
    for (flag, given) in [
        ("min-rounds", a.min_rounds.is_some()),
        ("min-duration", a.min_duration.is_some()),
        ("max-duration", a.max_duration.is_some()),
    ] {
        if given && exact {
            let other = if a.num_requests.is_some() {
                "num-requests"
            } else {
                "duration"
            };
            return err(
                flag,
                format!(
                    "--{flag} and --{other} conflict: --{other} runs exactly that much; drop one"
                ),
            );
        }
    }
    let num_requests = match a.num_requests {
        Some(0) => return err("num-requests", "--num-requests 0: must be at least 1"),
        Some(n) if n > MAX_REQUESTS => {
            return err(
                "num-requests",
                format!("--num-requests {n}: at most {MAX_REQUESTS} per point"),
            )
        }
        n => n,
    };
    if let Some(w) = a.warmup.filter(|&w| w > MAX_REQUESTS) {
        return err(
            "warmup",
            format!("--warmup {w}: at most {MAX_REQUESTS} requests"),
        );
    }
    let min_rounds = match a.min_rounds {
        Some(0) => return err("min-rounds", "--min-rounds 0: must be at least 1"),
        Some(n) if n > MAX_ROUNDS => {
            return err(
                "min-rounds",
                format!("--min-rounds {n}: at most {MAX_ROUNDS}"),
            )
        }
        n => n.unwrap_or(DEFAULT_MIN_ROUNDS),
    };
    let duration = seconds("duration", a.duration, None)?;
    let min_duration = seconds("min-duration", a.min_duration, Some(0.0))?
        .unwrap_or(Duration::from_secs_f64(DEFAULT_MIN_DURATION_S));
    let max_duration = seconds("max-duration", a.max_duration, None)?
        .unwrap_or(Duration::from_secs_f64(DEFAULT_MAX_DURATION_S));
    if max_duration < min_duration {
        return err(
            "max-duration",
            format!(
                "--max-duration {} s is below --min-duration {} s; raise --max-duration",
                max_duration.as_secs_f64(),
                min_duration.as_secs_f64()
            ),
        );
    }
    let request_timeout = seconds("request-timeout", a.request_timeout, None)?
        .unwrap_or(Duration::from_secs_f64(DEFAULT_REQUEST_TIMEOUT_S));
    Ok(StopSection {
        stop: Stop {
            num_requests,
            duration,
            min_rounds,
            min_duration,
            max_duration,
        },
        warmup: a.warmup,
        request_timeout,
    })
}

/// A time flag in seconds: finite, above `zero_ok` (0 allowed when `Some`), at most a day.
fn seconds(
    flag: &'static str,
    v: Option<f64>,
    zero_ok: Option<f64>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(x) = v else { return Ok(None) };
    let low_ok = if zero_ok.is_some() { x >= 0.0 } else { x > 0.0 };
    if !(x.is_finite() && low_ok && x <= MAX_SECONDS) {
        let low = if zero_ok.is_some() {
            "from 0"
        } else {
            "above 0"
        };
        return err(
            flag,
            format!(
                "--{flag} {x}: must be a number of seconds {low} up to {MAX_SECONDS} (one day)"
            ),
        );
    }
    Ok(Some(Duration::from_secs_f64(x)))
}

/// Warmup requests when --warmup is not given: one round of the point.
pub fn default_warmup(p: LoadPoint) -> usize {
    match p {
        LoadPoint::Batch { batch } => batch as usize,
        LoadPoint::Concurrency { concurrency } => concurrency as usize,
        LoadPoint::Rate { rate, .. } if rate.is_infinite() => 1,
        LoadPoint::Rate { rate, .. } => (rate.ceil() as usize).clamp(1, MAX_REQUESTS),
        // A ramp starts gently on its own; a trace replays exactly what it holds.
        LoadPoint::Ramp { .. } | LoadPoint::Trace { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with;

    /// The error names `flag` and says `needle`.
    fn fails(a: RunArgs, flag: &str, needle: &str) {
        let e = parse(&a).unwrap_err();
        assert_eq!(e.flag, flag, "{e}");
        assert!(e.message.contains(needle), "expected \'{needle}\' in: {e}");
    }

    #[test]
    fn defaults_are_floors_under_a_cap() {
        let s = parse(&RunArgs::default()).unwrap();
        assert_eq!(s.stop.num_requests, None);
        assert_eq!(s.stop.duration, None);
        assert_eq!(s.stop.min_rounds, 3);
        assert_eq!(s.stop.min_duration, Duration::from_secs(10));
        assert_eq!(s.stop.max_duration, Duration::from_secs(300));
        assert_eq!(s.request_timeout, Duration::from_secs(600));
        assert_eq!(s.warmup, None);
    }

    #[test]
    fn exact_amounts_exclude_floors() {
        fails(
            with(|a| {
                a.num_requests = Some(4);
                a.duration = Some(2.0);
            }),
            "num-requests",
            "conflict",
        );
        fails(
            with(|a| {
                a.num_requests = Some(4);
                a.min_rounds = Some(2);
            }),
            "min-rounds",
            "--min-rounds and --num-requests conflict",
        );
        fails(
            with(|a| {
                a.duration = Some(4.0);
                a.max_duration = Some(2.0);
            }),
            "max-duration",
            "--max-duration and --duration conflict",
        );
        let s = parse(&with(|a| a.num_requests = Some(7))).unwrap();
        assert_eq!(s.stop.num_requests, Some(7));
    }

    #[test]
    fn every_number_is_bounded() {
        fails(
            with(|a| a.num_requests = Some(0)),
            "num-requests",
            "--num-requests 0",
        );
        fails(
            with(|a| a.num_requests = Some(usize::MAX)),
            "num-requests",
            "at most",
        );
        fails(with(|a| a.warmup = Some(usize::MAX)), "warmup", "--warmup");
        fails(
            with(|a| a.min_rounds = Some(0)),
            "min-rounds",
            "--min-rounds 0",
        );
        fails(
            with(|a| a.min_rounds = Some(u32::MAX)),
            "min-rounds",
            "at most",
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            fails(with(|a| a.duration = Some(bad)), "duration", "--duration");
            fails(
                with(|a| a.request_timeout = Some(bad)),
                "request-timeout",
                "--request-timeout",
            );
            fails(
                with(|a| a.max_duration = Some(bad)),
                "max-duration",
                "--max-duration",
            );
        }
        fails(
            with(|a| a.min_duration = Some(-1.0)),
            "min-duration",
            "--min-duration",
        );
        assert!(parse(&with(|a| a.min_duration = Some(0.0))).is_ok());
        fails(
            with(|a| {
                a.min_duration = Some(20.0);
                a.max_duration = Some(10.0);
            }),
            "max-duration",
            "below --min-duration",
        );
    }

    #[test]
    fn warmup_is_one_round() {
        assert_eq!(default_warmup(LoadPoint::Batch { batch: 64 }), 64);
        assert_eq!(default_warmup(LoadPoint::Concurrency { concurrency: 8 }), 8);
        let rate = |rate| LoadPoint::Rate {
            rate,
            burstiness: 1.0,
        };
        assert_eq!(default_warmup(rate(2.5)), 3);
        assert_eq!(default_warmup(rate(f64::INFINITY)), 1);
        assert_eq!(default_warmup(rate(0.01)), 1);
    }
}
