//! SGLang: `sglang.Engine`, its in-process front end, streamed (`engines/sglang.py`).
//! Its scheduler and detokenizer run in child processes by SGLang's design. On a host
//! where SGLang's CUDA-only kernel package cannot load, the adapter puts the project's
//! plain-torch stand-in for it (`engines/cpu_shims/sgl_kernel`) first on the path of
//! SGLang's processes; `harness engines` and run.json say so.

use super::{Adapter, Shim};
use crate::engine::venv::Requirement;
use crate::engine::{Availability, EngineConfig, EngineKind, EngineSpec};

/// SGLang's own shutdown, narrowed to its processes.
const SGLANG_PROCS: &str = include_str!("../../../engines/common/sglang_procs.py");

/// The CPU stand-in for `sgl_kernel`.
const SGL_KERNEL_SHIM: &str = include_str!("../../../engines/cpu_shims/sgl_kernel/__init__.py");

const ADAPTER: Adapter = Adapter::new(
    "sglang",
    include_str!("../../../engines/sglang.py"),
    "harness_engine_sglang",
    Requirement {
        env: "sglang",
        package: Some("sglang"),
        distributions: &["sglang"],
        per_build: false,
    },
)
.helpers(&[
    ("child_procs", super::CHILD_PROCS),
    ("sglang_procs", SGLANG_PROCS),
])
.shims(&[Shim {
    path: "sgl_kernel/__init__.py",
    source: SGL_KERNEL_SHIM,
}]);

/// The ops the stand-in implements, from its `IMPLEMENTED = (...)` line.
pub fn shim_ops() -> Vec<&'static str> {
    SGL_KERNEL_SHIM
        .lines()
        .find_map(|l| l.strip_prefix("IMPLEMENTED = ("))
        .map(|rest| {
            rest.trim_end_matches(')')
                .split(',')
                .map(|s| s.trim().trim_matches('"'))
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn availability(c: &EngineConfig) -> Availability {
    let mut a = ADAPTER.availability(c);
    if a.is_usable() && crate::gpu::cuda::driver_version().is_none() {
        let ops = shim_ops();
        a.runtime.push_str(&format!(
            "; no CUDA driver here, so SGLang CPU path with the project's torch implementation of {} kernel op{} ({}) in place of sglang-kernel's CUDA build",
            ops.len(),
            if ops.len() == 1 { "" } else { "s" },
            ops.join(", ")
        ));
    }
    a
}

pub static SPEC: EngineSpec = EngineSpec::new(
    ADAPTER.engine,
    "SGLang Engine (front end here, scheduler in child processes), streamed (embedded Python)",
    EngineKind::Stream,
    crate::engine::ModelInput::Checkpoint,
    availability,
    |c| ADAPTER.load(c),
)
.python_env(ADAPTER.requires.env);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_declares_its_ops_and_rust_reads_them() {
        assert_eq!(shim_ops(), ["assign_req_to_token_pool_cpu"]);
        for op in shim_ops() {
            assert!(
                SGL_KERNEL_SHIM.contains(&format!("def {op}(")),
                "{op} declared but not defined"
            );
        }
    }
}
