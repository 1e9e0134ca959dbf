//! The blocking-thread backend, for where io_uring is disabled: a few
//! threads per shard run the same system calls the ring would (`openat`,
//! `pread`, `pwrite`, `fsync`, `close`) and queue the results for the shard.
//!
//! The shard keeps each operation's completion in a [`Slab`] and sends the
//! pool only the operation and its key, through a bounded MPMC queue; a
//! thread sends back the key and the result through a bounded MPSC queue,
//! then wakes the shard. The shard runs the completion when it drains that
//! queue in [`ThreadsBackend::poll`], so completions run on the shard thread
//! as with io_uring. Both queues hold the in-flight limit, so neither can be
//! full. Timeouts need no thread: the shard keeps their deadlines and
//! completes them itself (the shard sleeps no later than the earliest).

use std::cmp::Reverse;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{
    Completion, Deadlines, IoError, IoFile, IoOutput, IoResult, Op, Slab, Waker, complete,
};
use crate::sync::mpmc::MpmcQueue;
use crate::sync::mpsc::MpscQueue;

/// Threads per shard. File I/O through the page cache is mostly copying,
/// which more threads would only spread over the shards' cores; two let one
/// slow call (an `fsync`, a cold read) overlap with the rest.
const THREADS_PER_SHARD: usize = 2;

/// What the shard and its threads share.
struct Pool {
    /// Operations for the threads, with their slab keys.
    jobs: MpmcQueue<(u32, Op)>,
    /// Results for the shard. Single consumer: the shard's `poll`.
    done: MpscQueue<(u32, IoResult)>,
    /// Guards the sleep of idle threads; the queues themselves are lock-free.
    idle: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    waker: Waker,
}

/// One shard's pool and its in-flight operations.
pub(super) struct ThreadsBackend {
    pool: Arc<Pool>,
    slab: Slab<Completion>,
    timeouts: Deadlines,
    threads: Vec<JoinHandle<()>>,
}

impl ThreadsBackend {
    pub(super) fn new(max_in_flight: usize, shard: usize, waker: Waker) -> Result<Self, IoError> {
        let capacity = |e: crate::sync::CapacityError| IoError::Setup(format!("I/O queues: {e}"));
        let pool = Arc::new(Pool {
            jobs: MpmcQueue::with_capacity(max_in_flight).map_err(capacity)?,
            done: MpscQueue::with_capacity(max_in_flight).map_err(capacity)?,
            idle: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            waker,
        });
        let mut backend = ThreadsBackend {
            pool,
            slab: Slab::with_capacity(max_in_flight),
            timeouts: Deadlines::with_capacity(max_in_flight),
            threads: Vec::with_capacity(THREADS_PER_SHARD),
        };
        for index in 0..THREADS_PER_SHARD.min(max_in_flight) {
            let pool = backend.pool.clone();
            let name = format!("zbmd-io-{shard}-{index}");
            let thread = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || work(&pool))
                // Dropping `backend` stops the threads already started.
                .map_err(|e| IoError::Setup(format!("could not start thread {name}: {e}")))?;
            backend.threads.push(thread);
        }
        Ok(backend)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timeouts.peek().map(|Reverse((due, _))| *due)
    }

    /// Hands `op` to the threads (or keeps a timeout here). The caller
    /// checked the in-flight limit.
    pub(super) fn start(&mut self, op: Op, done: Completion) {
        let key = self.slab.insert(done).expect("Io::submit checked the in-flight limit");
        if let Op::Timeout { after } = op {
            self.timeouts.push(Reverse((Instant::now() + after, key)));
            return;
        }
        if self.pool.jobs.push((key, op)).is_err() {
            unreachable!("the job queue holds every operation in flight");
        }
        // Taking the lock orders this wake-up after any idle thread's
        // "queue empty" check, so the notification cannot be lost.
        drop(lock(&self.pool.idle));
        self.pool.wake.notify_one();
    }

    /// Runs the completions the threads queued and the timeouts that are
    /// due. Never waits.
    pub(super) fn poll(&mut self) -> usize {
        let mut ran = 0;
        // Each result frees a slab entry, so this loop ends.
        // SAFETY: this is the queue's only consumer: the queue is reached
        // only here, through `&mut self`, and the backend belongs to one
        // shard, which moves it into its thread once.
        while let Some((key, result)) = unsafe { self.pool.done.pop() } {
            let done = self.slab.remove(key).expect("a result for an operation in flight");
            complete(done, result);
            ran += 1;
        }
        if self.timeouts.is_empty() {
            return ran;
        }
        let now = Instant::now();
        while let Some(&Reverse((due, key))) = self.timeouts.peek() {
            if due > now {
                break;
            }
            self.timeouts.pop();
            let done = self.slab.remove(key).expect("a timeout in flight");
            complete(done, Ok(IoOutput::TimedOut));
            ran += 1;
        }
        ran
    }
}

impl Drop for ThreadsBackend {
    /// Lets the threads finish the operations already queued (their results
    /// are dropped: nobody waits any more), then joins them.
    fn drop(&mut self) {
        self.pool.stop.store(true, Ordering::Release);
        drop(lock(&self.pool.idle));
        self.pool.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn work(pool: &Pool) {
    loop {
        if let Some((key, op)) = pool.jobs.pop() {
            let result = run(op);
            if pool.done.push((key, result)).is_err() {
                unreachable!("the result queue holds every operation in flight");
            }
            (pool.waker)();
            continue;
        }
        let guard = lock(&pool.idle);
        if pool.jobs.is_empty() {
            if pool.stop.load(Ordering::Acquire) {
                return;
            }
            drop(pool.wake.wait(guard).unwrap_or_else(|poison| poison.into_inner()));
        }
    }
}

/// One operation, as blocking system calls.
fn run(op: Op) -> IoResult {
    match op {
        Op::Open { path, cpath, flags, mode } => {
            // SAFETY: `cpath` is a NUL-terminated string that lives across
            // the call; `openat` reads only it, and takes the mode as a
            // variadic unsigned int.
            let fd = unsafe {
                libc::openat(libc::AT_FDCWD, cpath.as_ptr(), flags, mode as libc::c_uint)
            };
            if fd < 0 {
                return Err(IoError::os("open", Some(&path), io::Error::last_os_error()));
            }
            // SAFETY: `openat` just returned `fd`; nothing else owns it.
            let file = unsafe { File::from_raw_fd(fd) };
            Ok(IoOutput::Opened(IoFile::new(file, path)))
        }
        Op::Read { file, offset, len } => {
            let mut buf = vec![0; len];
            let read = file.file().read_at(&mut buf, offset);
            let read = read.map_err(|e| IoError::os("read", Some(file.path()), e))?;
            buf.truncate(read);
            Ok(IoOutput::Read(buf))
        }
        Op::Write { file, offset, data } => match file.file().write_at(&data, offset) {
            Ok(written) => Ok(IoOutput::Written(written)),
            Err(e) => Err(IoError::os("write", Some(file.path()), e)),
        },
        Op::Fsync { file } => match file.file().sync_all() {
            Ok(()) => Ok(IoOutput::Synced),
            Err(e) => Err(IoError::os("fsync", Some(file.path()), e)),
        },
        Op::Close { file, path } => {
            // `File`'s drop would ignore close's error; report it instead.
            let fd = file.into_raw_fd();
            // SAFETY: `into_raw_fd` gave up the descriptor to us; it is
            // closed once, here. Linux releases it even when close fails.
            if unsafe { libc::close(fd) } < 0 {
                return Err(IoError::os("close", Some(&path), io::Error::last_os_error()));
            }
            Ok(IoOutput::Closed)
        }
        // `start` keeps timeouts on the shard; a blocking wait is still the
        // right meaning should one come here.
        Op::Timeout { after } => {
            std::thread::sleep(after);
            Ok(IoOutput::TimedOut)
        }
    }
}

/// Locks a mutex that guards no data (only the sleep of idle threads).
fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
