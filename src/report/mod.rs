//! Reports: render summaries; no measuring.
