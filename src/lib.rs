//! llm-harness: measures LLM inference engines in-process.
//!
//! Data flows one way: [`workload`] → [`driver`] → [`engine`] → [`trace`] →
//! [`metrics`] → [`report`]. The driver is the only code that reads the clock for
//! token events; metrics are pure functions of the trace; reports do no measuring.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod driver;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod host;
pub mod metrics;
pub mod parity;
pub mod process;
pub mod report;
pub mod served;
pub mod terminal;
pub mod trace;
pub mod workload;
