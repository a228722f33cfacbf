//! The leaf of the crate: the types and helpers that cross module boundaries, so every
//! other module imports downwards. The clock every stamp is on ([`clock`]), what all
//! layers say about a request ([`request`]) and an engine step ([`step`]), per-point measurements ([`measure`]), teacher-forced log-probabilities ([`logprobs`]),
//! the step observer the driver calls ([`observe`]), shared statistics ([`stats`]) and
//! the exit codes ([`error`]). Nothing here imports another module of the crate.

pub mod clock;
pub mod error;
pub mod logprobs;
pub mod measure;
pub mod observe;
pub mod request;
pub mod stats;
pub mod step;
