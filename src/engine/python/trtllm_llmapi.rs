//! TensorRT-LLM through its Python `LLM` API (`engines/trtllm_llmapi.py`), streamed.
//!
//! TensorRT-LLM cannot be installed from the package registries these machines reach
//! (PyPI's `tensorrt-llm` is a stub that downloads the wheel from NVIDIA's own index at
//! install time) and needs a CUDA GPU, so there is no `scripts/setup.sh` env for it:
//! `harness engines` says so, and `--python-env DIR` points at an env where it is
//! installed. The adapter is tested against a stand-in module (tests/trtllm_py_standin), whose
//! runs are labelled as an instrument.

use super::Adapter;
use crate::engine::venv::Requirement;
use crate::engine::{Availability, EngineConfig, EngineKind, EngineSpec, Unavailable};

const ADAPTER: Adapter = Adapter::new(
    "trtllm-py",
    include_str!("../../../engines/trtllm_llmapi.py"),
    "harness_engine_trtllm_llmapi",
    Requirement {
        env: "trtllm-py",
        package: Some("tensorrt_llm"),
        distributions: &["tensorrt_llm", "tensorrt-llm"],
        per_build: false,
    },
);

/// Why the default env cannot exist here, said with the venv check's own reason.
const NOT_INSTALLABLE: &str = "TensorRT-LLM cannot be installed from the package registries these machines reach (PyPI's tensorrt-llm only fetches the real wheel from NVIDIA's own index at install time) and needs a CUDA GPU; on a GPU machine install it into a venv made with this harness's Python and pass --python-env DIR";

fn availability(c: &EngineConfig) -> Availability {
    let mut a = ADAPTER.availability(c);
    // Without --python-env the venv check would point at a setup script that cannot
    // exist for this engine; say what can be done instead.
    if c.python_env.is_none() && a.problem.is_some() {
        a.problem = Some(Unavailable::Host(NOT_INSTALLABLE.into()));
    }
    a
}

pub static SPEC: EngineSpec = EngineSpec::new(
    // A Hugging Face checkpoint (PyTorch backend) or a built engine directory, which
    // the adapter tells apart and checks when it loads.
    ADAPTER.engine,
    "TensorRT-LLM LLM API (PyTorch backend, or an engine dir), generate_async streamed (embedded Python)",
    EngineKind::Stream,
    crate::engine::ModelInput::CheckedAtLoad,
    availability,
    |c| ADAPTER.load(c),
)
.python_env(ADAPTER.requires.env);
