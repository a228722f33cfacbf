//! The engines this build knows. Each backend module declares its own [`EngineSpec`];
//! this file only collects them, one line each. Everything else (the `--engine`
//! check, `harness engines`, loading, parity) reads the list through a [`Registry`],
//! so an engine added here is known everywhere.

use super::{Availability, EngineConfig, EngineSpec};

/// Every engine compiled into this build, in listing order.
static BUILTIN: &[&EngineSpec] = &[
    &super::calibration::SPEC,
    #[cfg(feature = "python")]
    &super::python::vllm::SPEC,
    #[cfg(feature = "python")]
    &super::python::hf::SPEC,
    #[cfg(feature = "python")]
    &super::python::test_adapter::SPEC,
    #[cfg(feature = "python")]
    &super::python::sglang::SPEC,
    #[cfg(feature = "python")]
    &super::python::trtllm_llmapi::SPEC,
    // Listed in every build: without the `trtllm` feature it says how to build it.
    &super::trtllm::SPEC,
    #[cfg(feature = "openai")]
    &super::http::openai::SPEC,
    #[cfg(feature = "openai")]
    &super::http::vllm_server::SPEC,
    // Listed in every build: without the `llamacpp` feature it says how to build it.
    &super::llamacpp::SPEC,
];

/// A set of engine specs. [`Registry::builtin`] is this build's; tests make their own
/// with [`Registry::with`] to prove that an engine is one spec and nothing more.
#[derive(Clone, Debug)]
pub struct Registry {
    specs: Vec<&'static EngineSpec>,
}

impl Registry {
    pub fn builtin() -> Registry {
        Registry {
            specs: BUILTIN.to_vec(),
        }
    }

    /// This build's engines plus `extra`.
    pub fn with(extra: &'static EngineSpec) -> Registry {
        let mut r = Registry::builtin();
        r.specs.push(extra);
        r
    }

    pub fn specs(&self) -> &[&'static EngineSpec] {
        &self.specs
    }

    pub fn find(&self, name: &str) -> Option<&'static EngineSpec> {
        self.specs.iter().copied().find(|e| e.name == name)
    }

    /// "calibration, vllm, hf, ..." for error messages.
    pub fn names(&self) -> String {
        self.specs
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The spec named `name`, or a one-line error listing the known ones.
    pub fn lookup(&self, name: &str) -> Result<&'static EngineSpec, String> {
        self.find(name).ok_or_else(|| {
            format!(
                "unknown engine '{name}'; known engines: {} (see `harness engines`)",
                self.names()
            )
        })
    }

    /// `harness engines`: each engine, whether it can run here (and why not), what it
    /// runs on and its version.
    pub fn listing(&self, config: &EngineConfig) -> String {
        let mut out = String::new();
        for e in &self.specs {
            let a: Availability = (e.availability)(config);
            let state = if a.is_usable() { "ready" } else { "NOT USABLE" };
            let kind = match e.kind {
                super::EngineKind::Step => "step",
                super::EngineKind::Stream => "stream",
            };
            out.push_str(&format!("{:<13}{:<11}{}\n", e.name, state, e.description));
            let version = a.version.as_deref().unwrap_or("-");
            out.push_str(&format!(
                "{:<13}{:<11}{kind} engine; {}; version {version}\n",
                "", "", a.runtime
            ));
            if let Some(p) = &a.problem {
                out.push_str(&format!("{:<13}{:<11}why not: {p}\n", "", ""));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RunArgs;
    use crate::engine::calibration::CalibrationEngine;
    use crate::engine::EngineKind;

    /// An engine this test adds: one spec, no other edit anywhere.
    static EXTRA: EngineSpec = EngineSpec::new(
        "test-only",
        "an engine declared in a test",
        EngineKind::Stream,
        crate::engine::ModelInput::None,
        |_| Availability::usable("test build", Some("0.0.1".into())),
        |c| Ok(Box::new(CalibrationEngine::load(c)?)),
    );

    #[test]
    fn an_engine_is_one_spec() {
        let r = Registry::with(&EXTRA);
        // Listed, with what it runs on and its version...
        let listing = r.listing(&EngineConfig::default());
        let mine: Vec<&str> = listing
            .lines()
            .skip_while(|l| !l.starts_with("test-only"))
            .take(2)
            .collect();
        assert!(
            mine[0].contains("ready") && mine[0].contains("an engine declared in a test"),
            "{listing}"
        );
        assert!(
            mine[1].contains("stream engine; test build; version 0.0.1"),
            "{listing}"
        );
        // ...accepted by validation and named in its errors...
        assert!(r.names().ends_with("test-only"));
        let args = RunArgs {
            engine: Some("test-only".into()),
            out: Some(std::env::temp_dir().join("llm-harness-registry-test")),
            ..Default::default()
        };
        let cfg = crate::config::validate(args.clone(), false, &r).unwrap();
        assert_eq!(cfg.engine.name, "test-only");
        // ...and loaded.
        let mut engine = (cfg.engine.load)(&cfg.engine_config).unwrap();
        assert_eq!(engine.in_flight(), 0);
        engine.shutdown().unwrap();
        // This build's own registry does not know it.
        let e = crate::config::validate(args, false, &Registry::builtin())
            .unwrap_err()
            .message;
        assert!(e.contains("unknown engine 'test-only'"), "{e}");
    }

    #[test]
    fn builtin_names_are_unique_and_described() {
        let r = Registry::builtin();
        let mut names: Vec<&str> = r.specs().iter().map(|s| s.name).collect();
        assert_eq!(names[0], "calibration");
        names.sort();
        names.dedup();
        assert_eq!(names.len(), r.specs().len());
        assert!(r.specs().iter().all(|s| !s.description.is_empty()));
    }
}
