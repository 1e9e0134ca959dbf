//! Per-shard I/O through actors, on both backends: every behaviour is
//! tested once with io_uring and once with blocking threads, through an
//! actor that drives the operations with `ctx.io` and reports what came back.
#![cfg(not(zbmd_loom))]

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{PATIENCE, eventually};
use zbmd_rt::io::{IoBackendKind, IoError, IoFile, IoOp, IoOutput, IoResult, OpenOptions};
use zbmd_rt::runtime::Metric;
use zbmd_rt::{Actor, ActorError, ActorRef, Context, ExitReason, Runtime, RuntimeError};

/// Drives I/O operations for the test thread.
struct Driver {
    reports: Sender<Report>,
}

enum Msg {
    /// Start these operations, all in one handler call.
    Start(Vec<IoOp>),
    /// An operation's result.
    Done(IoResult),
    /// Answer with `Report::Alive`.
    Ping,
    /// Start this operation, then stop before it completes.
    StartAndStop(IoOp),
}

#[derive(Debug)]
enum Report {
    /// `ctx.io` refused to start the operation.
    Refused(IoError),
    /// The operation completed.
    Done(IoResult),
    Alive,
}

impl Actor for Driver {
    type Msg = Msg;

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Start(ops) => {
                for op in ops {
                    if let Err(error) = ctx.io(op, Msg::Done) {
                        let _ = self.reports.send(Report::Refused(error));
                    }
                }
            }
            Msg::Done(result) => {
                let _ = self.reports.send(Report::Done(result));
            }
            Msg::Ping => {
                let _ = self.reports.send(Report::Alive);
            }
            Msg::StartAndStop(op) => {
                ctx.io(op, Msg::Done)?;
                ctx.stop(ExitReason::Normal);
            }
        }
        Ok(())
    }
}

/// A one-shard runtime on one backend, and a driver actor on it.
struct Harness {
    rt: Runtime,
    driver: ActorRef<Msg>,
    reports: Receiver<Report>,
    kind: IoBackendKind,
}

impl Harness {
    /// `None` (with the reason printed) where io_uring cannot work, as in
    /// containers that disable it.
    fn new(kind: IoBackendKind, max_io_in_flight: usize) -> Option<Harness> {
        let built = Runtime::builder()
            .shards(1)
            .pin(false)
            .io_backend(Some(kind))
            .max_io_in_flight(max_io_in_flight)
            .build();
        let rt = match built {
            Ok(rt) => rt,
            Err(RuntimeError::Io(error @ IoError::Unavailable { .. })) => {
                eprintln!("skipped: {error}");
                return None;
            }
            Err(error) => panic!("runtime on {kind}: {error}"),
        };
        assert_eq!(rt.io_backend(), kind);
        let (tx, reports) = channel();
        let driver = rt.spawn(Driver { reports: tx }).expect("spawn driver");
        Some(Harness { rt, driver, reports, kind })
    }

    fn send(&self, msg: Msg) {
        self.driver
            .send_timeout(msg, PATIENCE)
            .unwrap_or_else(|_| panic!("{}: driver unreachable", self.kind));
    }

    fn next(&self) -> Report {
        self.reports
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("{}: no report: {e}", self.kind))
    }

    /// Runs one operation and returns its result (a refusal is an `Err`).
    fn run(&self, op: IoOp) -> IoResult {
        self.send(Msg::Start(vec![op]));
        match self.next() {
            Report::Done(result) => result,
            Report::Refused(error) => Err(error),
            Report::Alive => panic!("{}: unexpected ping answer", self.kind),
        }
    }

    fn open(&self, path: &Path, options: OpenOptions) -> IoFile {
        match self.run(IoOp::Open { path: path.to_path_buf(), options }) {
            Ok(IoOutput::Opened(file)) => file,
            other => panic!("{}: open {}: {other:?}", self.kind, path.display()),
        }
    }

    fn close(&self, file: IoFile) {
        let closed = self.run(IoOp::Close { file });
        assert!(matches!(closed, Ok(IoOutput::Closed)), "{}: close: {closed:?}", self.kind);
    }

    fn assert_alive(&self) {
        self.send(Msg::Ping);
        assert!(matches!(self.next(), Report::Alive), "{}: the driver stopped", self.kind);
    }
}

/// A directory for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str, kind: IoBackendKind) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("zbmd-io-{}-{test}-{kind}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a test body once per backend, as two tests named after them.
macro_rules! on_both_backends {
    ($($name:ident => $body:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn uring() {
                ($body)(IoBackendKind::Uring);
            }
            #[test]
            fn threads() {
                ($body)(IoBackendKind::Threads);
            }
        }
    )*};
}

on_both_backends! {
    a_written_file_reads_back_the_same_bytes => written_file_reads_back;
    opening_a_missing_file_is_an_error_naming_it_and_the_actor_runs_on => missing_file;
    closing_a_shared_file_is_refused_and_a_wrong_access_is_an_os_error => close_and_access_errors;
    a_timeout_completes_with_timed_out => timeout_completes;
    more_operations_than_max_io_in_flight_are_refused => queue_full;
    a_result_for_a_stopped_actor_is_counted_as_dropped => result_for_dead_actor;
    a_full_disk_is_an_enospc_error => disk_full;
}

fn written_file_reads_back(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 8) else {
        return;
    };
    let dir = TempDir::new("roundtrip", kind);
    let path = dir.0.join("data.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();

    let file = h.open(&path, OpenOptions::create_truncate());
    let written = h.run(IoOp::Write { file: file.clone(), offset: 0, data: data.clone() });
    assert!(matches!(written, Ok(IoOutput::Written(n)) if n == data.len()), "{kind}: {written:?}");
    assert!(matches!(h.run(IoOp::Fsync { file: file.clone() }), Ok(IoOutput::Synced)), "{kind}");
    h.close(file);

    let file = h.open(&path, OpenOptions::read_only());
    let read = h.run(IoOp::Read { file: file.clone(), offset: 0, len: data.len() + 10 });
    let Ok(IoOutput::Read(back)) = read else { panic!("{kind}: read: {read:?}") };
    assert_eq!(back, data, "{kind}: the bytes read differ from those written");
    let tail = h.run(IoOp::Read { file: file.clone(), offset: 99_990, len: 100 });
    assert!(matches!(&tail, Ok(IoOutput::Read(t)) if t[..] == data[99_990..]), "{kind}: {tail:?}");
    h.close(file);
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

fn missing_file(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 8) else {
        return;
    };
    let dir = TempDir::new("missing", kind);
    let path = dir.0.join("no-such-file");
    let error =
        h.run(IoOp::Open { path: path.clone(), options: OpenOptions::read_only() }).unwrap_err();
    assert!(
        matches!(&error, IoError::Os { op: "open", path: Some(p), .. } if *p == path),
        "{kind}: {error:?}"
    );
    assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    let message = error.to_string();
    assert!(
        message.contains(&*path.to_string_lossy()) && message.contains("open"),
        "{kind}: {message}"
    );

    // The actor handled the error as a message and goes on.
    h.assert_alive();
    let file = h.open(&dir.0.join("now-it-exists"), OpenOptions::create_truncate());
    h.close(file);
}

fn close_and_access_errors(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 8) else {
        return;
    };
    let dir = TempDir::new("close", kind);
    let path = dir.0.join("file");
    std::fs::write(&path, b"abc").unwrap();
    let file = h.open(&path, OpenOptions::read_only());

    // Another handle still uses the file: closing would pull the descriptor
    // from under it, so the close is refused and the handle comes back.
    let other = file.clone();
    let Err(IoError::InUse { file, others: 1 }) = h.run(IoOp::Close { file }) else {
        panic!("{kind}: close in use")
    };
    let message = IoError::InUse { file: file.clone(), others: 1 }.to_string();
    assert!(message.contains("refused") && message.contains(&*path.to_string_lossy()), "{message}");
    let read = h.run(IoOp::Read { file: other.clone(), offset: 0, len: 3 });
    assert!(matches!(&read, Ok(IoOutput::Read(b)) if b == b"abc"), "{kind}: still open: {read:?}");

    // A write through a read-only descriptor: the kernel's EBADF, as an
    // error naming the operation and the file.
    let error =
        h.run(IoOp::Write { file: other.clone(), offset: 0, data: b"x".to_vec() }).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{kind}: {error}");
    assert!(
        matches!(&error, IoError::Os { op: "write", path: Some(p), .. } if *p == path),
        "{kind}: {error:?}"
    );
    assert!(error.to_string().contains("Bad file descriptor"), "{error}");

    drop(other);
    h.close(file);
    h.assert_alive();
}

fn timeout_completes(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 8) else {
        return;
    };
    let done = h.run(IoOp::Timeout { after: Duration::from_millis(5) });
    assert!(matches!(done, Ok(IoOutput::TimedOut)), "{kind}: {done:?}");
    let done = h.run(IoOp::Timeout { after: Duration::ZERO });
    assert!(matches!(done, Ok(IoOutput::TimedOut)), "{kind}: {done:?}");
}

fn queue_full(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 2) else {
        return;
    };
    let timeout = || IoOp::Timeout { after: Duration::from_millis(20) };
    h.send(Msg::Start(vec![timeout(), timeout(), timeout()]));
    let mut refused = 0;
    let mut timed_out = 0;
    for _ in 0..3 {
        match h.next() {
            Report::Refused(IoError::QueueFull { capacity }) => {
                assert_eq!(capacity, 2);
                refused += 1;
            }
            Report::Done(Ok(IoOutput::TimedOut)) => timed_out += 1,
            other => panic!("{kind}: {other:?}"),
        }
    }
    assert_eq!((refused, timed_out), (1, 2), "{kind}");
    let message = IoError::QueueFull { capacity: 2 }.to_string();
    assert!(message.contains("max_io_in_flight"), "{message}");
    // Completions free their places.
    assert!(matches!(h.run(timeout()), Ok(IoOutput::TimedOut)), "{kind}");
}

fn result_for_dead_actor(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 8) else {
        return;
    };
    let (tx, _reports) = channel();
    let doomed = h.rt.spawn(Driver { reports: tx }).unwrap();
    let before = h.rt.metrics().total(Metric::RepliesDropped);
    doomed
        .send_timeout(
            Msg::StartAndStop(IoOp::Timeout { after: Duration::from_millis(10) }),
            PATIENCE,
        )
        .unwrap();
    eventually("the result for the stopped actor to be dropped", || {
        h.rt.metrics().total(Metric::RepliesDropped) > before
    });
    h.assert_alive();
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(CString);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> std::io::Result<Tmpfs> {
        let target = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a temp path");
        let data = CString::new(format!("size={size}")).expect("no NUL");
        // SAFETY: every pointer is a NUL-terminated string that outlives the
        // call; tmpfs takes its options as a string.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tmpfs(target))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: a NUL-terminated path; a lazy unmount also works if a
        // failed assertion left a file open.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

fn disk_full(kind: IoBackendKind) {
    let Some(h) = Harness::new(kind, 8) else {
        return;
    };
    let dir = TempDir::new("enospc", kind);
    let _tmpfs = match Tmpfs::mount(&dir.0, "64k") {
        Ok(tmpfs) => tmpfs,
        Err(error) if error.raw_os_error() == Some(libc::EPERM) => {
            eprintln!(
                "skipped: mounting a tmpfs is not permitted here ({error}); run as root to test a full disk"
            );
            return;
        }
        Err(error) => panic!("mount tmpfs on {}: {error}", dir.0.display()),
    };
    let path = dir.0.join("big");
    let file = h.open(&path, OpenOptions::create_truncate());
    const TOTAL: usize = 1 << 20;
    let mut offset = 0;
    // A write that fills the disk is short; the next one fails. Each
    // success moves at least one byte, and the disk holds 64 KiB.
    let error = loop {
        assert!(offset < TOTAL, "{kind}: 1 MiB fitted on a 64 KiB tmpfs");
        match h.run(IoOp::Write {
            file: file.clone(),
            offset: offset as u64,
            data: vec![0x5a; TOTAL - offset],
        }) {
            Ok(IoOutput::Written(n)) if n > 0 => offset += n,
            Ok(other) => panic!("{kind}: write: {other:?}"),
            Err(error) => break error,
        }
    };
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{kind}: {error}");
    assert!(
        matches!(&error, IoError::Os { op: "write", path: Some(p), .. } if *p == path),
        "{kind}: {error:?}"
    );
    assert!(error.to_string().contains("No space left on device"), "{error}");
    h.close(file);
    h.assert_alive();
}

#[test]
fn the_runtime_reports_its_backend_and_checks_the_in_flight_limit() {
    let rt = Runtime::builder()
        .shards(1)
        .pin(false)
        .io_backend(Some(IoBackendKind::Threads))
        .build()
        .unwrap();
    assert_eq!(rt.io_backend(), IoBackendKind::Threads);
    assert_eq!(rt.io_backend().to_string(), "threads");
    drop(rt);
    let error = Runtime::builder().shards(1).pin(false).max_io_in_flight(0).build().unwrap_err();
    assert!(matches!(error, RuntimeError::Config(_)), "{error}");
    assert!(error.to_string().contains("max_io_in_flight"), "{error}");
}
