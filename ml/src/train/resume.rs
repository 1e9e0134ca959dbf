//! Where a run's checkpoints go and where it starts: the run's identity,
//! what a checkpoint must hold to be resumed from, the store (opened, and
//! its directory locked, before the first step) and the checkpoint a
//! `resume` continues from.
//!
//! A run's identity is everything that determines its trajectory: the
//! model (a TOML model file by its contents), the data (by its contents),
//! the split, batch size, gradient chunk, optimizer, schedule and seed. The
//! number of epochs is not part of it (a resumed run may be made longer),
//! nor are the backend, the checkpoint and snapshot intervals or the
//! faults, which change how a run gets there, never where it goes. A
//! directory holding other runs' checkpoints is refused unless
//! `allow_other_runs` says to write beside them.

use std::sync::Arc;

use serde_json::json;

use crate::checkpoint::{
    Checkpoint, CheckpointStore, ContentCheck, ContentError, OtherCheckpoint, RunIdentity,
};
use crate::data::Dataset;
use crate::train::commit::{Committed, Layout};
use crate::train::{DataSource, Observer, TrainConfig, TrainError};

/// The identity of the run `config` describes, over `dataset` (the data
/// as loaded and scaled, before the split).
pub(crate) fn run_identity(
    config: &TrainConfig,
    dataset: &Dataset,
) -> Result<RunIdentity, TrainError> {
    let model = if config.model.trim_start().starts_with('[') {
        json!(config.model.trim())
    } else {
        let text = std::fs::read(&config.model)
            .map_err(|error| TrainError::Config(format!("model file {}: {error}", config.model)))?;
        json!({ "file": config.model, "contents": digest(&[&text]) })
    };
    // The data by its kind and contents (scaled already), not by its
    // paths: the same file moved is the same run.
    let data = match &config.data {
        DataSource::Digits => "digits",
        DataSource::Csv { .. } => "csv",
        DataSource::Idx { .. } => "idx",
    };
    let features: Vec<u8> = dataset.features.iter().flat_map(|x| x.to_le_bytes()).collect();
    let labels: Vec<u8> = dataset.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
    let settings = json!({
        "model": model,
        "data": {
            "source": data,
            "rows": dataset.len(),
            "features": dataset.dim,
            "contents": digest(&[&features, &labels]),
        },
        "test_fraction": config.test_fraction,
        "batch_size": config.batch_size,
        "grad_chunk": config.grad_chunk,
        "seed": config.seed,
        "optimizer": config.optimizer,
        "schedule": config.schedule,
    });
    Ok(RunIdentity::from_json(&settings))
}

/// A stable 64-bit digest of some bytes, as 16 hex digits.
fn digest(parts: &[&[u8]]) -> String {
    let mut hash = crate::checkpoint::Fnv1a::new();
    for part in parts {
        hash.write(&(part.len() as u64).to_le_bytes());
        hash.write(part);
    }
    format!("{:016x}", hash.finish())
}

/// What a checkpoint of this run must hold, beyond what its checksum
/// proves: finite values only (training stops at the first non-finite
/// loss or parameter, so it never writes one), the model's parameters with
/// their shapes, optimizer state the optimizer accepts, and a loader
/// position in this run's data at the checkpoint's step.
pub(crate) fn content_check(
    layout: Layout,
    config: &TrainConfig,
    train_rows: u64,
    batches_per_epoch: u64,
) -> ContentCheck {
    let optimizer = config.optimizer.clone();
    let batch_size = config.batch_size as u64;
    Box::new(move |checkpoint: &Checkpoint| {
        for tensor in &checkpoint.tensors {
            if let Some((index, value)) =
                tensor.data.iter().enumerate().find(|(_, value)| !value.is_finite())
            {
                return Err(ContentError::NonFinite {
                    tensor: tensor.name.clone(),
                    index,
                    value: *value,
                });
            }
        }
        let (committed, _) = Committed::from_checkpoint(checkpoint, &layout)
            .map_err(|error| ContentError::Tensors { reason: error.to_string() })?;
        let mut built = optimizer.build().map_err(|source| ContentError::Optimizer { source })?;
        built
            .load_state(&committed.optimizer)
            .map_err(|source| ContentError::OptimizerState { source })?;
        let loader = committed.loader;
        let at = loader
            .epoch
            .checked_mul(batches_per_epoch)
            .and_then(|s| s.checked_add(loader.batch_index));
        if loader.rows != train_rows
            || loader.batch_size != batch_size
            || loader.batch_index >= batches_per_epoch
            || at != Some(checkpoint.step)
        {
            return Err(ContentError::LoaderPosition {
                found: loader,
                step: checkpoint.step,
                rows: train_rows,
                batch_size,
            });
        }
        Ok(())
    })
}

/// Opens the run's checkpoint store, if it has a directory: takes the
/// directory's lock and checks it can be written (before any step runs),
/// and refuses a directory holding other runs' checkpoints unless the
/// settings allow it. Every failure here is the user's to fix, a
/// `TrainError::Config`.
pub(crate) fn open_store(
    config: &TrainConfig,
    run: RunIdentity,
    check: ContentCheck,
) -> Result<Option<Arc<CheckpointStore>>, TrainError> {
    let Some(dir) = &config.checkpoint_dir else { return Ok(None) };
    let store = CheckpointStore::open_run(dir.clone(), config.keep_checkpoints, run, check)
        .map_err(|error| TrainError::Config(format!("checkpoint_dir: {error}")))?;
    let others = store.others().map_err(|error| TrainError::Config(error.to_string()))?;
    let Some(newest) = others.first() else { return Ok(Some(Arc::new(store))) };
    if config.allow_other_runs {
        return Ok(Some(Arc::new(store)));
    }
    let how = describe_other(&store, newest);
    let resume = if config.resume {
        " A resumed run keeps the settings it was started with: give the same ones to resume it."
    } else {
        ""
    };
    Err(TrainError::Config(format!(
        "checkpoint_dir {}: holds {} checkpoint file(s) of another run, the newest {} {how}.{resume} \
         This run would neither resume from nor delete them: use another directory, remove \
         them, or allow other runs' files beside this run's (allow_other_runs, --allow-other-runs)",
        dir.display(),
        others.len(),
        newest.path.display(),
    )))
}

/// How another run's checkpoint differs from this run: "named without a
/// run", or the settings that differ (the first few).
fn describe_other(store: &CheckpointStore, other: &OtherCheckpoint) -> String {
    let (Some(ours), Some(_)) = (store.run(), other.run) else {
        return "named without a run (written by an older zbmd or another tool)".to_string();
    };
    let Some(theirs) = other_run(&other.path) else { return "of another run".to_string() };
    let differences = ours.differences(&theirs);
    let shown = differences.iter().take(4).cloned().collect::<Vec<_>>().join("; ");
    let more = match differences.len().saturating_sub(4) {
        0 => String::new(),
        more => format!("; and {more} more"),
    };
    format!("written with other settings ({shown}{more})")
}

/// The identity another run's checkpoint file was stamped with, if it
/// reads.
fn other_run(path: &std::path::Path) -> Option<RunIdentity> {
    let bytes = std::fs::read(path).ok()?;
    RunIdentity::of_checkpoint(&Checkpoint::decode(&bytes, path).ok()?)
}

/// The checkpoint a run starts from: with `resume`, this run's newest valid
/// one in `store` (each newer one skipped is a warning), or `None` to
/// start from step 0. A checkpoint past the run's `total_steps` is
/// refused: the run is shorter than the one that wrote it.
pub(crate) fn resume_point(
    store: Option<&CheckpointStore>,
    config: &TrainConfig,
    total_steps: u64,
    batches_per_epoch: u64,
    observer: &mut dyn Observer,
) -> Result<Option<Checkpoint>, TrainError> {
    let Some(store) = store else { return Ok(None) };
    if !config.resume {
        // Known from opening the store: no file is read again.
        if let Some(step) = store.newest_valid_step() {
            observer.on_warning(&format!(
                "{} holds this run's checkpoints up to step {step}: starting from step 0 as \
                 asked (--resume continues from them)",
                store.dir().display()
            ));
        }
        return Ok(None);
    }
    let recovery = store.latest_valid().map_err(|error| TrainError::Config(error.to_string()))?;
    for (path, error) in &recovery.skipped {
        observer.on_warning(&format!("skipped checkpoint {}: {error}", path.display()));
    }
    let Some((found, path)) = recovery.found else {
        observer.on_resume("no valid checkpoint of this run: starting from step 0");
        let others = store.others().map_err(|error| TrainError::Config(error.to_string()))?;
        if let Some(newest) = others.first() {
            observer.on_warning(&format!(
                "resume: {} holds no checkpoint of this run, only {} of other runs (the newest, \
                 {}, {}): starting from step 0",
                store.dir().display(),
                others.len(),
                newest.path.display(),
                describe_other(store, newest)
            ));
        }
        return Ok(None);
    };
    if found.step > total_steps {
        return Err(TrainError::Config(format!(
            "resume: the newest checkpoint ({}) is at step {}, past this run's {total_steps} \
             steps ({} epochs of {batches_per_epoch}): ask for at least {} epochs",
            path.display(),
            found.step,
            config.epochs,
            found.step.div_ceil(batches_per_epoch)
        )));
    }
    observer.on_resume(&format!("resuming from step {} ({})", found.step, path.display()));
    Ok(Some(found))
}
