//! pyo3 bridge for every Python adapter (in progress).
use super::{registry::Availability, Engine, EngineConfig, EngineError};

pub fn availability(_name: &str, _c: &EngineConfig) -> Availability {
    Availability::Unusable("Python bridge not built yet".into())
}

pub fn load(name: &str, _c: &EngineConfig) -> Result<Box<dyn Engine>, EngineError> {
    Err(EngineError::Usage(format!("engine {name}: Python bridge not built yet")))
}
