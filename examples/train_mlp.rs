//! Trains an MLP on the embedded UCI digits under supervision, with a crash
//! of every actor and a lost device injected on the way, and shows that
//! the run ends exactly where an unfaulted run does.
//!
//! Run with `cargo run --release -p zbmd-ml --example train_mlp`.

use zbmd_ml::train::{EpochInfo, FaultSchedule, Observer, RecoveryInfo, TrainConfig, train};

/// Prints each epoch and each recovery.
struct Print;

impl Observer for Print {
    fn on_epoch(&mut self, epoch: &EpochInfo) {
        println!(
            "epoch {:>2}: train loss {:.4}, held-out loss {:.4}, accuracy {:.1}%",
            epoch.epoch + 1,
            epoch.train_loss,
            epoch.test_loss,
            100.0 * epoch.test_accuracy
        );
    }

    fn on_recovery(&mut self, recovery: &RecoveryInfo) {
        println!(
            "  recovered from {} at step {} in {:?}: {}",
            recovery.target.name(),
            recovery.step,
            recovery.recovery_time,
            recovery.action
        );
    }
}

fn main() {
    // A [64, 128, 10] MLP, SGD with momentum, batches of 64, 10 epochs.
    let config = TrainConfig { epochs: 10, grad_chunk: 16, ..TrainConfig::default() };
    println!("an unfaulted run:");
    let clean = train(&config, &mut Print).expect("training");

    let faults =
        FaultSchedule::parse("model@20,optimizer@50,loader@80,device_lost@120,device_oom@150")
            .expect("a fault schedule");
    println!("\nthe same run with {} faults injected:", faults.at.len());
    let faulted = train(&TrainConfig { faults, ..config }, &mut Print).expect("training");

    println!(
        "\nheld-out accuracy {:.1}% (clean) and {:.1}% (faulted); parameters bit-identical: {}",
        100.0 * clean.test_accuracy,
        100.0 * faulted.test_accuracy,
        faulted.same_parameters(&clean)
    );
    assert!(faulted.same_parameters(&clean));
}
