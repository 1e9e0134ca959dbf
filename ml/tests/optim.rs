//! Optimizers, schedules and gradient accumulation (zbmd_ml::optim): update
//! rules against references computed here in f64 from PyTorch's formulas,
//! convergence, bit-exact state round trips, no allocation after the first
//! step, and the errors.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use zbmd_ml::optim::{
    Adam, AdamConfig, AdamW, GradAccumulator, LrSchedule, OptimError, Optimizer, OptimizerConfig,
    OptimizerState, ParamView, Sgd, SgdConfig,
};

// ---------------------------------------------------------------------------
// Allocation counting (per thread, so parallel tests do not disturb it).

struct CountingAlloc;

thread_local! {
    // A const-initialised Cell needs no destructor, so touching it from the
    // allocator never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; counting touches only a thread-local
// `Cell` and never allocates or unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: our caller upholds `alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every allocation is forwarded) with
        // this `layout`, as our caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `dealloc`; `new_size` is valid as our caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------
// A tiny problem: f(p) = Σ ½·aᵢ·(pᵢ − cᵢ)², two parameters.

const A: [f64; 5] = [1.0, 3.0, 0.5, 2.0, 1.5];
const C: [f64; 5] = [0.5, -1.0, 2.0, 0.25, -0.75];
const P0: [f64; 5] = [1.0, -2.0, 0.5, 1.25, 0.0];
/// The split of the five elements into parameters `"0.weight"` and `"0.bias"`.
const SPLIT: usize = 3;
const NAMES: [&str; 2] = ["0.weight", "0.bias"];

fn grad_f32(p: &[f32], offset: usize) -> Vec<f32> {
    p.iter().enumerate().map(|(i, &x)| A[offset + i] as f32 * (x - C[offset + i] as f32)).collect()
}

fn grad_f64(p: &[f64]) -> Vec<f64> {
    p.iter().enumerate().map(|(i, &x)| A[i] * (x - C[i])).collect()
}

/// The problem's parameters in f32, split in two.
fn initial_params() -> [Vec<f32>; 2] {
    let p: Vec<f32> = P0.iter().map(|&x| x as f32).collect();
    [p[..SPLIT].to_vec(), p[SPLIT..].to_vec()]
}

/// One optimizer step on the problem, gradients from the current values.
fn step(opt: &mut dyn Optimizer, params: &mut [Vec<f32>; 2]) -> Result<(), OptimError> {
    let grads = [grad_f32(&params[0], 0), grad_f32(&params[1], SPLIT)];
    let [w, b] = params;
    let mut views = [
        ParamView { name: NAMES[0], value: w, grad: &grads[0] },
        ParamView { name: NAMES[1], value: b, grad: &grads[1] },
    ];
    opt.step(&mut views)
}

fn flat(params: &[Vec<f32>; 2]) -> Vec<f32> {
    params.concat()
}

fn assert_close(actual: &[f32], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let tolerance = 1e-6 * e.abs().max(1.0);
        assert!((f64::from(a) - e).abs() <= tolerance, "{what}: element {i} is {a}, reference {e}");
    }
}

// ---------------------------------------------------------------------------
// f64 references, written out from PyTorch's formulas.

fn sgd_reference(steps: usize, lr: f64, mu: f64, tau: f64, wd: f64, nesterov: bool) -> Vec<f64> {
    let mut p = P0.to_vec();
    let mut buf = vec![0.0; p.len()];
    for t in 0..steps {
        let grad = grad_f64(&p);
        for i in 0..p.len() {
            let mut g = grad[i] + wd * p[i];
            if mu != 0.0 {
                buf[i] = if t == 0 { g } else { mu * buf[i] + (1.0 - tau) * g };
                g = if nesterov { g + mu * buf[i] } else { buf[i] };
            }
            p[i] -= lr * g;
        }
    }
    p
}

fn adam_reference(steps: usize, c: &AdamConfig, decoupled: bool) -> Vec<f64> {
    let mut p = P0.to_vec();
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for t in 1..=steps {
        let grad = grad_f64(&p);
        let bc1 = 1.0 - c.beta1.powi(t as i32);
        let bc2 = 1.0 - c.beta2.powi(t as i32);
        for i in 0..p.len() {
            let mut g = grad[i];
            if decoupled {
                p[i] *= 1.0 - c.lr * c.weight_decay;
            } else {
                g += c.weight_decay * p[i];
            }
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
            p[i] -= c.lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + c.eps);
        }
    }
    p
}

fn run(opt: &mut dyn Optimizer, steps: usize) -> Vec<f32> {
    let mut params = initial_params();
    for _ in 0..steps {
        step(opt, &mut params).expect("step");
    }
    flat(&params)
}

// ---------------------------------------------------------------------------
// Update rules.

#[test]
fn sgd_without_momentum_matches_reference_for_three_steps() {
    let config = SgdConfig { lr: 0.1, weight_decay: 0.2, ..SgdConfig::default() };
    let mut opt = Sgd::new(config).unwrap();
    for steps in 1..=3 {
        let mut fresh = opt.clone();
        let got = run(&mut fresh, steps);
        assert_close(&got, &sgd_reference(steps, 0.1, 0.0, 0.0, 0.2, false), "plain SGD");
    }
    assert!(opt.state().arrays.is_empty(), "SGD without momentum keeps no buffers");
    run(&mut opt, 1);
    assert!(opt.state().arrays.is_empty(), "SGD without momentum keeps no buffers");
}

#[test]
fn sgd_momentum_with_dampening_starts_from_the_gradient_itself() {
    // With dampening 0.5, a first buffer of (1 − τ)·g instead of g would halve
    // the first step and miss the reference by far more than the tolerance.
    let config =
        SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.5, weight_decay: 0.1, nesterov: false };
    for steps in 1..=3 {
        let got = run(&mut Sgd::new(config.clone()).unwrap(), steps);
        assert_close(&got, &sgd_reference(steps, 0.1, 0.9, 0.5, 0.1, false), "SGD momentum");
    }
}

#[test]
fn sgd_nesterov_matches_reference_for_three_steps() {
    let config =
        SgdConfig { lr: 0.05, momentum: 0.8, dampening: 0.0, weight_decay: 0.3, nesterov: true };
    for steps in 1..=3 {
        let got = run(&mut Sgd::new(config.clone()).unwrap(), steps);
        assert_close(&got, &sgd_reference(steps, 0.05, 0.8, 0.0, 0.3, true), "SGD Nesterov");
    }
    let state = Sgd::new(config).map(|mut opt| {
        run(&mut opt, 1);
        opt.state()
    });
    let names: Vec<String> = state.unwrap().arrays.into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["0.weight.momentum_buffer", "0.bias.momentum_buffer"]);
}

/// Hyperparameters where every term matters: a large `eps` (so where it is
/// added shows), weight decay, and betas far from their defaults.
fn adam_test_config() -> AdamConfig {
    AdamConfig { lr: 0.1, beta1: 0.8, beta2: 0.9, eps: 0.1, weight_decay: 0.2 }
}

#[test]
fn adam_matches_reference_for_three_steps() {
    let config = adam_test_config();
    for steps in 1..=3 {
        let got = run(&mut Adam::new(config.clone()).unwrap(), steps);
        assert_close(&got, &adam_reference(steps, &config, false), "Adam");
    }
}

#[test]
fn adamw_decouples_weight_decay_and_matches_reference_for_three_steps() {
    let config = adam_test_config();
    for steps in 1..=3 {
        let got = run(&mut AdamW::new(config.clone()).unwrap(), steps);
        assert_close(&got, &adam_reference(steps, &config, true), "AdamW");
    }
    // The two weight decays really differ on this problem.
    let adam = adam_reference(3, &config, false);
    let adamw = adam_reference(3, &config, true);
    assert!(adam.iter().zip(&adamw).any(|(a, w)| (a - w).abs() > 1e-3));
}

#[test]
fn adam_state_names_follow_parameters() {
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    run(&mut opt, 2);
    let state = opt.state();
    let names: Vec<&str> = state.arrays.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["0.weight.exp_avg", "0.weight.exp_avg_sq", "0.bias.exp_avg", "0.bias.exp_avg_sq"]
    );
    assert_eq!(state.step, 2);
    assert_eq!(state.scalars["lr"], 1e-3);
    assert_eq!(state.scalars["decoupled_weight_decay"], 0.0);
}

// ---------------------------------------------------------------------------
// Convergence under a schedule.

fn converge(opt: &mut dyn Optimizer, schedule: &LrSchedule, steps: u64) -> f64 {
    schedule.validate().unwrap();
    let mut params = initial_params();
    for _ in 0..steps {
        opt.set_lr(schedule.lr_at(opt.steps()));
        step(opt, &mut params).unwrap();
    }
    assert_eq!(opt.steps(), steps);
    flat(&params).iter().zip(C).map(|(&p, c)| (f64::from(p) - c).abs()).fold(0.0, f64::max)
}

#[test]
fn every_optimizer_converges_on_a_quadratic() {
    let schedule =
        LrSchedule::WarmupCosine { lr: 0.1, warmup_steps: 20, total_steps: 400, min_lr: 0.0 };
    let sgd = SgdConfig { momentum: 0.9, nesterov: true, ..SgdConfig::default() };
    let configs = [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::Sgd(sgd),
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::AdamW(AdamConfig { weight_decay: 0.0, ..AdamConfig::adamw() }),
    ];
    let start = P0.iter().zip(C).map(|(p, c)| (p - c).abs()).fold(0.0, f64::max);
    for config in configs {
        let mut opt = config.build().unwrap();
        let error = converge(opt.as_mut(), &schedule, 400);
        assert!(error < 1e-3, "{config:?} ends {error} from the optimum (started {start})");
    }
}

// ---------------------------------------------------------------------------
// State round trip: N steps, save, restore into a fresh optimizer, M more.

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn round_trip_is_bit_exact(config: OptimizerConfig, fresh: OptimizerConfig) {
    let schedule = LrSchedule::Step { lr: 0.05, step_size: 2, gamma: 0.5 };
    let (n, m) = (3, 4);
    let drive = |opt: &mut dyn Optimizer, params: &mut [Vec<f32>; 2], steps: u64| {
        for _ in 0..steps {
            opt.set_lr(schedule.lr_at(opt.steps()));
            step(opt, params).unwrap();
        }
    };

    let mut whole = config.build().unwrap();
    let mut whole_params = initial_params();
    drive(whole.as_mut(), &mut whole_params, n + m);

    let mut first = config.build().unwrap();
    let mut params = initial_params();
    drive(first.as_mut(), &mut params, n);
    let saved = serde_json::to_string(&first.state()).unwrap();
    drop(first);
    // A fresh optimizer built with other hyperparameters: loading restores them.
    let mut resumed = fresh.build().unwrap();
    resumed.load_state(&serde_json::from_str::<OptimizerState>(&saved).unwrap()).unwrap();
    assert_eq!(resumed.steps(), n);
    drive(resumed.as_mut(), &mut params, m);

    assert_eq!(bits(&flat(&params)), bits(&flat(&whole_params)), "{config:?}");
    assert_eq!(resumed.state(), whole.state(), "{config:?}");
}

#[test]
fn sgd_state_round_trip_is_bit_exact() {
    let config =
        SgdConfig { momentum: 0.9, dampening: 0.0, weight_decay: 0.01, nesterov: true, lr: 0.05 };
    round_trip_is_bit_exact(
        OptimizerConfig::Sgd(config),
        OptimizerConfig::Sgd(SgdConfig::default()),
    );
}

#[test]
fn adam_state_round_trip_is_bit_exact() {
    let config = AdamConfig { weight_decay: 0.01, ..adam_test_config() };
    round_trip_is_bit_exact(
        OptimizerConfig::Adam(config),
        OptimizerConfig::Adam(AdamConfig::default()),
    );
}

#[test]
fn adamw_state_round_trip_is_bit_exact() {
    round_trip_is_bit_exact(
        OptimizerConfig::AdamW(adam_test_config()),
        OptimizerConfig::AdamW(AdamConfig::adamw()),
    );
}

#[test]
fn loading_a_step_zero_state_starts_afresh() {
    let mut opt = Adam::new(adam_test_config()).unwrap();
    let blank = opt.state();
    run(&mut opt, 2);
    opt.load_state(&blank).unwrap();
    assert_eq!(opt.steps(), 0);
    let got = run(&mut opt, 1);
    assert_close(&got, &adam_reference(1, &adam_test_config(), false), "Adam after reset");
}

// ---------------------------------------------------------------------------
// No allocation after the first step.

#[test]
fn steps_after_the_first_do_not_allocate() {
    let configs = [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::default() }),
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::AdamW(AdamConfig::adamw()),
    ];
    for config in configs {
        let mut opt = config.build().unwrap();
        let mut values = [vec![1.0_f32; 64], vec![-1.0_f32; 8]];
        let grads = [vec![0.5_f32; 64], vec![0.25_f32; 8]];
        let [w, b] = &mut values;
        let mut views = [
            ParamView { name: "w", value: w, grad: &grads[0] },
            ParamView { name: "b", value: b, grad: &grads[1] },
        ];
        opt.step(&mut views).unwrap();
        let before = allocations();
        for _ in 0..5 {
            opt.step(&mut views).unwrap();
        }
        assert_eq!(allocations() - before, 0, "{config:?} allocated after its first step");
        assert!(values[0][0] < 1.0, "{config:?} did not move the parameters");
    }
}

#[test]
fn a_state_refreshed_in_place_equals_a_fresh_one_and_allocates_nothing() {
    let configs = [
        OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, ..SgdConfig::default() }),
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::AdamW(AdamConfig::adamw()),
    ];
    for config in configs {
        let mut opt = config.build().unwrap();
        let mut values = [vec![1.0_f32; 64], vec![-1.0_f32; 8]];
        let grads = [vec![0.5_f32; 64], vec![0.25_f32; 8]];
        let [w, b] = &mut values;
        let mut views = [
            ParamView { name: "w", value: w, grad: &grads[0] },
            ParamView { name: "b", value: b, grad: &grads[1] },
        ];
        opt.step(&mut views).unwrap();
        let mut kept = opt.state();
        opt.step(&mut views).unwrap();
        let before = allocations();
        opt.state_into(&mut kept);
        assert_eq!(allocations() - before, 0, "{config:?}: refreshing its state allocated");
        assert_eq!(kept, opt.state(), "{config:?}: the refreshed state is the fresh one");
        assert_eq!(kept.step, 2);

        // Over another optimizer's state, it is still exactly this one's.
        let mut other = Sgd::new(SgdConfig::default()).unwrap().state();
        other.arrays.push(("stale.buffer".into(), vec![9.0; 3]));
        opt.state_into(&mut other);
        assert_eq!(other, opt.state(), "{config:?}: nothing stale survives");
    }
}

#[test]
fn accumulation_after_the_first_micro_batch_does_not_allocate() {
    let mut acc = GradAccumulator::new(2).unwrap();
    let grad = vec![1.0_f32; 128];
    acc.add(&[("w", &grad)]).unwrap();
    let before = allocations();
    acc.add(&[("w", &grad)]).unwrap();
    acc.average().unwrap();
    acc.reset();
    acc.add(&[("w", &grad)]).unwrap();
    assert_eq!(allocations() - before, 0);
}

// ---------------------------------------------------------------------------
// Errors.

#[test]
fn a_gradient_of_the_wrong_length_names_the_parameter_and_changes_nothing() {
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    let mut w = vec![1.0_f32; 3];
    let mut b = vec![2.0_f32; 2];
    let mut views = [
        ParamView { name: "0.weight", value: &mut w, grad: &[0.1; 3] },
        ParamView { name: "0.bias", value: &mut b, grad: &[0.1; 3] },
    ];
    let err = opt.step(&mut views).unwrap_err();
    assert_eq!(
        err,
        OptimError::GradLengthMismatch { name: "0.bias".into(), value_len: 2, grad_len: 3 }
    );
    assert!(err.to_string().contains("`0.bias`"), "{err}");
    assert_eq!((w, b), (vec![1.0; 3], vec![2.0; 2]), "a failed step must not update");
    assert_eq!(opt.steps(), 0);
    assert!(opt.state().arrays.is_empty());
}

#[test]
fn a_changed_parameter_list_is_refused_naming_the_parameter() {
    let mut opt = Sgd::new(SgdConfig { momentum: 0.5, ..SgdConfig::default() }).unwrap();
    let mut params = initial_params();
    step(&mut opt, &mut params).unwrap();
    let before = flat(&params);
    let grads = [vec![0.1_f32; SPLIT], vec![0.1_f32; 5 - SPLIT]];
    let [w, b] = &mut params;

    let mut swapped = [
        ParamView { name: NAMES[1], value: b, grad: &grads[1] },
        ParamView { name: NAMES[0], value: w, grad: &grads[0] },
    ];
    let err = opt.step(&mut swapped).unwrap_err();
    let expected = OptimError::ParamNameMismatch {
        index: 0,
        expected: "0.weight".into(),
        found: "0.bias".into(),
    };
    assert_eq!(err, expected);

    let mut fewer = [ParamView { name: NAMES[0], value: w, grad: &grads[0] }];
    let err = opt.step(&mut fewer).unwrap_err();
    assert_eq!(err, OptimError::ParamCountMismatch { expected: 2, found: 1 });

    let mut longer = vec![0.0_f32; SPLIT + 1];
    let longer_grad = vec![0.0_f32; SPLIT + 1];
    let mut resized = [
        ParamView { name: NAMES[0], value: &mut longer, grad: &longer_grad },
        ParamView { name: NAMES[1], value: b, grad: &grads[1] },
    ];
    let err = opt.step(&mut resized).unwrap_err();
    let expected = OptimError::StateLengthMismatch {
        name: "0.weight".into(),
        value_len: SPLIT + 1,
        state_len: SPLIT,
    };
    assert_eq!(err, expected);
    assert!(err.to_string().contains("`0.weight`"), "{err}");
    assert_eq!(flat(&params), before, "failed steps must not update");
    assert_eq!(opt.steps(), 1);
}

#[test]
fn a_state_from_another_model_is_refused_at_the_next_step() {
    let mut donor = AdamW::new(AdamConfig::adamw()).unwrap();
    let mut w = vec![1.0_f32; 4];
    donor
        .step(&mut [ParamView { name: "encoder.weight", value: &mut w, grad: &[1.0; 4] }])
        .unwrap();
    let state = donor.state();

    let mut opt = AdamW::new(AdamConfig::adamw()).unwrap();
    opt.load_state(&state).unwrap();
    let mut params = initial_params();
    let err = step(&mut opt, &mut params).unwrap_err();
    assert_eq!(err, OptimError::ParamCountMismatch { expected: 1, found: 2 });

    let mut v = vec![1.0_f32; 4];
    let err = opt
        .step(&mut [ParamView { name: "decoder.weight", value: &mut v, grad: &[1.0; 4] }])
        .unwrap_err();
    assert_eq!(
        err,
        OptimError::ParamNameMismatch {
            index: 0,
            expected: "encoder.weight".into(),
            found: "decoder.weight".into()
        }
    );
    assert_eq!(v, vec![1.0; 4]);
}

fn is_incompatible(result: Result<(), OptimError>) -> bool {
    matches!(result, Err(OptimError::IncompatibleState { .. }))
}

#[test]
fn another_optimizers_state_is_refused() {
    let mut adam = Adam::new(AdamConfig::default()).unwrap();
    let mut adamw = AdamW::new(AdamConfig::adamw()).unwrap();
    let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, ..SgdConfig::default() }).unwrap();
    run(&mut adam, 1);
    run(&mut adamw, 1);
    run(&mut sgd, 1);
    let (adam_state, adamw_state, sgd_state) = (adam.state(), adamw.state(), sgd.state());

    assert!(is_incompatible(sgd.load_state(&adam_state)));
    assert!(is_incompatible(adam.load_state(&sgd_state)));
    assert!(is_incompatible(adamw.load_state(&adam_state)));
    let err = adam.load_state(&adamw_state).unwrap_err();
    assert!(err.to_string().contains("AdamW's state"), "{err}");
    // Refused loads leave the optimizers as they were.
    assert_eq!((adam.state(), sgd.state()), (adam_state, sgd_state));
}

#[test]
fn a_malformed_state_is_refused() {
    let mut adam = Adam::new(AdamConfig::default()).unwrap();
    run(&mut adam, 1);
    let good = adam.state();

    let mut odd = good.clone();
    odd.arrays.pop();
    assert!(is_incompatible(adam.load_state(&odd)));

    let mut renamed = good.clone();
    renamed.arrays[1].0 = "0.bias.exp_avg_sq".into();
    assert!(is_incompatible(adam.load_state(&renamed)));

    let mut missing = good.clone();
    missing.scalars.remove("beta2");
    let err = adam.load_state(&missing).unwrap_err();
    assert!(err.to_string().contains("`beta2` is missing"), "{err}");

    let mut bad_value = good.clone();
    bad_value.scalars.insert("beta1".into(), 1.5);
    let err = adam.load_state(&bad_value).unwrap_err();
    assert!(matches!(err, OptimError::InvalidHyperparameter { name: "beta1", .. }), "{err}");

    let mut duplicated = good;
    let copy = duplicated.arrays[..2].to_vec();
    duplicated.arrays.splice(2..4, copy);
    let err = adam.load_state(&duplicated).unwrap_err();
    assert_eq!(err, OptimError::DuplicateParam { name: "0.weight".into() });
}

#[test]
fn duplicate_parameter_names_are_refused() {
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    let (mut a, mut b) = (vec![1.0_f32], vec![1.0_f32]);
    let err = opt
        .step(&mut [
            ParamView { name: "w", value: &mut a, grad: &[1.0] },
            ParamView { name: "w", value: &mut b, grad: &[1.0] },
        ])
        .unwrap_err();
    assert_eq!(err, OptimError::DuplicateParam { name: "w".into() });
}

#[test]
fn invalid_hyperparameters_are_refused_by_name() {
    let invalid = |result: Result<(), OptimError>| match result {
        Err(OptimError::InvalidHyperparameter { name, .. }) => name,
        other => panic!("expected an invalid hyperparameter, got {other:?}"),
    };
    let sgd = |c: SgdConfig| Sgd::new(c).map(drop);
    let adam = |c: AdamConfig| Adam::new(c).map(drop);
    let nesterov =
        SgdConfig { momentum: 0.9, dampening: 0.1, nesterov: true, ..SgdConfig::default() };
    assert_eq!(invalid(sgd(nesterov)), "nesterov");
    assert_eq!(invalid(sgd(SgdConfig { nesterov: true, ..SgdConfig::default() })), "nesterov");
    assert_eq!(invalid(sgd(SgdConfig { lr: -0.1, ..SgdConfig::default() })), "lr");
    assert_eq!(invalid(sgd(SgdConfig { momentum: f64::NAN, ..SgdConfig::default() })), "momentum");
    assert_eq!(invalid(adam(AdamConfig { beta1: 1.0, ..AdamConfig::default() })), "beta1");
    assert_eq!(invalid(adam(AdamConfig { beta2: -0.1, ..AdamConfig::default() })), "beta2");
    assert_eq!(invalid(adam(AdamConfig { eps: 0.0, ..AdamConfig::default() })), "eps");
    let negative_decay = AdamConfig { weight_decay: -1.0, ..AdamConfig::default() };
    assert_eq!(invalid(AdamW::new(negative_decay).map(drop)), "weight_decay");
    assert_eq!(invalid(GradAccumulator::new(0).map(drop)), "micro_batches");
}

#[test]
fn optimizer_config_reads_from_json_and_rejects_unknown_fields() {
    let config: OptimizerConfig =
        serde_json::from_str(r#"{"kind": "sgd", "lr": 0.5, "momentum": 0.9}"#).unwrap();
    let expected = SgdConfig { lr: 0.5, momentum: 0.9, ..SgdConfig::default() };
    assert_eq!(config, OptimizerConfig::Sgd(expected));
    assert!(config.build().unwrap().lr() == 0.5);
    let typo = serde_json::from_str::<OptimizerConfig>(r#"{"kind": "adamw", "betta1": 0.9}"#);
    assert!(typo.is_err());
}

// ---------------------------------------------------------------------------
// Schedules, against hand-computed values.

#[test]
fn constant_and_step_schedules_at_their_boundaries() {
    let constant = LrSchedule::Constant { lr: 0.3 };
    assert_eq!([constant.lr_at(0), constant.lr_at(1_000_000)], [0.3, 0.3]);

    let step = LrSchedule::Step { lr: 0.8, step_size: 10, gamma: 0.5 };
    step.validate().unwrap();
    let at = |s| step.lr_at(s);
    assert_eq!([at(0), at(9), at(10), at(19), at(20), at(35)], [0.8, 0.8, 0.4, 0.4, 0.2, 0.1]);
}

#[test]
fn warmup_cosine_schedule_at_its_boundaries() {
    let schedule =
        LrSchedule::WarmupCosine { lr: 1.0, warmup_steps: 4, total_steps: 14, min_lr: 0.1 };
    schedule.validate().unwrap();
    let close = |step: u64, expected: f64| {
        let got = schedule.lr_at(step);
        assert!((got - expected).abs() < 1e-12, "step {step}: {got}, expected {expected}");
    };
    close(0, 0.2); // first warmup step: 1/5
    close(3, 0.8); // last warmup step: 4/5
    close(4, 1.0); // end of warmup: the peak
    close(6, 0.914_057_647_468_726_1); // progress 0.2: 0.1 + 0.9·½(1 + cos 0.2π)
    close(9, 0.55); // mid-decay: progress ½, cosine factor ½
    close(13, 0.122_024_567_667_180_9); // progress 0.9: 0.1 + 0.9·½(1 + cos 0.9π)
    close(14, 0.1); // end
    close(1_000, 0.1); // past the end

    let no_warmup =
        LrSchedule::WarmupCosine { lr: 2.0, warmup_steps: 0, total_steps: 4, min_lr: 0.0 };
    assert_eq!(no_warmup.lr_at(0), 2.0);
    assert!((no_warmup.lr_at(2) - 1.0).abs() < 1e-12);
    assert_eq!(no_warmup.lr_at(4), 0.0);
}

#[test]
fn invalid_schedules_are_refused() {
    let name = |schedule: LrSchedule| match schedule.validate() {
        Err(OptimError::InvalidHyperparameter { name, .. }) => name,
        other => panic!("{schedule:?} should be invalid, got {other:?}"),
    };
    assert_eq!(name(LrSchedule::Step { lr: 0.1, step_size: 0, gamma: 0.5 }), "step_size");
    assert_eq!(name(LrSchedule::Step { lr: 0.1, step_size: 3, gamma: -0.5 }), "gamma");
    assert_eq!(
        name(LrSchedule::WarmupCosine { lr: 0.1, warmup_steps: 10, total_steps: 5, min_lr: 0.0 }),
        "total_steps"
    );
    assert_eq!(
        name(LrSchedule::WarmupCosine { lr: 0.1, warmup_steps: 1, total_steps: 5, min_lr: 0.2 }),
        "min_lr"
    );
    assert_eq!(name(LrSchedule::Constant { lr: f64::INFINITY }), "lr");
}

// ---------------------------------------------------------------------------
// Gradient accumulation.

/// Linear regression y ≈ w·x + b on `examples`, mean squared error; returns
/// the f32 gradient with respect to (w, b), summing examples in order.
fn regression_grad(examples: &[([f32; 4], f32)], w: &[f32; 4], b: f32) -> (Vec<f32>, Vec<f32>) {
    let (mut gw, mut gb) = (vec![0.0_f32; 4], 0.0_f32);
    let scale = 2.0 / examples.len() as f32;
    for (x, y) in examples {
        let residual = w.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + b - y;
        for (g, x) in gw.iter_mut().zip(x) {
            *g += scale * residual * x;
        }
        gb += scale * residual;
    }
    (gw, vec![gb])
}

fn regression_data(n: usize) -> Vec<([f32; 4], f32)> {
    let mut rng = zbmd_ml::rng::Rng::new(7);
    (0..n)
        .map(|_| {
            let x = [0; 4].map(|_| rng.next_f32() * 4.0 - 2.0);
            let y = 0.5 * x[0] - 1.5 * x[1] + x[2] * x[3] + rng.next_f32();
            (x, y)
        })
        .collect()
}

#[test]
fn two_micro_batches_of_32_average_to_the_gradient_of_one_batch_of_64() {
    let data = regression_data(64);
    let (w, b) = ([0.3, -0.2, 0.1, 0.4], 0.05);
    let (full_w, full_b) = regression_grad(&data, &w, b);

    let mut acc = GradAccumulator::new(2).unwrap();
    for half in data.chunks(32) {
        let (gw, gb) = regression_grad(half, &w, b);
        acc.add(&[("0.weight", &gw), ("0.bias", &gb)]).unwrap();
    }
    assert!(acc.is_complete());
    acc.average().unwrap();
    acc.average().unwrap(); // idempotent: a second call must not halve again
    let full = [full_w, full_b].concat();
    let (nw, gw) = acc.grad(0).unwrap();
    let (nb, gb) = acc.grad(1).unwrap();
    assert_eq!((nw, nb, acc.len()), ("0.weight", "0.bias", 2));
    let averaged = [gw, gb].concat();
    let magnitude = full.iter().fold(0.0_f32, |m, g| m.max(g.abs()));
    for (i, (a, f)) in averaged.iter().zip(&full).enumerate() {
        // Same up to f32 rounding of sums taken in a different grouping.
        assert!((a - f).abs() <= 8.0 * f32::EPSILON * magnitude, "element {i}: {a} vs {f}");
    }
    // Halving again would be far off, so the check above can fail.
    assert!((averaged[0] / 2.0 - full[0]).abs() > 1e-3);
}

#[test]
fn fixed_chunks_give_bit_identical_gradients_whatever_the_micro_batch() {
    // The recipe from the module docs: gradients always computed per chunk of
    // 8 examples. A device running the whole batch of 64 per call and one
    // running micro-batches of 16 produce the same chunk sequence.
    let data = regression_data(64);
    let (w, b) = ([0.3, -0.2, 0.1, 0.4], 0.05);
    let chunk_grads = |micro_batch: usize, acc: &mut GradAccumulator| {
        for micro in data.chunks(micro_batch) {
            for chunk in micro.chunks(8) {
                let (gw, gb) = regression_grad(chunk, &w, b);
                acc.add(&[("w", &gw), ("b", &gb)]).unwrap();
            }
        }
        acc.average().unwrap();
        [acc.grad(0).unwrap().1, acc.grad(1).unwrap().1].concat()
    };
    let mut acc = GradAccumulator::new(8).unwrap();
    let whole = chunk_grads(64, &mut acc);
    acc.reset();
    let halved = chunk_grads(16, &mut acc);
    assert_eq!(bits(&whole), bits(&halved));
}

#[test]
fn accumulator_bounds_and_mismatches_are_named_errors() {
    let mut acc = GradAccumulator::new(2).unwrap();
    acc.add(&[("w", &[1.0, 2.0])]).unwrap();
    assert_eq!(
        acc.average().unwrap_err(),
        OptimError::AccumulatorIncomplete { added: 1, micro_batches: 2 }
    );
    let err = acc.add(&[("v", &[1.0, 2.0])]).unwrap_err();
    assert!(matches!(&err, OptimError::AccumulatorMismatch { found, .. } if found == "v"), "{err}");
    let err = acc.add(&[("w", &[1.0])]).unwrap_err();
    assert!(matches!(err, OptimError::AccumulatorMismatch { found_len: 1, .. }), "{err}");
    let err = acc.add(&[("w", &[1.0, 2.0]), ("b", &[0.0])]).unwrap_err();
    assert_eq!(err, OptimError::ParamCountMismatch { expected: 1, found: 2 });
    assert_eq!(acc.added(), 1, "refused micro-batches are not counted");
    acc.add(&[("w", &[3.0, 4.0])]).unwrap();
    assert_eq!(
        acc.add(&[("w", &[0.0, 0.0])]).unwrap_err(),
        OptimError::AccumulatorFull { micro_batches: 2 }
    );
    acc.average().unwrap();
    assert_eq!(acc.grad(0).unwrap().1, [2.0, 3.0]);
    acc.reset();
    assert_eq!((acc.added(), acc.grad(0).unwrap().1), (0, &[0.0_f32, 0.0][..]));
}
