//! Served engines: measuring an engine behind its OpenAI-compatible HTTP server.
//!
//! [`openai`] is the client: a stream engine that sends each request to
//! `/v1/completions` (or `/v1/chat/completions`) with `stream: true` and stamps every
//! server-sent event on CLOCK_MONOTONIC the moment the bytes carrying it are read.
//! [`vllm_server`] starts vLLM's own server from the vLLM venv with the in-process
//! engine's configuration, measures it through [`openai`], and stops it again, so the
//! same engine can be measured in-process and served (`harness served-vs-inproc`).

pub mod openai;
pub mod options;
pub mod vllm_server;
