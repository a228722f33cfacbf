//! The engines this build knows.

/// Whether an engine can run here, and why not.
#[derive(Clone, Debug, PartialEq)]
pub enum Availability {
    Usable,
    Unusable(String),
}

pub struct EngineSpec {
    pub name: &'static str,
}

pub fn registry() -> &'static [EngineSpec] {
    &[]
}

pub fn find_engine(name: &str) -> Option<&'static EngineSpec> {
    registry().iter().find(|e| e.name == name)
}
