//! Shared helpers for zbmd benchmarks.
