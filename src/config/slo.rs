//! The SLO section: `--slo ttft=MS,tpot=MS,e2el=MS` for goodput.

use super::{err, ConfigError};
use crate::cli::RunArgs;
use crate::metrics::{parse_slo, Slo};

pub fn parse(a: &RunArgs) -> Result<Slo, ConfigError> {
    match &a.slo {
        Some(s) => parse_slo(s).or_else(|e| err("slo", format!("--slo {s}: {e}"))),
        None => Ok(Slo::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_empty_and_bad_names_the_flag() {
        assert!(parse(&RunArgs::default()).unwrap().is_empty());
        let a = RunArgs {
            slo: Some("ttft=500,tpot=50".into()),
            ..Default::default()
        };
        let slo = parse(&a).unwrap();
        assert_eq!(
            (slo.ttft_ms, slo.tpot_ms, slo.e2el_ms),
            (Some(500.0), Some(50.0), None)
        );
        let a = RunArgs {
            slo: Some("ttft=abc".into()),
            ..Default::default()
        };
        let e = parse(&a).unwrap_err().message;
        assert!(e.starts_with("--slo ttft=abc:"), "{e}");
    }
}
