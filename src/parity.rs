//! parity (todo)
pub fn run(_a: crate::cli::ParityArgs) -> anyhow::Result<i32> { anyhow::bail!("parity: not built yet") }
