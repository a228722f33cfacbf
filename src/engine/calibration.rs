//! The calibration engine.
