//! The plan: which faults, how likely, from which seed. Built in code with
//! [`FaultPlan::new`] and its setters, or parsed from the grammar of
//! `ZBMD_FAULT_INJECTION` (see the module `crate::fault` and
//! `docs/faults.md`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{DELAY_MAX, ENV_VAR, PLANNED_MAX, SITE_NAME_LEN_MAX, SITES_MAX};

/// How far a delayed message is pushed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayDistribution {
    /// Uniform between `min` and `max`, both included (`min == max` is a
    /// fixed delay).
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Exponential with this mean (a memoryless delay: most are short, a few
    /// are long); samples are capped at [`DELAY_MAX`].
    Exponential {
        /// The mean delay.
        mean: Duration,
    },
}

impl DelayDistribution {
    /// Uniform between `min` and `max`, both included.
    pub fn uniform(min: Duration, max: Duration) -> Self {
        DelayDistribution::Uniform { min, max }
    }

    /// Always `delay`.
    pub fn fixed(delay: Duration) -> Self {
        DelayDistribution::Uniform { min: delay, max: delay }
    }

    /// Exponential with mean `mean`.
    pub fn exponential(mean: Duration) -> Self {
        DelayDistribution::Exponential { mean }
    }

    /// The delay for a uniform variate `u` in `[0, 1)`.
    pub(crate) fn sample(&self, u: f64) -> Duration {
        debug_assert!((0.0..1.0).contains(&u));
        let nanos = match *self {
            DelayDistribution::Uniform { min, max } => {
                let (min, max) = (min.as_nanos() as f64, max.as_nanos() as f64);
                (min + (max - min) * u).min(max)
            }
            // Inverse transform sampling: -ln(1 - u) is exponential with
            // mean 1, and at most about 37 for the largest u below 1.
            DelayDistribution::Exponential { mean } => -(1.0 - u).ln() * mean.as_nanos() as f64,
        };
        Duration::from_nanos(nanos as u64).min(DELAY_MAX)
    }

    fn validate(&self) -> Result<(), FaultPlanError> {
        let (min, max) = match *self {
            DelayDistribution::Uniform { min, max } => (min, max),
            DelayDistribution::Exponential { mean } => (mean, mean),
        };
        if min > max {
            return Err(FaultPlanError::DelayRange { min, max });
        }
        if max > DELAY_MAX {
            return Err(FaultPlanError::DelayTooLong { value: max, max: DELAY_MAX });
        }
        Ok(())
    }
}

impl Default for DelayDistribution {
    /// 1 ms to 10 ms, uniform: a few ticks of the default timer wheel.
    fn default() -> Self {
        DelayDistribution::uniform(Duration::from_millis(1), Duration::from_millis(10))
    }
}

impl fmt::Display for DelayDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DelayDistribution::Uniform { min, max } if min == max => {
                write!(f, "{}", DisplayDuration(min))
            }
            DelayDistribution::Uniform { min, max } => {
                write!(f, "{}..{}", DisplayDuration(min), DisplayDuration(max))
            }
            DelayDistribution::Exponential { mean } => write!(f, "exp({})", DisplayDuration(mean)),
        }
    }
}

/// A seeded plan of faults for the runtime to inject: see the module
/// `crate::fault`.
///
/// ```
/// use std::time::Duration;
/// use zbmd_rt::fault::{DelayDistribution, FaultPlan};
///
/// let plan = FaultPlan::new()
///     .seed(42)
///     .crash(0.01)
///     .drop(0.001)
///     .delay(0.01, DelayDistribution::uniform(Duration::from_millis(1), Duration::from_millis(5)))
///     .site("gpu.launch", 0.05);
/// plan.validate().unwrap();
/// assert_eq!(plan.to_string(), "crash=0.01,drop=0.001,delay=0.01:1ms..5ms,seed=42,site.gpu.launch=0.05");
/// assert_eq!("crash=0.01,drop=0.001,delay=0.01:1ms..5ms,seed=42,site.gpu.launch=0.05".parse(), Ok(plan));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    seed: Option<u64>,
    crash: f64,
    drop: f64,
    delay: f64,
    delay_distribution: DelayDistribution,
    /// Named sites and their probabilities, in the order they were given.
    sites: Vec<(String, f64)>,
    /// Planned firings: per site (in the order first given), the keys it
    /// fires at once each, in the order given ([`at`](Self::at)).
    planned: Vec<(String, Vec<u64>)>,
}

impl FaultPlan {
    /// A plan that injects nothing, with no seed chosen yet (the runtime
    /// draws one at build time and logs it).
    pub fn new() -> Self {
        FaultPlan::default()
    }

    /// The seed every fault is derived from. Without one, the runtime draws
    /// a random seed when it starts and logs it: rerun with that seed to
    /// replay a single-shard run's faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The probability that a user message crashes its actor instead of
    /// being handled, with reason [`INJECTED_CRASH`](super::INJECTED_CRASH).
    pub fn crash(mut self, probability: f64) -> Self {
        self.crash = probability;
        self
    }

    /// The probability that a user message is discarded unhandled.
    pub fn drop(mut self, probability: f64) -> Self {
        self.drop = probability;
        self
    }

    /// The probability that a user message is handed back to its actor
    /// later, after a delay drawn from `distribution`.
    pub fn delay(mut self, probability: f64, distribution: DelayDistribution) -> Self {
        self.delay = probability;
        self.delay_distribution = distribution;
        self
    }

    /// The probability that the named site fires (see
    /// [`FaultInjector::inject`](super::FaultInjector::inject)). Naming a
    /// site again replaces its probability.
    pub fn site(mut self, name: impl Into<String>, probability: f64) -> Self {
        let name = name.into();
        match self.sites.iter_mut().find(|(site, _)| *site == name) {
            Some(entry) => entry.1 = probability,
            None => self.sites.push((name, probability)),
        }
        self
    }

    /// Plans the named site to fire once when it is rolled with `key`
    /// ([`FaultSite::inject_at`](super::FaultSite::inject_at)): a
    /// deterministic firing ("fail at step 10") beside the site's
    /// probability, counted in the same rolls and fires. Planning the same
    /// key again makes it fire once more (at the next roll with that key).
    /// At most [`PLANNED_MAX`] planned firings in all.
    pub fn at(mut self, name: impl Into<String>, key: u64) -> Self {
        let name = name.into();
        match self.planned.iter_mut().find(|(site, _)| *site == name) {
            Some((_, keys)) => keys.push(key),
            None => self.planned.push((name, vec![key])),
        }
        self
    }

    /// The seed, if one was chosen.
    pub fn chosen_seed(&self) -> Option<u64> {
        self.seed
    }

    /// The crash probability per user message.
    pub fn crash_probability(&self) -> f64 {
        self.crash
    }

    /// The drop probability per user message.
    pub fn drop_probability(&self) -> f64 {
        self.drop
    }

    /// The delay probability per user message.
    pub fn delay_probability(&self) -> f64 {
        self.delay
    }

    /// How long a delayed message waits.
    pub fn delay_distribution(&self) -> DelayDistribution {
        self.delay_distribution
    }

    /// The named sites and their probabilities, in the order given.
    pub fn sites(&self) -> impl Iterator<Item = (&str, f64)> {
        self.sites.iter().map(|(name, p)| (name.as_str(), *p))
    }

    /// The planned firings ([`at`](Self::at)): each site with its keys, in
    /// the order given.
    pub fn planned(&self) -> impl Iterator<Item = (&str, &[u64])> {
        self.planned.iter().map(|(name, keys)| (name.as_str(), keys.as_slice()))
    }

    /// How many distinct sites the plan names, by probability or by plan.
    pub fn site_count(&self) -> usize {
        let extra = self
            .planned
            .iter()
            .filter(|(name, _)| !self.sites.iter().any(|(site, _)| site == name));
        self.sites.len() + extra.count()
    }

    /// Whether the plan faults user messages (a crash, drop or delay
    /// probability above zero).
    pub fn faults_messages(&self) -> bool {
        self.crash > 0.0 || self.drop > 0.0 || self.delay > 0.0
    }

    /// Whether the plan injects anything at all: message faults, a site
    /// with a probability above zero, or a planned firing.
    pub fn is_active(&self) -> bool {
        self.faults_messages()
            || self.sites.iter().any(|&(_, p)| p > 0.0)
            || !self.planned.is_empty()
    }

    /// Checks the plan: every probability a finite number in `[0, 1]`,
    /// crash + drop + delay at most 1 (a message gets at most one fault), a
    /// delay distribution with `min <= max` and nothing beyond
    /// [`DELAY_MAX`], site names of 1 to [`SITE_NAME_LEN_MAX`] characters
    /// from `A-Z a-z 0-9 _ . -`, at most [`SITES_MAX`] sites (by
    /// probability or plan), at most [`PLANNED_MAX`] planned firings.
    pub fn validate(&self) -> Result<(), FaultPlanError> {
        probability("crash", self.crash)?;
        probability("drop", self.drop)?;
        probability("delay", self.delay)?;
        let sum = self.crash + self.drop + self.delay;
        // A little slack for decimal fractions that do not add up exactly
        // in binary (0.7 + 0.2 + 0.1).
        if sum > 1.0 + 1e-9 {
            return Err(FaultPlanError::ProbabilitySum { sum });
        }
        self.delay_distribution.validate()?;
        if self.site_count() > SITES_MAX {
            return Err(FaultPlanError::TooManySites { count: self.site_count(), max: SITES_MAX });
        }
        for (name, p) in &self.sites {
            site_name(name)?;
            probability(&format!("site.{name}"), *p)?;
        }
        let planned: usize = self.planned.iter().map(|(_, keys)| keys.len()).sum();
        if planned > PLANNED_MAX {
            return Err(FaultPlanError::TooManyPlanned { count: planned, max: PLANNED_MAX });
        }
        for (name, _) in &self.planned {
            site_name(name)?;
        }
        Ok(())
    }

    /// Parses the grammar of `ZBMD_FAULT_INJECTION` (see `docs/faults.md`):
    /// comma-separated `key=value` entries, each key at most once.
    ///
    /// | key          | value                  | example                   |
    /// |--------------|------------------------|---------------------------|
    /// | `crash`      | probability            | `crash=0.01`              |
    /// | `drop`       | probability            | `drop=1e-3`               |
    /// | `delay`      | probability `:` delays | `delay=0.01:1ms..5ms`     |
    /// | `seed`       | u64, decimal or `0x`   | `seed=42`                 |
    /// | `site.NAME`  | probability            | `site.gpu.launch=0.05`    |
    /// | `at.NAME`    | keys, `/`-separated    | `at.train.model=10/25`    |
    ///
    /// A probability is a decimal number in `[0, 1]`. The delays are one
    /// duration (fixed), `MIN..MAX` (uniform, both included) or `exp(MEAN)`
    /// (exponential); a duration is a number and a unit out of `ns`, `us`,
    /// `ms`, `s` (`500us`, `1.5ms`). Spaces around entries, keys and values
    /// are ignored; an empty string is a plan with no faults. The parsed
    /// plan is validated as [`validate`](Self::validate) does.
    pub fn parse(text: &str) -> Result<Self, FaultPlanError> {
        let mut plan = FaultPlan::new();
        let mut seen: Vec<String> = Vec::new();
        if text.trim().is_empty() {
            return Ok(plan);
        }
        for entry in text.split(',') {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(FaultPlanError::Syntax { entry: entry.trim().to_string() });
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.iter().any(|k| k == key) {
                return Err(FaultPlanError::DuplicateKey { key: key.to_string() });
            }
            plan = plan.parse_entry(key, value)?;
            // Refused at the first site too many, so a hostile text costs
            // at most 2 * SITES_MAX + 4 entries of work, not one per comma.
            if plan.site_count() > SITES_MAX {
                return Err(FaultPlanError::TooManySites {
                    count: plan.site_count(),
                    max: SITES_MAX,
                });
            }
            seen.push(key.to_string());
        }
        plan.validate()?;
        Ok(plan)
    }

    fn parse_entry(self, key: &str, value: &str) -> Result<Self, FaultPlanError> {
        Ok(match key {
            "crash" => self.crash(parse_probability(key, value)?),
            "drop" => self.drop(parse_probability(key, value)?),
            "delay" => {
                let bad = || bad_value(key, value, DELAY_EXPECTED);
                let (p, distribution) = value.split_once(':').ok_or_else(bad)?;
                let p = parse_probability(key, p.trim())?;
                self.delay(p, parse_distribution(distribution.trim()).ok_or_else(bad)?)
            }
            "seed" => self.seed(parse_seed(value).ok_or_else(|| {
                bad_value(key, value, "a seed: an unsigned 64-bit integer, decimal or 0x-hex")
            })?),
            _ => match (key.strip_prefix("site."), key.strip_prefix("at.")) {
                (Some(name), _) => {
                    site_name(name)?;
                    self.site(name, parse_probability(key, value)?)
                }
                (None, Some(name)) => {
                    site_name(name)?;
                    let keys = parse_keys(value).ok_or_else(|| {
                        bad_value(key, value, "keys: unsigned 64-bit integers separated by `/`")
                    })?;
                    keys.into_iter().fold(self, |plan, at| plan.at(name, at))
                }
                (None, None) => return Err(FaultPlanError::UnknownKey { key: key.to_string() }),
            },
        })
    }

    /// Reads and parses [`ENV_VAR`]: `Ok(None)` when it is not set.
    pub fn from_env() -> Result<Option<Self>, FaultPlanError> {
        match std::env::var(ENV_VAR) {
            Ok(text) => FaultPlan::parse(&text).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(FaultPlanError::NotUnicode),
        }
    }
}

impl FromStr for FaultPlan {
    type Err = FaultPlanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FaultPlan::parse(text)
    }
}

/// The plan in the grammar [`FaultPlan::parse`] reads, so that
/// `plan.to_string().parse() == Ok(plan)`. Zero crash and drop
/// probabilities are left out, and so is a zero delay probability with the
/// default delays (a zero one with other delays is written, or they would
/// be lost); sites are always written.
impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut entry = |f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>| {
            let result = write!(f, "{sep}{args}");
            sep = ",";
            result
        };
        if self.crash > 0.0 {
            entry(f, format_args!("crash={}", self.crash))?;
        }
        if self.drop > 0.0 {
            entry(f, format_args!("drop={}", self.drop))?;
        }
        if self.delay > 0.0 || self.delay_distribution != DelayDistribution::default() {
            entry(f, format_args!("delay={}:{}", self.delay, self.delay_distribution))?;
        }
        if let Some(seed) = self.seed {
            entry(f, format_args!("seed={seed}"))?;
        }
        for (name, p) in &self.sites {
            entry(f, format_args!("site.{name}={p}"))?;
        }
        for (name, keys) in &self.planned {
            let keys: Vec<String> = keys.iter().map(u64::to_string).collect();
            entry(f, format_args!("at.{name}={}", keys.join("/")))?;
        }
        Ok(())
    }
}

/// Why a fault plan is invalid. Every variant names the key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultPlanError {
    /// An entry is not `key=value`.
    #[error(
        "`{entry}` is not a `key=value` entry (write e.g. `crash=0.01`; entries are separated by commas)"
    )]
    Syntax {
        /// The entry as written.
        entry: String,
    },
    /// A key the grammar does not know.
    #[error("unknown key `{key}`: the keys are crash, drop, delay, seed, site.NAME and at.NAME")]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// A key given twice.
    #[error("`{key}` is given twice; give each key once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A value that does not parse.
    #[error("`{key}={value}`: expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// A probability outside `[0, 1]`, or not a finite number.
    #[error("`{key}` probability {value} is not a finite number in [0, 1]")]
    Probability {
        /// `crash`, `drop`, `delay` or `site.NAME`.
        key: String,
        /// The probability given.
        value: f64,
    },
    /// crash + drop + delay above 1.
    #[error(
        "`crash` + `drop` + `delay` probabilities add up to {sum}, above 1: a message gets at most one fault, so their sum must be at most 1"
    )]
    ProbabilitySum {
        /// The sum.
        sum: f64,
    },
    /// A uniform delay whose minimum is above its maximum.
    #[error("`delay` range {min:?}..{max:?} has its minimum above its maximum")]
    DelayRange {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
    /// A delay (maximum or mean) beyond [`DELAY_MAX`].
    #[error("`delay` of {value:?} is beyond the limit of {max:?}")]
    DelayTooLong {
        /// The delay given.
        value: Duration,
        /// [`DELAY_MAX`].
        max: Duration,
    },
    /// A site name that is empty, too long, or has other characters than
    /// `A-Z a-z 0-9 _ . -`.
    #[error(
        "`site.{name}`: a site name is 1 to {max} characters of A-Z a-z 0-9 _ . -",
        max = SITE_NAME_LEN_MAX
    )]
    SiteName {
        /// The name given.
        name: String,
    },
    /// More sites than [`SITES_MAX`].
    #[error("the plan names {count} sites; at most {max} are allowed")]
    TooManySites {
        /// How many were given.
        count: usize,
        /// [`SITES_MAX`].
        max: usize,
    },
    /// More planned firings than [`PLANNED_MAX`].
    #[error("the plan has {count} planned firings; at most {max} are allowed")]
    TooManyPlanned {
        /// How many were given.
        count: usize,
        /// [`PLANNED_MAX`].
        max: usize,
    },
    /// The environment variable is not valid UTF-8.
    #[error("the value is not valid UTF-8")]
    NotUnicode,
}

const DELAY_EXPECTED: &str = "`PROBABILITY:DELAYS` with DELAYS one duration, `MIN..MAX` or `exp(MEAN)`, \
     a duration being a number and a unit out of ns, us, ms, s (e.g. `0.01:1ms..5ms`)";

fn bad_value(key: &str, value: &str, expected: &'static str) -> FaultPlanError {
    FaultPlanError::BadValue { key: key.to_string(), value: value.to_string(), expected }
}

fn probability(key: &str, value: f64) -> Result<(), FaultPlanError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(FaultPlanError::Probability { key: key.to_string(), value })
    }
}

fn parse_probability(key: &str, value: &str) -> Result<f64, FaultPlanError> {
    let p: f64 =
        value.parse().map_err(|_| bad_value(key, value, "a probability: a number in [0, 1]"))?;
    probability(key, p)?;
    Ok(p)
}

fn site_name(name: &str) -> Result<(), FaultPlanError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > SITE_NAME_LEN_MAX || !name.chars().all(allowed) {
        return Err(FaultPlanError::SiteName { name: name.to_string() });
    }
    Ok(())
}

/// `/`-separated keys, at most [`PLANNED_MAX`] + 1 of them read (the plan
/// refuses more, naming the limit).
fn parse_keys(value: &str) -> Option<Vec<u64>> {
    value.split('/').take(PLANNED_MAX + 1).map(|key| key.trim().parse().ok()).collect()
}

fn parse_seed(value: &str) -> Option<u64> {
    match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

fn parse_distribution(text: &str) -> Option<DelayDistribution> {
    if let Some(mean) = text.strip_prefix("exp(").and_then(|rest| rest.strip_suffix(')')) {
        return Some(DelayDistribution::exponential(parse_duration(mean.trim())?));
    }
    match text.split_once("..") {
        Some((min, max)) => Some(DelayDistribution::uniform(
            parse_duration(min.trim())?,
            parse_duration(max.trim())?,
        )),
        None => Some(DelayDistribution::fixed(parse_duration(text)?)),
    }
}

/// A number and a unit (`ns`, `us`, `ms`, `s`), rounded to the nanosecond.
/// Its length is checked by `validate`, which names the limit.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let unit_ns = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    let number: f64 = number.trim().parse().ok()?;
    let nanos = (number * unit_ns).round();
    // Also refuses NaN, infinities and negatives.
    if !(0.0..=u64::MAX as f64).contains(&nanos) {
        return None;
    }
    Some(Duration::from_nanos(nanos as u64))
}

/// A duration in the grammar's units, exactly: the largest unit that
/// divides it.
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        match nanos {
            0 => f.write_str("0ms"),
            n if n % 1_000_000_000 == 0 => write!(f, "{}s", n / 1_000_000_000),
            n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => write!(f, "{}us", n / 1_000),
            n => write!(f, "{n}ns"),
        }
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn a_zero_delay_probability_keeps_its_delays_through_display() {
        // Before: "delay=0:5ms" displayed as "", which parses to the default
        // delays, so the round trip the docs promise lost them.
        let plan = FaultPlan::parse("delay=0:5ms").unwrap();
        assert_eq!(plan.to_string(), "delay=0:5ms");
        assert_eq!(FaultPlan::parse(&plan.to_string()), Ok(plan));
        assert_eq!(FaultPlan::parse("delay=0:1ms..10ms").unwrap().to_string(), "");
    }

    #[test]
    fn too_many_sites_are_refused_at_the_first_one_over() {
        let text: Vec<String> = (0..100_000).map(|i| format!("site.s{i}=0")).collect();
        let error = FaultPlan::parse(&text.join(",")).unwrap_err();
        assert_eq!(error, FaultPlanError::TooManySites { count: SITES_MAX + 1, max: SITES_MAX });
    }
}
