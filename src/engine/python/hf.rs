//! HF Transformers, the plain reference (`engines/hf.py`). It runs in the vLLM env,
//! whose Transformers and torch are the ones vLLM itself uses, so greedy parity
//! compares the engines and not two builds of torch.

use super::Adapter;
use crate::engine::venv::Requirement;
use crate::engine::{EngineKind, EngineSpec};

const ADAPTER: Adapter = Adapter::new(
    "hf",
    include_str!("../../../engines/hf.py"),
    "harness_engine_hf",
    Requirement {
        env: "vllm",
        package: Some("transformers"),
        distributions: &["transformers"],
        per_build: false,
    },
);

pub static SPEC: EngineSpec = EngineSpec::new(
    ADAPTER.engine,
    "HF Transformers reference: own KV-cache decode loop, static batching",
    EngineKind::Step,
    crate::engine::ModelInput::CheckpointOrGguf,
    |c| ADAPTER.availability(c),
    |c| ADAPTER.load(c),
)
.python_env(ADAPTER.requires.env);
