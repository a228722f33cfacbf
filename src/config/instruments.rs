//! The instruments section: the profiler window (`--profile`, `--profile-points`,
//! `--profile-steps`) and the telemetry sampling period (`--gpu-sample-ms`).

use super::{err, ConfigError};
use crate::cli::RunArgs;
use crate::driver::{LoadPoint, ProfilePlan};
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_PROFILE_STEPS: u64 = 20;
pub const MAX_PROFILE_STEPS: u64 = 100_000;
pub const DEFAULT_SAMPLE_MS: u64 = 100;
/// Telemetry sampling between 10 ms (NVML's own update rate is ~20 ms) and a minute.
pub const SAMPLE_MS: (u64, u64) = (10, 60_000);

#[derive(Clone, Debug, PartialEq)]
pub struct Instruments {
    /// `Some`: profile these point indices, `profile_steps` steps each.
    pub profile: Option<Vec<usize>>,
    pub profile_steps: u64,
    pub sample_period: Duration,
}

impl Instruments {
    /// The profiler window of point `p`, if it is one of the chosen points.
    pub fn profile_plan(
        &self,
        points: &[LoadPoint],
        p: LoadPoint,
        out: &Path,
    ) -> Option<ProfilePlan> {
        let chosen = self.profile.as_ref()?;
        let i = points.iter().position(|q| *q == p)?;
        chosen.contains(&i).then(|| ProfilePlan {
            dir: out.to_path_buf(),
            steps: self.profile_steps,
        })
    }
}

pub fn parse(a: &RunArgs, points: &[LoadPoint]) -> Result<Instruments, ConfigError> {
    let on = a.profile.unwrap_or(false);
    if !on && (a.profile_points.is_some() || a.profile_steps.is_some()) {
        return err(
            "profile-points",
            "--profile-points and --profile-steps need --profile",
        );
    }
    let profile_steps = match a.profile_steps {
        Some(0) => return err("profile-steps", "--profile-steps 0: must be at least 1"),
        Some(n) if n > MAX_PROFILE_STEPS => {
            return err(
                "profile-steps",
                format!("--profile-steps {n}: at most {MAX_PROFILE_STEPS}"),
            )
        }
        n => n.unwrap_or(DEFAULT_PROFILE_STEPS),
    };
    let profile = on
        .then(|| match &a.profile_points {
            None => Ok((0..points.len()).collect()),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .map(|item| {
                    points
                        .iter()
                        .position(|p| p.label() == item)
                        .or_else(|| item.parse::<usize>().ok().filter(|&i| i < points.len()))
                        .ok_or_else(|| {
                            ConfigError::new("profile-points", format!(
                                "--profile-points: '{item}' is none of this run's points ({}) nor an index below {}",
                                points.iter().map(|p| p.label()).collect::<Vec<_>>().join(", "),
                                points.len()
                            ))
                        })
                })
                .collect(),
        })
        .transpose()?;
    let ms = a.gpu_sample_ms.unwrap_or(DEFAULT_SAMPLE_MS);
    if !(SAMPLE_MS.0..=SAMPLE_MS.1).contains(&ms) {
        return err(
            "gpu-sample-ms",
            format!(
                "--gpu-sample-ms {ms}: give {} to {} ms",
                SAMPLE_MS.0, SAMPLE_MS.1
            ),
        );
    }
    Ok(Instruments {
        profile,
        profile_steps,
        sample_period: Duration::from_millis(ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with;

    fn points() -> Vec<LoadPoint> {
        [1, 8, 32].map(|batch| LoadPoint::Batch { batch }).to_vec()
    }

    #[test]
    fn off_by_default_and_every_point_when_on() {
        let i = parse(&RunArgs::default(), &points()).unwrap();
        assert_eq!(
            (i.profile, i.sample_period),
            (None, Duration::from_millis(100))
        );
        let i = parse(&with(|a| a.profile = Some(true)), &points()).unwrap();
        assert_eq!(i.profile, Some(vec![0, 1, 2]));
        assert_eq!(i.profile_steps, 20);
        let plan = i
            .profile_plan(&points(), points()[1], Path::new("out"))
            .unwrap();
        assert_eq!((plan.dir.as_path(), plan.steps), (Path::new("out"), 20));
    }

    #[test]
    fn points_by_label_or_index() {
        let i = parse(
            &with(|a| {
                a.profile = Some(true);
                a.profile_points = Some("batch=32, 0".into());
                a.profile_steps = Some(5);
            }),
            &points(),
        )
        .unwrap();
        assert_eq!(i.profile, Some(vec![2, 0]));
        assert!(i
            .profile_plan(&points(), points()[1], Path::new("o"))
            .is_none());
        let e = parse(
            &with(|a| {
                a.profile = Some(true);
                a.profile_points = Some("batch=4".into());
            }),
            &points(),
        )
        .unwrap_err()
        .message;
        assert!(
            e.contains("'batch=4' is none of this run's points (batch=1, batch=8, batch=32)"),
            "{e}"
        );
    }

    #[test]
    fn bounds_and_dependencies() {
        assert!(parse(&with(|a| a.profile_steps = Some(3)), &points())
            .unwrap_err()
            .message
            .contains("need --profile"));
        for steps in [0, u64::MAX] {
            let e = parse(
                &with(|a| {
                    a.profile = Some(true);
                    a.profile_steps = Some(steps);
                }),
                &points(),
            );
            assert!(e.is_err(), "{steps}");
        }
        for ms in [0, 5, 10_000_000] {
            assert!(
                parse(&with(|a| a.gpu_sample_ms = Some(ms)), &points()).is_err(),
                "{ms}"
            );
        }
    }
}
