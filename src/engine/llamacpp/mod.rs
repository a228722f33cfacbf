//! llama.cpp in-process (`--engine llamacpp`): `libllama` linked into the harness
//! through bindings bindgen generates from `llama.h` (the `llama-cpp-sys-2` crate, which
//! vendors llama.cpp and builds it with cmake), behind the cargo feature `llamacpp`.
//!
//! This module owns the engine's parts: [`options`] (its `--engine-arg`s), [`slots`]
//! (the request scheduler, modelled on llama-server's slots, since `libllama` has
//! none), [`cpu`] (this CPU's SIMD against the build's), `ffi` (the thin safe layer
//! over the C API) and `engine` (the [`Engine`] that joins them). The options, the
//! scheduler and the CPU check are plain Rust and are compiled and tested in every
//! build; the parts that call llama.cpp only with the feature.
//! Without it, `harness engines` lists llamacpp as not built, with the command that
//! builds it, and `--engine llamacpp` is a usage error saying the same.
//!
//! [`Engine`]: crate::engine::Engine

pub mod cpu;
pub mod options;
pub mod slots;

#[cfg(feature = "llamacpp")]
pub mod engine;
#[cfg(feature = "llamacpp")]
pub mod ffi;

use super::{Availability, EngineConfig, EngineError, EngineKind, EngineSpec, ModelInput};

/// The bindings crate, pinned exactly in Cargo.toml (its bindings follow `llama.h`).
pub const BINDINGS: &str = "llama-cpp-sys-2 0.1.161";

/// How to get an engine that is not in this build.
pub const HOW_TO_BUILD: &str = "rebuild with `cargo build --release --features llamacpp` \
    (llama.cpp for this CPU's SIMD; needs cmake and libclang: scripts/setup.sh --llamacpp \
    installs or checks them, and scripts/quickstart.sh then builds it in)";

/// What the scheduler is, said in run.json and at load.
pub const SCHEDULER_NOTE: &str = "the scheduler is the harness's, modelled on llama-server's \
    slots (libllama has none): one KV sequence per slot; each step decodes one token for \
    every generating slot plus prompt chunks of admitted requests up to n_batch, and a \
    finished or aborted request's KV cells are removed";

/// What differs from llama-server's scheduling.
pub const SCHEDULER_DIFFERS: &[&str] = &[
    "a waiting request takes the lowest free slot (llama-server picks by prompt similarity, then least recently used)",
    "no prompt caching: a slot's KV cells are removed when its request ends (llama-server's cache_prompt reuses a common prefix)",
    "no context shift, no speculative decoding, no n_batch halving when the KV cache is full",
    "a request whose prompt + output_len exceeds its slot's context fails at once (llama-server rejects only prompts that do not fit)",
    "ignore_eos: end-of-generation tokens are generated and do not end the request, as vLLM does (llama-server biases them to -inf)",
    "with kv_unified, a request waits until prompt + output_len cells are free instead of failing a decode",
];

pub static SPEC: EngineSpec = EngineSpec::new(
    "llamacpp",
    "llama.cpp (libllama) in-process via bindgen; slot scheduler modelled on llama-server",
    EngineKind::Step,
    ModelInput::Gguf,
    availability,
    load,
);

#[cfg(feature = "llamacpp")]
fn availability(_: &EngineConfig) -> Availability {
    // Checked before llama.cpp runs any code: code for features this CPU lacks faults.
    if let Some(problem) = cpu::problem() {
        return Availability::unusable(
            format!("linked in ({BINDINGS})"),
            super::Unavailable::Host(problem),
        );
    }
    Availability::usable(
        format!("linked in ({BINDINGS})"),
        Some(format!("ggml {}", ffi::system_info().ggml_version)),
    )
}

#[cfg(not(feature = "llamacpp"))]
fn availability(_: &EngineConfig) -> Availability {
    Availability::unusable(
        "not in this build",
        super::Unavailable::NotBuilt {
            feature: "llamacpp",
            how: HOW_TO_BUILD,
        },
    )
}

#[cfg(feature = "llamacpp")]
fn load(c: &EngineConfig) -> Result<Box<dyn super::Engine>, EngineError> {
    Ok(Box::new(engine::LlamaCppEngine::load(c)?))
}

#[cfg(not(feature = "llamacpp"))]
fn load(_: &EngineConfig) -> Result<Box<dyn super::Engine>, EngineError> {
    Err(EngineError::Usage(format!(
        "--engine llamacpp is not in this build; {HOW_TO_BUILD}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_bindings_are_the_ones_named() {
        let manifest = include_str!("../../../Cargo.toml");
        let version = BINDINGS.rsplit(' ').next().unwrap();
        assert!(
            manifest.contains(&format!("llama-cpp-sys-2 = {{ version = \"={version}\"")),
            "Cargo.toml does not pin {BINDINGS}"
        );
    }

    #[cfg(not(feature = "llamacpp"))]
    #[test]
    fn without_the_feature_it_says_how_to_build_it() {
        let a = (SPEC.availability)(&EngineConfig::default());
        assert!(!a.is_usable());
        assert!(matches!(
            a.problem,
            Some(crate::engine::Unavailable::NotBuilt {
                feature: "llamacpp",
                ..
            })
        ));
        match (SPEC.load)(&EngineConfig::default()) {
            Err(EngineError::Usage(m)) => assert!(m.contains("not in this build"), "{m}"),
            _ => panic!("expected a usage error"),
        }
    }
}
