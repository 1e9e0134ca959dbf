//! The process-wide record of the CPUs that live runtimes pin their shards
//! to, so that a second runtime of the same process learns that it would
//! share cores with the first.
//!
//! Two runtimes pinned onto one CPU both keep a shard thread there: each
//! shard spins briefly before it parks and runs its actors to completion,
//! so the two take turns on the core at the kernel's pace, and the latency
//! either promises is gone. Nothing fails, which is why it goes unnoticed.
//! The record makes it visible: [`RuntimeBuilder::build`] claims the CPUs
//! of a pinned runtime here, warns (or refuses, with
//! [`RuntimeBuilder::exclusive_cpus`]) when another live runtime holds one
//! of them, and the claim is released when the runtime stops.
//!
//! A `Mutex` guards the record: it is touched only when a runtime starts
//! or stops, never on a hot path.
//!
//! [`RuntimeBuilder::build`]: crate::runtime::RuntimeBuilder::build
//! [`RuntimeBuilder::exclusive_cpus`]: crate::runtime::RuntimeBuilder::exclusive_cpus

use std::sync::{Mutex, MutexGuard};

use super::CpuSet;

/// Every live claim: the runtime's id and the CPUs its shards are pinned to.
static CLAIMS: Mutex<Vec<(u32, CpuSet)>> = Mutex::new(Vec::new());

/// Locks the record; its data stays valid even if a holder panicked (each
/// critical section is one push, one scan or one removal).
fn claims() -> MutexGuard<'static, Vec<(u32, CpuSet)>> {
    CLAIMS.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The CPUs that live runtimes of this process have pinned shards to, for
/// giving another runtime the rest
/// (`.allowed_cpus(CpuSet::current_affinity()?.difference(&pinned_cpus()))`).
/// Unpinned runtimes (`pin(false)`) claim none.
///
/// ```
/// use zbmd_rt::topology::pinned_cpus;
/// use zbmd_rt::Runtime;
///
/// let rt = Runtime::builder().embedded().build().unwrap(); // unpinned
/// assert!(rt.pinned_cpus().is_empty());
/// let _ = pinned_cpus(); // whatever other runtimes of this process hold
/// rt.shutdown();
/// ```
pub fn pinned_cpus() -> CpuSet {
    claims().iter().fold(CpuSet::new(), |all, (_, cpus)| all.union(cpus))
}

/// The CPUs of a new claim that live runtimes already hold, and which
/// runtimes hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Overlap {
    /// The CPUs held by another runtime too.
    pub(crate) cpus: CpuSet,
    /// The runtimes that hold them, in the order they claimed.
    pub(crate) runtimes: Vec<u32>,
}

/// A runtime's claim on its CPUs; dropping it releases them.
#[derive(Debug)]
pub(crate) struct CpuClaim {
    runtime: u32,
}

/// Records that `runtime` pins shards to `cpus`. With `exclusive`, a claim
/// that overlaps a live one is refused and nothing is recorded; without,
/// it is recorded anyway and the overlap returned for the caller to report.
pub(crate) fn claim(
    runtime: u32,
    cpus: &CpuSet,
    exclusive: bool,
) -> Result<(CpuClaim, Overlap), Box<Overlap>> {
    let mut claims = claims();
    let mut overlap = Overlap::default();
    for (holder, held) in claims.iter() {
        let shared = held.intersection(cpus);
        if !shared.is_empty() {
            overlap.cpus = overlap.cpus.union(&shared);
            overlap.runtimes.push(*holder);
        }
    }
    if exclusive && !overlap.cpus.is_empty() {
        return Err(Box::new(overlap));
    }
    debug_assert!(
        claims.iter().all(|(holder, _)| *holder != runtime),
        "runtime {runtime} claimed twice"
    );
    claims.push((runtime, *cpus));
    Ok((CpuClaim { runtime }, overlap))
}

impl Drop for CpuClaim {
    fn drop(&mut self) {
        let mut claims = claims();
        let before = claims.len();
        claims.retain(|(holder, _)| *holder != self.runtime);
        debug_assert_eq!(
            claims.len() + 1,
            before,
            "runtime {}'s claim was not recorded",
            self.runtime
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runtime ids far above any a test runtime gets, so that runtimes other
    /// tests build meanwhile (which claim their own, distinct ids, and CPUs
    /// only when pinned) cannot collide with these; CPUs far above any the
    /// test machines have, so that no real runtime's claim overlaps them.
    const BASE: u32 = u32::MAX - 16;

    fn cpus(list: &str) -> CpuSet {
        list.parse().unwrap()
    }

    #[test]
    fn an_overlapping_claim_names_the_shared_cpus_and_their_holder() {
        let (first, none) = claim(BASE, &cpus("900-903"), true).unwrap();
        assert_eq!(none, Overlap::default());
        let (second, overlap) = claim(BASE + 1, &cpus("902-905"), false).unwrap();
        assert_eq!(overlap, Overlap { cpus: cpus("902-903"), runtimes: vec![BASE] });
        assert!(cpus("900-905").is_subset(&pinned_cpus()));
        let refused = claim(BASE + 2, &cpus("905-906"), true).unwrap_err();
        assert_eq!(*refused, Overlap { cpus: cpus("905"), runtimes: vec![BASE + 1] });
        assert!(!pinned_cpus().contains(906), "a refused claim records nothing");
        drop(second);
        drop(first);
        let (third, none) = claim(BASE + 3, &cpus("900-906"), true).unwrap();
        assert_eq!(none, Overlap::default(), "released claims hold nothing");
        drop(third);
        assert!(pinned_cpus().intersection(&cpus("900-906")).is_empty());
    }
}
