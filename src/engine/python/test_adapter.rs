//! The bridge's own test adapter (`engines/test_adapter.py`): stdlib only, step or
//! stream mode, fault injection. Runs on the embedded interpreter unless given an env.

use super::Adapter;
use crate::engine::venv::Requirement;
use crate::engine::{EngineKind, EngineSpec};

const ADAPTER: Adapter = Adapter {
    engine: "python-test",
    source: include_str!("../../../engines/test_adapter.py"),
    module: "harness_engine_test_adapter",
    requires: Requirement {
        env: "python-test",
        package: None,
        distributions: &[],
    },
    helpers: &[],
    shims: &[],
    env_optional: true,
};

pub static SPEC: EngineSpec = EngineSpec::new(
    ADAPTER.engine,
    "test adapter for the Python bridge (step or stream mode, fault injection)",
    EngineKind::Step,
    crate::engine::ModelInput::None,
    |c| ADAPTER.availability(c),
    |c| ADAPTER.load(c),
)
.python_env(ADAPTER.requires.env);
