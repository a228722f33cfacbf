//! `harness engines`: every engine this build knows, whether it can run here (and why
//! not), and the GPU and energy instruments this machine has.

use crate::cli::EnginesArgs;
use crate::engine::{EngineConfig, Registry};
use anyhow::Result;

/// Lists the engines and the instruments.
pub fn run(a: EnginesArgs) -> Result<i32> {
    let cfg = EngineConfig {
        python_env: a.python_env,
        ..Default::default()
    };
    print!("{}", Registry::builtin().listing(&cfg));
    println!("\nGPU and energy instruments:");
    for line in crate::gpu::status() {
        println!("  {line}");
    }
    Ok(0)
}
