//! Unit tests of the pieces: sampling, the per-message roll, the grammar's
//! round trip. The runtime's behaviour is tested in `rt/tests/faults.rs`.

use std::time::Duration;

use super::shard::{Fault, ShardFaults};
use super::{DELAY_MAX, DelayDistribution, FaultPlan, mix64, unit};

const MS: Duration = Duration::from_millis(1);

#[test]
fn unit_spans_zero_to_one_exclusive() {
    assert_eq!(unit(0), 0.0);
    assert!(unit(u64::MAX) < 1.0);
    assert!(unit(u64::MAX) > 0.999_999);
}

#[test]
fn mix64_matches_splitmix64_reference() {
    // SplitMix64 seeded with 0: its first output is mix64(GOLDEN_GAMMA),
    // 0xe220a8397b1dcdaf in the reference implementation.
    assert_eq!(mix64(super::GOLDEN_GAMMA), 0xe220_a839_7b1d_cdaf);
}

#[test]
fn uniform_samples_stay_in_range_and_cover_it() {
    let d = DelayDistribution::uniform(2 * MS, 6 * MS);
    assert_eq!(d.sample(0.0), 2 * MS);
    assert!(d.sample(0.999_999_999) <= 6 * MS);
    assert_eq!(d.sample(0.5), 4 * MS);
    assert_eq!(DelayDistribution::fixed(3 * MS).sample(0.7), 3 * MS);
}

#[test]
fn exponential_samples_have_the_mean_and_are_capped() {
    let d = DelayDistribution::exponential(10 * MS);
    let n = 100_000u64;
    let total: Duration = (0..n).map(|i| d.sample(unit(mix64(i)))).sum();
    let mean_ms = total.as_secs_f64() * 1e3 / n as f64;
    // The sample mean of 100 000 draws is within 2% of 10 ms with
    // overwhelming probability (standard error 0.3%); the draws are fixed.
    assert!((9.8..10.2).contains(&mean_ms), "mean {mean_ms} ms");
    let huge = DelayDistribution::exponential(DELAY_MAX);
    assert_eq!(huge.sample(1.0 - f64::EPSILON), DELAY_MAX);
}

#[test]
fn one_roll_per_message_splits_by_probability() {
    let plan =
        FaultPlan::new().seed(1).crash(0.1).drop(0.2).delay(0.3, DelayDistribution::fixed(MS));
    let mut faults = ShardFaults::new(&plan, 0).expect("the plan faults messages");
    let n = 100_000;
    let mut counts = [0u32; 4];
    for _ in 0..n {
        let index = match faults.roll() {
            Fault::None => 0,
            Fault::Crash => 1,
            Fault::Drop => 2,
            Fault::Delay(d) => {
                assert_eq!(d, MS);
                3
            }
        };
        counts[index] += 1;
    }
    let share = |i: usize| f64::from(counts[i]) / f64::from(n);
    // Within 1.5 points of each probability: more than 10 standard errors.
    for (i, p) in [(1, 0.1), (2, 0.2), (3, 0.3), (0, 0.4)] {
        assert!((share(i) - p).abs() < 0.015, "outcome {i}: {} vs {p}", share(i));
    }
}

#[test]
fn shards_get_different_streams_from_one_seed() {
    let plan = FaultPlan::new().seed(42).crash(0.5);
    let rolls = |shard| {
        let mut faults = ShardFaults::new(&plan, shard).unwrap();
        (0..64).map(|_| faults.roll()).collect::<Vec<_>>()
    };
    assert_eq!(rolls(0), rolls(0));
    assert_ne!(rolls(0), rolls(1));
}

#[test]
fn no_message_faults_means_no_shard_state() {
    let plan = FaultPlan::new().seed(3).site("gpu.launch", 0.5);
    assert!(ShardFaults::new(&plan, 0).is_none());
}

#[test]
fn display_round_trips_through_parse() {
    let plans = [
        FaultPlan::new(),
        FaultPlan::new().seed(u64::MAX).crash(1.0),
        FaultPlan::new().drop(1e-7).delay(0.5, DelayDistribution::exponential(1500 * MS / 1000)),
        FaultPlan::new().delay(0.25, DelayDistribution::uniform(Duration::from_nanos(7), 2 * MS)),
        FaultPlan::new().site("a", 0.0).site("b.c-d_e", 0.125).seed(0),
    ];
    for plan in plans {
        let text = plan.to_string();
        assert_eq!(FaultPlan::parse(&text), Ok(plan), "{text}");
    }
}

#[test]
fn a_planned_firing_fires_once_at_its_key_and_is_counted() {
    use super::{FaultInjector, FaultPlanError, PLANNED_MAX};
    let plan = FaultPlan::new().seed(5).at("train.model", 10).at("train.model", 3);
    let faults = FaultInjector::new(plan).unwrap();
    let site = faults.site("train.model");
    assert!(site.is_configured(), "a planned site is a site");
    assert_eq!(site.planned_left(), vec![3, 10]);
    assert!(!site.inject_at(2), "no firing planned at key 2, and no probability");
    assert!(site.inject_at(3));
    assert!(!site.inject_at(3), "each planned firing fires once");
    assert!(!site.inject(), "a roll without a key never takes a planned firing");
    assert!(faults.inject_at("train.model", 10));
    assert_eq!((site.rolls(), site.fires()), (5, 2));
    assert_eq!(site.planned_left(), Vec::<u64>::new());
    assert!(!faults.inject_at("train.loader", 3), "a site not in the plan never fires");

    // A key planned twice fires twice: once per roll with it.
    let twice = FaultInjector::new(FaultPlan::new().seed(1).at("s", 4).at("s", 4)).unwrap();
    assert_eq!(twice.planned_left("s"), vec![4, 4]);
    assert!(twice.inject_at("s", 4) && twice.inject_at("s", 4) && !twice.inject_at("s", 4));

    let many = (0..=PLANNED_MAX as u64).fold(FaultPlan::new(), |plan, key| plan.at("s", key));
    assert_eq!(
        many.validate(),
        Err(FaultPlanError::TooManyPlanned { count: PLANNED_MAX + 1, max: PLANNED_MAX })
    );
}

#[test]
fn a_planned_firing_leaves_the_probability_stream_alone() {
    use super::FaultInjector;
    // The n-th roll of a site draws the same variate with or without a
    // plan, so planning a firing moves no probabilistic fault.
    let plain = FaultInjector::new(FaultPlan::new().seed(9).site("s", 0.5)).unwrap();
    let planned = FaultInjector::new(FaultPlan::new().seed(9).site("s", 0.5).at("s", 7)).unwrap();
    let rolls =
        |faults: &FaultInjector| (0..64).map(|k| faults.inject_at("s", k)).collect::<Vec<_>>();
    let (plain, planned) = (rolls(&plain), rolls(&planned));
    for (key, (a, b)) in plain.iter().zip(&planned).enumerate() {
        if key == 7 {
            assert!(*b, "the planned firing");
        } else {
            assert_eq!(a, b, "roll {key}");
        }
    }
}

#[test]
fn planned_firings_round_trip_through_the_grammar() {
    let plan =
        FaultPlan::new().seed(2).site("gpu.launch", 0.25).at("a", 1).at("b.c", 2).at("a", 30);
    assert_eq!(plan.to_string(), "seed=2,site.gpu.launch=0.25,at.a=1/30,at.b.c=2");
    assert_eq!(FaultPlan::parse(&plan.to_string()), Ok(plan));
    assert!(FaultPlan::new().at("x", 0).is_active(), "a plan alone makes a plan active");
    for bad in ["at.a=", "at.a=1/x", "at.a=-1", "at.=3", "at.a b=1"] {
        assert!(FaultPlan::parse(bad).is_err(), "{bad}");
    }
}
