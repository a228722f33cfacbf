//! The engine section: `--engine`, `--model`, `--engine-arg`, `--python-env`.

use super::{err, ConfigError};
use crate::cli::RunArgs;
use crate::engine::{EngineConfig, EngineSpec, Registry};
use std::path::Path;

/// The engine to load and what it loads with.
#[derive(Clone, Debug)]
pub struct EngineSection {
    pub spec: &'static EngineSpec,
    pub config: EngineConfig,
}

/// Most `--engine-arg`s a run takes (a typo loop in a script, not a real config).
const MAX_ENGINE_ARGS: usize = 256;

pub fn parse(a: &RunArgs, registry: &Registry) -> Result<EngineSection, ConfigError> {
    let Some(name) = a.engine.as_deref() else {
        return err(
            "engine",
            format!(
                "--engine is required; one of: {} (see `harness engines`)",
                registry.names()
            ),
        );
    };
    let spec = registry
        .lookup(name)
        .map_err(|e| ConfigError::new("engine", e))?;
    match &a.model {
        None if spec.model.needed() => {
            return err(
                "model",
                format!(
                "--model is required for --engine {name}; pass {} (scripts/setup.sh builds one)",
                spec.model.describe()
            ),
            )
        }
        None => {}
        Some(m) => check_model(spec, m)?,
    }
    let engine_args = parse_engine_args(&a.engine_arg)?;
    if let Some(env) = &a.python_env {
        if spec.python_env.is_none() {
            return err(
                "python-env",
                format!(
                    "--python-env applies to Python engines; {name} is not one (drop --python-env)"
                ),
            );
        }
        if !env.join("bin").is_dir() {
            return err("python-env", format!("--python-env {}: not a Python venv (no bin/); pass a venv made by scripts/setup.sh", env.display()));
        }
    }
    let config = EngineConfig {
        model: a.model.clone(),
        engine_args,
        python_env: a.python_env.clone(),
        log_dir: None,
    };
    // An engine that cannot run here (no env, a build without its feature) is refused
    // before anything is created, with the engine's own reason and fix.
    if let Some(why) = (spec.availability)(&config).problem {
        return err("engine", format!("--engine {name} cannot run here: {why}"));
    }
    Ok(EngineSection { spec, config })
}

/// `KEY=VALUE` pairs, in order, keys trimmed.
pub fn parse_engine_args(args: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    if args.len() > MAX_ENGINE_ARGS {
        return err(
            "engine-arg",
            format!(
                "{} --engine-arg flags: more than {MAX_ENGINE_ARGS}; give each option once",
                args.len()
            ),
        );
    }
    args.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => err(
                "engine-arg",
                format!("--engine-arg '{kv}': expected KEY=VALUE (e.g. max_num_seqs=64)"),
            ),
        })
        .collect()
}

/// `--model` must be what the engine takes ([`ModelInput`]) before it is asked to load it.
pub fn check_model(spec: &EngineSpec, model: &Path) -> Result<(), ConfigError> {
    spec.model
        .check(model)
        .map_err(|e| ConfigError::new("model", e))
}

/// The directory a model lives in (a GGUF file's directory), where its tokenizer.json is.
pub fn model_dir(model: &Path) -> &Path {
    if model.is_file() {
        model.parent().unwrap_or(model)
    } else {
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with;

    /// The error names `flag` and says `needle`.
    fn fails(a: RunArgs, flag: &str, needle: &str) {
        let e = parse(&a, &Registry::builtin()).unwrap_err();
        assert_eq!(e.flag, flag, "{e}");
        assert!(e.message.contains(needle), "expected \'{needle}\' in: {e}");
    }

    #[test]
    fn engine_is_required_and_known() {
        fails(
            with(|_| {}),
            "engine",
            "--engine is required; one of: calibration",
        );
        fails(
            with(|a| a.engine = Some("nope".into())),
            "engine",
            "unknown engine 'nope'; known engines: calibration",
        );
        let ok = parse(
            &with(|a| a.engine = Some("calibration".into())),
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(ok.spec.name, "calibration");
    }

    #[test]
    fn engine_args_are_key_value_in_order() {
        let kv = parse_engine_args(&["b = 2".into(), "a=x=y".into()]).unwrap();
        assert_eq!(kv, [("b".into(), "2".into()), ("a".into(), "x=y".into())]);
        assert!(parse_engine_args(&["=1".into()])
            .unwrap_err()
            .message
            .contains("KEY=VALUE"));
        assert!(parse_engine_args(&["nokey".into()]).is_err());
        let many = vec!["a=1".to_string(); MAX_ENGINE_ARGS + 1];
        assert!(parse_engine_args(&many)
            .unwrap_err()
            .message
            .contains("more than"));
    }

    #[test]
    fn each_engine_checks_its_own_model() {
        let d = tempfile::tempdir().unwrap();
        fails(
            with(|a| {
                a.engine = Some("calibration".into());
                a.model = Some(d.path().join("x"));
            }),
            "model",
            "no such file or directory",
        );
        // A GGUF file's tokenizer.json is beside it.
        let f = d.path().join("m.gguf");
        std::fs::write(&f, "").unwrap();
        assert_eq!(model_dir(&f), d.path());
        assert_eq!(model_dir(d.path()), d.path());
    }

    #[test]
    fn python_env_only_for_python_engines() {
        fails(
            with(|a| {
                a.engine = Some("calibration".into());
                a.python_env = Some("/tmp".into());
            }),
            "python-env",
            "--python-env applies to Python engines",
        );
    }
}
