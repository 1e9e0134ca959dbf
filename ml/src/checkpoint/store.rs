//! A directory of checkpoint files, written atomically, pruned to the
//! newest `keep_last` valid ones of this run, and searched newest first for
//! one that passes every check.
//!
//! A store opened for a run ([`CheckpointStore::open_run`]) names its files
//! `ckpt-{step:012}-{run}.zbmd`, `run` being the [`RunIdentity`]'s hash;
//! one opened without ([`CheckpointStore::open`]) names them
//! `ckpt-{step:012}.zbmd`. Either way it reads, resumes from and prunes only
//! its own files: other runs' checkpoints, damaged files and anything else
//! in the directory are listed ([`CheckpointStore::others`]) but never
//! deleted, and a file with a high step number that is not a valid
//! checkpoint of this run can no longer push this run's files out.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::content::ContentCheck;
use super::lock::DirLock;
use super::run::{RunId, RunIdentity};
use super::{Checkpoint, CheckpointError};

/// Temp files start with this (and hold the step and the writer's pid), so
/// a scan never mistakes one for a checkpoint.
const TEMP_PREFIX: &str = ".ckpt-";
const TEMP_SUFFIX: &str = ".tmp";
/// Builds before run identities left `ckpt-N.zbmd.tmp` behind when a save
/// was cut short: they are removed like the temp files of today.
const OLD_TEMP_SUFFIX: &str = ".zbmd.tmp";

/// The outcome of [`CheckpointStore::latest_valid`].
#[derive(Debug)]
pub struct Recovery {
    /// The newest checkpoint of this run that passed every check, and its
    /// file.
    pub found: Option<(Checkpoint, PathBuf)>,
    /// Newer files of this run that failed a check, newest first, with why;
    /// they were not loaded and are left on disk for inspection.
    pub skipped: Vec<(PathBuf, CheckpointError)>,
}

/// A checkpoint file in the directory that is not this run's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherCheckpoint {
    /// The step its name gives.
    pub step: u64,
    /// The run its name gives (`None`: a file named without one).
    pub run: Option<RunId>,
    /// The file.
    pub path: PathBuf,
}

/// A directory of checkpoints with one writer, enforced by a lock held
/// while the store is open (`CheckpointError::Locked` names the holder).
pub struct CheckpointStore {
    dir: PathBuf,
    keep_last: usize,
    run: Option<RunIdentity>,
    check: Option<ContentCheck>,
    /// This run's checkpoints known to be valid, ascending by step: those
    /// that passed every check at open and those this store wrote since.
    /// Pruning deletes only from these.
    valid: Mutex<Vec<u64>>,
    _lock: DirLock,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("dir", &self.dir)
            .field("keep_last", &self.keep_last)
            .field("run", &self.run.as_ref().map(RunIdentity::id))
            .finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// Opens (creating it if needed) the store in `dir` for checkpoints of
    /// no particular run, keeping the newest `keep_last >= 1`. See
    /// [`open_run`](Self::open_run) for what opening does.
    pub fn open(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self, CheckpointError> {
        Self::open_with(dir.into(), keep_last, None, None)
    }

    /// Opens (creating it if needed) the store in `dir` for the checkpoints
    /// of `run`, keeping its newest `keep_last >= 1` valid ones; `check`
    /// vets each decoded checkpoint's contents. Opening takes the
    /// directory's lock (failing with `Locked` if another process holds it,
    /// or with `Io` if the directory cannot be written), deletes temp files
    /// left by a writer that crashed mid-save (with the lock held, any temp
    /// file is abandoned), and checks this run's files once, so that
    /// pruning knows which are valid.
    pub fn open_run(
        dir: impl Into<PathBuf>,
        keep_last: usize,
        run: RunIdentity,
        check: ContentCheck,
    ) -> Result<Self, CheckpointError> {
        Self::open_with(dir.into(), keep_last, Some(run), Some(check))
    }

    fn open_with(
        dir: PathBuf,
        keep_last: usize,
        run: Option<RunIdentity>,
        check: Option<ContentCheck>,
    ) -> Result<Self, CheckpointError> {
        if keep_last == 0 {
            return Err(CheckpointError::KeepLastZero { dir });
        }
        fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
        let lock = DirLock::acquire(&dir)?;
        let store = CheckpointStore {
            dir,
            keep_last,
            run,
            check,
            valid: Mutex::new(Vec::new()),
            _lock: lock,
        };
        for entry in store.entries()? {
            if let Entry::Temp(path) = entry {
                tracing::info!(path = %path.display(), "removing a checkpoint temp file left by a crash");
                fs::remove_file(&path).map_err(io(&path, "remove stale temp file"))?;
            }
        }
        let mut valid: Vec<u64> = store
            .list()?
            .into_iter()
            .filter(|(step, path)| store.load(path, *step).is_ok())
            .map(|(step, _)| step)
            .collect();
        valid.sort_unstable();
        *store.valid.lock().unwrap_or_else(|p| p.into_inner()) = valid;
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run this store holds checkpoints of, if it was opened for one.
    pub fn run(&self) -> Option<&RunIdentity> {
        self.run.as_ref()
    }

    /// The newest step of this run's checkpoints known to be valid (checked
    /// at open, or written since), without reading any file.
    pub fn newest_valid_step(&self) -> Option<u64> {
        self.valid.lock().unwrap_or_else(|p| p.into_inner()).last().copied()
    }

    /// The file a checkpoint of `step` is saved as.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(match &self.run {
            Some(run) => format!("ckpt-{step:012}-{}.zbmd", run.id()),
            None => format!("ckpt-{step:012}.zbmd"),
        })
    }

    /// The temp file a save of `step` by this process writes first.
    pub fn temp_path_for(&self, step: u64) -> PathBuf {
        let run = self.run.as_ref().map_or(String::new(), |run| format!("-{}", run.id()));
        self.dir.join(format!("{TEMP_PREFIX}{step:012}{run}.{}{TEMP_SUFFIX}", std::process::id()))
    }

    /// Writes `checkpoint` atomically (temp file in the directory, write,
    /// fsync, rename over [`path_for`](Self::path_for), fsync the
    /// directory), then deletes this run's valid checkpoints beyond the
    /// newest `keep_last`. Returns the path. A store opened for a run
    /// refuses a checkpoint that does not carry that run's identity
    /// ([`RunIdentity::stamp`]). A failed save removes its temp file; a
    /// crash at any point leaves either the old set of files or the new
    /// one, plus at most a temp file that the next `open` removes.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let path = self.path_for(checkpoint.step);
        if let Some(run) = &self.run {
            run.check_stamp(checkpoint, &path)?;
        }
        let bytes = checkpoint.encode()?;
        let temp = self.temp_path_for(checkpoint.step);
        let written = write_synced(&temp, &bytes)
            .and_then(|()| fs::rename(&temp, &path).map_err(io(&path, "rename temp file over")))
            .and_then(|()| {
                File::open(&self.dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(io(&self.dir, "fsync directory"))
            });
        if let Err(error) = written {
            if let Err(remove) = fs::remove_file(&temp) {
                if remove.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %temp.display(), %remove, "cannot remove a temp file");
                }
            }
            return Err(error);
        }
        {
            let mut valid = self.valid.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(at) = valid.binary_search(&checkpoint.step) {
                valid.insert(at, checkpoint.step);
            }
        }
        self.prune()?;
        Ok(path)
    }

    /// This run's checkpoint files (valid or not), newest (highest step)
    /// first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let ours = self.run.as_ref().map(RunIdentity::id);
        let mut found: Vec<(u64, PathBuf)> = self
            .entries()?
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Checkpoint { step, run, path } if run == ours => Some((step, path)),
                _ => None,
            })
            .collect();
        found.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
        Ok(found)
    }

    /// The checkpoint files of other runs (or named without a run, for a
    /// store opened for one), newest first. This store never reads, resumes
    /// from or deletes them.
    pub fn others(&self) -> Result<Vec<OtherCheckpoint>, CheckpointError> {
        let ours = self.run.as_ref().map(RunIdentity::id);
        let mut found: Vec<OtherCheckpoint> = self
            .entries()?
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Checkpoint { step, run, path } if run != ours => {
                    Some(OtherCheckpoint { step, run, path })
                }
                _ => None,
            })
            .collect();
        found.sort_by_key(|other| std::cmp::Reverse(other.step));
        Ok(found)
    }

    /// The newest checkpoint of this run that passes every check (framing,
    /// checksum, metadata, a step and run that match its file name, and the
    /// store's content check), with the newer files that failed, each
    /// logged with `tracing::warn!`. Temp files and other runs' files are
    /// never considered. Fails only if the directory cannot be listed.
    pub fn latest_valid(&self) -> Result<Recovery, CheckpointError> {
        let mut skipped = Vec::new();
        for (step, path) in self.list()? {
            match self.load(&path, step) {
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

    /// Deletes this run's valid checkpoints beyond the newest `keep_last`.
    fn prune(&self) -> Result<(), CheckpointError> {
        let mut valid = self.valid.lock().unwrap_or_else(|p| p.into_inner());
        let excess = valid.len().saturating_sub(self.keep_last);
        for step in valid.drain(..excess).collect::<Vec<_>>() {
            let path = self.path_for(step);
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Someone removed it already: what pruning wanted.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io(&path, "remove old checkpoint")(error)),
            }
        }
        Ok(())
    }

    /// Reads and decodes `path`, checking that it holds step `step` of this
    /// store's run, and its contents.
    fn load(&self, path: &Path, step: u64) -> Result<Checkpoint, CheckpointError> {
        let bytes = fs::read(path).map_err(io(path, "read"))?;
        let checkpoint = Checkpoint::decode(&bytes, path)?;
        if checkpoint.step != step {
            return Err(CheckpointError::BadMetadata {
                path: path.to_path_buf(),
                field: "step".to_string(),
                reason: format!("{} in a file named for step {step}", checkpoint.step),
            });
        }
        if let Some(run) = &self.run {
            run.check_stamp(&checkpoint, path)?;
        }
        if let Some(check) = &self.check {
            check(&checkpoint).map_err(|source| CheckpointError::BadContents {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(checkpoint)
    }

    fn entries(&self) -> Result<Vec<Entry>, CheckpointError> {
        let listing = fs::read_dir(&self.dir).map_err(io(&self.dir, "list directory"))?;
        let mut entries = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io(&self.dir, "list directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((step, run)) = parse_checkpoint_name(name) {
                entries.push(Entry::Checkpoint { step, run, path: entry.path() });
            } else if is_temp_name(name) {
                entries.push(Entry::Temp(entry.path()));
            }
        }
        Ok(entries)
    }
}

enum Entry {
    Checkpoint { step: u64, run: Option<RunId>, path: PathBuf },
    Temp(PathBuf),
}

/// The step and run of `ckpt-{digits}.zbmd` or `ckpt-{digits}-{run}.zbmd`.
fn parse_checkpoint_name(name: &str) -> Option<(u64, Option<RunId>)> {
    let stem = name.strip_prefix("ckpt-")?.strip_suffix(".zbmd")?;
    let (digits, run) = match stem.split_once('-') {
        Some((digits, run)) => (digits, Some(RunId::parse(run)?)),
        None => (stem, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, run))
}

fn is_temp_name(name: &str) -> bool {
    (name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX))
        || (name.starts_with("ckpt-") && name.ends_with(OLD_TEMP_SUFFIX))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_parse_with_and_without_a_run() {
        assert_eq!(parse_checkpoint_name("ckpt-000000000042.zbmd"), Some((42, None)));
        assert_eq!(
            parse_checkpoint_name("ckpt-000000000042-00abcdef01234567.zbmd"),
            Some((42, Some(RunId(0x00ab_cdef_0123_4567))))
        );
        for bad in [
            "ckpt-.zbmd",
            "ckpt-12a.zbmd",
            "ckpt-42-xyz.zbmd",
            "ckpt-42-.zbmd",
            "ckpt-99999999999999999999999.zbmd",
            "ckpt-42.zbmd.tmp",
            "notes.txt",
        ] {
            assert_eq!(parse_checkpoint_name(bad), None, "{bad}");
        }
        assert!(is_temp_name(".ckpt-000000000042.123.tmp"));
        assert!(is_temp_name("ckpt-000000000042.zbmd.tmp"));
        assert!(!is_temp_name("ckpt-000000000042.zbmd"));
    }
}
