//! The top of the program: turns a parsed command line into a subcommand
//! ([`crate::commands`]) and an error into the process exit code.

use crate::cli::{Cli, Command};
use crate::commands;
use crate::config::ConfigError;
use crate::core::error::{UsageError, EXIT_FAILED, EXIT_USAGE};
use crate::engine::EngineError;
use crate::metrics::MetricsError;
use crate::trace::TraceError;
use crate::workload::WorkloadError;
use anyhow::Result;

/// Runs a command and returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.into_command() {
        Command::Run(a) => commands::bench::run(a, false),
        Command::Sweep(a) => commands::bench::run(a, true),
        Command::Search(a) => commands::bench::search(a),
        Command::Report(a) => commands::views::report(a),
        Command::Engines(a) => commands::engines::run(a),
        Command::Parity(a) => commands::parity::run(a),
        Command::Logprobs(a) => commands::logprobs::child(a),
        Command::Plot(a) => commands::views::plot(a),
        Command::Compare(a) => commands::views::compare(a),
        Command::ServedVsInproc(a) => commands::served::run(a),
        Command::Variants(a) => commands::variants::run(a),
    }
}

/// The exit code for an error that ended the program: 2 for bad input (any error in
/// the chain that says the input was bad), else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<UsageError>()
            || cause.is::<ConfigError>()
            || cause.is::<WorkloadError>()
            || cause.is::<MetricsError>()
            || matches!(
                cause.downcast_ref::<EngineError>(),
                Some(EngineError::Usage(_))
            )
            || matches!(
                cause.downcast_ref::<TraceError>(),
                Some(TraceError::Parse { .. } | TraceError::Read { .. })
            )
        {
            return EXIT_USAGE;
        }
    }
    EXIT_FAILED
}
