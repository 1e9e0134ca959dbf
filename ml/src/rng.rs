//! The one random number generator of zbmd-ml: seeded, and with a state
//! small enough to save in a checkpoint and restore exactly.
//!
//! It is SplitMix64 (Steele, Lea and Flood, 2014): one `u64` of state, a
//! fixed sequence per seed on every platform and release. We keep our own
//! rather than a crate's generator because the state itself is part of the
//! checkpoint format (initialisation, shuffling and dropout resume exactly
//! where they stopped), and the crates keep their state private.

/// A seeded generator whose whole state is [`Rng::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator resumed from a saved [`state`](Self::state).
    pub fn from_state(state: u64) -> Self {
        Rng { state }
    }

    /// The whole state: save it, and [`from_state`](Self::from_state) resumes
    /// the same sequence.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// A child generator for a named purpose (`"init"`, `"shuffle"`,
    /// `"dropout"`), independent of the parent's later draws.
    pub fn fork(&self, purpose: &str) -> Rng {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64; // FNV-1a over the purpose
        for byte in purpose.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(Rng::new(self.state ^ hash).next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        // The top 24 bits fill an f32's mantissa exactly.
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A uniform integer in `0..bound` (`bound > 0`), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below needs a positive bound");
        // Lemire's multiply-shift with rejection of the biased low zone.
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - f64::from(self.next_f32()); // in (0, 1]
        let u2 = f64::from(self.next_f32());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_resumes_the_same_sequence() {
        let mut rng = Rng::new(42);
        for _ in 0..10 {
            rng.next_u64();
        }
        let saved = rng.state();
        let ahead: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        let mut resumed = Rng::from_state(saved);
        let again: Vec<u64> = (0..5).map(|_| resumed.next_u64()).collect();
        assert_eq!(ahead, again);
    }

    #[test]
    fn seeds_and_forks_give_different_streams() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(2);
                move |_| r.next_u64()
            })
            .collect();
        assert_ne!(a, b);
        let root = Rng::new(7);
        assert_ne!(root.fork("init").next_u64(), root.fork("shuffle").next_u64());
        assert_eq!(root.fork("init").next_u64(), root.fork("init").next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            let x = rng.below(7) as usize;
            seen[x] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<u32> = (0..100).collect();
        Rng::new(5).shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn floats_are_in_the_unit_interval_and_normals_are_centred() {
        let mut rng = Rng::new(9);
        let samples: Vec<f32> = (0..10_000).map(|_| rng.next_f32()).collect();
        assert!(samples.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = (0..10_000).map(|_| f64::from(rng.normal())).sum::<f64>() / 10_000.0;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }
}
