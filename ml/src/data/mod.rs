//! Datasets for supervised training: loaders for IDX (the MNIST format) and
//! CSV files, gzip'd or raw, the embedded UCI digits data, and a seeded,
//! resumable [`DataLoader`].
//!
//! Every loader validates what it reads and fails with one [`DataError`]
//! whose message names the file and the problem (a truncated file, a wrong
//! magic number, a label out of range, a row of the wrong width, ...), never a
//! panic and never a silently short dataset.

mod csv;
mod error;
mod idx;
mod loader;
mod normalize;

use std::io::Read;
use std::path::Path;

pub use csv::{CsvData, CsvOptions, LabelColumn, load_csv, load_csv_with_header, parse_csv};
pub use error::{DataError, Record};
pub use idx::{IdxOptions, load_idx, load_idx_with, parse_idx};
pub use loader::{
    Batch, DataLoader, DataLoaderBuilder, LoaderPosition, PREFETCH_DEPTH_MAX, Prefetcher,
};
pub use normalize::{Normalize, Normalizer};

use crate::rng::Rng;

/// The largest number of classes a dataset may have. Labels are class
/// indices and a model's output layer has one unit per class, so a label in
/// the millions is a corrupt file, not a real task; 65,536 covers every
/// classification benchmark we know of (ImageNet-21k has 21,841).
pub const CLASSES_MAX: u32 = 1 << 16;

/// The most bytes a data file may hold once decompressed: 1 GiB. Loaders read
/// the whole file into memory and then expand every byte of an IDX image to a
/// 4-byte `f32`, so this keeps a load under about 5 GiB; it also stops a gzip
/// bomb. Full MNIST is 55 MB uncompressed.
pub const FILE_BYTES_MAX: u64 = 1 << 30;

/// The most features a row may have: 2^24, the widest layer a model may
/// have ([`crate::nn::WIDTH_MAX`]), since a row is fed to the first layer
/// whole. MNIST rows have 784; a 4096×4096 image has exactly this many.
pub const FEATURES_MAX: usize = 1 << 24;

/// The name under which errors in the embedded digits data are reported.
const DIGITS_NAME: &str = "<embedded>/digits.csv.gz";

/// A labelled dataset held in memory: `len()` rows of `dim` features each,
/// row-major, and one class label per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() × dim` features, row-major.
    pub features: Vec<f32>,
    /// One label per row, each below `classes`.
    pub labels: Vec<u32>,
    /// Features per row.
    pub dim: usize,
    /// The number of classes; every label is below it.
    pub classes: u32,
    /// A short name for logs and errors (the file stem, or `digits`).
    pub name: String,
}

impl Dataset {
    /// A dataset from its parts, checked: `features.len() == labels.len() *
    /// dim`, `dim > 0`, at least one row, `classes` in `1..=CLASSES_MAX` and
    /// every label below `classes`.
    pub fn new(
        name: impl Into<String>,
        features: Vec<f32>,
        labels: Vec<u32>,
        dim: usize,
        classes: u32,
    ) -> Result<Dataset, DataError> {
        let name = name.into();
        let inconsistent = |reason: String| DataError::Inconsistent { name: name.clone(), reason };
        if dim == 0 || labels.is_empty() {
            return Err(inconsistent(format!(
                "{} rows of {dim} features: a dataset needs at least one row and one feature",
                labels.len()
            )));
        }
        if labels.len().checked_mul(dim) != Some(features.len()) {
            return Err(inconsistent(format!(
                "{} features for {} rows of {dim}: expected {}",
                features.len(),
                labels.len(),
                labels.len() as u128 * dim as u128
            )));
        }
        if classes == 0 || classes > CLASSES_MAX {
            return Err(inconsistent(format!("{classes} classes: expected 1..={CLASSES_MAX}")));
        }
        if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
            return Err(inconsistent(format!(
                "row {row} has label {label}, not below the class count {classes}"
            )));
        }
        Ok(Dataset { features, labels, dim, classes, name })
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows (a checked [`Dataset::new`] never gives one).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `index`'s features.
    pub fn row(&self, index: usize) -> &[f32] {
        &self.features[index * self.dim..(index + 1) * self.dim]
    }

    /// How many rows carry each label, indexed by class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes as usize];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// The rows at `indices`, in that order, as a new dataset named `name`.
    pub fn select(&self, indices: &[u32], name: impl Into<String>) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &index in indices {
            features.extend_from_slice(self.row(index as usize));
            labels.push(self.labels[index as usize]);
        }
        Dataset { features, labels, dim: self.dim, classes: self.classes, name: name.into() }
    }

    /// Splits into `(train, test)`, **stratified**: each class gives
    /// `round(count × test_fraction)` of its rows, chosen by a seeded shuffle,
    /// to the test set, so both sets keep the class proportions. Each set is
    /// then shuffled so that it is not sorted by class. The same seed gives
    /// the same split on every platform.
    ///
    /// `test_fraction` must be in (0, 1) and leave both sets non-empty.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        let bad = |reason: &str| DataError::BadSplit {
            name: self.name.clone(),
            test_fraction,
            reason: reason.to_string(),
        };
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(bad("the test fraction must be strictly between 0 and 1"));
        }
        let mut rng = Rng::new(seed).fork("split");
        let mut by_class: Vec<Vec<u32>> = vec![Vec::new(); self.classes as usize];
        for (row, &label) in self.labels.iter().enumerate() {
            by_class[label as usize].push(row as u32);
        }
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for rows in &mut by_class {
            rng.shuffle(rows);
            let take = (rows.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&rows[..take]);
            train.extend_from_slice(&rows[take..]);
        }
        if train.is_empty() || test.is_empty() {
            return Err(bad("it leaves the train or the test set empty"));
        }
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
        let train = self.select(&train, format!("{}/train", self.name));
        let test = self.select(&test, format!("{}/test", self.name));
        Ok((train, test))
    }

    /// Fits `how` to this dataset, applies it, and returns the fitted
    /// [`Normalizer`] so a test set can be transformed with the training
    /// set's statistics.
    pub fn normalize(&mut self, how: Normalize) -> Normalizer {
        let normalizer = Normalizer::fit(how, self);
        normalizer.apply(self);
        normalizer
    }
}

/// The UCI handwritten digits (1,797 rows of 8×8 images, features 0..16,
/// 10 classes; CC BY 4.0, see `ml/data/README.md`), compiled into the
/// library so training needs no download. Features are left as read (0..16):
/// `normalize(Normalize::Divide(16.0))` scales them to [0, 1].
pub fn digits() -> Dataset {
    static DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");
    let options = CsvOptions {
        label_column: LabelColumn::Last,
        has_header: Some(false),
        expected_width: Some(65),
        classes: Some(10),
        ..CsvOptions::default()
    };
    let mut dataset = csv::parse(Path::new(DIGITS_NAME), DIGITS_GZ, &options)
        .expect("the embedded digits data is fixed and checked by tests/data.rs");
    dataset.name = "digits".to_string();
    dataset
}

/// The file's bytes, decompressed if they start with the gzip magic
/// (`1f 8b`), else as read; at most [`FILE_BYTES_MAX`] either way.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    decompress_if_gzip(path, read_bounded(path)?)
}

/// The file's raw bytes, refusing one larger than [`FILE_BYTES_MAX`] before
/// reading it. A gzip'd file that large would decompress past the limit
/// too: deflate adds at most a few bytes per 64 KiB block to data it cannot
/// compress, so the output is never much shorter than the input.
fn read_bounded(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let too_large =
        || DataError::TooLarge { path: path.to_path_buf(), limit_bytes: FILE_BYTES_MAX };
    if file.metadata().map_err(io)?.len() > FILE_BYTES_MAX {
        return Err(too_large());
    }
    let mut raw = Vec::new();
    // The length can change between the check and the read: read at most
    // one byte past the limit, which is refused below.
    file.take(FILE_BYTES_MAX + 1).read_to_end(&mut raw).map_err(io)?;
    if raw.len() as u64 > FILE_BYTES_MAX {
        return Err(too_large());
    }
    Ok(raw)
}

/// Reserves room for `additional` more items in `items`, or
/// [`DataError::OutOfMemory`] naming the file (instead of aborting).
fn try_reserve<T>(path: &Path, items: &mut Vec<T>, additional: usize) -> Result<(), DataError> {
    items.try_reserve(additional).map_err(|_| DataError::OutOfMemory {
        path: path.to_path_buf(),
        bytes: (items.len() as u128 + additional as u128) * std::mem::size_of::<T>() as u128,
    })
}

fn decompress_if_gzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .take(FILE_BYTES_MAX + 1)
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip { path: path.to_path_buf(), source })?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(DataError::TooLarge { path: path.to_path_buf(), limit_bytes: FILE_BYTES_MAX });
    }
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(bytes)
}

/// `path`'s file name without `.gz` and one more extension: `train-images`.
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_string());
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let labels: Vec<u32> = (0..20).map(|i| i % 2).collect();
        let features = (0..40).map(|i| i as f32).collect();
        Dataset::new("tiny", features, labels, 2, 2).unwrap()
    }

    #[test]
    fn new_rejects_inconsistent_parts() {
        assert!(Dataset::new("x", vec![1.0; 5], vec![0, 1], 2, 2).is_err());
        assert!(Dataset::new("x", vec![1.0; 4], vec![0, 2], 2, 2).is_err());
        assert!(Dataset::new("x", vec![], vec![], 2, 2).is_err());
        assert!(Dataset::new("x", vec![1.0; 4], vec![0, 1], 2, 0).is_err());
    }

    #[test]
    fn split_is_stratified_deterministic_and_a_partition() {
        let data = tiny();
        let (train, test) = data.split(0.3, 9).unwrap();
        assert_eq!(test.class_counts(), vec![3, 3]);
        assert_eq!(train.class_counts(), vec![7, 7]);
        assert_eq!(data.split(0.3, 9).unwrap(), (train.clone(), test.clone()));
        assert_ne!(data.split(0.3, 10).unwrap().1, test);
        // Every row lands in exactly one set (rows are distinct by feature 0).
        let mut firsts: Vec<f32> =
            train.features.chunks(2).chain(test.features.chunks(2)).map(|row| row[0]).collect();
        firsts.sort_by(f32::total_cmp);
        let expected: Vec<f32> = (0..20).map(|i| (2 * i) as f32).collect();
        assert_eq!(firsts, expected);
    }

    #[test]
    fn split_rejects_fractions_that_leave_a_set_empty() {
        let data = tiny();
        assert!(matches!(data.split(0.0, 1), Err(DataError::BadSplit { .. })));
        assert!(matches!(data.split(1.0, 1), Err(DataError::BadSplit { .. })));
        assert!(matches!(data.split(0.01, 1), Err(DataError::BadSplit { .. })));
    }

    #[test]
    fn stem_drops_gz_and_one_extension() {
        assert_eq!(stem(Path::new("/a/train-images.idx3-ubyte.gz")), "train-images");
        assert_eq!(stem(Path::new("digits.csv")), "digits");
        assert_eq!(stem(Path::new("data")), "data");
    }
}
