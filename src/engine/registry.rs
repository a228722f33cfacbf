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
