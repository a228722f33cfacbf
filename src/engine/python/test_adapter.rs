//! The bridge's own test adapter (`engines/test_adapter.py`): stdlib only, step or
//! stream mode, fault injection. Runs on the embedded interpreter unless given an env.

use super::Adapter;
use crate::engine::venv::Requirement;
use crate::engine::{EngineKind, EngineSpec};

const ADAPTER: Adapter = Adapter::new(
    "python-test",
    include_str!("../../../engines/test_adapter.py"),
    "harness_engine_test_adapter",
    Requirement {
        env: "python-test",
        package: None,
        distributions: &[],
        per_build: false,
    },
)
.env_optional();

pub static SPEC: EngineSpec = EngineSpec::new(
    ADAPTER.engine,
    "test adapter for the Python bridge (step or stream mode, fault injection)",
    EngineKind::Step,
    crate::engine::ModelInput::None,
    |c| ADAPTER.availability(c),
    |c| ADAPTER.load(c),
)
.python_env(ADAPTER.requires.env);
