//! Figures per device, for a run whose engine spreads the model over several (its
//! layout's tensor × pipeline × data parallel): the point's figure divided by the
//! device count, which is how trtllm-bench and MLPerf state multi-GPU throughput.
//! Only where the layout spans more than one device.

use super::{Estimate, Summary};
use serde::{Deserialize, Serialize};

pub const DEFINITION: &str =
    "output_throughput / devices, where devices = tensor × pipeline × data \
     parallel of the engine's layout (run.json engine.layout, as the engine reports it); only \
     where the layout spans more than one device (tok/s)";

/// A point's figures per device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerDevice {
    pub devices: u32,
    pub output_throughput: Option<f64>,
    /// The rounds estimate of output throughput, divided likewise (its CV unchanged).
    pub rounds: Estimate,
}

/// `s`'s figures per device for `devices` devices; `None` for one.
pub fn per_device(s: &Summary, devices: u32) -> Option<PerDevice> {
    if devices <= 1 {
        return None;
    }
    let d = f64::from(devices);
    let div = |x: Option<f64>| x.map(|v| v / d);
    let r = &s.rounds.output_throughput;
    Some(PerDevice {
        devices,
        output_throughput: div(s.output_throughput),
        rounds: Estimate {
            n: r.n,
            mean: div(r.mean),
            ci95_half_width: div(r.ci95_half_width),
            ci95_low: div(r.ci95_low),
            ci95_high: div(r.ci95_high),
            cv: r.cv,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_the_figure_and_its_interval_by_the_devices() {
        let mut s = Summary {
            output_throughput: Some(300.0),
            ..Summary::default()
        };
        s.rounds.output_throughput = Estimate {
            n: 4,
            mean: Some(300.0),
            ci95_half_width: Some(6.0),
            ci95_low: Some(294.0),
            ci95_high: Some(306.0),
            cv: Some(0.01),
        };
        assert_eq!(per_device(&s, 1), None);
        let p = per_device(&s, 4).unwrap();
        assert_eq!(p.output_throughput, Some(75.0));
        assert_eq!(
            (p.rounds.mean, p.rounds.ci95_half_width, p.rounds.cv),
            (Some(75.0), Some(1.5), Some(0.01))
        );
    }
}
