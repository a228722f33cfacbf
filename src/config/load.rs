//! The load section: one mode (`--batch`, `--concurrency` or `--rate`), one value for
//! `run` or a list for `sweep`, and `--burstiness`.

use super::{err, ConfigError};
use crate::cli::{RunArgs, Spec};
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

pub fn parse(a: &RunArgs, sweep: bool) -> Result<Vec<LoadPoint>, ConfigError> {
    let given: Vec<&'static str> = [
        ("batch", &a.batch),
        ("concurrency", &a.concurrency),
        ("rate", &a.rate),
    ]
    .iter()
    .filter(|(_, v)| v.is_some())
    .map(|(n, _)| *n)
    .collect();
    if given.len() > 1 {
        return err(
            given[1],
            format!(
                "--{} and --{} conflict: give one load mode",
                given[0], given[1]
            ),
        );
    }
    if a.burstiness.is_some() && a.rate.is_none() {
        return err(
            "burstiness",
            "--burstiness applies only to --rate; add --rate R or drop --burstiness",
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
    let points: Vec<LoadPoint> = if let Some(s) = &a.batch {
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
