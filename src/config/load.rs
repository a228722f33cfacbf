//! The load section: one mode (`--batch`, `--concurrency`, `--rate`, a ramp, or a
//! trace's own clock with `--dataset trace`), one value for `run` or a list for
//! `sweep`, `--burstiness`, and the open loops' `--max-concurrency`.

use super::{err, ConfigError};
use crate::cli::{RunArgs, Spec};
use crate::driver::arrivals::RampStrategy;
use crate::driver::LoadPoint;

/// Largest batch size or concurrency: far above what an engine schedules at once
/// (vLLM's default max_num_seqs is 256), low enough that a typo cannot ask for a
/// million requests in flight.
pub const MAX_PARALLEL: u32 = 4096;
/// Highest finite request rate (requests/s); `inf` sends everything at once.
pub const MAX_RATE: f64 = 1e6;
/// Burstiness (gamma shape) range: below 0.01 nearly every gap is zero and a few are
/// huge; above 1000 the gaps are constant to 3 %.
pub const BURSTINESS: (f64, f64) = (0.01, 1000.0);
/// Most points in one sweep.
pub const MAX_POINTS: usize = 1024;
/// `--time-scale` range: a trace replayed up to 1000× faster or slower.
pub const TIME_SCALE: (f64, f64) = (1e-3, 1e3);

pub fn parse(a: &RunArgs, sweep: bool) -> Result<Vec<LoadPoint>, ConfigError> {
    let trace = a.dataset.as_deref() == Some("trace");
    let given: Vec<&'static str> = [
        ("batch", a.batch.is_some()),
        ("concurrency", a.concurrency.is_some()),
        ("rate", a.rate.is_some()),
        ("ramp-up-strategy", a.ramp_up_strategy.is_some()),
    ]
    .iter()
    .filter(|(_, v)| *v)
    .map(|(n, _)| *n)
    .collect();
    if let (true, Some(first)) = (trace, given.first()) {
        return err(
            first,
            format!("--{first} does not apply to --dataset trace: the trace's timestamps are its arrivals; drop --{first} (--time-scale replays faster or slower, --max-concurrency caps requests in flight)"),
        );
    }
    if a.time_scale.is_some() && !trace {
        return err(
            "time-scale",
            "--time-scale applies only to --dataset trace; drop it or replay a trace",
        );
    }
    for (flag, given) in [
        ("ramp-up-start-rps", a.ramp_up_start_rps.is_some()),
        ("ramp-up-end-rps", a.ramp_up_end_rps.is_some()),
    ] {
        if given && a.ramp_up_strategy.is_none() {
            return err(
                flag,
                format!("--{flag} needs --ramp-up-strategy linear|exponential"),
            );
        }
    }
    if given.len() > 1 {
        return err(
            given[1],
            format!(
                "--{} and --{} conflict: give one load mode",
                given[0], given[1]
            ),
        );
    }
    if a.burstiness.is_some() && a.rate.is_none() && a.ramp_up_strategy.is_none() {
        return err(
            "burstiness",
            "--burstiness applies only to --rate or a ramp; add --rate R or drop --burstiness",
        );
    }
    let burstiness = match a.burstiness {
        None => 1.0,
        Some(b) if b.is_finite() && (BURSTINESS.0..=BURSTINESS.1).contains(&b) => b,
        Some(b) => {
            return err(
                "burstiness",
                format!(
                    "--burstiness {b}: must be between {} and {} (1 = Poisson)",
                    BURSTINESS.0, BURSTINESS.1
                ),
            )
        }
    };
    let points: Vec<LoadPoint> = if trace {
        vec![LoadPoint::Trace {
            time_scale: time_scale(a.time_scale)?,
        }]
    } else if let Some(s) = &a.ramp_up_strategy {
        vec![ramp(a, s, burstiness)?]
    } else if let Some(s) = &a.batch {
        int_list("batch", s)?
            .into_iter()
            .map(|batch| LoadPoint::Batch { batch })
            .collect()
    } else if let Some(s) = &a.concurrency {
        int_list("concurrency", s)?
            .into_iter()
            .map(|concurrency| LoadPoint::Concurrency { concurrency })
            .collect()
    } else if let Some(s) = &a.rate {
        rate_list(s)?
            .into_iter()
            .map(|rate| LoadPoint::Rate { rate, burstiness })
            .collect()
    } else if sweep {
        return err(
            "batch",
            "harness sweep needs a list: --batch 1,2,4 or --concurrency LIST or --rate LIST",
        );
    } else {
        vec![LoadPoint::Batch { batch: 1 }]
    };
    if !sweep && points.len() > 1 {
        return err(
            mode_flag(a),
            format!(
                "harness run takes one load point, got {}; use `harness sweep` for lists",
                points.len()
            ),
        );
    }
    Ok(points)
}

/// `--max-concurrency C`: 1..=MAX_PARALLEL, open loops only.
pub fn max_concurrency(a: &RunArgs, points: &[LoadPoint]) -> Result<Option<u32>, ConfigError> {
    let Some(c) = a.max_concurrency else {
        return Ok(None);
    };
    if !(1..=MAX_PARALLEL).contains(&c) {
        return err(
            "max-concurrency",
            format!("--max-concurrency {c}: give a value from 1 to {MAX_PARALLEL}"),
        );
    }
    if let Some(p) = points.iter().find(|p| !p.is_open()) {
        return err(
            "max-concurrency",
            format!(
                "--max-concurrency applies to open loops (--rate, a ramp, --dataset trace), not --{}; --concurrency C already holds C in flight",
                p.mode()
            ),
        );
    }
    Ok(Some(c))
}

/// `--ramp-up-strategy` with its start and end rates, by vLLM's rules: both rates
/// given, start > 0 (vLLM refuses 0 for exponential; a linear ramp from 0 would wait
/// forever for its first gap), start <= end (a ramp goes up).
fn ramp(a: &RunArgs, strategy: &str, burstiness: f64) -> Result<LoadPoint, ConfigError> {
    let strategy = match strategy {
        "linear" => RampStrategy::Linear,
        "exponential" => RampStrategy::Exponential,
        other => {
            return err(
                "ramp-up-strategy",
                format!("--ramp-up-strategy {other}: use linear or exponential"),
            )
        }
    };
    let rps = |flag: &'static str, v: Option<f64>| match v {
        None => err(
            flag,
            format!("--ramp-up-strategy needs --{flag} RPS (requests/s)"),
        ),
        Some(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE => Ok(r),
        Some(r) => err(
            flag,
            format!("--{flag} {r}: must be a number of requests/s in (0, {MAX_RATE}]"),
        ),
    };
    let start_rps = rps("ramp-up-start-rps", a.ramp_up_start_rps)?;
    let end_rps = rps("ramp-up-end-rps", a.ramp_up_end_rps)?;
    if end_rps < start_rps {
        return err(
            "ramp-up-end-rps",
            format!("--ramp-up-end-rps {end_rps} is below --ramp-up-start-rps {start_rps}; a ramp goes up (as in vllm bench serve): swap them"),
        );
    }
    Ok(LoadPoint::Ramp {
        strategy,
        start_rps,
        end_rps,
        burstiness,
    })
}

fn time_scale(v: Option<f64>) -> Result<f64, ConfigError> {
    match v {
        None => Ok(1.0),
        Some(x) if x.is_finite() && (TIME_SCALE.0..=TIME_SCALE.1).contains(&x) => Ok(x),
        Some(x) => err(
            "time-scale",
            format!(
                "--time-scale {x}: must be from {} to {} (it multiplies the trace's gaps: 0.5 replays twice as fast)",
                TIME_SCALE.0, TIME_SCALE.1
            ),
        ),
    }
}

/// The load flag given (for an error about its values).
fn mode_flag(a: &RunArgs) -> &'static str {
    if a.concurrency.is_some() {
        "concurrency"
    } else if a.rate.is_some() {
        "rate"
    } else {
        "batch"
    }
}

fn items<'a>(flag: &'static str, s: &'a Spec) -> Result<Vec<&'a str>, ConfigError> {
    let v: Vec<&str> = s.0.split(',').map(str::trim).collect();
    if v.len() > MAX_POINTS {
        return err(
            flag,
            format!(
                "--{flag}: {} values, more than {MAX_POINTS} points in one sweep",
                v.len()
            ),
        );
    }
    Ok(v)
}

/// `1,2,4` → [1, 2, 4], each an integer in 1..=MAX_PARALLEL.
fn int_list(flag: &'static str, s: &Spec) -> Result<Vec<u32>, ConfigError> {
    items(flag, s)?
        .into_iter()
        .map(|v| match v.parse::<u64>() {
            Ok(n) if (1..=u64::from(MAX_PARALLEL)).contains(&n) => Ok(n as u32),
            Ok(n) => err(
                flag,
                format!(
                    "--{flag} {}: {n} is {}; give a value from 1 to {MAX_PARALLEL}",
                    s.0,
                    if n == 0 { "zero" } else { "too large" }
                ),
            ),
            _ => err(
                flag,
                format!(
                    "--{flag} {}: '{v}' is not a positive integer; give N or a list N,N,..",
                    s.0
                ),
            ),
        })
        .collect()
}

fn rate_list(s: &Spec) -> Result<Vec<f64>, ConfigError> {
    items("rate", s)?
        .into_iter()
        .map(|v| match v.parse::<f64>() {
            Ok(r) if r.is_infinite() && r > 0.0 => Ok(r),
            Ok(r) if r > 0.0 && r <= MAX_RATE => Ok(r),
            _ => err(
                "rate",
                format!(
                    "--rate {}: '{v}' is not a number of requests/s in (0, {MAX_RATE}] (or inf)",
                    s.0
                ),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with;

    fn spec(s: &str) -> Option<Spec> {
        Some(Spec(s.into()))
    }

    #[test]
    fn one_mode_lists_only_in_sweep() {
        assert_eq!(
            parse(&with(|_| {}), false).unwrap(),
            [LoadPoint::Batch { batch: 1 }]
        );
        let s = parse(&with(|a| a.concurrency = spec("1, 4")), true).unwrap();
        assert_eq!(s[1], LoadPoint::Concurrency { concurrency: 4 });
        let e = parse(&with(|a| a.batch = spec("1,2")), false)
            .unwrap_err()
            .message;
        assert!(e.contains("use `harness sweep`"), "{e}");
        let e = parse(&with(|_| {}), true).unwrap_err().message;
        assert!(e.contains("needs a list"), "{e}");
        let e = parse(
            &with(|a| {
                a.batch = spec("1");
                a.rate = spec("1");
            }),
            false,
        )
        .unwrap_err()
        .message;
        assert!(e.contains("--batch and --rate conflict"), "{e}");
    }

    #[test]
    fn values_are_bounded() {
        for (b, needle) in [
            ("0", "zero"),
            ("4097", "too large"),
            ("99999999999999999999", "not a positive integer"),
            ("-1", "not a positive integer"),
            ("1.5", "not a positive integer"),
        ] {
            let e = parse(&with(|a| a.batch = spec(b)), false)
                .unwrap_err()
                .message;
            assert!(e.contains(needle), "{b}: {e}");
        }
        assert!(parse(&with(|a| a.batch = spec("4096")), false).is_ok());
        for r in ["0", "-1", "nan", "1e7", "-inf", "x"] {
            assert!(parse(&with(|a| a.rate = spec(r)), false).is_err(), "{r}");
        }
        let p = parse(&with(|a| a.rate = spec("inf")), false).unwrap();
        assert!(
            matches!(p[0], LoadPoint::Rate { rate, burstiness } if rate.is_infinite() && burstiness == 1.0)
        );
        let long = vec!["1"; MAX_POINTS + 1].join(",");
        assert!(parse(&with(|a| a.batch = spec(&long)), true)
            .unwrap_err()
            .message
            .contains("more than"));
    }

    #[test]
    fn burstiness_needs_rate_and_a_sane_shape() {
        let e = parse(&with(|a| a.burstiness = Some(0.5)), false)
            .unwrap_err()
            .message;
        assert!(e.contains("applies only to --rate"), "{e}");
    }

    #[test]
    fn ramps_follow_vllms_rules() {
        let ramp = |s: &str, start: Option<f64>, end: Option<f64>| {
            parse(
                &with(|a| {
                    a.ramp_up_strategy = Some(s.into());
                    a.ramp_up_start_rps = start;
                    a.ramp_up_end_rps = end;
                }),
                false,
            )
        };
        let p = ramp("exponential", Some(1.0), Some(100.0)).unwrap();
        assert_eq!(
            p[0],
            LoadPoint::Ramp {
                strategy: RampStrategy::Exponential,
                start_rps: 1.0,
                end_rps: 100.0,
                burstiness: 1.0
            }
        );
        for (s, start, end, flag) in [
            ("cubic", Some(1.0), Some(2.0), "ramp-up-strategy"),
            ("linear", None, Some(2.0), "ramp-up-start-rps"),
            ("linear", Some(1.0), None, "ramp-up-end-rps"),
            ("linear", Some(0.0), Some(2.0), "ramp-up-start-rps"),
            ("linear", Some(5.0), Some(2.0), "ramp-up-end-rps"),
            ("linear", Some(1.0), Some(f64::INFINITY), "ramp-up-end-rps"),
        ] {
            assert_eq!(
                ramp(s, start, end).unwrap_err().flag,
                flag,
                "{s} {start:?} {end:?}"
            );
        }
        let e = parse(&with(|a| a.ramp_up_end_rps = Some(2.0)), false).unwrap_err();
        assert_eq!(e.flag, "ramp-up-end-rps");
    }

    #[test]
    fn a_trace_is_its_own_schedule() {
        let trace = |f: fn(&mut RunArgs)| {
            parse(
                &with(|a| {
                    a.dataset = Some("trace".into());
                    f(a)
                }),
                false,
            )
        };
        assert_eq!(
            trace(|_| {}).unwrap(),
            [LoadPoint::Trace { time_scale: 1.0 }]
        );
        assert_eq!(trace(|a| a.rate = spec("2")).unwrap_err().flag, "rate");
        assert_eq!(trace(|a| a.batch = spec("2")).unwrap_err().flag, "batch");
        for x in [0.0, -1.0, f64::NAN, 1e9] {
            let e = parse(
                &with(|a| {
                    a.dataset = Some("trace".into());
                    a.time_scale = Some(x);
                }),
                false,
            )
            .unwrap_err();
            assert_eq!(e.flag, "time-scale", "{x}");
        }
        let e = parse(&with(|a| a.time_scale = Some(2.0)), false).unwrap_err();
        assert!(e.message.contains("only to --dataset trace"), "{e}");
    }

    #[test]
    fn max_concurrency_is_for_open_loops() {
        let rate = [LoadPoint::Rate {
            rate: 2.0,
            burstiness: 1.0,
        }];
        let a = with(|a| a.max_concurrency = Some(4));
        assert_eq!(max_concurrency(&a, &rate).unwrap(), Some(4));
        let closed = [LoadPoint::Concurrency { concurrency: 4 }];
        assert!(max_concurrency(&a, &closed)
            .unwrap_err()
            .message
            .contains("open loops"));
        let zero = with(|a| a.max_concurrency = Some(0));
        assert_eq!(
            max_concurrency(&zero, &rate).unwrap_err().flag,
            "max-concurrency"
        );
        for b in [0.0, 1e-9, f64::NAN, f64::INFINITY, 1e9] {
            let e = parse(
                &with(|a| {
                    a.rate = spec("2");
                    a.burstiness = Some(b);
                }),
                false,
            );
            assert!(e.is_err(), "{b}");
        }
    }
}
