//! A seeded, resumable batch iterator over a [`Dataset`], and a bounded
//! prefetch queue in front of it.
//!
//! Each epoch visits every row once in an order drawn by a Fisher–Yates
//! shuffle of `0..len` from an [`Rng`] whose state at the start of the epoch
//! is part of the [`LoaderPosition`]. The position therefore names the next
//! batch exactly: [`DataLoader::seek`] regenerates that epoch's order from
//! the saved state and continues from the saved batch, and every later epoch
//! follows as it would have. This is what lets a resumed training run neither
//! skip nor repeat a batch.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{DataError, Dataset};
use crate::rng::Rng;

/// The most batches a [`Prefetcher`] may hold. Prefetching hides the time to
/// gather one batch behind one training step; a few suffice, and each held
/// batch is `batch_size × dim` floats of memory, so a depth in the hundreds
/// is a configuration mistake rather than a need.
pub const PREFETCH_DEPTH_MAX: usize = 64;

/// Where a [`DataLoader`] stands: the batch it will yield next. Saved in
/// checkpoints; [`DataLoader::seek`] restores it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// The epoch of the next batch, from 0.
    pub epoch: u64,
    /// The next batch's index within its epoch, from 0.
    pub batch_index: u64,
    /// The shuffle generator's state at the start of `epoch`, before the
    /// epoch's order was drawn.
    pub rng_state: u64,
    /// The loader's seed: a position only restores into a loader with the
    /// same seed, row count and batch size.
    pub seed: u64,
    /// Rows in the dataset.
    pub rows: u64,
    /// Rows per batch.
    pub batch_size: u64,
}

/// One batch: `rows` rows of `dim` features, row-major, and their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `rows × dim` features, row-major.
    pub features: Vec<f32>,
    /// One label per row.
    pub labels: Vec<u32>,
    /// Rows in this batch (the batch size, or fewer for an epoch's last
    /// batch without `drop_last`).
    pub rows: usize,
    /// Features per row.
    pub dim: usize,
    /// The epoch this batch belongs to, from 0.
    pub epoch: u64,
    /// Its index within the epoch, from 0.
    pub index: u64,
}

/// Settings for a [`DataLoader`]; from [`DataLoader::builder`].
#[derive(Debug, Clone)]
pub struct DataLoaderBuilder {
    dataset: Arc<Dataset>,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
}

impl DataLoaderBuilder {
    /// Rows per batch (default 32).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// The shuffle seed (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether each epoch is shuffled (default true); without, rows come in
    /// dataset order.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Whether an epoch's last, short batch is dropped (default false).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The loader, at epoch 0, batch 0; fails if no batch could be formed.
    pub fn build(self) -> Result<DataLoader, DataError> {
        let rows = self.dataset.len();
        let bad = |reason: String| DataError::BadLoader { name: self.dataset.name.clone(), reason };
        if self.batch_size == 0 {
            return Err(bad("batch size 0".to_string()));
        }
        if rows == 0 || u32::try_from(rows).is_err() {
            return Err(bad(format!("{rows} rows: expected 1..={}", u32::MAX)));
        }
        if self.drop_last && self.batch_size > rows {
            return Err(bad(format!(
                "batch size {} with drop_last over {rows} rows yields no batch",
                self.batch_size
            )));
        }
        let initial_state = Rng::new(self.seed).fork("shuffle").state();
        let mut loader = DataLoader {
            dataset: self.dataset,
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            shuffle: self.shuffle,
            seed: self.seed,
            epoch: 0,
            batch_index: 0,
            epoch_rng_state: initial_state,
            next_rng_state: initial_state,
            order: Vec::with_capacity(rows),
        };
        loader.start_epoch(0, initial_state);
        Ok(loader)
    }
}

/// Batches over a dataset, epoch after epoch, with a seeded order per epoch
/// and an exactly restorable [`position`](Self::position). A plain struct:
/// the actor that owns it in a supervised run lives elsewhere.
#[derive(Debug, Clone)]
pub struct DataLoader {
    dataset: Arc<Dataset>,
    batch_size: usize,
    drop_last: bool,
    shuffle: bool,
    seed: u64,
    epoch: u64,
    batch_index: u64,
    /// The generator's state before this epoch's shuffle.
    epoch_rng_state: u64,
    /// The generator's state after it: the next epoch starts from here.
    next_rng_state: u64,
    /// This epoch's row order.
    order: Vec<u32>,
}

impl DataLoader {
    /// Settings for a loader over `dataset`.
    pub fn builder(dataset: impl Into<Arc<Dataset>>) -> DataLoaderBuilder {
        DataLoaderBuilder {
            dataset: dataset.into(),
            batch_size: 32,
            seed: 0,
            shuffle: true,
            drop_last: false,
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Rows per (full) batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches in each epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        let rows = self.dataset.len();
        let full = rows / self.batch_size;
        let partial = !self.drop_last && rows % self.batch_size != 0;
        (full + usize::from(partial)) as u64
    }

    /// The batch [`next_batch`](Self::next_batch) will yield.
    pub fn position(&self) -> LoaderPosition {
        LoaderPosition {
            epoch: self.epoch,
            batch_index: self.batch_index,
            rng_state: self.epoch_rng_state,
            seed: self.seed,
            rows: self.dataset.len() as u64,
            batch_size: self.batch_size as u64,
        }
    }

    /// Moves to `position`, so the next batch is the one it names. Fails,
    /// leaving the loader as it was, if the position was saved by a loader
    /// with another seed, row count or batch size, or names a batch past the
    /// end of its epoch.
    pub fn seek(&mut self, position: &LoaderPosition) -> Result<(), DataError> {
        let checks = [
            ("seed", self.seed, position.seed),
            ("rows", self.dataset.len() as u64, position.rows),
            ("batch_size", self.batch_size as u64, position.batch_size),
        ];
        for (field, expected, found) in checks {
            if expected != found {
                return Err(DataError::PositionMismatch {
                    name: self.dataset.name.clone(),
                    field,
                    expected,
                    found,
                });
            }
        }
        if position.batch_index >= self.batches_per_epoch() {
            return Err(DataError::PositionMismatch {
                name: self.dataset.name.clone(),
                field: "batch_index (must be below batches per epoch)",
                expected: self.batches_per_epoch(),
                found: position.batch_index,
            });
        }
        self.start_epoch(position.epoch, position.rng_state);
        self.batch_index = position.batch_index;
        Ok(())
    }

    /// The next batch, moving to the next epoch after an epoch's last one.
    pub fn next_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        self.fill_next(&mut batch);
        batch
    }

    /// [`next_batch`](Self::next_batch) into `batch`, reusing its buffers.
    pub fn fill_next(&mut self, batch: &mut Batch) {
        let dim = self.dataset.dim;
        let start = self.batch_index as usize * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        debug_assert!(start < end, "position past the epoch's end");
        batch.features.clear();
        batch.labels.clear();
        for &row in &self.order[start..end] {
            batch.features.extend_from_slice(self.dataset.row(row as usize));
            batch.labels.push(self.dataset.labels[row as usize]);
        }
        batch.rows = end - start;
        batch.dim = dim;
        batch.epoch = self.epoch;
        batch.index = self.batch_index;
        self.batch_index += 1;
        if self.batch_index == self.batches_per_epoch() {
            // Saturating: a position restored from a checkpoint file may
            // name any epoch, u64::MAX included; no run counts that far.
            self.start_epoch(self.epoch.saturating_add(1), self.next_rng_state);
        }
    }

    /// Draws `epoch`'s order from `rng_state` and stands at its first batch.
    fn start_epoch(&mut self, epoch: u64, rng_state: u64) {
        self.epoch = epoch;
        self.batch_index = 0;
        self.epoch_rng_state = rng_state;
        self.order.clear();
        self.order.extend(0..self.dataset.len() as u32);
        let mut rng = Rng::from_state(rng_state);
        if self.shuffle {
            rng.shuffle(&mut self.order);
        }
        self.next_rng_state = rng.state();
    }
}

/// A bounded queue of the next batches, filled ahead of the consumer (in
/// the caller's thread, whenever it calls [`fill`](Self::fill)).
/// [`position`](Self::position) is the position of the next batch the
/// consumer will get, not of what has been prefetched, so saving it and
/// seeking to it neither skips nor repeats a batch.
#[derive(Debug)]
pub struct Prefetcher {
    loader: DataLoader,
    depth: usize,
    /// Prefetched batches, each with the position it was taken at.
    queue: VecDeque<(LoaderPosition, Batch)>,
    /// Returned batches whose buffers the next fills reuse (at most `depth`).
    spare: Vec<Batch>,
}

impl Prefetcher {
    /// A prefetcher holding up to `depth` batches of `loader`'s, `depth` in
    /// `1..=PREFETCH_DEPTH_MAX`.
    pub fn new(loader: DataLoader, depth: usize) -> Result<Prefetcher, DataError> {
        if depth == 0 || depth > PREFETCH_DEPTH_MAX {
            return Err(DataError::PrefetchDepth { depth, max: PREFETCH_DEPTH_MAX });
        }
        Ok(Prefetcher {
            loader,
            depth,
            queue: VecDeque::with_capacity(depth),
            spare: Vec::with_capacity(depth),
        })
    }

    /// Tops the queue up to its depth.
    pub fn fill(&mut self) {
        while self.queue.len() < self.depth {
            let position = self.loader.position();
            let mut batch = self.spare.pop().unwrap_or_default();
            self.loader.fill_next(&mut batch);
            self.queue.push_back((position, batch));
        }
        debug_assert_eq!(self.queue.len(), self.depth);
    }

    /// The next batch: the oldest prefetched one, or a fresh one if none is.
    pub fn next_batch(&mut self) -> Batch {
        match self.queue.pop_front() {
            Some((_, batch)) => batch,
            None => self.loader.next_batch(),
        }
    }

    /// Gives a consumed batch's buffers back for reuse.
    pub fn recycle(&mut self, batch: Batch) {
        if self.spare.len() < self.depth {
            self.spare.push(batch);
        }
    }

    /// Batches prefetched and not yet consumed.
    pub fn prefetched(&self) -> usize {
        self.queue.len()
    }

    /// The position of the next batch [`next_batch`](Self::next_batch)
    /// returns.
    pub fn position(&self) -> LoaderPosition {
        match self.queue.front() {
            Some((position, _)) => *position,
            None => self.loader.position(),
        }
    }

    /// Drops what was prefetched and moves to `position`.
    pub fn seek(&mut self, position: &LoaderPosition) -> Result<(), DataError> {
        self.loader.seek(position)?;
        while let Some((_, batch)) = self.queue.pop_front() {
            self.recycle(batch);
        }
        Ok(())
    }

    /// The loader, standing at [`position`](Self::position) (prefetched
    /// batches are given back by seeking to it).
    pub fn into_loader(mut self) -> DataLoader {
        let position = self.position();
        self.loader.seek(&position).expect("a position taken from this loader restores into it");
        self.loader
    }
}
