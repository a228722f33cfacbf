//! The engines this build knows, whether each can run here, and how to load it.

use super::{calibration::CalibrationEngine, Engine, EngineConfig, EngineError};

/// Whether an engine can run on this machine, and why not.
#[derive(Clone, Debug, PartialEq)]
pub enum Availability {
    Usable(String),
    Unusable(String),
}

pub struct EngineSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// Needs `--model DIR` (a checkpoint directory).
    pub needs_model: bool,
    pub availability: fn(&EngineConfig) -> Availability,
    pub load: fn(&EngineConfig) -> Result<Box<dyn Engine>, EngineError>,
}

impl std::fmt::Debug for EngineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSpec")
            .field("name", &self.name)
            .finish()
    }
}

fn calibration_load(c: &EngineConfig) -> Result<Box<dyn Engine>, EngineError> {
    Ok(Box::new(CalibrationEngine::load(c)?))
}

static ENGINES: &[EngineSpec] = &[
    EngineSpec {
        name: "calibration",
        description:
            "known-answer instrument: tokens on an exact schedule (tests, harness overhead)",
        needs_model: false,
        availability: |_| Availability::Usable("built in".into()),
        load: calibration_load,
    },
    #[cfg(feature = "python")]
    EngineSpec {
        name: "vllm",
        description: "vLLM LLMEngine, engine core in this process (embedded Python)",
        needs_model: true,
        availability: |c| super::python::availability("vllm", c),
        load: |c| super::python::load("vllm", c),
    },
    #[cfg(feature = "python")]
    EngineSpec {
        name: "hf",
        description: "HF Transformers reference: own KV-cache decode loop, static batching",
        needs_model: true,
        availability: |c| super::python::availability("hf", c),
        load: |c| super::python::load("hf", c),
    },
    #[cfg(feature = "python")]
    EngineSpec {
        name: "python-test",
        description: "test adapter for the Python bridge (step or stream mode, fault injection)",
        needs_model: false,
        availability: |c| super::python::availability("python-test", c),
        load: |c| super::python::load("python-test", c),
    },
];

pub fn registry() -> &'static [EngineSpec] {
    ENGINES
}

pub fn find_engine(name: &str) -> Option<&'static EngineSpec> {
    ENGINES.iter().find(|e| e.name == name)
}

/// "calibration, vllm, hf, ..." for error messages.
pub fn engine_names() -> String {
    ENGINES
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}
