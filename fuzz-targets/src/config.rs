//! Settings a user types: the training TOML, `--faults` and
//! `ZBMD_FAULT_INJECTION`.

use zbmd_ml::train::{FaultSchedule, TrainConfig};
use zbmd_rt::fault::FaultPlan;

use super::{says_something, text};

/// A training TOML through `TrainConfig::from_toml`: a parsed config
/// validates and builds its optimizer without panicking, and written back as TOML it parses to the
/// same config (where it has no NaN, which equals nothing).
pub fn train_config(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let config = match TrainConfig::from_toml(text) {
        Ok(config) => config,
        Err(error) => return says_something(&error),
    };
    if let Err(error) = config.validate() {
        says_something(&error);
    }
    if let Err(error) = config.optimizer.build() {
        says_something(&error);
    }
    #[allow(clippy::eq_op)] // NaN is the one value not equal to itself
    let comparable = config == config;
    if comparable {
        let written = toml::to_string(&config).expect("a parsed config writes as TOML");
        let again = TrainConfig::from_toml(&written);
        assert_eq!(again.as_ref(), Ok(&config), "written back as:\n{written}");
    }
}

/// A `--faults` schedule through `FaultSchedule::parse`: every step is
/// positive, and the schedule written back as `target@step,...` parses to
/// the same schedule.
pub fn fault_schedule(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    match FaultSchedule::parse(text) {
        Ok(schedule) => {
            assert!(schedule.at.iter().all(|&(_, step)| step > 0), "a step of 0");
            let written: Vec<String> = schedule
                .at
                .iter()
                .map(|(target, step)| format!("{}@{step}", target.name()))
                .collect();
            assert_eq!(FaultSchedule::parse(&written.join(",")), Ok(schedule));
        }
        Err(error) => says_something(&error),
    }
}

/// A `ZBMD_FAULT_INJECTION` value through `FaultPlan::parse`: a parsed plan
/// validates, and its `Display` parses back to the same plan (the round
/// trip the grammar's docs promise).
pub fn fault_plan(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    match FaultPlan::parse(text) {
        Ok(plan) => {
            assert_eq!(plan.validate(), Ok(()));
            let written = plan.to_string();
            assert_eq!(FaultPlan::parse(&written), Ok(plan), "written back as {written:?}");
        }
        Err(error) => says_something(&error),
    }
}
