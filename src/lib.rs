//! llm-harness: measures LLM inference engines in-process.
//!
//! Data flows one way: [`workload`] → [`driver`] → [`engine`] → [`trace`] →
//! [`metrics`] → [`report`]. The driver is the only code that reads the clock for
//! token events; metrics are pure functions of the trace; reports do no measuring.
//! The types those layers share sit below them all, in [`core`]; the subcommands
//! that drive the flow sit above it, in [`commands`]. `tests/layering.rs` keeps every
//! import pointing downwards.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod driver;
pub mod engine;
pub mod gpu;
pub mod host;
pub mod metrics;
pub mod process;
pub mod report;
pub mod terminal;
pub mod trace;
pub mod workload;
