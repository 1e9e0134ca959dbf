//! The io_uring backend: one ring per shard, owned by the shard's thread.
//!
//! An operation becomes one submission queue entry whose `user_data` is its
//! key in a fixed table of in-flight operations (a [`Slab`]). The table
//! entry owns everything the kernel reads or writes for that entry (the
//! path, the data, the read buffer, the timeout's `timespec`) and a handle
//! on the file, until the completion with that key is reaped. Entries are
//! pushed during actor turns and handed to the kernel with one
//! `io_uring_enter` per shard round, in [`UringBackend::poll`]; no SQPOLL
//! thread (on two vCPUs it competes with the shards for a core).
//!
//! The ring has at least as many submission entries as operations may be in
//! flight, and the completion queue twice that, so neither can overflow
//! while the in-flight limit holds.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};

use io_uring::{IoUring, opcode, squeue, types};

use super::{Completion, IoError, IoFile, IoOutput, IoResult, Op, Slab, complete};

/// `user_data` of the runtime's own entries (the probe's NOP, the
/// cancellations at drop). Slab keys stay below `MAX_IO_IN_FLIGHT`.
const INTERNAL: u64 = u64::MAX;

/// Entries of the probe ring: it carries one NOP.
const PROBE_ENTRIES: u32 = 2;

/// The operations zbmd submits, all present since Linux 5.6.
const NEEDED: [(&str, u8); 6] = [
    ("IORING_OP_OPENAT", opcode::OpenAt::CODE),
    ("IORING_OP_READ", opcode::Read::CODE),
    ("IORING_OP_WRITE", opcode::Write::CODE),
    ("IORING_OP_FSYNC", opcode::Fsync::CODE),
    ("IORING_OP_CLOSE", opcode::Close::CODE),
    ("IORING_OP_TIMEOUT", opcode::Timeout::CODE),
];

/// Whether io_uring works here: a ring can be set up, the kernel knows
/// every operation zbmd uses, and a NOP makes the round trip.
pub(super) fn probe() -> Result<(), IoError> {
    let mut ring = IoUring::new(PROBE_ENTRIES).map_err(|e| unavailable("io_uring_setup", &e))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| unavailable("IORING_REGISTER_PROBE", &e))?;
    if let Some((name, _)) = NEEDED.iter().find(|(_, code)| !probe.is_supported(*code)) {
        return Err(IoError::Unavailable {
            reason: format!(
                "the kernel's io_uring lacks {name} (Linux 5.6 or newer has every operation zbmd uses)"
            ),
        });
    }
    let nop = opcode::Nop::new().build().user_data(INTERNAL);
    // SAFETY: a NOP points at no memory.
    if unsafe { ring.submission().push(&nop) }.is_err() {
        return Err(IoError::Unavailable { reason: "a new ring has no room for one entry".into() });
    }
    ring.submit_and_wait(1).map_err(|e| unavailable("io_uring_enter", &e))?;
    match ring.completion().next() {
        Some(cqe) if cqe.user_data() == INTERNAL && cqe.result() >= 0 => Ok(()),
        Some(cqe) => Err(unavailable("a NOP", &io::Error::from_raw_os_error(-cqe.result()))),
        None => Err(IoError::Unavailable { reason: "a NOP never completed".into() }),
    }
}

/// An `Unavailable` error naming the step that failed and its likely cause.
fn unavailable(step: &str, error: &io::Error) -> IoError {
    let cause = match error.raw_os_error() {
        Some(libc::ENOSYS) => " (the kernel has no io_uring, or a seccomp filter hides it)",
        Some(libc::EPERM) => {
            " (disabled by sysctl kernel.io_uring_disabled or a container's seccomp profile)"
        }
        Some(libc::ENOMEM) => {
            " (no memory for the ring: RLIMIT_MEMLOCK limits it before Linux 5.12)"
        }
        _ => "",
    };
    IoError::Unavailable { reason: format!("{step} failed: {error}{cause}") }
}

/// What an in-flight operation owns until its completion is reaped.
enum Held {
    Open {
        path: PathBuf,
        cpath: CString,
        flags: libc::c_int,
        mode: u32,
    },
    Read {
        file: IoFile,
        offset: u64,
        buf: Vec<u8>,
    },
    Write {
        file: IoFile,
        offset: u64,
        data: Vec<u8>,
    },
    Fsync {
        file: IoFile,
    },
    /// The descriptor went to the kernel, which releases it.
    Close {
        path: PathBuf,
        fd: RawFd,
    },
    Timeout {
        timespec: types::Timespec,
    },
}

impl Held {
    fn new(op: Op) -> Held {
        match op {
            Op::Open { path, cpath, flags, mode } => Held::Open { path, cpath, flags, mode },
            // Zeroed rather than uninitialised: no `unsafe` length games,
            // and large buffers come from calloc's zero pages anyway.
            Op::Read { file, offset, len } => Held::Read { file, offset, buf: vec![0; len] },
            Op::Write { file, offset, data } => Held::Write { file, offset, data },
            Op::Fsync { file } => Held::Fsync { file },
            Op::Close { file, path } => Held::Close { path, fd: file.into_raw_fd() },
            Op::Timeout { after } => Held::Timeout { timespec: types::Timespec::from(after) },
        }
    }

    /// The submission entry, pointing into `self`.
    fn entry(&mut self) -> squeue::Entry {
        match self {
            Held::Open { cpath, flags, mode, .. } => {
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), cpath.as_ptr())
                    .flags(*flags)
                    .mode(*mode)
                    .build()
            }
            Held::Read { file, offset, buf } => {
                // `len` fits: `Op::prepare` bounds it by MAX_IO_LEN.
                opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), buf.len() as u32)
                    .offset(*offset)
                    .build()
            }
            Held::Write { file, offset, data } => {
                opcode::Write::new(types::Fd(file.as_raw_fd()), data.as_ptr(), data.len() as u32)
                    .offset(*offset)
                    .build()
            }
            Held::Fsync { file } => opcode::Fsync::new(types::Fd(file.as_raw_fd())).build(),
            Held::Close { fd, .. } => opcode::Close::new(types::Fd(*fd)).build(),
            Held::Timeout { timespec } => {
                opcode::Timeout::new(timespec as *const types::Timespec).build()
            }
        }
    }

    /// Turns the kernel's result (a count, a descriptor, or `-errno`) into
    /// what the operation gives back.
    fn finish(self, res: i32) -> IoResult {
        let failed = |op, path: Option<&Path>| {
            Err(IoError::os(op, path, io::Error::from_raw_os_error(-res)))
        };
        match self {
            Held::Open { path, .. } if res >= 0 => {
                // SAFETY: the kernel just opened `res` for this entry; no
                // one else knows it, so the `File` is its only owner.
                let file = unsafe { File::from_raw_fd(res) };
                Ok(IoOutput::Opened(IoFile::new(file, path)))
            }
            Held::Open { path, .. } => failed("open", Some(&path)),
            Held::Read { mut buf, .. } if res >= 0 => {
                buf.truncate(res as usize);
                Ok(IoOutput::Read(buf))
            }
            Held::Read { file, .. } => failed("read", Some(file.path())),
            Held::Write { .. } if res >= 0 => Ok(IoOutput::Written(res as usize)),
            Held::Write { file, .. } => failed("write", Some(file.path())),
            Held::Fsync { .. } if res >= 0 => Ok(IoOutput::Synced),
            Held::Fsync { file } => failed("fsync", Some(file.path())),
            // Linux releases the descriptor even when close reports an error.
            Held::Close { .. } if res >= 0 => Ok(IoOutput::Closed),
            Held::Close { path, .. } => failed("close", Some(&path)),
            // A timeout with no completion count ends with -ETIME.
            Held::Timeout { .. } if res == -libc::ETIME || res >= 0 => Ok(IoOutput::TimedOut),
            Held::Timeout { .. } => failed("timeout", None),
        }
    }
}

struct InFlight {
    held: Held,
    done: Completion,
}

/// One shard's ring and its in-flight operations.
pub(super) struct UringBackend {
    ring: IoUring,
    slab: Slab<InFlight>,
}

impl UringBackend {
    pub(super) fn new(max_in_flight: usize) -> Result<Self, IoError> {
        // The kernel rounds up to a power of two anyway; the completion
        // queue gets twice as many entries.
        let entries = (max_in_flight as u32).next_power_of_two();
        let mut ring = IoUring::new(entries).map_err(|e| unavailable("io_uring_setup", &e))?;
        assert!(
            ring.submission().capacity() >= max_in_flight,
            "io_uring: submission queue below the in-flight limit"
        );
        assert!(
            ring.completion().capacity() >= 2 * max_in_flight,
            "io_uring: completion queue below twice the limit"
        );
        Ok(UringBackend { ring, slab: Slab::with_capacity(max_in_flight) })
    }

    pub(super) fn in_flight(&self) -> usize {
        self.slab.len()
    }

    /// Makes room for one entry: a full submission queue is submitted, then
    /// tried once more.
    pub(super) fn reserve(&mut self) -> Result<(), IoError> {
        if !self.ring.submission().is_full() {
            return Ok(());
        }
        self.submit();
        if self.ring.submission().is_full() {
            return Err(IoError::QueueFull { capacity: self.ring.submission().capacity() });
        }
        Ok(())
    }

    /// Queues `op` for the next submission. The caller checked the
    /// in-flight limit and reserved a submission entry.
    pub(super) fn start(&mut self, op: Op, done: Completion) {
        let key = self
            .slab
            .insert(InFlight { held: Held::new(op), done })
            .expect("Io::submit checked the in-flight limit");
        let entry =
            self.slab.get_mut(key).expect("just inserted").held.entry().user_data(u64::from(key));
        // SAFETY: everything the entry points at stays valid until its
        // completion is reaped (in `poll`, or in `drop`, which waits for
        // every one):
        // 1. the path, data and read buffer are heap allocations owned by
        //    the slab entry; moving the entry would not move them, and the
        //    entry is only removed when the completion with its key arrives;
        // 2. the timespec lies inside the entry itself, and the slab's
        //    storage is allocated once and never moves (`Slab`);
        // 3. the descriptor stays open: the entry holds an `IoFile` handle,
        //    and the file closes only when the last handle drops (a `Close`
        //    hands its descriptor to the kernel, which releases it).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        pushed.expect("Io::submit reserved a submission entry");
    }

    /// Submits what the shard queued, then runs the completions that are
    /// ready. Never waits.
    pub(super) fn poll(&mut self) -> usize {
        self.submit();
        let UringBackend { ring, slab } = self;
        let mut ran = 0;
        // The completion queue holds at most one entry per in-flight
        // operation, so this loop ends.
        for cqe in ring.completion() {
            let Some(op) = own_key(cqe.user_data()).and_then(|key| slab.remove(key)) else {
                debug_assert_eq!(
                    cqe.user_data(),
                    INTERNAL,
                    "io_uring: completion for no operation"
                );
                continue;
            };
            complete(op.done, op.held.finish(cqe.result()));
            ran += 1;
        }
        ran
    }

    /// Hands the queued entries to the kernel. A refusal (`EAGAIN`, `EBUSY`,
    /// `EINTR`) leaves them queued for the next poll.
    fn submit(&mut self) {
        if self.ring.submission().is_empty() {
            return;
        }
        if let Err(error) = self.ring.submit() {
            match error.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::EINTR) => {}
                _ => {
                    tracing::error!(%error, queued = self.ring.submission().len(), "io_uring submission failed; retrying next round")
                }
            }
        }
    }
}

/// The slab key in a `user_data`, unless it is the runtime's own.
fn own_key(user_data: u64) -> Option<u32> {
    u32::try_from(user_data).ok()
}

impl UringBackend {
    /// Asks the kernel to end every operation in flight early: all of them
    /// at once where the kernel can (`IORING_ASYNC_CANCEL_ANY`, Linux 5.19;
    /// this also interrupts a read blocked on a pipe), and each timeout by
    /// its key (older kernels reject the first). Their completions still
    /// arrive, with `-ECANCELED`; operations already running on a regular
    /// file finish.
    fn cancel_all(&mut self) {
        let timeouts: Vec<u32> = self
            .slab
            .iter()
            .filter(|(_, op)| matches!(op.held, Held::Timeout { .. }))
            .map(|(key, _)| key)
            .collect();
        let any = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build();
        let removals =
            timeouts.into_iter().map(|key| opcode::TimeoutRemove::new(u64::from(key)).build());
        for entry in std::iter::once(any).chain(removals) {
            let entry = entry.user_data(INTERNAL);
            // A full queue is submitted and tried once more; a request that
            // still finds no room only makes the wait longer.
            // SAFETY: cancellations carry keys and flags, no pointers.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                let _ = self.ring.submit();
                // SAFETY: as above.
                let _ = unsafe { self.ring.submission().push(&entry) };
            }
        }
    }
}

impl Drop for UringBackend {
    /// The kernel may write into read buffers until each completion
    /// arrives, so the entries must outlive them: cancel what can be
    /// cancelled (a timeout may run for a day), then wait for every
    /// completion. If the ring itself fails, the entries are leaked rather
    /// than freed under the kernel.
    fn drop(&mut self) {
        if self.slab.len() == 0 {
            return;
        }
        self.cancel_all();
        while self.slab.len() > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                Err(error) => {
                    tracing::error!(%error, in_flight = self.slab.len(), "io_uring failed at shutdown; leaking the in-flight buffers");
                    std::mem::forget(std::mem::replace(&mut self.slab, Slab::with_capacity(0)));
                    return;
                }
            }
            let UringBackend { ring, slab } = self;
            for cqe in ring.completion() {
                if let Some(op) = own_key(cqe.user_data()).and_then(|key| slab.remove(key)) {
                    // Nobody waits any more: drop the completion unrun, but
                    // let `finish` close a file that was just opened.
                    drop(op.held.finish(cqe.result()));
                }
            }
        }
    }
}
