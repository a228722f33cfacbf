//! The search section (`harness search`): `--search DIM=LO:HI`, `--resolution` and
//! `--min-good-fraction`, checked against the run's flags (a search chooses each
//! probe's load itself, and judges probes by `--slo`, so both are required here and
//! the load flags are refused).

use super::load::{MAX_PARALLEL, MAX_RATE};
use super::{err, ConfigError};
use crate::cli::{RunArgs, Spec};
use crate::driver::LoadPoint;
use crate::metrics::capacity::{Dimension, SearchSpec};

/// `--min-good-fraction` when not given: nine requests in ten within the SLOs.
pub const DEFAULT_MIN_GOOD_FRACTION: f64 = 0.9;
/// A rate search's `--resolution` when not given, as a fraction of HI (1 %).
pub const DEFAULT_RATE_RESOLUTION: f64 = 0.01;

/// A validated search: what it looks for, and how a value becomes a load point.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Search {
    pub spec: SearchSpec,
    /// `--burstiness` of a rate search's probes (1 = Poisson).
    pub burstiness: f64,
}

impl Search {
    /// The load point that probes `value`.
    pub fn point(&self, value: f64) -> LoadPoint {
        match self.spec.dimension {
            // Values are integers in 1..=MAX_PARALLEL (checked at parse, kept by the
            // bisection's rounding).
            Dimension::Concurrency => LoadPoint::Concurrency {
                concurrency: value.round().clamp(1.0, f64::from(MAX_PARALLEL)) as u32,
            },
            Dimension::Rate => LoadPoint::Rate {
                rate: value,
                burstiness: self.burstiness,
            },
        }
    }
}

/// Refuses what a search cannot combine with, before anything else is parsed: a load
/// flag (the search sets each probe's load) or a trace (its arrivals are its own).
pub fn refuse_conflicts(a: &RunArgs) -> Result<(), ConfigError> {
    for (flag, given) in [
        ("batch", a.batch.is_some()),
        ("concurrency", a.concurrency.is_some()),
        ("rate", a.rate.is_some()),
        ("ramp-up-strategy", a.ramp_up_strategy.is_some()),
    ] {
        if given {
            return err(
                flag,
                format!("--{flag} conflicts with --search: the search chooses each probe's load; drop --{flag}"),
            );
        }
    }
    if a.dataset.as_deref() == Some("trace") {
        return err(
            "dataset",
            "--dataset trace replays the trace's own arrivals, which a search cannot vary; search with another --dataset",
        );
    }
    if a.slo.is_none() {
        return err(
            "slo",
            "harness search needs --slo ttft=MS[,tpot=MS][,e2el=MS]: a probe passes when enough of its requests meet every SLO",
        );
    }
    Ok(())
}

/// Parses `--search DIM=LO:HI`, `--resolution X` and `--min-good-fraction F`.
pub fn parse(
    search: Option<&str>,
    resolution: Option<f64>,
    min_good_fraction: Option<f64>,
) -> Result<SearchSpec, ConfigError> {
    const FORM: &str = "give concurrency=LO:HI (integers) or rate=LO:HI (requests/s), LO < HI";
    let Some(s) = search else {
        return err(
            "search",
            format!("harness search needs --search DIM=LO:HI: {FORM}"),
        );
    };
    let Some((dim, bracket)) = s.split_once('=') else {
        return err("search", format!("--search {s}: {FORM}"));
    };
    let dimension = match dim.trim() {
        "concurrency" => Dimension::Concurrency,
        "rate" => Dimension::Rate,
        other => {
            return err(
                "search",
                format!("--search {s}: '{other}' is not a searchable load; {FORM}"),
            )
        }
    };
    let Some((lo, hi)) = bracket.split_once(':') else {
        return err("search", format!("--search {s}: no LO:HI; {FORM}"));
    };
    let value = |v: &str| -> Result<f64, ConfigError> {
        let v = v.trim();
        match dimension {
            Dimension::Concurrency => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_PARALLEL).contains(&n) => Ok(f64::from(n)),
                _ => err(
                    "search",
                    format!("--search {s}: concurrency '{v}' is not an integer from 1 to {MAX_PARALLEL}"),
                ),
            },
            Dimension::Rate => match v.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE => Ok(r),
                _ => err(
                    "search",
                    format!("--search {s}: rate '{v}' is not a number of requests/s in (0, {MAX_RATE}]"),
                ),
            },
        }
    };
    let (lo, hi) = (value(lo)?, value(hi)?);
    if lo >= hi {
        return err(
            "search",
            format!("--search {s}: LO must be below HI; {FORM}"),
        );
    }
    let resolution = match (dimension, resolution) {
        (Dimension::Concurrency, None) => 1.0,
        (Dimension::Rate, None) => hi * DEFAULT_RATE_RESOLUTION,
        (Dimension::Concurrency, Some(r)) if r.is_finite() && r >= 1.0 && r.fract() == 0.0 => r,
        (Dimension::Concurrency, Some(r)) => {
            return err(
                "resolution",
                format!("--resolution {r}: a concurrency search bisects to whole requests; give an integer of at least 1"),
            )
        }
        (Dimension::Rate, Some(r)) if r.is_finite() && r > 0.0 => r,
        (Dimension::Rate, Some(r)) => {
            return err(
                "resolution",
                format!("--resolution {r}: give a positive number of requests/s"),
            )
        }
    };
    let min_good_fraction = match min_good_fraction {
        None => DEFAULT_MIN_GOOD_FRACTION,
        Some(f) if f > 0.0 && f <= 1.0 => f,
        Some(f) => {
            return err(
                "min-good-fraction",
                format!("--min-good-fraction {f}: give a fraction in (0, 1], e.g. 0.9"),
            )
        }
    };
    Ok(SearchSpec {
        dimension,
        lo,
        hi,
        resolution,
        min_good_fraction,
    })
}

/// The run's flags with the bracket's two ends as a load list, so that every check of
/// a load point (amounts under --duration, --max-concurrency, --burstiness) covers
/// both ends, and hence every probe between them.
pub fn ends_as_points(a: &RunArgs, spec: &SearchSpec) -> RunArgs {
    let ends = Some(Spec(format!("{},{}", spec.lo, spec.hi)));
    let mut a = a.clone();
    match spec.dimension {
        Dimension::Concurrency => a.concurrency = ends,
        Dimension::Rate => a.rate = ends,
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with;

    #[test]
    fn brackets_and_defaults() {
        let s = parse(Some("concurrency=1:64"), None, None).unwrap();
        assert_eq!(
            (s.dimension, s.lo, s.hi, s.resolution, s.min_good_fraction),
            (Dimension::Concurrency, 1.0, 64.0, 1.0, 0.9)
        );
        let s = parse(Some("rate=0.5:20"), None, Some(0.95)).unwrap();
        assert_eq!((s.dimension, s.resolution), (Dimension::Rate, 0.2));
        assert_eq!(s.min_good_fraction, 0.95);
        assert_eq!(
            parse(Some("rate=1:20"), Some(0.5), None)
                .unwrap()
                .resolution,
            0.5
        );
    }

    #[test]
    fn bad_searches_name_their_flag() {
        for (s, r, f, flag) in [
            (None, None, None, "search"),
            (Some("concurrency"), None, None, "search"),
            (Some("batch=1:4"), None, None, "search"),
            (Some("concurrency=4"), None, None, "search"),
            (Some("concurrency=8:4"), None, None, "search"),
            (Some("concurrency=4:4"), None, None, "search"),
            (Some("concurrency=0:4"), None, None, "search"),
            (Some("concurrency=1.5:4"), None, None, "search"),
            (Some("concurrency=1:99999"), None, None, "search"),
            (Some("rate=0:4"), None, None, "search"),
            (Some("rate=-1:4"), None, None, "search"),
            (Some("rate=1:inf"), None, None, "search"),
            (Some("rate=1:nan"), None, None, "search"),
            (Some("concurrency=1:8"), Some(0.0), None, "resolution"),
            (Some("concurrency=1:8"), Some(1.5), None, "resolution"),
            (Some("rate=1:8"), Some(-1.0), None, "resolution"),
            (Some("rate=1:8"), Some(f64::NAN), None, "resolution"),
            (Some("rate=1:8"), None, Some(0.0), "min-good-fraction"),
            (Some("rate=1:8"), None, Some(1.5), "min-good-fraction"),
            (Some("rate=1:8"), None, Some(f64::NAN), "min-good-fraction"),
        ] {
            assert_eq!(parse(s, r, f).unwrap_err().flag, flag, "{s:?} {r:?} {f:?}");
        }
    }

    #[test]
    fn load_flags_trace_and_a_missing_slo_are_refused() {
        let slo = |a: &mut RunArgs| a.slo = Some("ttft=100".into());
        assert!(refuse_conflicts(&with(slo)).is_ok());
        assert_eq!(refuse_conflicts(&with(|_| {})).unwrap_err().flag, "slo");
        let e = refuse_conflicts(&with(|a| {
            slo(a);
            a.concurrency = Some(Spec("1,2".into()));
        }))
        .unwrap_err();
        assert_eq!(e.flag, "concurrency");
        assert!(e.message.contains("conflicts with --search"), "{e}");
        for f in [
            |a: &mut RunArgs| a.batch = Some(Spec("1".into())),
            |a: &mut RunArgs| a.rate = Some(Spec("1".into())),
            |a: &mut RunArgs| a.ramp_up_strategy = Some("linear".into()),
            |a: &mut RunArgs| a.dataset = Some("trace".into()),
        ] {
            assert!(refuse_conflicts(&with(|a| {
                slo(a);
                f(a)
            }))
            .is_err());
        }
    }

    #[test]
    fn values_become_points() {
        let spec = parse(Some("rate=1:8"), None, None).unwrap();
        let s = Search {
            spec,
            burstiness: 2.0,
        };
        assert_eq!(
            s.point(2.5),
            LoadPoint::Rate {
                rate: 2.5,
                burstiness: 2.0
            }
        );
        let a = ends_as_points(&RunArgs::default(), &spec);
        assert_eq!(a.rate, Some(Spec("1,8".into())));
    }
}
