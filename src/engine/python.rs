//! pyo3 bridge.
