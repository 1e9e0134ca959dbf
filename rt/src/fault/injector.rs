//! The handle later layers use: [`FaultInjector`] and its pre-resolved
//! [`FaultSite`]s, with a counter-based generator any thread can roll.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::{ENV_VAR, FaultPlan, FaultPlanError, GOLDEN_GAMMA, mix64, unit};
use crate::error::RuntimeError;
use crate::runtime::{Metric, Scheduler};

/// The runtime's fault state, shared by every handle and read by the
/// shards: the plan (with its seed chosen) and the sites' counters.
pub(crate) struct Injector {
    plan: FaultPlan,
    seed: u64,
    sites: Box<[CachePadded<SiteState>]>,
}

struct SiteState {
    name: Box<str>,
    probability: f64,
    /// The planned firings ([`FaultPlan::at`]), sorted by key: each fires
    /// as many times as its key was planned.
    planned: Box<[Planned]>,
    /// The seed and the name, mixed: the start of the site's stream.
    key: u64,
    rolls: AtomicU64,
    fires: AtomicU64,
}

/// A planned key and how many of its firings are left.
struct Planned {
    key: u64,
    /// Decremented once per firing, never below zero. A lone counter whose
    /// value publishes nothing else: the RMW's atomicity alone makes each
    /// planned firing happen once, whichever thread rolls, so `Relaxed`
    /// suffices and there is no protocol for a loom model to check.
    left: AtomicU32,
}

impl SiteState {
    fn new(seed: u64, name: &str, probability: f64, keys: &[u64]) -> Self {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        let mut planned: Vec<Planned> = Vec::new();
        for key in sorted {
            match planned.last_mut() {
                Some(last) if last.key == key => *last.left.get_mut() += 1,
                _ => planned.push(Planned { key, left: AtomicU32::new(1) }),
            }
        }
        SiteState {
            name: name.into(),
            probability,
            planned: planned.into_boxed_slice(),
            key: mix64(seed ^ fnv1a(name)),
            rolls: AtomicU64::new(0),
            fires: AtomicU64::new(0),
        }
    }

    /// Takes one planned firing of `key`, if one is left.
    fn take_planned(&self, key: u64) -> bool {
        let Ok(index) = self.planned.binary_search_by_key(&key, |planned| planned.key) else {
            return false;
        };
        self.planned[index]
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
            .is_ok()
    }

    /// The planned keys not fired yet, in key order (a key planned twice
    /// and fired once appears once).
    fn planned_left(&self) -> Vec<u64> {
        self.planned
            .iter()
            .flat_map(|planned| {
                let left = planned.left.load(Ordering::Relaxed) as usize;
                std::iter::repeat_n(planned.key, left)
            })
            .collect()
    }
}

impl Injector {
    /// Validates `plan` and chooses its seed if it has none. The sites are
    /// those named with a probability, in order, then those only planned.
    fn new(plan: FaultPlan) -> Result<Self, FaultPlanError> {
        plan.validate()?;
        let seed = plan.chosen_seed().unwrap_or_else(random_seed);
        let plan = plan.seed(seed);
        let keys_of = |name: &str| {
            plan.planned().find(|(site, _)| *site == name).map_or(&[][..], |(_, keys)| keys)
        };
        let mut sites: Vec<CachePadded<SiteState>> = plan
            .sites()
            .map(|(name, probability)| {
                CachePadded::new(SiteState::new(seed, name, probability, keys_of(name)))
            })
            .collect();
        for (name, keys) in plan.planned() {
            if !plan.sites().any(|(site, _)| site == name) {
                sites.push(CachePadded::new(SiteState::new(seed, name, 0.0, keys)));
            }
        }
        Ok(Injector { plan, seed, sites: sites.into_boxed_slice() })
    }

    /// The plan, its seed chosen.
    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.sites.iter().position(|site| &*site.name == name)
    }

    /// Rolls site `index` once, with `key` when the caller has one; true
    /// if it fires: by a planned firing of `key` left, or by probability.
    fn roll(&self, index: usize, key: Option<u64>, sched: Option<&Scheduler>) -> bool {
        let site = &self.sites[index];
        let n = site.rolls.fetch_add(1, Ordering::Relaxed);
        // SplitMix64: the n-th output of the stream that starts at `key`.
        // Drawn even when a plan fires, so that the stream's n-th roll
        // stays the n-th output whatever was planned.
        let x = mix64(site.key.wrapping_add(n.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)));
        let planned = key.is_some_and(|key| site.take_planned(key));
        let fires = planned || unit(x) < site.probability;
        if fires {
            site.fires.fetch_add(1, Ordering::Relaxed);
            if let Some(sched) = sched {
                sched.counters().add(Metric::FaultsSite, 1);
            }
        }
        fires
    }
}

impl fmt::Debug for Injector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Injector({})", self.plan)
    }
}

/// A site's counters: how often it was asked and how often it fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCount {
    /// The site's name.
    pub name: String,
    /// Rolls: calls to [`FaultInjector::inject`], [`FaultInjector::inject_at`]
    /// or their [`FaultSite`] forms.
    pub rolls: u64,
    /// Rolls that fired.
    pub fires: u64,
}

/// A cheap, cloneable handle on the runtime's fault plan, for layers that
/// inject their own faults (device kernels, network links) at named sites:
/// [`Runtime::faults`](crate::Runtime::faults) or
/// [`Context::faults`](crate::Context::faults).
///
/// ```
/// use zbmd_rt::fault::{FaultInjector, FaultPlan};
///
/// let faults = FaultInjector::new(FaultPlan::new().seed(7).site("net.send", 1.0)).unwrap();
/// assert!(faults.inject("net.send")); // probability 1: always
/// assert!(!faults.inject("net.recv")); // not in the plan: never
/// let launch = faults.site("gpu.launch"); // resolve once for a hot path
/// assert!(!launch.inject());
/// assert_eq!(faults.fires("net.send"), 1);
/// ```
///
/// A site the plan does not name never fires and counts nothing, so a
/// layer can ask about its sites unconditionally; the plan's
/// [`Display`](fmt::Display) (logged when the runtime starts) shows which
/// sites are configured, and [`FaultSite::is_configured`] tells a layer
/// whether its site is.
#[derive(Clone, Default)]
pub struct FaultInjector {
    shared: Option<Arc<Injector>>,
    /// Where fires are counted in the runtime's metrics (absent for a
    /// stand-alone injector).
    sched: Option<Arc<Scheduler>>,
}

impl FaultInjector {
    /// A stand-alone injector for `plan` (validated; a random seed is chosen
    /// if it has none), outside any runtime: its fires are counted only per
    /// site. For tests of a layer without a runtime.
    pub fn new(plan: FaultPlan) -> Result<Self, FaultPlanError> {
        Ok(FaultInjector { shared: Some(Arc::new(Injector::new(plan)?)), sched: None })
    }

    /// An injector that never fires.
    pub fn disabled() -> Self {
        FaultInjector::default()
    }

    /// The runtime's injector, counting fires in its metrics.
    pub(crate) fn attached(shared: Option<&Arc<Injector>>, sched: &Arc<Scheduler>) -> Self {
        match shared {
            Some(shared) => {
                FaultInjector { shared: Some(shared.clone()), sched: Some(sched.clone()) }
            }
            None => FaultInjector::disabled(),
        }
    }

    /// Whether a plan is active (it may still name no sites).
    pub fn is_active(&self) -> bool {
        self.shared.is_some()
    }

    /// The active plan, with its seed (chosen at random if the plan had
    /// none): `plan.to_string()` is the value of `ZBMD_FAULT_INJECTION`
    /// that replays it.
    pub fn plan(&self) -> Option<&FaultPlan> {
        self.shared.as_deref().map(Injector::plan)
    }

    /// The seed faults are derived from, if a plan is active.
    pub fn seed(&self) -> Option<u64> {
        self.shared.as_ref().map(|shared| shared.seed)
    }

    /// Rolls the named site: true means "fail now". Counts the roll, and
    /// the fire if it fires (per site, and in the runtime's
    /// `faults_site_total`). A site the plan does not name never fires.
    /// Looks the name up among the plan's sites (at most [`super::SITES_MAX`]);
    /// resolve a [`FaultSite`] once for a hot path.
    pub fn inject(&self, site: &str) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        match shared.find(site) {
            Some(index) => shared.roll(index, None, self.sched.as_deref()),
            None => false,
        }
    }

    /// Rolls the named site at `key` (a step, a request's number): fires if
    /// the plan has a firing of `key` left for it ([`FaultPlan::at`], each
    /// planned firing once), else as [`inject`](Self::inject) does, by the
    /// site's probability. Counted as `inject` counts.
    pub fn inject_at(&self, site: &str, key: u64) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        match shared.find(site) {
            Some(index) => shared.roll(index, Some(key), self.sched.as_deref()),
            None => false,
        }
    }

    /// The planned keys of the named site that have not fired yet, in key
    /// order (empty for a site not in the plan).
    pub fn planned_left(&self, site: &str) -> Vec<u64> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        shared.find(site).map_or_else(Vec::new, |index| shared.sites[index].planned_left())
    }

    /// Resolves a site once, for a hot path. A site the plan does not name
    /// resolves to a handle that never fires.
    pub fn site(&self, name: &str) -> FaultSite {
        let index = self.shared.as_ref().and_then(|shared| shared.find(name));
        FaultSite { injector: self.clone(), index, name: name.into() }
    }

    /// How many times the named site fired (0 for a site not in the plan).
    pub fn fires(&self, site: &str) -> u64 {
        self.count(site).map_or(0, |count| count.fires)
    }

    /// How many times the named site was rolled (0 for a site not in the
    /// plan).
    pub fn rolls(&self, site: &str) -> u64 {
        self.count(site).map_or(0, |count| count.rolls)
    }

    fn count(&self, site: &str) -> Option<SiteCount> {
        let shared = self.shared.as_ref()?;
        shared.find(site).map(|index| site_count(&shared.sites[index]))
    }

    /// Every site of the plan with its counters, in the plan's order.
    pub fn site_counts(&self) -> Vec<SiteCount> {
        match &self.shared {
            Some(shared) => shared.sites.iter().map(|site| site_count(site)).collect(),
            None => Vec::new(),
        }
    }
}

fn site_count(site: &SiteState) -> SiteCount {
    SiteCount {
        name: site.name.to_string(),
        rolls: site.rolls.load(Ordering::Relaxed),
        fires: site.fires.load(Ordering::Relaxed),
    }
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.plan() {
            Some(plan) => write!(f, "FaultInjector({plan})"),
            None => f.write_str("FaultInjector(disabled)"),
        }
    }
}

/// A site resolved once ([`FaultInjector::site`]): rolling it skips the
/// name lookup.
#[derive(Clone)]
pub struct FaultSite {
    injector: FaultInjector,
    /// The site's index in the plan; `None` if the plan does not name it.
    index: Option<usize>,
    name: Box<str>,
}

impl FaultSite {
    /// Rolls the site: true means "fail now". See [`FaultInjector::inject`].
    #[inline]
    pub fn inject(&self) -> bool {
        match (self.index, &self.injector.shared) {
            (Some(index), Some(shared)) => shared.roll(index, None, self.injector.sched.as_deref()),
            _ => false,
        }
    }

    /// Rolls the site at `key`: see [`FaultInjector::inject_at`].
    #[inline]
    pub fn inject_at(&self, key: u64) -> bool {
        match (self.index, &self.injector.shared) {
            (Some(index), Some(shared)) => {
                shared.roll(index, Some(key), self.injector.sched.as_deref())
            }
            _ => false,
        }
    }

    /// The planned keys not fired yet: see [`FaultInjector::planned_left`].
    pub fn planned_left(&self) -> Vec<u64> {
        match (self.index, &self.injector.shared) {
            (Some(index), Some(shared)) => shared.sites[index].planned_left(),
            _ => Vec::new(),
        }
    }

    /// The site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the plan names this site (if not, it never fires).
    pub fn is_configured(&self) -> bool {
        self.index.is_some()
    }

    /// How many times the site fired.
    pub fn fires(&self) -> u64 {
        self.injector.fires(&self.name)
    }

    /// How many times the site was rolled.
    pub fn rolls(&self) -> u64 {
        self.injector.rolls(&self.name)
    }
}

impl fmt::Debug for FaultSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultSite")
            .field("name", &self.name)
            .field("configured", &self.is_configured())
            .finish()
    }
}

/// The runtime's plan: the one given in code if any, else the one in
/// [`ENV_VAR`] if set. `None` when nothing is to be injected. Logs a warning
/// naming the plan (and its seed) when injection is active.
pub(crate) fn resolve(code: Option<FaultPlan>) -> Result<Option<Arc<Injector>>, RuntimeError> {
    let (plan, source) = match code {
        Some(plan) => {
            if std::env::var_os(ENV_VAR).is_some() {
                tracing::warn!(
                    "{ENV_VAR} is set but ignored: the runtime was given a fault plan in code"
                );
            }
            let plan = Injector::new(plan)
                .map_err(|error| RuntimeError::Config(format!("fault plan: {error}")))?;
            (plan, "code")
        }
        None => {
            let bad = |error: FaultPlanError| RuntimeError::Config(format!("{ENV_VAR}: {error}"));
            let Some(plan) = FaultPlan::from_env().map_err(bad)? else {
                return Ok(None);
            };
            (Injector::new(plan).map_err(bad)?, ENV_VAR)
        }
    };
    if !plan.plan().is_active() {
        return Ok(None);
    }
    tracing::warn!(
        plan = %plan.plan(),
        from = source,
        "fault injection is active: replay with {ENV_VAR}={}",
        plan.plan()
    );
    Ok(Some(Arc::new(plan)))
}

/// A seed nobody chose: the process's random hash keys (drawn from the OS)
/// over the clock.
fn random_seed() -> u64 {
    std::hash::RandomState::new().hash_one((std::time::SystemTime::now(), std::process::id()))
}

/// FNV-1a over the name: stable across releases and platforms (unlike
/// `std`'s hasher), so a site's stream depends only on the seed and name.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
