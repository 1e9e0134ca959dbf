//! Blocking threads, like BEAM's dirty schedulers: work with no
//! asynchronous form (a synchronous device wait, a foreign library call)
//! runs here, never on a shard, and its result comes back as a message.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::scheduler::lock;
use crate::error::RuntimeError;
use crate::sync::mpmc::MpmcQueue;

/// A job for a blocking thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    jobs: MpmcQueue<Job>,
    /// Guards the sleep of idle threads; the job queue itself is lock-free.
    idle: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A fixed set of threads fed by a bounded queue.
pub(crate) struct BlockingPool {
    pool: Arc<Pool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl BlockingPool {
    pub(crate) fn start(threads: usize, queue_capacity: usize) -> Result<Self, RuntimeError> {
        let pool = Arc::new(Pool {
            jobs: MpmcQueue::with_capacity(queue_capacity)?,
            idle: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let pool = pool.clone();
            let name = format!("zbmd-blocking-{index}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || work(&pool))
                .map_err(|source| RuntimeError::Thread { name, source })?;
            handles.push(handle);
        }
        Ok(BlockingPool { pool, threads: Mutex::new(handles) })
    }

    /// Queues a job; `QueueFull` when the queue holds its capacity.
    pub(crate) fn submit(&self, job: Job) -> Result<(), RuntimeError> {
        if self.pool.stop.load(Ordering::Acquire) {
            return Err(RuntimeError::ShuttingDown);
        }
        let capacity = self.pool.jobs.capacity();
        self.pool
            .jobs
            .push(job)
            .map_err(|_| RuntimeError::QueueFull { what: "blocking job", capacity })?;
        // Taking the lock orders this wake-up after any idle thread's
        // "queue empty" check, so the notification cannot be lost.
        drop(lock(&self.pool.idle));
        self.pool.wake.notify_one();
        Ok(())
    }

    /// Runs the queued jobs to completion, then stops and joins the threads.
    pub(crate) fn stop(&self) {
        self.pool.stop.store(true, Ordering::Release);
        drop(lock(&self.pool.idle));
        self.pool.wake.notify_all();
        for handle in lock(&self.threads).drain(..) {
            let _ = handle.join();
        }
    }
}

fn work(pool: &Pool) {
    loop {
        if let Some(job) = pool.jobs.pop() {
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a blocking job panicked; its result is lost");
            }
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
