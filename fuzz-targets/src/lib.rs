//! One function per parser that a user or a peer can feed, each taking raw
//! bytes, feeding them to the parser and asserting what must hold whatever
//! the bytes: no panic, sizes within the parser's limits, and, where there is
//! an encoder, that what was decoded encodes and decodes again to the same
//! thing.
//!
//! These are the bodies of the cargo-fuzz targets in `fuzz/` (nightly,
//! libFuzzer) and of the stable test `tests/corpus.rs`, which runs every
//! target over its seed corpus, the regression inputs and a bounded number
//! of deterministic mutations of them. A target "fails" by panicking: an
//! assertion here, or a panic inside the parser. See `docs/fuzzing.md`.
//!
//! Targets that need more than one input (IDX images and labels) or options
//! (CSV) take them from the first bytes, so one byte string covers every
//! combination the fuzzer can reach.

mod checkpoint;
mod config;
mod data;
mod model;

pub use checkpoint::{checkpoint, checkpoint_file, checkpoint_payload};
pub use config::{fault_plan, fault_schedule, train_config};
pub use data::{csv, idx};
pub use model::{model_spec, model_toml, safetensors_import};

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by the name its cargo-fuzz target, corpus directory and
/// regression directory carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("csv", csv),
    ("idx", idx),
    ("model_spec", model_spec),
    ("model_toml", model_toml),
    ("safetensors_import", safetensors_import),
    ("train_config", train_config),
    ("checkpoint", checkpoint),
    ("checkpoint_payload", checkpoint_payload),
    ("fault_plan", fault_plan),
    ("fault_schedule", fault_schedule),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(known, _)| *known == name).map(|&(_, target)| target)
}

/// The input as text, or `None` when it is not UTF-8 (the text parsers take
/// `&str`: their callers have already refused other bytes).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Asserts an error's message says something (every error a user sees
/// must).
fn says_something(error: &impl std::fmt::Display) {
    assert!(!error.to_string().trim().is_empty(), "an error with an empty message");
}
