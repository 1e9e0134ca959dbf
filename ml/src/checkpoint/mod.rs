//! Checkpoints: everything a training run needs to continue exactly where it
//! stopped (parameters, optimizer state, data-loader position, step, RNG
//! state, metrics), on disk in a checksummed file written atomically, and in
//! memory as a [`Snapshot`].
//!
//! The on-disk layout is in [`format`](self#file-format); the
//! [`CheckpointStore`] writes files with the classic atomic-replace recipe
//! (temp file, `fsync`, `rename`, `fsync` of the directory: see "Files are
//! hard", Dan Luu, 2019) and on resume loads the newest file that passes
//! every check, reporting and skipping the rest. A store opened for a run
//! ([`RunIdentity`]) reads, prunes and resumes only that run's files, and
//! one process at a time writes a directory (an `flock` on [`LOCK_FILE`]).
//!
//! # File format
//!
//! ```text
//! offset  size  field
//!      0     8  magic "ZBMDCKPT"
//!      8     4  format version, u32 little-endian (1)
//!     12     8  payload length in bytes, u64 little-endian
//!     20     4  CRC-32 (IEEE) of bytes 8..20 followed by the payload
//!     24     n  payload: a safetensors file
//! ```
//!
//! The payload is a standard safetensors file, so tools can read the tensors
//! (all `F32`) after skipping 24 bytes. Its `__metadata__` map holds
//! `format_version`, `step`, `rng_state` (decimal strings), `loader` (the
//! [`LoaderPosition`] as JSON), `metrics` (JSON: name → the `f64`'s bit
//! pattern as an integer, so NaN and infinities survive bit-exactly),
//! `extra` (JSON: name → string) and `tensor_order` (JSON array of names:
//! safetensors sorts tensors, this restores the caller's order). A run's
//! checkpoints hold its identity in `extra`: [`RUN_ID_KEY`] (16 hex digits,
//! also in the file name) and [`RUN_SETTINGS_KEY`] (the settings, as a JSON
//! object of strings).

mod content;
mod format;
mod lock;
mod run;
mod store;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::PathBuf;

pub use content::{ContentCheck, ContentError};
pub use lock::LOCK_FILE;
pub(crate) use run::Fnv1a;
pub use run::{RUN_ID_KEY, RUN_SETTINGS_KEY, RunId, RunIdentity};
pub use store::{CheckpointStore, OtherCheckpoint, Recovery};

use crate::data::LoaderPosition;

/// The checkpoint format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A named `f32` array: one model parameter or one piece of optimizer state
/// (`"0.weight"`, `"adam.m.0.weight"`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedArray {
    /// The name, unique within a checkpoint.
    pub name: String,
    /// The shape; its product is `data.len()`.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

impl NamedArray {
    /// An array from its parts (checked when the checkpoint is encoded).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedArray { name: name.into(), shape, data }
    }
}

/// Everything needed to resume training at `step`.
///
/// `Clone` copies every float's bits (NaN payloads included), so a clone is
/// a bit-exact [`Snapshot`]. Compare checkpoints with
/// [`bit_eq`](Self::bit_eq): `==` follows IEEE (NaN ≠ NaN).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Optimizer steps completed.
    pub step: u64,
    /// Model parameters and optimizer state, by name, in the caller's order.
    pub tensors: Vec<NamedArray>,
    /// The data loader's next batch.
    pub loader: LoaderPosition,
    /// The training RNG's state (dropout, ...).
    pub rng_state: u64,
    /// Metrics at this step (`loss`, `accuracy`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Anything else worth keeping (model spec, optimizer settings, ...).
    pub extra: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&NamedArray> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// Whether `self` and `other` are identical bit for bit (floats compared
    /// by their bit patterns).
    pub fn bit_eq(&self, other: &Checkpoint) -> bool {
        let same_tensors = self.tensors.len() == other.tensors.len()
            && self.tensors.iter().zip(&other.tensors).all(|(a, b)| {
                a.name == b.name
                    && a.shape == b.shape
                    && a.data.len() == b.data.len()
                    && a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits())
            });
        let same_metrics = self.metrics.len() == other.metrics.len()
            && self
                .metrics
                .iter()
                .zip(&other.metrics)
                .all(|((ka, va), (kb, vb))| ka == kb && va.to_bits() == vb.to_bits());
        same_tensors
            && same_metrics
            && self.step == other.step
            && self.loader == other.loader
            && self.rng_state == other.rng_state
            && self.extra == other.extra
    }

    /// The checkpoint as file bytes (see the [module docs](self#file-format)).
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        format::encode(self)
    }

    /// A checkpoint from file bytes, checking magic, version, length,
    /// checksum and every metadata field; `path` names the source in errors.
    pub fn decode(bytes: &[u8], path: impl Into<PathBuf>) -> Result<Checkpoint, CheckpointError> {
        format::decode(bytes, &path.into())
    }
}

/// The in-memory copy of the latest checkpoint a trainer keeps every
/// `every` steps, so recovering from a crash reads no disk.
#[derive(Debug, Clone)]
pub struct Snapshot {
    every: NonZeroU64,
    latest: Option<Checkpoint>,
}

impl Snapshot {
    /// Snapshots every `every` steps.
    pub fn new(every: NonZeroU64) -> Snapshot {
        Snapshot { every, latest: None }
    }

    /// Whether a snapshot is due after `step` steps.
    pub fn due(&self, step: u64) -> bool {
        step % self.every.get() == 0
    }

    /// Keeps `checkpoint` as the latest, replacing the previous one.
    pub fn store(&mut self, checkpoint: Checkpoint) {
        self.latest = Some(checkpoint);
    }

    /// The latest snapshot, if one was taken.
    pub fn latest(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }
}

/// What went wrong encoding, decoding, saving or finding a checkpoint. Every
/// variant about a file names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file or directory operation failed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`"write"`, `"fsync"`, ...).
        action: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file does not start with `ZBMDCKPT`.
    #[error("{}: not a zbmd checkpoint: magic {found:?}, expected \"ZBMDCKPT\"", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first bytes found (lossily as text).
        found: String,
    },
    /// The file was written by a format version this build cannot read.
    #[error("{}: checkpoint format version {found}, this build reads {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says (a write cut short).
    #[error(
        "{}: truncated: expected {expected_bytes} bytes, found {found_bytes}",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the header implies.
        expected_bytes: u64,
        /// The size present.
        found_bytes: u64,
    },
    /// The file is longer than its header says.
    #[error(
        "{}: {found_bytes} bytes where the header promises {expected_bytes}",
        path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// The size the header implies.
        expected_bytes: u64,
        /// The size present.
        found_bytes: u64,
    },
    /// The CRC-32 does not match: the file was damaged after it was written.
    #[error(
        "{}: checksum mismatch: header says {expected:#010x}, contents give {found:#010x}",
        path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The CRC in the header.
        expected: u32,
        /// The CRC of what is there.
        found: u32,
    },
    /// The payload is not a valid safetensors file.
    #[error("{}: bad tensor payload: {source}", path.display())]
    Payload {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader said.
        source: safetensors::SafeTensorError,
    },
    /// A metadata field is missing or does not parse.
    #[error("{}: bad metadata field {field:?}: {reason}", path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor cannot be encoded (duplicate name, shape that does not match
    /// its data).
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint decodes, but its contents cannot be from this run:
    /// tensors that do not fit the model, values training never produces
    /// (NaN, infinities), a loader position outside the data.
    #[error("{}: {source}", path.display())]
    BadContents {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, as the store's [`ContentCheck`] found.
        source: ContentError,
    },
    /// Another process holds the directory's lock: two writers would
    /// prune each other's checkpoints.
    #[error(
        "{}: another process is writing checkpoints here ({}); two writers would delete each \
         other's checkpoints: stop it, or use another directory",
        dir.display(),
        holder.map_or_else(|| "its pid is unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        holder: Option<u32>,
    },
    /// A store was opened with `keep_last == 0`, which would delete every
    /// checkpoint it writes.
    #[error("{}: keep_last must be at least 1", dir.display())]
    KeepLastZero {
        /// The store's directory.
        dir: PathBuf,
    },
}
