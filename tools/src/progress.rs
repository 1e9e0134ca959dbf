//! What `zbmd-node train` shows while it runs and at the end: a progress bar
//! on a terminal, log lines otherwise, or one JSON object per line and event.
//!
//! Log lines and JSON go to standard output (so `--log-format json` output
//! is a clean stream of JSON lines); the progress bar, and the lines printed
//! above it while it runs, go to standard error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use zbmd_ml::train::{EpochInfo, Observer, RecoveryInfo, StepInfo, TrainConfig, TrainReport};

use crate::train::LogFormat;

/// Where and how events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A progress bar on standard error, other events printed above it.
    Bar,
    /// Lines on standard output, in this format.
    Lines(LogFormat),
    /// Only the summary, in this format.
    Quiet(LogFormat),
}

/// One thing worth telling.
pub enum Event<'a> {
    /// The run is about to start.
    Start {
        /// Its settings.
        config: &'a TrainConfig,
        /// The data and why its format was chosen.
        data: &'a str,
    },
    /// An optimizer step finished.
    Step(&'a StepInfo),
    /// An epoch finished.
    Epoch(&'a EpochInfo),
    /// A fault was recovered.
    Recovery(&'a RecoveryInfo),
    /// A checkpoint was written.
    Checkpoint {
        /// The step it holds.
        step: u64,
        /// Its file.
        path: &'a Path,
    },
    /// The run resumes, or starts afresh where it could have resumed.
    Resume(&'a str),
    /// Something the user must hear even with `--quiet` (a checkpoint
    /// skipped as corrupt or that could not be written): written to
    /// standard error always, and as a JSON line too in JSON output.
    Warning(&'a str),
    /// The run finished.
    Summary(Box<Summary>),
}

/// The end-of-run figures.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Held-out accuracy, in [0, 1].
    pub test_accuracy: f32,
    /// Held-out loss.
    pub test_loss: f32,
    /// Optimizer steps completed in all (before a resume too).
    pub steps: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// Wall time of this run.
    pub wall_time: Duration,
    /// Steps per second in this run.
    pub steps_per_sec: f64,
    /// Faults injected in this run.
    pub faults_injected: u64,
    /// Each recovery: target, step, action, time.
    pub recoveries: Vec<RecoveryInfo>,
    /// The device the model ended on.
    pub device: String,
    /// The step resumed from (0: a fresh run).
    pub resumed_from: u64,
    /// Where the parameters were saved.
    pub save_params: Option<PathBuf>,
    /// Where the plot was written, and a note about it.
    pub plot: Option<(PathBuf, String)>,
    /// The newest checkpoint written: step and file.
    pub last_checkpoint: Option<(u64, PathBuf)>,
    /// Checkpoints that could not be written: step and why.
    pub checkpoint_failures: Vec<(u64, String)>,
}

impl Summary {
    /// The summary of `report`.
    pub fn new(
        report: &TrainReport,
        config: &TrainConfig,
        plot: Option<(PathBuf, String)>,
    ) -> Self {
        Summary {
            test_accuracy: report.test_accuracy,
            test_loss: report.test_loss,
            steps: report.steps,
            epochs: report.epochs,
            wall_time: report.wall_time,
            steps_per_sec: report.steps_per_sec,
            faults_injected: report.faults_injected,
            recoveries: report.recoveries.clone(),
            device: report.device.clone(),
            resumed_from: report.resumed_from,
            save_params: config.save_params.clone(),
            plot,
            last_checkpoint: report.last_checkpoint.clone(),
            checkpoint_failures: report.checkpoint_failures.clone(),
        }
    }

    /// Mean and maximum recovery time, if there was any recovery.
    pub fn recovery_stats(&self) -> Option<(Duration, Duration)> {
        let times: Vec<Duration> = self.recoveries.iter().map(|r| r.recovery_time).collect();
        let max = times.iter().copied().max()?;
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        Some((mean, max))
    }
}

/// Hears a run's progress and shows it: the [`Observer`] of `zbmd-node train`.
pub struct Reporter {
    output: Output,
    log_every: u64,
    bar: Option<ProgressBar>,
    epochs: u64,
    last_step: Option<StepInfo>,
    /// The signal that asked the run to stop (0: none yet), set by the
    /// signal handler.
    stop: Option<Arc<AtomicUsize>>,
    /// Why standard output could not be written, once it could not.
    output_error: Option<String>,
}

impl Reporter {
    /// A reporter writing to `output`, logging every `log_every`-th step.
    pub fn new(output: Output, log_every: u64) -> Reporter {
        Reporter {
            output,
            log_every: log_every.max(1),
            bar: None,
            epochs: 0,
            last_step: None,
            stop: None,
            output_error: None,
        }
    }

    /// Asks the run to stop once `signal` holds a signal number.
    pub fn stop_on(mut self, signal: Arc<AtomicUsize>) -> Reporter {
        self.stop = Some(signal);
        self
    }

    /// Why standard output could not be written, if it could not: the run
    /// then went on, but its log (or its summary) is incomplete.
    pub fn output_error(&self) -> Option<&str> {
        self.output_error.as_deref()
    }

    /// Clears the progress bar; call before printing anything else.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        // The last step is always logged, even off the `log_every` grid.
        if let (Some(step), Output::Lines(_)) = (self.last_step.take(), self.output) {
            if step.step % self.log_every != 0 {
                self.line(&Event::Step(&step));
            }
        }
    }

    /// Shows one event as the output says.
    pub fn event(&mut self, event: &Event<'_>) {
        if let Event::Warning(message) = event {
            return self.warning(message);
        }
        match (self.output, event) {
            (Output::Quiet(_), Event::Summary(_)) => self.line(event),
            (Output::Quiet(_), _) => {}
            (Output::Bar, Event::Step(step)) => self.bar_step(step),
            (Output::Lines(_), Event::Step(step)) => {
                self.last_step = Some(**step);
                if step.step % self.log_every == 0 {
                    self.line(event);
                }
            }
            _ => self.line(event),
        }
    }

    /// Writes one event as a line (or several, for a text summary): above
    /// the bar if there is one, else on standard output.
    fn line(&mut self, event: &Event<'_>) {
        if let Event::Start { config, .. } = event {
            self.epochs = config.epochs;
        }
        let format = match self.output {
            Output::Bar => LogFormat::Text,
            Output::Lines(format) | Output::Quiet(format) => format,
        };
        let text = match format {
            LogFormat::Text => text(event, self.epochs),
            LogFormat::Json => json_of(event).to_string(),
        };
        match &self.bar {
            Some(bar) => bar.println(text),
            None => self.print(&text),
        }
    }

    /// Writes a line to standard output. A closed pipe (`| head`) or a full
    /// device ends the writing, not the run: the first failure is said on
    /// standard error, and the run's exit code reports it in the end.
    fn print(&mut self, text: &str) {
        if self.output_error.is_some() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(error) = writeln!(out, "{text}").and_then(|()| out.flush()) {
            let error = format!("standard output: {error}");
            let _ = writeln!(
                std::io::stderr(),
                "warning: {error}: the log is no longer written there; training goes on"
            );
            self.output_error = Some(error);
        }
    }

    /// A warning: on standard error (above the bar), whatever the output
    /// mode, and as a JSON line on standard output in JSON mode.
    fn warning(&mut self, message: &str) {
        let text = format!("warning: {message}");
        match &self.bar {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(std::io::stderr(), "{text}");
            }),
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
        if self.output == Output::Lines(LogFormat::Json) {
            self.print(&json!({ "event": "warning", "message": message }).to_string());
        }
    }

    fn bar_step(&mut self, step: &StepInfo) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar =
                ProgressBar::with_draw_target(Some(step.total_steps), ProgressDrawTarget::stderr());
            let template =
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}  ETA {eta}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        bar.set_length(step.total_steps);
        bar.set_position(step.step);
        bar.set_message(format!(
            "epoch {}  loss {:.4}  {:.0} ex/s",
            step.epoch + 1,
            step.loss,
            step.examples_per_sec
        ));
    }
}

impl Observer for Reporter {
    fn on_step(&mut self, step: &StepInfo) {
        self.event(&Event::Step(step));
    }
    fn on_epoch(&mut self, epoch: &EpochInfo) {
        self.event(&Event::Epoch(epoch));
    }
    fn on_recovery(&mut self, recovery: &RecoveryInfo) {
        self.event(&Event::Recovery(recovery));
    }
    fn on_checkpoint(&mut self, step: u64, path: &Path) {
        self.event(&Event::Checkpoint { step, path });
    }
    fn on_resume(&mut self, message: &str) {
        self.event(&Event::Resume(message));
    }
    fn on_warning(&mut self, message: &str) {
        self.event(&Event::Warning(message));
    }
    fn stop_requested(&mut self) -> Option<String> {
        let signal = self.stop.as_ref()?.load(Ordering::Relaxed);
        (signal != 0).then(|| signal_name(signal as i32))
    }
}

/// The name of a signal `zbmd-node train` stops on (`SIGTERM`, `SIGINT`);
/// any other by its number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        other => format!("signal {other}"),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// An event as text (a summary takes several lines).
fn text(event: &Event<'_>, epochs: u64) -> String {
    match event {
        Event::Start { config, data } => format!(
            "training model {} on {data}: {} epochs, batch {}, seed {}, backend {}",
            config.model,
            config.epochs,
            config.batch_size,
            config.seed,
            config.backend.as_deref().unwrap_or("any (best first)")
        ),
        Event::Step(step) => format!(
            "step {}/{}  epoch {}  loss {:.4}  lr {:.3e}  {:.0} examples/s",
            step.step,
            step.total_steps,
            step.epoch + 1,
            step.loss,
            step.lr,
            step.examples_per_sec
        ),
        Event::Epoch(epoch) => format!(
            "epoch {}/{epochs}: train loss {:.4}, test loss {:.4}, test accuracy {:.2}%",
            epoch.epoch + 1,
            epoch.train_loss,
            epoch.test_loss,
            epoch.test_accuracy * 100.0
        ),
        Event::Recovery(recovery) => format!(
            "recovered: {} fault at step {}: {} ({:.2} ms)",
            recovery.target.name(),
            recovery.step,
            recovery.action,
            ms(recovery.recovery_time)
        ),
        Event::Checkpoint { step, path } => {
            format!("checkpoint: step {step} written to {}", path.display())
        }
        Event::Resume(message) => format!("resume: {message}"),
        Event::Warning(message) => format!("warning: {message}"),
        Event::Summary(summary) => summary_text(summary),
    }
}

fn summary_text(summary: &Summary) -> String {
    let mut lines = vec![
        format!(
            "held-out accuracy: {:.2}% (test loss {:.4})",
            summary.test_accuracy * 100.0,
            summary.test_loss
        ),
        format!(
            "{} steps, {} epochs in {:.2} s ({:.1} steps/s) on {}",
            summary.steps,
            summary.epochs,
            summary.wall_time.as_secs_f64(),
            summary.steps_per_sec,
            summary.device
        ),
    ];
    if summary.resumed_from > 0 {
        lines.push(format!("resumed from step {}", summary.resumed_from));
    }
    let mut faults = format!(
        "faults: {} injected, {} recovered",
        summary.faults_injected,
        summary.recoveries.len()
    );
    if let Some((mean, max)) = summary.recovery_stats() {
        faults.push_str(&format!("; recovery time mean {:.2} ms, max {:.2} ms", ms(mean), ms(max)));
    }
    lines.push(faults);
    for recovery in &summary.recoveries {
        lines.push(format!(
            "  {} at step {}: {} ({:.2} ms)",
            recovery.target.name(),
            recovery.step,
            recovery.action,
            ms(recovery.recovery_time)
        ));
    }
    if let Some(path) = &summary.save_params {
        lines.push(format!("parameters saved to {}", path.display()));
    }
    if let Some((path, note)) = &summary.plot {
        lines.push(format!("plot written to {}{note}", path.display()));
    }
    if let Some((step, path)) = &summary.last_checkpoint {
        lines.push(format!("last checkpoint: step {step}, {}", path.display()));
    }
    if !summary.checkpoint_failures.is_empty() {
        let steps: Vec<String> =
            summary.checkpoint_failures.iter().map(|(step, _)| step.to_string()).collect();
        lines.push(format!(
            "checkpoints NOT written: {} (steps {})",
            steps.len(),
            steps.join(", ")
        ));
    }
    lines.join("\n")
}

/// An event as one JSON object, its kind under `"event"`.
fn json_of(event: &Event<'_>) -> Value {
    match event {
        Event::Start { config, data } => json!({
            "event": "start",
            "data": data,
            "config": serde_json::to_value(config).unwrap_or(Value::Null),
        }),
        Event::Step(step) => json!({
            "event": "step",
            "step": step.step,
            "total_steps": step.total_steps,
            "epoch": step.epoch,
            "loss": step.loss,
            "lr": step.lr,
            "examples_per_sec": step.examples_per_sec,
        }),
        Event::Epoch(epoch) => json!({
            "event": "epoch",
            "epoch": epoch.epoch,
            "train_loss": epoch.train_loss,
            "test_loss": epoch.test_loss,
            "test_accuracy": epoch.test_accuracy,
        }),
        Event::Recovery(recovery) => json!({
            "event": "recovery",
            "target": recovery.target.name(),
            "step": recovery.step,
            "action": recovery.action,
            "recovery_ms": ms(recovery.recovery_time),
        }),
        Event::Checkpoint { step, path } => json!({
            "event": "checkpoint",
            "step": step,
            "path": path.display().to_string(),
        }),
        Event::Resume(message) => json!({ "event": "resume", "message": message }),
        Event::Warning(message) => json!({ "event": "warning", "message": message }),
        Event::Summary(summary) => {
            let stats = summary.recovery_stats();
            json!({
                "event": "summary",
                "test_accuracy": summary.test_accuracy,
                "test_loss": summary.test_loss,
                "steps": summary.steps,
                "epochs": summary.epochs,
                "wall_time_s": summary.wall_time.as_secs_f64(),
                "steps_per_sec": summary.steps_per_sec,
                "faults_injected": summary.faults_injected,
                "faults_recovered": summary.recoveries.len(),
                "recoveries": summary.recoveries.iter().map(|recovery| json!({
                    "target": recovery.target.name(),
                    "step": recovery.step,
                    "action": recovery.action,
                    "recovery_ms": ms(recovery.recovery_time),
                })).collect::<Vec<_>>(),
                "recovery_mean_ms": stats.map(|(mean, _)| ms(mean)),
                "recovery_max_ms": stats.map(|(_, max)| ms(max)),
                "device": summary.device,
                "resumed_from": summary.resumed_from,
                "save_params": summary.save_params.as_ref().map(|p| p.display().to_string()),
                "plot": summary.plot.as_ref().map(|(p, _)| p.display().to_string()),
                "last_checkpoint": summary.last_checkpoint.as_ref().map(|(step, path)| json!({
                    "step": step,
                    "path": path.display().to_string(),
                })),
                "checkpoint_failures": summary.checkpoint_failures.iter().map(|(step, error)| json!({
                    "step": step,
                    "error": error,
                })).collect::<Vec<_>>(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbmd_ml::train::FaultTarget;

    fn summary() -> Summary {
        let recovery = |ms: u64| RecoveryInfo {
            target: FaultTarget::Model,
            step: 10,
            action: "restored from the snapshot of step 9".into(),
            recovery_time: Duration::from_millis(ms),
        };
        Summary {
            test_accuracy: 0.95,
            test_loss: 0.2,
            steps: 100,
            epochs: 5,
            wall_time: Duration::from_secs(2),
            steps_per_sec: 50.0,
            faults_injected: 2,
            recoveries: vec![recovery(1), recovery(3)],
            device: "cpu:0".into(),
            resumed_from: 40,
            save_params: None,
            plot: None,
            last_checkpoint: None,
            checkpoint_failures: Vec::new(),
        }
    }

    #[test]
    fn summary_gives_mean_and_max_recovery_and_the_resume_point() {
        let summary = summary();
        assert_eq!(
            summary.recovery_stats(),
            Some((Duration::from_millis(2), Duration::from_millis(3)))
        );
        let value = json_of(&Event::Summary(Box::new(summary.clone())));
        assert_eq!(value["event"], "summary");
        assert_eq!(value["faults_recovered"], 2);
        assert_eq!(value["recovery_max_ms"], 3.0);
        assert_eq!(value["resumed_from"], 40);
        let text = summary_text(&summary);
        assert!(text.contains("95.00%"), "{text}");
        assert!(text.contains("resumed from step 40"), "{text}");
        assert!(text.contains("mean 2.00 ms, max 3.00 ms"), "{text}");
    }

    #[test]
    fn no_recovery_means_no_recovery_times() {
        let summary = Summary { recoveries: Vec::new(), faults_injected: 0, ..summary() };
        assert_eq!(summary.recovery_stats(), None);
        assert_eq!(json_of(&Event::Summary(Box::new(summary)))["recovery_mean_ms"], Value::Null);
    }
}
