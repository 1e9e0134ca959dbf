//! A fixed-size set of OS CPU indices, and the kernel's cpulist text format
//! (`"0-3,8,10-11"`, as in `/sys/devices/system/cpu/online` and
//! `taskset -c`; see the kernel's `Documentation/admin-guide/cputopology.rst`).

use std::fmt;
use std::str::FromStr;

use super::TopologyError;

/// The most CPUs a [`CpuSet`] can hold (indices `0..MAX_CPUS`).
///
/// 1024 is glibc's `CPU_SETSIZE`, so a set maps one to one onto the
/// `cpu_set_t` that `sched_getaffinity` fills; it covers today's largest
/// two-socket servers (2 x 192 cores x 2 threads = 768) with room to spare.
pub const MAX_CPUS: usize = 1024;

// A CpuSet and a libc cpu_set_t have exactly the same number of bits, so
// conversions in either direction can neither truncate nor overrun.
const _: () = assert!(std::mem::size_of::<libc::cpu_set_t>() * 8 == MAX_CPUS);

const WORD_BITS: usize = u64::BITS as usize;
const WORDS: usize = MAX_CPUS / WORD_BITS;

/// A set of OS CPU indices (what the kernel numbers `cpu0`, `cpu1`, ...).
///
/// A plain bitset of [`MAX_CPUS`] bits: `Copy`, no allocation. It parses from
/// and prints as the kernel's cpulist format.
///
/// ```
/// use zbmd_rt::topology::CpuSet;
/// let set: CpuSet = "0-3,8,10-11".parse().unwrap();
/// assert_eq!(set.len(), 7);
/// assert!(set.contains(8) && !set.contains(9));
/// assert_eq!(set.to_string(), "0-3,8,10-11");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuSet {
    words: [u64; WORDS],
}

impl CpuSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { words: [0; WORDS] }
    }

    /// The set holding exactly the given CPUs.
    ///
    /// # Errors
    /// [`TopologyError::CpuOutOfRange`] for a CPU at or beyond [`MAX_CPUS`].
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> Result<Self, TopologyError> {
        let mut set = Self::new();
        for cpu in cpus {
            set.insert(cpu)?;
        }
        Ok(set)
    }

    /// Adds `cpu`; returns whether it was absent before.
    ///
    /// # Errors
    /// [`TopologyError::CpuOutOfRange`] for a CPU at or beyond [`MAX_CPUS`].
    pub fn insert(&mut self, cpu: usize) -> Result<bool, TopologyError> {
        if cpu >= MAX_CPUS {
            return Err(TopologyError::CpuOutOfRange { cpu, max: MAX_CPUS });
        }
        let (word, bit) = (cpu / WORD_BITS, 1u64 << (cpu % WORD_BITS));
        let absent = self.words[word] & bit == 0;
        self.words[word] |= bit;
        Ok(absent)
    }

    /// Removes `cpu`; returns whether it was present.
    pub fn remove(&mut self, cpu: usize) -> bool {
        let present = self.contains(cpu);
        if present {
            self.words[cpu / WORD_BITS] &= !(1u64 << (cpu % WORD_BITS));
        }
        present
    }

    /// Whether `cpu` is in the set (always false beyond [`MAX_CPUS`]).
    pub fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.words[cpu / WORD_BITS] & (1u64 << (cpu % WORD_BITS)) != 0
    }

    /// The number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The lowest CPU in the set.
    pub fn first(&self) -> Option<usize> {
        self.iter().next()
    }

    /// The CPUs in increasing order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { set: self, next: 0 }
    }

    /// The CPUs in both sets.
    #[must_use]
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        let mut out = *self;
        for (w, o) in out.words.iter_mut().zip(other.words) {
            *w &= o;
        }
        out
    }

    /// The CPUs in either set.
    #[must_use]
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let mut out = *self;
        for (w, o) in out.words.iter_mut().zip(other.words) {
            *w |= o;
        }
        out
    }

    /// The CPUs of `self` that are not in `other`.
    ///
    /// ```
    /// use zbmd_rt::topology::CpuSet;
    /// let all: CpuSet = "0-7".parse().unwrap();
    /// let taken: CpuSet = "0-1,6".parse().unwrap();
    /// assert_eq!(all.difference(&taken).to_string(), "2-5,7");
    /// ```
    #[must_use]
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        let mut out = *self;
        for (w, o) in out.words.iter_mut().zip(other.words) {
            *w &= !o;
        }
        out
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.words.iter().zip(other.words).all(|(&w, o)| w & !o == 0)
    }

    /// Parses the kernel's cpulist format: comma-separated CPUs and inclusive
    /// ranges, e.g. `"0-3,8,10-11"`. Surrounding whitespace (the newline
    /// sysfs files end with) is ignored; an empty string is the empty set.
    ///
    /// # Errors
    /// [`TopologyError::CpuListParse`] for malformed text (empty items,
    /// non-digits, reversed ranges), [`TopologyError::CpuOutOfRange`] for a
    /// CPU at or beyond [`MAX_CPUS`].
    pub fn parse_list(text: &str) -> Result<Self, TopologyError> {
        let trimmed = text.trim();
        let mut set = Self::new();
        if trimmed.is_empty() {
            return Ok(set);
        }
        let fail =
            |reason: String| TopologyError::CpuListParse { input: trimmed.to_owned(), reason };
        for item in trimmed.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (parse_cpu(a).map_err(fail)?, parse_cpu(b).map_err(fail)?),
                None => {
                    let cpu = parse_cpu(item).map_err(fail)?;
                    (cpu, cpu)
                }
            };
            if first > last {
                return Err(fail(format!("range {item:?} runs backwards")));
            }
            if last >= MAX_CPUS {
                return Err(TopologyError::CpuOutOfRange { cpu: last, max: MAX_CPUS });
            }
            for cpu in first..=last {
                set.insert(cpu)?;
            }
        }
        Ok(set)
    }

    /// The CPUs the calling thread may run on: its affinity mask, as set by
    /// `taskset`, `srun --cpu-bind`, numactl or a cgroup cpuset.
    ///
    /// # Errors
    /// [`TopologyError::Affinity`] if `sched_getaffinity` fails (for example
    /// on a machine with more than [`MAX_CPUS`] CPUs).
    pub fn current_affinity() -> Result<Self, TopologyError> {
        // SAFETY: cpu_set_t is a plain array of integers; all zeroes is the
        // empty set and a valid value.
        let mut raw: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 names the calling thread; the size passed is the
        // size of `raw`, which lives on this stack frame for the whole call,
        // so the kernel writes only inside it.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut raw) };
        if rc != 0 {
            return Err(TopologyError::Affinity { source: std::io::Error::last_os_error() });
        }
        Ok(Self::from_raw(&raw))
    }

    /// Converts a libc `cpu_set_t` (which holds [`MAX_CPUS`] bits on glibc).
    pub(crate) fn from_raw(raw: &libc::cpu_set_t) -> Self {
        let mut set = Self::new();
        for cpu in 0..MAX_CPUS {
            // SAFETY: CPU_ISSET only reads bit `cpu` of `raw`, which exists
            // because cpu < MAX_CPUS == the bits in a cpu_set_t (checked at
            // compile time below).
            if unsafe { libc::CPU_ISSET(cpu, raw) } {
                // Cannot fail: cpu < MAX_CPUS.
                let _ = set.insert(cpu);
            }
        }
        set
    }
}

/// Parses one decimal CPU index; rejects signs, spaces and empty text.
fn parse_cpu(text: &str) -> Result<usize, String> {
    if text.is_empty() {
        return Err("empty CPU number".to_owned());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a CPU number"));
    }
    // Only digits: the one failure left is overflow, which is out of range.
    text.parse::<usize>().map_err(|_| format!("CPU number {text} is too large"))
}

impl FromStr for CpuSet {
    type Err = TopologyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_list(text)
    }
}

/// Prints the kernel's cpulist format, runs of two or more as `a-b`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.iter().peekable();
        let mut first_item = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first_item {
                f.write_str(",")?;
            }
            first_item = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

/// The CPUs of a [`CpuSet`], in increasing order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    set: &'a CpuSet,
    next: usize,
}

impl Iterator for Iter<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.next < MAX_CPUS {
            let word = self.set.words[self.next / WORD_BITS] >> (self.next % WORD_BITS);
            if word == 0 {
                // Nothing left in this word: jump to the next one.
                self.next = (self.next / WORD_BITS + 1) * WORD_BITS;
                continue;
            }
            let cpu = self.next + word.trailing_zeros() as usize;
            self.next = cpu + 1;
            return Some(cpu);
        }
        None
    }
}

impl<'a> IntoIterator for &'a CpuSet {
    type Item = usize;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iter_crosses_word_boundaries() {
        let set = CpuSet::from_cpus([0, 63, 64, 127, 1023]).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 127, 1023]);
        assert_eq!(set.to_string(), "0,63-64,127,1023");
    }

    #[test]
    fn set_algebra() {
        let a: CpuSet = "0-7".parse().unwrap();
        let b: CpuSet = "4-11".parse().unwrap();
        assert_eq!(a.intersection(&b).to_string(), "4-7");
        assert_eq!(a.union(&b).to_string(), "0-11");
        assert!(a.intersection(&b).is_subset(&a));
        assert!(!a.is_subset(&b));
    }
}
