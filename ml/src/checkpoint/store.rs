//! A directory of checkpoint files `ckpt-{step:012}.zbmd`, written
//! atomically, pruned to the newest `keep_last`, and searched newest first
//! for one that passes every check.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Checkpoint, CheckpointError};

/// Temp files start with this (and hold the step and the writer's pid), so
/// a scan never mistakes one for a checkpoint.
const TEMP_PREFIX: &str = ".ckpt-";
const TEMP_SUFFIX: &str = ".tmp";

/// The outcome of [`CheckpointStore::latest_valid`].
#[derive(Debug)]
pub struct Recovery {
    /// The newest checkpoint that passed every check, and its file.
    pub found: Option<(Checkpoint, PathBuf)>,
    /// Newer files that failed a check, newest first, with why; they were
    /// not loaded and are left on disk for inspection.
    pub skipped: Vec<(PathBuf, CheckpointError)>,
}

/// A directory of checkpoints with one writer.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointStore {
    /// Opens (creating it if needed) the store in `dir`, which keeps the
    /// newest `keep_last >= 1` checkpoints. Deletes temp files left by a
    /// writer that crashed mid-save: a store has a single writer, so any temp
    /// file present at open is abandoned.
    pub fn open(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        if keep_last == 0 {
            return Err(CheckpointError::KeepLastZero { dir });
        }
        fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
        let store = CheckpointStore { dir, keep_last };
        for entry in store.entries()? {
            if let Entry::Temp(path) = entry {
                tracing::info!(path = %path.display(), "removing a checkpoint temp file left by a crash");
                fs::remove_file(&path).map_err(io(&path, "remove stale temp file"))?;
            }
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a checkpoint of `step` is saved as.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{step:012}.zbmd"))
    }

    /// Writes `checkpoint` atomically (temp file in the directory, write,
    /// fsync, rename over `ckpt-{step:012}.zbmd`, fsync the directory), then
    /// deletes all but the newest `keep_last` checkpoints. Returns the path.
    /// A crash at any point leaves either the old set of files or the new
    /// one, plus at most a temp file that the next `open` removes.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let bytes = checkpoint.encode()?;
        let path = self.path_for(checkpoint.step);
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{:012}.{}{TEMP_SUFFIX}",
            checkpoint.step,
            std::process::id()
        ));
        let written = write_synced(&temp, &bytes)
            .and_then(|()| fs::rename(&temp, &path).map_err(io(&path, "rename temp file over")));
        if let Err(error) = written {
            let _ = fs::remove_file(&temp); // best effort; open() removes it otherwise
            return Err(error);
        }
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(&self.dir, "fsync directory"))?;
        self.prune()?;
        Ok(path)
    }

    /// The checkpoint files present, newest (highest step) first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let mut found: Vec<(u64, PathBuf)> = self
            .entries()?
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Checkpoint(step, path) => Some((step, path)),
                Entry::Temp(_) => None,
            })
            .collect();
        found.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
        Ok(found)
    }

    /// The newest checkpoint that passes every check (framing, checksum,
    /// metadata, and a step that matches its file name), with the newer
    /// files that failed, each logged with `tracing::warn!`. Temp files are
    /// never considered. Fails only if the directory cannot be listed.
    pub fn latest_valid(&self) -> Result<Recovery, CheckpointError> {
        let mut skipped = Vec::new();
        for (step, path) in self.list()? {
            match load(&path, step) {
                Ok(checkpoint) => {
                    return Ok(Recovery { found: Some((checkpoint, path)), skipped });
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an invalid checkpoint");
                    skipped.push((path, error));
                }
            }
        }
        Ok(Recovery { found: None, skipped })
    }

    /// Deletes all but the newest `keep_last` checkpoints.
    fn prune(&self) -> Result<(), CheckpointError> {
        for (_, path) in self.list()?.into_iter().skip(self.keep_last) {
            fs::remove_file(&path).map_err(io(&path, "remove old checkpoint"))?;
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, CheckpointError> {
        let listing = fs::read_dir(&self.dir).map_err(io(&self.dir, "list directory"))?;
        let mut entries = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io(&self.dir, "list directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(step) = parse_checkpoint_name(name) {
                entries.push(Entry::Checkpoint(step, entry.path()));
            } else if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                entries.push(Entry::Temp(entry.path()));
            }
        }
        Ok(entries)
    }
}

enum Entry {
    Checkpoint(u64, PathBuf),
    Temp(PathBuf),
}

/// The step of `ckpt-{digits}.zbmd`.
fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ckpt-")?.strip_suffix(".zbmd")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads and decodes `path`, checking that it holds step `step`.
fn load(path: &Path, step: u64) -> Result<Checkpoint, CheckpointError> {
    let bytes = fs::read(path).map_err(io(path, "read"))?;
    let checkpoint = Checkpoint::decode(&bytes, path)?;
    if checkpoint.step != step {
        return Err(CheckpointError::BadMetadata {
            path: path.to_path_buf(),
            field: "step".to_string(),
            reason: format!("{} in a file named for step {step}", checkpoint.step),
        });
    }
    Ok(checkpoint)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut file = File::create(path).map_err(io(path, "create temp file"))?;
    file.write_all(bytes).map_err(io(path, "write temp file"))?;
    file.sync_all().map_err(io(path, "fsync temp file"))
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { path, action, source }
}
