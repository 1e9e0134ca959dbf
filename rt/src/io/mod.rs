//! Per-shard I/O: file operations and timeouts that actors submit with
//! [`Context::io`](crate::Context::io) and whose results come back to them as
//! messages.
//!
//! Each shard owns one I/O driver with one of two backends behind the same
//! operations ([`IoOp`] in, [`IoResult`] out):
//!
//! * **io_uring** (Jens Axboe, "Efficient IO with io_uring", 2019): one ring
//!   per shard, used by that shard's thread only. Submissions are batched and
//!   pushed to the kernel with one `io_uring_enter` per shard round; the
//!   buffers and paths the kernel reads or writes live in a fixed table of
//!   in-flight operations until their completion arrives.
//! * **threads**: a few blocking threads per shard run the same system calls
//!   (`openat`, `pread`, `pwrite`, `fsync`, `close`) and hand the results back
//!   through a bounded queue; timeouts stay on the shard. For machines and
//!   containers where io_uring is disabled.
//!
//! Either way, completions run on the shard thread, at the top of each shard
//! round, and every shard holds at most `max_io_in_flight` operations: one
//! more is refused with [`IoError::QueueFull`].
//!
//! # Which backend
//!
//! Chosen once when the runtime starts and logged with its reason:
//! [`RuntimeBuilder::io_backend`](crate::RuntimeBuilder::io_backend) if set,
//! else the `ZBMD_IO_BACKEND` environment variable (`uring` or `threads`),
//! else io_uring if a probe ring can be created, knows every operation zbmd
//! uses and completes a NOP; threads otherwise (with a warning that says
//! why: `ENOSYS` from an old kernel or a seccomp filter, `EPERM` from
//! `kernel.io_uring_disabled` or a container profile). Asking for io_uring
//! where it cannot work is an error, never a silent fallback.
//!
//! # Files
//!
//! [`IoOp::Open`] hands back an [`IoFile`]: a shared handle on the open file
//! (clone it for each operation). The descriptor stays open while any handle
//! or in-flight operation holds it, so an operation can never reach a closed
//! descriptor, or a recycled one that now names another file.
//! [`IoOp::Close`] closes it through the backend (and reports `close`
//! errors) when given the last handle, and is refused with
//! [`IoError::InUse`], which hands the handle back, while other handles
//! exist. Dropping the last handle closes the file too, silently.
//!
//! ```
//! use std::time::Duration;
//! use zbmd_rt::io::{IoOp, IoOutput, IoResult, OpenOptions};
//! use zbmd_rt::{Actor, ActorError, Context, Runtime};
//!
//! /// Writes a file, then reports how many bytes went out.
//! struct Writer(std::sync::mpsc::Sender<usize>);
//!
//! enum Msg { Start(std::path::PathBuf), Io(IoResult) }
//!
//! impl Actor for Writer {
//!     type Msg = Msg;
//!     fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
//!         match msg {
//!             Msg::Start(path) => ctx.io(IoOp::Open { path, options: OpenOptions::create_truncate() }, Msg::Io)?,
//!             Msg::Io(Ok(IoOutput::Opened(file))) => {
//!                 ctx.io(IoOp::Write { file, offset: 0, data: b"hello".to_vec() }, Msg::Io)?
//!             }
//!             Msg::Io(Ok(IoOutput::Written(n))) => { let _ = self.0.send(n); }
//!             Msg::Io(other) => return Err(ActorError::msg(format!("{other:?}"))),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let rt = Runtime::builder().shards(1).pin(false).build()?;
//! println!("I/O backend: {}", rt.io_backend());
//! let (tx, rx) = std::sync::mpsc::channel();
//! let writer = rt.spawn(Writer(tx))?;
//! let path = std::env::temp_dir().join(format!("zbmd-io-doc-{}", std::process::id()));
//! writer.try_send(Msg::Start(path.clone())).map_err(|_| "send")?;
//! assert_eq!(rx.recv_timeout(Duration::from_secs(10))?, 5);
//! std::fs::remove_file(path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod threads;
mod uring;

use std::cmp::Reverse;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable that forces a backend: `uring` (or
/// `io_uring`) or `threads`. Unset or empty: detect.
pub const BACKEND_ENV: &str = "ZBMD_IO_BACKEND";

/// The most bytes one read or write moves: large enough for a checkpoint
/// chunk or a dataset block, small enough that one operation cannot make
/// the runtime allocate without bound (a read allocates its buffer up
/// front). Larger transfers are several operations.
pub const MAX_IO_LEN: usize = 64 << 20;

/// The longest [`IoOp::Timeout`]: an I/O deadline, not a scheduler. Longer
/// waits belong to [`Context::send_after`](crate::Context::send_after).
pub const MAX_IO_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The most operations a shard may hold in flight: the kernel's limit on
/// an io_uring submission queue (`IORING_MAX_ENTRIES`), which the ring is
/// sized from.
pub const MAX_IO_IN_FLIGHT: usize = 1 << 15;

/// Which I/O backend the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoBackendKind {
    /// One io_uring per shard.
    Uring,
    /// A small pool of blocking threads per shard.
    Threads,
}

impl fmt::Display for IoBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoBackendKind::Uring => "io_uring",
            IoBackendKind::Threads => "threads",
        })
    }
}

impl FromStr for IoBackendKind {
    type Err = IoError;

    /// Parses `uring`, `io_uring` or `threads` (any case, surrounding
    /// blanks ignored).
    fn from_str(value: &str) -> Result<Self, IoError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" => Ok(IoBackendKind::Uring),
            "threads" => Ok(IoBackendKind::Threads),
            _ => Err(IoError::UnknownBackend { value: value.to_owned() }),
        }
    }
}

/// How [`IoOp::Open`] opens a file: `open(2)`'s access and creation flags
/// and the mode of a file it creates. The rules are std's
/// [`std::fs::OpenOptions`]: one of read, write or append; create and
/// truncate need write or append; truncate and append exclude each other.
/// Files are always opened close-on-exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Create the file if it does not exist (`O_CREAT`).
    pub create: bool,
    /// Cut the file to length 0 (`O_TRUNC`).
    pub truncate: bool,
    /// Every write goes to the end of the file, whatever its offset says
    /// (`O_APPEND`; Linux ignores `pwrite`'s offset on such files).
    pub append: bool,
    /// Permission bits of a created file, before the umask (`0o666` by
    /// default, as std uses).
    pub mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Nothing set yet (mode `0o666`): add at least one access flag.
    pub const fn new() -> Self {
        OpenOptions {
            read: false,
            write: false,
            create: false,
            truncate: false,
            append: false,
            mode: 0o666,
        }
    }

    /// Read an existing file.
    pub const fn read_only() -> Self {
        OpenOptions::new().read(true)
    }

    /// Write a file from scratch: create it, or empty it if it exists.
    pub const fn create_truncate() -> Self {
        OpenOptions::new().write(true).create(true).truncate(true)
    }

    /// Sets [`read`](Self::read).
    pub const fn read(mut self, read: bool) -> Self {
        self.read = read;
        self
    }

    /// Sets [`write`](Self::write).
    pub const fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Sets [`create`](Self::create).
    pub const fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Sets [`truncate`](Self::truncate).
    pub const fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }

    /// Sets [`append`](Self::append).
    pub const fn append(mut self, append: bool) -> Self {
        self.append = append;
        self
    }

    /// Sets [`mode`](Self::mode).
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The `open(2)` flags, or why the combination cannot work.
    fn flags(&self) -> Result<libc::c_int, &'static str> {
        let access = match (self.read, self.write, self.append) {
            (false, false, false) => return Err("open needs read, write or append"),
            (true, false, false) => libc::O_RDONLY,
            (false, true, false) => libc::O_WRONLY,
            (true, true, false) => libc::O_RDWR,
            (false, _, true) => libc::O_WRONLY | libc::O_APPEND,
            (true, _, true) => libc::O_RDWR | libc::O_APPEND,
        };
        if (self.create || self.truncate) && !(self.write || self.append) {
            return Err("create and truncate need write or append");
        }
        if self.truncate && self.append {
            return Err("truncate and append exclude each other");
        }
        if self.mode & !0o7777 != 0 {
            return Err("mode has bits beyond 0o7777");
        }
        let create = if self.create { libc::O_CREAT } else { 0 };
        let truncate = if self.truncate { libc::O_TRUNC } else { 0 };
        Ok(access | create | truncate | libc::O_CLOEXEC)
    }
}

/// A shared handle on a file opened with [`IoOp::Open`].
///
/// Clone it for each operation: the file stays open while any handle (or
/// an operation in flight, which holds one) exists, so no operation can
/// reach a closed or recycled descriptor. Close it with [`IoOp::Close`] on
/// the last handle; dropping the last handle also closes it, ignoring
/// errors, as [`File`] does.
#[derive(Clone)]
pub struct IoFile(Arc<FileInner>);

struct FileInner {
    file: File,
    path: PathBuf,
}

impl IoFile {
    pub(crate) fn new(file: File, path: PathBuf) -> Self {
        IoFile(Arc::new(FileInner { file, path }))
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// How many handles share the file now, this one and those held by
    /// operations in flight included.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    pub(crate) fn file(&self) -> &File {
        &self.0.file
    }

    /// The file itself if this is the last handle, else the handle back.
    fn into_last(self) -> Result<(File, PathBuf), IoFile> {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => Ok((inner.file, inner.path)),
            Err(shared) => Err(IoFile(shared)),
        }
    }
}

impl AsFd for IoFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.file.as_fd()
    }
}

impl AsRawFd for IoFile {
    fn as_raw_fd(&self) -> RawFd {
        self.0.file.as_raw_fd()
    }
}

impl fmt::Debug for IoFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoFile").field("path", &self.0.path).field("fd", &self.as_raw_fd()).finish()
    }
}

/// One I/O operation.
pub enum IoOp {
    /// Opens (or creates) a file: [`IoOutput::Opened`].
    Open {
        /// Relative paths start at the process's working directory.
        path: PathBuf,
        /// Access and creation flags.
        options: OpenOptions,
    },
    /// Reads up to `len` bytes at `offset` (`pread`): [`IoOutput::Read`]
    /// with what was read, shorter at the end of the file.
    Read {
        /// The file.
        file: IoFile,
        /// Where to start, from the start of the file (at most `i64::MAX`).
        offset: u64,
        /// At most [`MAX_IO_LEN`].
        len: usize,
    },
    /// Writes `data` at `offset` (`pwrite`): [`IoOutput::Written`] with the
    /// bytes written, which may be fewer (a full disk, a signal): write the
    /// rest with another operation.
    Write {
        /// The file.
        file: IoFile,
        /// Where to start (at most `i64::MAX`; ignored for append).
        offset: u64,
        /// At most [`MAX_IO_LEN`] bytes.
        data: Vec<u8>,
    },
    /// Flushes the file's data and metadata to the device (`fsync`):
    /// [`IoOutput::Synced`].
    Fsync {
        /// The file.
        file: IoFile,
    },
    /// Closes the file (`close`): [`IoOutput::Closed`]. Must be its last
    /// handle; see [`IoFile`].
    Close {
        /// The last handle on the file.
        file: IoFile,
    },
    /// Completes with [`IoOutput::TimedOut`] after `after` (at most
    /// [`MAX_IO_TIMEOUT`]).
    Timeout {
        /// How long to wait.
        after: Duration,
    },
}

impl fmt::Debug for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoOp::Open { path, options } => {
                f.debug_struct("Open").field("path", path).field("options", options).finish()
            }
            IoOp::Read { file, offset, len } => f
                .debug_struct("Read")
                .field("file", file)
                .field("offset", offset)
                .field("len", len)
                .finish(),
            IoOp::Write { file, offset, data } => f
                .debug_struct("Write")
                .field("file", file)
                .field("offset", offset)
                .field("len", &data.len())
                .finish(),
            IoOp::Fsync { file } => f.debug_struct("Fsync").field("file", file).finish(),
            IoOp::Close { file } => f.debug_struct("Close").field("file", file).finish(),
            IoOp::Timeout { after } => f.debug_struct("Timeout").field("after", after).finish(),
        }
    }
}

/// What a successful operation produced.
pub enum IoOutput {
    /// The opened file.
    Opened(IoFile),
    /// The bytes read (fewer than asked at the end of the file).
    Read(Vec<u8>),
    /// How many bytes were written.
    Written(usize),
    /// The file reached the device.
    Synced,
    /// The file is closed.
    Closed,
    /// The timeout ran out.
    TimedOut,
}

impl fmt::Debug for IoOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoOutput::Opened(file) => f.debug_tuple("Opened").field(file).finish(),
            IoOutput::Read(data) => write!(f, "Read({} bytes)", data.len()),
            IoOutput::Written(n) => f.debug_tuple("Written").field(n).finish(),
            IoOutput::Synced => f.write_str("Synced"),
            IoOutput::Closed => f.write_str("Closed"),
            IoOutput::TimedOut => f.write_str("TimedOut"),
        }
    }
}

/// Why an I/O operation failed, or could not start, or why no backend
/// could be set up.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system refused the operation (a missing file, a full
    /// disk, a file opened without the access the operation needs).
    #[error("{op}{} failed: {source}", on_path(.path))]
    Os {
        /// The operation: `open`, `read`, `write`, `fsync`, `close`, `timeout`.
        op: &'static str,
        /// The file's path, when the operation had one.
        path: Option<PathBuf>,
        /// The error the kernel gave.
        source: std::io::Error,
    },
    /// A read or write beyond [`MAX_IO_LEN`].
    #[error(
        "{op} of {len} bytes is above the limit of {max} bytes per operation; split it into several operations"
    )]
    TooLarge {
        /// `read` or `write`.
        op: &'static str,
        /// The length asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The shard holds its maximum of operations in flight.
    #[error(
        "this shard already has {capacity} I/O operations in flight; wait for some to complete or raise RuntimeBuilder::max_io_in_flight"
    )]
    QueueFull {
        /// The shard's limit.
        capacity: usize,
    },
    /// The operation cannot work as given (bad open options, a NUL byte in
    /// a path, an offset or timeout out of range).
    #[error("invalid {op}: {reason}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`IoOp::Close`] on a handle that is not the last: the handle is
    /// handed back, and the file stays open.
    #[error(
        "close of {} refused: {others} other handle(s) still use the file (clones or operations in flight); close it when they are done",
        .file.path().display()
    )]
    InUse {
        /// The handle, back to its owner.
        file: IoFile,
        /// How many other handles exist.
        others: usize,
    },
    /// The backend name (in `ZBMD_IO_BACKEND`) is not one zbmd knows.
    #[error(
        "{value:?} is not an I/O backend: use \"uring\" or \"threads\" (or unset ZBMD_IO_BACKEND to detect)"
    )]
    UnknownBackend {
        /// What was given.
        value: String,
    },
    /// io_uring was asked for but cannot work here.
    #[error(
        "io_uring is unavailable: {reason}; use the threads backend (ZBMD_IO_BACKEND=threads or RuntimeBuilder::io_backend) or allow io_uring"
    )]
    Unavailable {
        /// What failed, with the likely cause.
        reason: String,
    },
    /// The I/O settings cannot work (an in-flight limit out of range, a
    /// thread that would not start).
    #[error("I/O setup: {0}")]
    Setup(String),
}

impl IoError {
    /// The OS error number, for [`IoError::Os`].
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IoError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn os(op: &'static str, path: Option<&Path>, source: std::io::Error) -> Self {
        IoError::Os { op, path: path.map(Path::to_path_buf), source }
    }
}

fn on_path(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(String::new, |path| format!(" of {}", path.display()))
}

/// What an operation gives back.
pub type IoResult = Result<IoOutput, IoError>;

/// What runs on the shard thread when an operation completes.
pub(crate) type Completion = Box<dyn FnOnce(IoResult) + Send>;

/// Wakes the owning shard when the threads backend queued a completion.
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

/// An operation checked and ready for a backend.
pub(crate) enum Op {
    Open {
        path: PathBuf,
        cpath: CString,
        flags: libc::c_int,
        mode: u32,
    },
    Read {
        file: IoFile,
        offset: u64,
        len: usize,
    },
    Write {
        file: IoFile,
        offset: u64,
        data: Vec<u8>,
    },
    Fsync {
        file: IoFile,
    },
    /// The file taken out of its last handle.
    Close {
        file: File,
        path: PathBuf,
    },
    Timeout {
        after: Duration,
    },
}

impl Op {
    /// Checks the limits and arguments both backends rely on.
    fn prepare(op: IoOp) -> Result<Op, IoError> {
        let invalid = |op, reason| Err(IoError::Invalid { op, reason });
        let too_large = |op, len| Err(IoError::TooLarge { op, len, max: MAX_IO_LEN });
        match op {
            IoOp::Open { path, options } => {
                let flags = match options.flags() {
                    Ok(flags) => flags,
                    Err(reason) => return invalid("open", reason),
                };
                let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
                    return invalid("open", "the path contains a NUL byte");
                };
                Ok(Op::Open { path, cpath, flags, mode: options.mode })
            }
            IoOp::Read { len, .. } if len > MAX_IO_LEN => too_large("read", len),
            IoOp::Read { offset, .. } if offset > i64::MAX as u64 => {
                invalid("read", "the offset is above i64::MAX")
            }
            IoOp::Read { file, offset, len } => Ok(Op::Read { file, offset, len }),
            IoOp::Write { data, .. } if data.len() > MAX_IO_LEN => too_large("write", data.len()),
            IoOp::Write { offset, .. } if offset > i64::MAX as u64 => {
                invalid("write", "the offset is above i64::MAX")
            }
            IoOp::Write { file, offset, data } => Ok(Op::Write { file, offset, data }),
            IoOp::Fsync { file } => Ok(Op::Fsync { file }),
            IoOp::Close { file } => match file.into_last() {
                Ok((file, path)) => Ok(Op::Close { file, path }),
                Err(file) => {
                    let others = file.handles() - 1;
                    Err(IoError::InUse { file, others })
                }
            },
            IoOp::Timeout { after } if after > MAX_IO_TIMEOUT => invalid(
                "timeout",
                "longer than MAX_IO_TIMEOUT; use Context::send_after for long waits",
            ),
            IoOp::Timeout { after } => Ok(Op::Timeout { after }),
        }
    }
}

/// A fixed table of in-flight operations keyed by a small index (the
/// io_uring `user_data`, or the tag on a pool job). Its storage is
/// allocated once and never moves, so an entry's address is stable from
/// insertion to removal.
pub(crate) struct Slab<T> {
    entries: Box<[Option<T>]>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        assert!(capacity <= MAX_IO_IN_FLIGHT, "slab above MAX_IO_IN_FLIGHT");
        Slab {
            entries: (0..capacity).map(|_| None).collect(),
            free: (0..capacity as u32).rev().collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Stores `value`; `None` when every entry is taken.
    pub(crate) fn insert(&mut self, value: T) -> Option<u32> {
        let key = self.free.pop()?;
        let entry = &mut self.entries[key as usize];
        debug_assert!(entry.is_none(), "slab: free key {key} is taken");
        *entry = Some(value);
        Some(key)
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut T> {
        self.entries.get_mut(key as usize)?.as_mut()
    }

    pub(crate) fn remove(&mut self, key: u32) -> Option<T> {
        let value = self.entries.get_mut(key as usize)?.take()?;
        self.free.push(key);
        Some(value)
    }

    /// The keys in use, with their values.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(key, entry)| Some((key as u32, entry.as_ref()?)))
    }
}

/// Runs a completion on the shard thread. A panic in it (a user's
/// `on_done`) must not take the shard down: it is caught and logged, and
/// that result is lost.
fn complete(done: Completion, result: IoResult) {
    if catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
        tracing::error!("an I/O completion panicked; its result is lost");
    }
}

/// Deadlines of operations that the shard itself completes (timeouts on
/// the threads backend), earliest first.
type Deadlines = std::collections::BinaryHeap<Reverse<(Instant, u32)>>;

/// The backend chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) kind: IoBackendKind,
    pub(crate) reason: String,
    /// io_uring was tried and failed, and threads took over.
    pub(crate) fell_back: bool,
}

/// Chooses the backend (see the module's doc) and logs the choice.
pub(crate) fn detect(requested: Option<IoBackendKind>) -> Result<Choice, IoError> {
    let env = std::env::var_os(BACKEND_ENV).map(|value| value.to_string_lossy().into_owned());
    let choice = decide(requested, env.as_deref(), uring::probe)?;
    if choice.fell_back {
        tracing::warn!(backend = %choice.kind, reason = %choice.reason, "io_uring unavailable; I/O falls back to blocking threads");
    } else {
        tracing::info!(backend = %choice.kind, reason = %choice.reason, "I/O backend chosen");
    }
    Ok(choice)
}

/// The value of `ZBMD_IO_BACKEND`: a backend, or `None` (empty: detect).
pub(crate) fn parse_env(value: &str) -> Result<Option<IoBackendKind>, IoError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value.parse().map(Some)
}

/// The decision, with the io_uring probe injected (tests fake failures).
pub(crate) fn decide(
    requested: Option<IoBackendKind>,
    env: Option<&str>,
    probe: impl FnOnce() -> Result<(), IoError>,
) -> Result<Choice, IoError> {
    let choice = |kind, reason: String, fell_back| Ok(Choice { kind, reason, fell_back });
    // The builder's explicit setting wins; the environment is only read
    // when the code left the choice open.
    let (forced, source) = match requested {
        Some(kind) => (Some(kind), "RuntimeBuilder::io_backend"),
        None => (env.map(parse_env).transpose()?.flatten(), BACKEND_ENV),
    };
    match forced {
        Some(IoBackendKind::Threads) => {
            choice(IoBackendKind::Threads, format!("set by {source}"), false)
        }
        Some(IoBackendKind::Uring) => {
            probe()?;
            choice(IoBackendKind::Uring, format!("set by {source}"), false)
        }
        None => match probe() {
            Ok(()) => choice(IoBackendKind::Uring, "the io_uring probe succeeded".into(), false),
            Err(error) => choice(IoBackendKind::Threads, error.to_string(), true),
        },
    }
}

// One per shard, built once and never moved after the shard starts: the
// size difference costs nothing, a box would cost a pointer chase per call.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Uring(uring::UringBackend),
    Threads(threads::ThreadsBackend),
}

/// One shard's I/O driver. Owned by the shard (moved into its thread once,
/// never shared): submissions and completions happen on that thread.
pub(crate) struct Io {
    backend: Backend,
    max_in_flight: usize,
}

impl Io {
    /// Builds the driver of shard `shard` with backend `kind` (detected if
    /// `None`). `waker` wakes the shard when a blocking thread queued a
    /// completion.
    pub(crate) fn new(
        kind: Option<IoBackendKind>,
        max_in_flight: usize,
        shard: usize,
        waker: Waker,
    ) -> Result<(Self, IoBackendKind), IoError> {
        if !(1..=MAX_IO_IN_FLIGHT).contains(&max_in_flight) {
            return Err(IoError::Setup(format!(
                "max_io_in_flight must be in 1..={MAX_IO_IN_FLIGHT}, not {max_in_flight}"
            )));
        }
        let kind = match kind {
            Some(kind) => kind,
            None => detect(None)?.kind,
        };
        let backend = match kind {
            IoBackendKind::Uring => Backend::Uring(uring::UringBackend::new(max_in_flight)?),
            IoBackendKind::Threads => {
                Backend::Threads(threads::ThreadsBackend::new(max_in_flight, shard, waker)?)
            }
        };
        Ok((Io { backend, max_in_flight }, kind))
    }

    /// Starts `op`; `done` runs on this shard when it completes. On error
    /// the operation did not start, and `done` comes back unrun.
    pub(crate) fn submit(
        &mut self,
        op: IoOp,
        done: Completion,
    ) -> Result<(), (IoError, Completion)> {
        if self.in_flight() >= self.max_in_flight {
            return Err((IoError::QueueFull { capacity: self.max_in_flight }, done));
        }
        if let Backend::Uring(ring) = &mut self.backend {
            if let Err(error) = ring.reserve() {
                return Err((error, done));
            }
        }
        // Checked after the room is reserved: a `Close` takes the file out
        // of its handle, which must then reach the backend.
        let op = match Op::prepare(op) {
            Ok(op) => op,
            Err(error) => return Err((error, done)),
        };
        let before = self.in_flight();
        match &mut self.backend {
            Backend::Uring(ring) => ring.start(op, done),
            Backend::Threads(pool) => pool.start(op, done),
        }
        debug_assert_eq!(self.in_flight(), before + 1);
        Ok(())
    }

    /// Runs the completions that are ready, without blocking; returns how
    /// many ran.
    pub(crate) fn poll(&mut self) -> usize {
        // Every completion belongs to an operation in flight: with none,
        // there is nothing to submit or reap (the common, idle case).
        if self.in_flight() == 0 {
            return 0;
        }
        match &mut self.backend {
            Backend::Uring(ring) => ring.poll(),
            Backend::Threads(pool) => pool.poll(),
        }
    }

    /// Operations started and not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Uring(ring) => ring.in_flight(),
            Backend::Threads(pool) => pool.in_flight(),
        }
    }

    /// When the earliest operation the shard completes itself is due (a
    /// timeout on the threads backend): the shard must not sleep past it.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match &self.backend {
            Backend::Uring(_) => None,
            Backend::Threads(pool) => pool.next_deadline(),
        }
    }

    /// Whether completions may arrive that nothing wakes the shard for:
    /// io_uring operations in flight (the ring does not signal the parker
    /// yet), so a parked shard must come back to poll.
    pub(crate) fn needs_polling(&self) -> bool {
        matches!(self.backend, Backend::Uring(_)) && self.in_flight() > 0
    }
}

#[cfg(test)]
mod tests;
