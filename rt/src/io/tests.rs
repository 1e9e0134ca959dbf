//! Unit tests: backend choice, open flags, the slab, and each backend
//! driven directly (no runtime), polled from the test thread.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::*;

const PATIENCE: Duration = Duration::from_secs(10);

fn no_probe() -> Result<(), IoError> {
    panic!("the probe must not run for this choice")
}

fn probe_fails() -> Result<(), IoError> {
    Err(IoError::Unavailable {
        reason: "io_uring_setup failed: Operation not permitted (os error 1)".into(),
    })
}

#[test]
fn backend_names_parse() {
    assert_eq!(parse_env("uring").unwrap(), Some(IoBackendKind::Uring));
    assert_eq!(parse_env("io_uring").unwrap(), Some(IoBackendKind::Uring));
    assert_eq!(parse_env(" Threads\n").unwrap(), Some(IoBackendKind::Threads));
    assert_eq!(parse_env("").unwrap(), None);
    assert_eq!(parse_env("  ").unwrap(), None);
    let error = parse_env("epoll").unwrap_err();
    assert!(matches!(&error, IoError::UnknownBackend { value } if value == "epoll"));
    let message = error.to_string();
    assert!(
        message.contains("\"epoll\"") && message.contains("uring") && message.contains("threads"),
        "{message}"
    );
    assert_eq!(
        IoBackendKind::Uring.to_string().parse::<IoBackendKind>().unwrap(),
        IoBackendKind::Uring
    );
    assert_eq!(
        IoBackendKind::Threads.to_string().parse::<IoBackendKind>().unwrap(),
        IoBackendKind::Threads
    );
}

#[test]
fn detection_falls_back_to_threads_when_uring_fails() {
    let choice = decide(None, None, probe_fails).unwrap();
    assert_eq!(choice.kind, IoBackendKind::Threads);
    assert!(choice.fell_back);
    assert!(choice.reason.contains("Operation not permitted"), "{}", choice.reason);

    let choice = decide(None, None, || Ok(())).unwrap();
    assert_eq!((choice.kind, choice.fell_back), (IoBackendKind::Uring, false));
}

#[test]
fn a_forced_backend_is_used_or_refused_never_swapped() {
    let threads = decide(None, Some("threads"), no_probe).unwrap();
    assert_eq!((threads.kind, threads.fell_back), (IoBackendKind::Threads, false));
    assert!(threads.reason.contains(BACKEND_ENV));

    // io_uring asked for where it fails: an error, not threads.
    assert!(matches!(decide(None, Some("uring"), probe_fails), Err(IoError::Unavailable { .. })));
    assert!(matches!(
        decide(Some(IoBackendKind::Uring), None, probe_fails),
        Err(IoError::Unavailable { .. })
    ));

    // The builder's setting wins over the environment, even a bad one.
    let built = decide(Some(IoBackendKind::Threads), Some("uring"), no_probe).unwrap();
    assert_eq!(built.kind, IoBackendKind::Threads);
    assert!(decide(Some(IoBackendKind::Threads), Some("bogus"), no_probe).is_ok());

    // A bad value with nothing else set is an error, not a guess.
    assert!(matches!(decide(None, Some("bogus"), no_probe), Err(IoError::UnknownBackend { .. })));
    // An empty value means "detect".
    assert_eq!(decide(None, Some(""), probe_fails).unwrap().kind, IoBackendKind::Threads);
}

#[test]
fn open_flags_follow_std_rules() {
    let flags = |o: OpenOptions| o.flags();
    assert_eq!(flags(OpenOptions::read_only()), Ok(libc::O_RDONLY | libc::O_CLOEXEC));
    assert_eq!(
        flags(OpenOptions::create_truncate()),
        Ok(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC)
    );
    assert_eq!(
        flags(OpenOptions::new().read(true).write(true)),
        Ok(libc::O_RDWR | libc::O_CLOEXEC)
    );
    assert_eq!(
        flags(OpenOptions::new().append(true).create(true)),
        Ok(libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC)
    );
    assert!(flags(OpenOptions::new()).is_err());
    assert!(flags(OpenOptions::read_only().create(true)).is_err());
    assert!(flags(OpenOptions::new().append(true).truncate(true)).is_err());
    assert!(flags(OpenOptions::read_only().mode(0o10000)).is_err());
}

#[test]
fn slab_reuses_keys_and_never_exceeds_its_capacity() {
    let mut slab = Slab::with_capacity(2);
    let a = slab.insert("a").unwrap();
    let b = slab.insert("b").unwrap();
    assert_ne!(a, b);
    assert_eq!(slab.insert("c"), None);
    assert_eq!(slab.len(), 2);
    assert_eq!(slab.remove(a), Some("a"));
    assert_eq!(slab.remove(a), None);
    assert_eq!(slab.insert("d"), Some(a));
    assert_eq!(slab.iter().count(), 2);
}

#[test]
fn limits_are_checked_before_anything_starts() {
    let big = IoOp::Timeout { after: MAX_IO_TIMEOUT + Duration::from_secs(1) };
    assert!(matches!(Op::prepare(big), Err(IoError::Invalid { op: "timeout", .. })));
    let nul = IoOp::Open { path: "a\0b".into(), options: OpenOptions::read_only() };
    assert!(matches!(Op::prepare(nul), Err(IoError::Invalid { op: "open", .. })));
    let bad = IoOp::Open { path: "x".into(), options: OpenOptions::new() };
    assert!(matches!(Op::prepare(bad), Err(IoError::Invalid { op: "open", .. })));
}

/// A driver built on the test thread, with a waker that counts.
struct Driver {
    io: Io,
    results: Receiver<IoResult>,
    tx: std::sync::mpsc::Sender<IoResult>,
}

impl Driver {
    fn new(kind: IoBackendKind, max_in_flight: usize) -> Driver {
        let (io, chosen) =
            Io::new(Some(kind), max_in_flight, 0, Arc::new(|| {})).expect("I/O driver");
        assert_eq!(chosen, kind);
        let (tx, results) = channel();
        Driver { io, results, tx }
    }

    fn submit(&mut self, op: IoOp) -> Result<(), IoError> {
        let tx = self.tx.clone();
        self.io
            .submit(op, Box::new(move |result| drop(tx.send(result))))
            .map_err(|(error, _)| error)
    }

    /// Polls until one result arrives.
    fn next(&mut self) -> IoResult {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.io.poll();
            if let Ok(result) = self.results.try_recv() {
                return result;
            }
            assert!(Instant::now() < deadline, "no completion within {PATIENCE:?}");
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn run(&mut self, op: IoOp) -> IoResult {
        self.submit(op).expect("submit");
        self.next()
    }
}

fn kinds() -> Vec<IoBackendKind> {
    let mut kinds = vec![IoBackendKind::Threads];
    match uring::probe() {
        Ok(()) => kinds.push(IoBackendKind::Uring),
        Err(error) => eprintln!("io_uring not tested here: {error}"),
    }
    kinds
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("zbmd-io-unit-{}-{tag}", std::process::id()))
}

#[test]
fn each_backend_round_trips_a_file_and_closes_only_the_last_handle() {
    for kind in kinds() {
        let mut d = Driver::new(kind, 8);
        let path = temp_path(&format!("roundtrip-{kind}"));
        let options = OpenOptions::create_truncate().read(true);
        let Ok(IoOutput::Opened(file)) = d.run(IoOp::Open { path: path.clone(), options }) else {
            panic!("{kind}: open")
        };
        assert_eq!(file.path(), path);
        let data = b"zbmd per-shard io".to_vec();
        let written = d.run(IoOp::Write { file: file.clone(), offset: 3, data: data.clone() });
        assert!(matches!(written, Ok(IoOutput::Written(17))), "{kind}: {written:?}");
        assert!(matches!(d.run(IoOp::Fsync { file: file.clone() }), Ok(IoOutput::Synced)));
        let Ok(IoOutput::Read(back)) =
            d.run(IoOp::Read { file: file.clone(), offset: 0, len: 100 })
        else {
            panic!("{kind}: read")
        };
        assert_eq!(&back[..3], &[0, 0, 0]);
        assert_eq!(&back[3..], &data[..]);

        // Another handle exists: the close is refused and the handle comes back.
        let other = file.clone();
        let Err(IoError::InUse { file, others: 1 }) = d.submit(IoOp::Close { file }) else {
            panic!("{kind}: in use")
        };
        assert_eq!(d.io.in_flight(), 0);
        drop(other);
        assert!(matches!(d.run(IoOp::Close { file }), Ok(IoOutput::Closed)), "{kind}");
        assert_eq!(d.io.in_flight(), 0);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn each_backend_reports_os_errors_with_op_and_path() {
    for kind in kinds() {
        let mut d = Driver::new(kind, 4);
        let missing = temp_path(&format!("missing-{kind}"));
        let Err(error) =
            d.run(IoOp::Open { path: missing.clone(), options: OpenOptions::read_only() })
        else {
            panic!("{kind}: opened a missing file")
        };
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT), "{kind}: {error}");
        assert!(matches!(&error, IoError::Os { op: "open", path: Some(p), .. } if *p == missing));
        assert!(error.to_string().contains(&*missing.to_string_lossy()), "{error}");

        // A write on a file opened for reading only: EBADF, naming the file.
        let path = temp_path(&format!("read-only-{kind}"));
        std::fs::write(&path, b"x").unwrap();
        let Ok(IoOutput::Opened(file)) =
            d.run(IoOp::Open { path: path.clone(), options: OpenOptions::read_only() })
        else {
            panic!("{kind}: open {}", path.display())
        };
        let error =
            d.run(IoOp::Write { file: file.clone(), offset: 0, data: vec![1] }).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{kind}: {error}");
        assert!(
            error.to_string().starts_with(&format!("write of {} failed", path.display())),
            "{error}"
        );
        assert!(matches!(d.run(IoOp::Close { file }), Ok(IoOutput::Closed)));
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn each_backend_bounds_what_is_in_flight() {
    for kind in kinds() {
        let mut d = Driver::new(kind, 2);
        let file = open_devnull(&mut d);
        d.submit(IoOp::Timeout { after: Duration::from_millis(20) }).unwrap();
        d.submit(IoOp::Timeout { after: Duration::from_millis(20) }).unwrap();
        assert_eq!(d.io.in_flight(), 2);
        let refused = d.submit(IoOp::Timeout { after: Duration::ZERO });
        assert!(matches!(refused, Err(IoError::QueueFull { capacity: 2 })), "{kind}: {refused:?}");
        // The in-flight limit is checked before the operation itself.
        let too_big = IoOp::Read { file: file.clone(), offset: 0, len: MAX_IO_LEN + 1 };
        assert!(matches!(d.submit(too_big), Err(IoError::QueueFull { .. })));
        assert!(matches!(d.next(), Ok(IoOutput::TimedOut)));
        assert!(matches!(d.next(), Ok(IoOutput::TimedOut)));
        assert_eq!(d.io.in_flight(), 0);
        let too_big = d.submit(IoOp::Read { file, offset: 0, len: MAX_IO_LEN + 1 });
        assert!(
            matches!(too_big, Err(IoError::TooLarge { op: "read", .. })),
            "{kind}: {too_big:?}"
        );
    }
}

fn open_devnull(d: &mut Driver) -> IoFile {
    match d.run(IoOp::Open { path: "/dev/null".into(), options: OpenOptions::read_only() }) {
        Ok(IoOutput::Opened(file)) => file,
        other => panic!("open /dev/null: {other:?}"),
    }
}

#[test]
fn dropping_a_driver_with_operations_in_flight_waits_for_them() {
    for kind in kinds() {
        let mut d = Driver::new(kind, 4);
        let file = open_devnull(&mut d);
        d.submit(IoOp::Timeout { after: MAX_IO_TIMEOUT }).unwrap();
        d.submit(IoOp::Read { file, offset: 0, len: 4096 }).unwrap();
        // Submitted to the kernel (uring) or queued for the threads.
        d.io.poll();
        // Returns once the read completed and the day-long timeout was
        // removed (a hang here is the failure).
        drop(d);
    }
}

#[test]
fn a_threads_completion_wakes_its_shard() {
    let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = woken.clone();
    let waker: Waker = Arc::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let (mut io, _) = Io::new(Some(IoBackendKind::Threads), 2, 0, waker).unwrap();
    let (tx, rx) = channel();
    let op = IoOp::Open { path: "/dev/null".into(), options: OpenOptions::read_only() };
    io.submit(
        op,
        Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while woken.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never woken");
        std::thread::sleep(Duration::from_micros(50));
    }
    // The completion waits for the shard's poll: it runs on the shard thread.
    assert!(rx.try_recv().is_err());
    assert_eq!(io.poll(), 1);
    assert_eq!(rx.try_recv(), Ok(true));
}

#[test]
fn a_panicking_completion_does_not_take_the_shard_down() {
    let (mut io, _) = Io::new(Some(IoBackendKind::Threads), 2, 0, Arc::new(|| {})).unwrap();
    io.submit(IoOp::Timeout { after: Duration::ZERO }, Box::new(|_| panic!("user on_done")))
        .map_err(|(e, _)| e)
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while io.poll() == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_micros(50));
    }
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn an_out_of_range_limit_is_a_setup_error() {
    for limit in [0, MAX_IO_IN_FLIGHT + 1] {
        let Err(error) = Io::new(Some(IoBackendKind::Threads), limit, 0, Arc::new(|| {})) else {
            panic!("{limit}")
        };
        assert!(matches!(error, IoError::Setup(_)), "{error}");
    }
}

#[test]
fn dropping_a_ring_cancels_a_read_blocked_on_a_fifo() {
    if let Err(error) = uring::probe() {
        eprintln!("skipped: {error}");
        return;
    }
    let path = temp_path("fifo");
    let _ = std::fs::remove_file(&path);
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut d = Driver::new(IoBackendKind::Uring, 2);
    // Read and write: the open does not wait for a writer, and the read
    // waits for data that never comes (this end is its only writer).
    let options = OpenOptions::read_only().write(true);
    let Ok(IoOutput::Opened(fifo)) = d.run(IoOp::Open { path: path.clone(), options }) else {
        panic!("open the FIFO")
    };
    d.submit(IoOp::Read { file: fifo.clone(), offset: 0, len: 16 }).unwrap();
    d.io.poll();
    assert_eq!(d.io.in_flight(), 1);
    let (dropped, wait) = channel();
    std::thread::spawn(move || {
        drop(d);
        let _ = dropped.send(());
    });
    let outcome = wait.recv_timeout(PATIENCE);
    if outcome.is_err() {
        // Unblock the read so the thread can finish, then fail.
        let _ = std::fs::OpenOptions::new().write(true).open(&path).map(|mut w| w.write_all(b"x"));
    }
    std::fs::remove_file(&path).unwrap();
    assert!(outcome.is_ok(), "dropping the ring waited for a read that never completes");
}
