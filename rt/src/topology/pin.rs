//! Pinning the calling thread to one CPU (`sched_setaffinity(2)`) and asking
//! which CPU it runs on (`sched_getcpu(3)`).

use super::{CpuSet, MAX_CPUS, TopologyError};

/// Pins the calling thread to `cpu` alone.
///
/// The CPU must be in the thread's current affinity mask (what `taskset`,
/// `srun --cpu-bind` or an earlier pin set): zbmd never widens the mask it
/// was given. Call it first thing on a freshly spawned shard thread, which
/// inherits the process's mask. The kernel moves the thread onto `cpu`
/// before the call returns, so [`current_cpu`] reports `cpu` afterwards.
///
/// # Errors
/// [`TopologyError::CpuOutOfRange`] beyond [`MAX_CPUS`],
/// [`TopologyError::CpuNotAllowed`] outside the current mask,
/// [`TopologyError::Affinity`] or [`TopologyError::Pin`] if the kernel
/// refuses.
pub fn pin_current_thread(cpu: usize) -> Result<(), TopologyError> {
    if cpu >= MAX_CPUS {
        return Err(TopologyError::CpuOutOfRange { cpu, max: MAX_CPUS });
    }
    let allowed = CpuSet::current_affinity()?;
    if !allowed.contains(cpu) {
        return Err(TopologyError::CpuNotAllowed { cpu, allowed: allowed.to_string() });
    }
    // SAFETY: cpu_set_t is a plain array of integers; all zeroes is the
    // empty set and a valid value.
    let mut raw: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes bit `cpu` of `raw`, which exists: cpu < MAX_CPUS,
    // and a cpu_set_t holds MAX_CPUS bits (asserted at compile time in cpuset.rs).
    unsafe { libc::CPU_SET(cpu, &mut raw) };
    // SAFETY: pid 0 names the calling thread; the size passed is the size of
    // `raw`, which outlives the call, so the kernel reads only inside it.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw) };
    if rc != 0 {
        return Err(TopologyError::Pin { cpu, source: std::io::Error::last_os_error() });
    }
    Ok(())
}

/// The OS CPU the calling thread is running on right now. Unless the thread
/// is pinned to a single CPU, the answer can be stale by the time it is read.
///
/// # Errors
/// [`TopologyError::CurrentCpu`] if `sched_getcpu` fails.
pub fn current_cpu() -> Result<usize, TopologyError> {
    // SAFETY: sched_getcpu takes no arguments and only returns a value.
    let cpu = unsafe { libc::sched_getcpu() };
    // A negative return means failure, with errno set.
    usize::try_from(cpu)
        .map_err(|_| TopologyError::CurrentCpu { source: std::io::Error::last_os_error() })
}
