//! The stable-toolchain fuzz pass `make test` runs: every target over every
//! file of its seed corpus (`fuzz/corpus/<target>/`) and of its regression
//! inputs (`fuzz/regressions/<target>/`, crashes libFuzzer found, kept after
//! their fix), then over deterministic mutations of them (bit flips, byte
//! and integer overwrites, truncations, deletions, duplications, splices,
//! inserted tokens) until [`EXECS_MAX`] inputs or [`RUN_SECONDS_MAX`]
//! seconds, whichever comes first.
//!
//! A counting global allocator refuses any single allocation above
//! [`ALLOCATION_BYTES_MAX`] and fails the test that asked for it: a parser
//! must bound what an input makes it allocate. A refused allocation on a
//! path that cannot report it aborts the test binary with "memory
//! allocation of N bytes failed", which is a failure too.
//!
//! Longer runs: `ZBMD_FUZZ_EXECS` and `ZBMD_FUZZ_SECONDS` raise the bounds;
//! libFuzzer (`make fuzz`, nightly) is the real search. See
//! `docs/fuzzing.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zbmd_fuzz_targets::{TARGETS, Target, target};

/// The largest single allocation any target may make: 1 GiB. The inputs
/// here are at most a few KiB; anything near this is a size taken from the
/// input without a bound.
const ALLOCATION_BYTES_MAX: usize = 1 << 30;

/// Mutated inputs per target, at most (corpus and regression files always
/// all run). With [`RUN_SECONDS_MAX`], keeps the whole test under a minute
/// on two cores in a debug build.
const EXECS_MAX: u64 = 20_000;

/// Seconds of mutated inputs per target, at most.
const RUN_SECONDS_MAX: u64 = 5;

/// How many mutations are stacked on one input, at most.
const MUTATIONS_STACKED_MAX: u64 = 4;

/// An allocator that passes every request to the system's, except one above
/// [`ALLOCATION_BYTES_MAX`]: that is noted for the calling thread (each
/// test runs on its own) and refused.
struct Bounded;

thread_local! {
    /// The largest refused request on this thread, in bytes (0: none).
    /// Const-initialised and without a destructor, so the allocator can
    /// touch it without allocating.
    static REFUSED_BYTES: Cell<usize> = const { Cell::new(0) };
}

impl Bounded {
    /// Whether a request of `size` bytes may go ahead; notes it if not.
    fn allows(size: usize) -> bool {
        if size <= ALLOCATION_BYTES_MAX {
            return true;
        }
        let _ = REFUSED_BYTES.try_with(|refused| refused.set(refused.get().max(size)));
        false
    }
}

// SAFETY: every method either returns null (a refusal, which GlobalAlloc
// allows) or forwards its arguments unchanged to `System`, which upholds
// the GlobalAlloc contract for them; a pointer given out by `System` is only
// ever returned to `System`.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Bounded::allows(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's `layout` has a non-zero size (GlobalAlloc's
        // contract), passed on as it came.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Bounded::allows(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with
        // `layout` (the caller's contract), since a refusal gives out none.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Bounded::allows(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` and `layout` are as in `dealloc`; `new_size` is
        // the caller's, non-zero and valid for `layout`'s alignment.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// A bound from the environment, or `default`.
fn bound(variable: &str, default: u64) -> u64 {
    std::env::var(variable).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// `fuzz/<kind>/<target>/`'s files, sorted (empty if there is no such
/// directory).
fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.retain(|path| path.is_file());
    paths.sort();
    paths.into_iter().map(|path| (path.clone(), std::fs::read(&path).unwrap())).collect()
}

/// The input shown in a failure: escaped, at most 300 bytes.
fn shown(input: &[u8]) -> String {
    let cut = &input[..input.len().min(300)];
    let more = if input.len() > cut.len() { "..." } else { "" };
    format!("{} bytes: b\"{}\"{more}", input.len(), cut.escape_ascii())
}

/// Runs `run` on `input`; a panic or a refused allocation fails the test,
/// naming the target and the input, which is also saved for replay.
fn exec(name: &str, run: Target, input: &[u8], origin: &str) {
    REFUSED_BYTES.with(|refused| refused.set(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| run(input)));
    let refused = REFUSED_BYTES.with(Cell::get);
    if outcome.is_ok() && refused == 0 {
        return;
    }
    let saved = save_failure(name, input);
    let what = match outcome {
        Err(_) => "panicked (message above)".to_string(),
        Ok(()) => format!("asked for {refused} bytes at once, above {ALLOCATION_BYTES_MAX}"),
    };
    panic!(
        "target {name} {what} on {origin}: {}\nsaved as {}; add it under fuzz/regressions/{name}/ once fixed",
        shown(input),
        saved.display()
    );
}

/// Writes a failing input under the target directory; returns its path.
fn save_failure(name: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures").join(name);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("input-{:016x}", fnv1a(input)));
    let _ = std::fs::write(&path, input);
    path
}

/// FNV-1a: names saved inputs and seeds each target's mutations.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64 (Steele, Lea and Flood, OOPSLA 2014): the mutations'
/// deterministic source.
struct Mixer(u64);

impl Mixer {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Bytes a parser treats specially, one of which a mutation may write.
const BYTES: &[u8] = b"\x00\xff\x7f\x80 0019,;.:-+e[]=@\"\n\r#{}()x";

/// Tokens a mutation may insert: limits, overflows, floats `f32` cannot
/// hold, and the syntax of the text formats.
const TOKENS: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "4294967295",
    "16777217",
    "1000000000",
    "-1",
    "0",
    "1e39",
    "-3.5e38",
    "1e-50",
    "NaN",
    "inf",
    "0x",
    "\u{feff}",
    "\r\n",
    ",,",
    "[[layers]]\n",
    "kind = \"linear\"\n",
    "site.",
    "delay=",
    "exp(",
    "..",
    "@",
    "\"__metadata__\"",
    "\"shape\":[",
    "\"data_offsets\":[0,",
];

/// Integers a mutation may write over 4 or 8 bytes, either byte order.
const WORDS: &[u64] = &[0, 1, 0x7f, 0xff, 0x8000_0000, 0xffff_ffff, 4_000_000_000, u64::MAX];

/// One random mutation of `input`; `others` are the target's other inputs,
/// for splices.
fn mutate(input: &mut Vec<u8>, others: &[Vec<u8>], mix: &mut Mixer) {
    let at = |mix: &mut Mixer, len: usize| mix.below(len + 1);
    match mix.below(8) {
        0 if !input.is_empty() => {
            let i = mix.below(input.len());
            input[i] ^= 1 << mix.below(8);
        }
        1 if !input.is_empty() => {
            let i = mix.below(input.len());
            input[i] = BYTES[mix.below(BYTES.len())];
        }
        2 => input.truncate(at(mix, input.len())),
        3 if !input.is_empty() => {
            let start = mix.below(input.len());
            let end = (start + 1 + mix.below(16)).min(input.len());
            input.drain(start..end);
        }
        4 if !input.is_empty() => {
            let start = mix.below(input.len());
            let end = (start + 1 + mix.below(64)).min(input.len());
            let copy = input[start..end].to_vec();
            let to = at(mix, input.len());
            input.splice(to..to, copy);
        }
        5 if !others.is_empty() => {
            let other = &others[mix.below(others.len())];
            input.truncate(at(mix, input.len()));
            input.extend_from_slice(&other[at(mix, other.len())..]);
        }
        6 => {
            let token = TOKENS[mix.below(TOKENS.len())].as_bytes();
            let to = at(mix, input.len());
            input.splice(to..to, token.iter().copied());
        }
        _ => overwrite_word(input, mix),
    }
}

/// Writes one of [`WORDS`] over 4 or 8 bytes of `input`, little- or
/// big-endian (binary headers: IDX dimensions, checkpoint and safetensors
/// lengths).
fn overwrite_word(input: &mut [u8], mix: &mut Mixer) {
    let word = WORDS[mix.below(WORDS.len())];
    let bytes: Vec<u8> = match mix.below(4) {
        0 => (word as u32).to_le_bytes().to_vec(),
        1 => (word as u32).to_be_bytes().to_vec(),
        2 => word.to_le_bytes().to_vec(),
        _ => word.to_be_bytes().to_vec(),
    };
    if input.len() >= bytes.len() {
        let at = mix.below(input.len() - bytes.len() + 1);
        input[at..at + bytes.len()].copy_from_slice(&bytes);
    }
}

/// Every seed and regression input of `name`, then mutations of them until
/// the bounds.
fn run_target(name: &str) {
    let run = target(name).expect("a known target");
    let seeds = files("corpus", name);
    assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ holds no seed inputs");
    let regressions = files("regressions", name);
    for (path, input) in seeds.iter().chain(&regressions) {
        exec(name, run, input, &path.display().to_string());
    }
    let inputs: Vec<Vec<u8>> = seeds.into_iter().chain(regressions).map(|(_, b)| b).collect();
    let execs_max = bound("ZBMD_FUZZ_EXECS", EXECS_MAX);
    let deadline =
        Instant::now() + Duration::from_secs(bound("ZBMD_FUZZ_SECONDS", RUN_SECONDS_MAX));
    let mut mix = Mixer(fnv1a(name.as_bytes()));
    let started = Instant::now();
    let mut execs = 0;
    while execs < execs_max && Instant::now() < deadline {
        let mut input = inputs[mix.below(inputs.len())].clone();
        for _ in 0..=mix.below(MUTATIONS_STACKED_MAX as usize) {
            mutate(&mut input, &inputs, &mut mix);
        }
        exec(name, run, &input, &format!("mutation {execs}"));
        execs += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{name}: {} inputs and {execs} mutations in {seconds:.2} s", inputs.len());
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_target(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test_a_corpus_and_a_cargo_fuzz_target() {
            let tested = [$(stringify!($name)),*];
            let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
            for (name, _) in TARGETS {
                assert!(tested.contains(name), "target {name} has no test in corpus.rs");
                let source = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
                assert!(source.is_file(), "{} is missing", source.display());
            }
            assert_eq!(tested.len(), TARGETS.len());
        }
    };
}

corpus_tests!(
    csv,
    idx,
    model_spec,
    model_toml,
    safetensors_import,
    train_config,
    checkpoint,
    checkpoint_payload,
    fault_plan,
    fault_schedule,
);

#[test]
fn the_allocator_refuses_and_reports_an_oversized_request() {
    REFUSED_BYTES.with(|refused| refused.set(0));
    let mut big: Vec<u8> = Vec::new();
    assert!(big.try_reserve_exact(ALLOCATION_BYTES_MAX + 1).is_err());
    assert_eq!(REFUSED_BYTES.with(Cell::get), ALLOCATION_BYTES_MAX + 1);
    REFUSED_BYTES.with(|refused| refused.set(0));
}
