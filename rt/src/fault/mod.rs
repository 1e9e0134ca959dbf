//! Fault injection: a seeded [`FaultPlan`] the runtime applies for real.
//!
//! The runtime reads a plan from
//! [`RuntimeBuilder::fault_plan`](crate::RuntimeBuilder::fault_plan) or, when
//! none is given in code, from the environment variable [`ENV_VAR`]
//! (`ZBMD_FAULT_INJECTION=crash=0.01,drop=0.001,seed=42`; the grammar is at
//! [`FaultPlan::parse`] and in `docs/faults.md`). With a plan active:
//!
//! - **User messages** of actors that are not
//!   [`fault_exempt`](crate::SpawnOptions::fault_exempt) may, when the shard
//!   takes them from the mailbox, *crash* the actor instead of being handled
//!   (exit reason `error: injected fault: crash`, see [`INJECTED_CRASH`]),
//!   be *dropped* unhandled, or be *delayed*: handed back to the actor later,
//!   through the shard's timer wheel, into its system lane (so a message is
//!   faulted at most once, and a delayed message overtakes nothing but is
//!   overtaken: delays reorder messages, which is their point). System
//!   signals (links, exits, monitors) and replies are never faulted.
//! - **Sites** are named points in later layers (a GPU kernel launch, a
//!   network link) that ask [`FaultInjector::inject`] whether to fail now,
//!   by the site's probability; or [`FaultInjector::inject_at`] with a key
//!   (a training step), which also fires once for each firing the plan
//!   schedules at that key ([`FaultPlan::at`]: "crash the model at step
//!   10"). Both count in the same per-site rolls and fires.
//!
//! # Determinism
//!
//! Each shard rolls its messages' faults from its own generator,
//! xoshiro256++ (Blackman and Vigna, "Scrambled linear pseudorandom number
//! generators", 2021), seeded from the plan's seed and the shard's index
//! through SplitMix64: a shard that takes the same messages in the same
//! order injects the same faults. A single-shard run whose workload is
//! deterministic therefore replays exactly from its seed; with several
//! shards, which shard runs which actor when (stealing) is not
//! deterministic, so neither are the faults.
//!
//! A site's `n`-th roll is SplitMix64 (Steele, Lea and Flood, "Fast
//! splittable pseudorandom number generators", OOPSLA 2014) of the seed,
//! the site's name and `n`: a pure function, so a site replays from its
//! seed whenever its calls come in the same order, whatever thread makes
//! them.
//!
//! # Costs
//!
//! Without a plan that faults messages, a message costs one well-predicted
//! branch. With one, one generator step per user message, and a timer (one
//! allocation) per delayed message.

mod injector;
mod plan;
mod shard;

use std::time::Duration;

pub use injector::{FaultInjector, FaultSite, SiteCount};
pub(crate) use injector::{Injector, resolve};
pub use plan::{DelayDistribution, FaultPlan, FaultPlanError};
pub(crate) use shard::{ShardFaults, Verdict, apply};

/// The environment variable the runtime reads a plan from when none is
/// given in code.
pub const ENV_VAR: &str = "ZBMD_FAULT_INJECTION";

/// The message of an injected crash: the actor exits with
/// `ExitReason::Error("injected fault: crash")`.
pub const INJECTED_CRASH: &str = "injected fault: crash";

/// The longest delay a plan may ask for (a uniform maximum or an
/// exponential mean), and the cap on every sampled delay: an hour is far
/// beyond any timeout worth testing, and bounds how long a delayed message
/// can hold a timer.
pub const DELAY_MAX: Duration = Duration::from_secs(3600);

/// The most named sites a plan may have: sites are looked up by a linear
/// scan in [`FaultInjector::inject`], which stays cheap up to this many.
pub const SITES_MAX: usize = 64;

/// The most planned firings ([`FaultPlan::at`]) one plan may hold: each is
/// a sorted entry its site searches by key, and ten thousand is far more
/// than any test or soak plans (a training run allows as many faults).
pub const PLANNED_MAX: usize = 10_000;

/// The longest site name, in bytes.
pub const SITE_NAME_LEN_MAX: usize = 64;

/// SplitMix64's increment: the golden ratio in 64-bit fixed point.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Stafford's Mix13).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform variate in `[0, 1)` from the top 53 bits of `x`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests;
