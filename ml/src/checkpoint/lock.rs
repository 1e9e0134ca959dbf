//! One writer per checkpoint directory: an exclusive `flock(2)` on the
//! directory's lock file, held as long as the store is open.
//!
//! Two processes writing checkpoints into one directory would prune each
//! other's files. `flock` is released by the kernel when its holder exits,
//! however it exits (a SIGKILL included), so a crashed run never leaves a
//! stale lock behind; the pid written into the file only serves to name
//! the holder in the error of whoever is refused.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::CheckpointError;

/// The lock file's name in a checkpoint directory.
pub const LOCK_FILE: &str = ".zbmd-checkpoints.lock";

/// The directory's lock, released when dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` without waiting, and writes this process's
    /// pid into the lock file. Creating that file is also the first write
    /// into the directory, so a directory that cannot be written fails here,
    /// before any training step.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, CheckpointError> {
        let path = dir.join(LOCK_FILE);
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| CheckpointError::Io { path, action, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("create the lock file"))?;
        // SAFETY: `file` owns the descriptor for the whole call; flock reads
        // no memory of ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::WouldBlock {
                return Err(CheckpointError::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder_pid(&mut file),
                });
            }
            return Err(io("lock")(error));
        }
        file.set_len(0).map_err(io("write the lock file"))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io("write the lock file"))?;
        Ok(DirLock { _file: file })
    }
}

/// The pid the holder wrote, if it reads as one.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
