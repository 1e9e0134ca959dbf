//! The IDX format of the MNIST files (LeCun, Cortes and Burges,
//! <http://yann.lecun.com/exdb/mnist/>): a big-endian magic number
//! `0x0000_08RR` (type `0x08` = unsigned byte, `RR` = rank), `RR` big-endian
//! `u32` dimensions, then the items. Labels are rank 1 (`0x0000_0801`),
//! images rank 3 (`0x0000_0803`: count, rows, columns).

use std::path::{Path, PathBuf};

use super::{
    CLASSES_MAX, DataError, Dataset, FEATURES_MAX, FILE_BYTES_MAX, Record, decompress_if_gzip,
    read_maybe_gzip, stem, try_reserve,
};

/// The magic number of a file of `u8` labels.
const LABELS_MAGIC: u32 = 0x0000_0801;
/// The magic number of a file of `u8` images.
const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Options for [`load_idx_with`].
#[derive(Debug, Clone, Default)]
pub struct IdxOptions {
    /// The number of classes; `None` takes the largest label plus one. With
    /// `Some(n)`, a label `>= n` is a [`DataError::LabelOutOfRange`].
    pub classes: Option<u32>,
}

/// Loads an IDX images file and its labels file (each gzip'd or raw,
/// detected by the `1f 8b` magic), with the class count taken from the
/// labels. Features are the pixel bytes as `f32` (0..255).
pub fn load_idx(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    load_idx_with(images_path, labels_path, &IdxOptions::default())
}

/// [`load_idx`] with options.
pub fn load_idx_with(
    images_path: &Path,
    labels_path: &Path,
    options: &IdxOptions,
) -> Result<Dataset, DataError> {
    let images = read_maybe_gzip(images_path)?;
    let labels = read_maybe_gzip(labels_path)?;
    parse_decompressed((images_path, &images), (labels_path, &labels), options)
}

/// Parses IDX images and labels from bytes (each gzip'd or raw) as if read
/// from `images_path` and `labels_path`, which only name the sources in
/// errors and the dataset. Every check of [`load_idx_with`] applies.
pub fn parse_idx(
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
    options: &IdxOptions,
) -> Result<Dataset, DataError> {
    let images = decompress_if_gzip(images_path, images.to_vec())?;
    let labels = decompress_if_gzip(labels_path, labels.to_vec())?;
    parse_decompressed((images_path, &images), (labels_path, &labels), options)
}

/// The dataset from decompressed images and labels files, each with its
/// path for errors.
fn parse_decompressed(
    (images_path, images): (&Path, &[u8]),
    (labels_path, labels): (&Path, &[u8]),
    options: &IdxOptions,
) -> Result<Dataset, DataError> {
    let image_dims = parse_header(images_path, images, IMAGES_MAGIC, "u8 images, rank 3")?;
    let label_dims = parse_header(labels_path, labels, LABELS_MAGIC, "u8 labels, rank 1")?;
    let (count, rows, columns) = (image_dims[0], image_dims[1], image_dims[2]);
    if count != label_dims[0] {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images: count,
            labels: label_dims[0],
        });
    }
    if count == 0 {
        return Err(DataError::Empty { path: images_path.to_path_buf() });
    }
    if rows == 0 || columns == 0 {
        return Err(DataError::BadHeader {
            path: images_path.to_path_buf(),
            reason: format!("images of {rows}×{columns} pixels"),
        });
    }
    // Both below 2^32: the product fits in u64. parse_header has held the
    // whole file to FILE_BYTES_MAX, so it fits in usize too.
    let pixels = rows * columns;
    if pixels > FEATURES_MAX as u64 {
        return Err(DataError::TooManyFeatures {
            path: images_path.to_path_buf(),
            features: pixels,
            max: FEATURES_MAX,
        });
    }
    let label_bytes = &labels[header_len(1)..];
    let classes = check_labels(labels_path, label_bytes, options.classes)?;
    let pixel_bytes = &images[header_len(3)..];
    let mut features = Vec::new();
    try_reserve(images_path, &mut features, pixel_bytes.len())?;
    features.extend(pixel_bytes.iter().map(|&b| f32::from(b)));
    let mut label_values = Vec::new();
    try_reserve(labels_path, &mut label_values, label_bytes.len())?;
    label_values.extend(label_bytes.iter().map(|&b| u32::from(b)));
    Dataset::new(stem(images_path), features, label_values, pixels as usize, classes)
}

fn header_len(rank: usize) -> usize {
    4 + 4 * rank
}

/// Checks the magic number and that the file is exactly as long as its
/// dimensions say; returns the dimensions.
fn parse_header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    what: &'static str,
) -> Result<Vec<u64>, DataError> {
    let path_buf = || -> PathBuf { path.to_path_buf() };
    let rank = (magic & 0xff) as usize;
    let truncated = |expected_bytes: u64| DataError::Truncated {
        path: path_buf(),
        expected_bytes,
        found_bytes: bytes.len() as u64,
    };
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 4 {
        return Err(truncated(header_len(rank) as u64));
    }
    let found = word(0);
    if found != magic {
        return Err(DataError::BadMagic { path: path_buf(), found, expected: magic, what });
    }
    if bytes.len() < header_len(rank) {
        return Err(truncated(header_len(rank) as u64));
    }
    let dims: Vec<u64> = (0..rank).map(|i| u64::from(word(4 + 4 * i))).collect();
    // At most 2^96 for rank 3: u128 cannot overflow.
    let expected = header_len(rank) as u128 + dims.iter().map(|&d| u128::from(d)).product::<u128>();
    // Refused on the header's word alone, before the file's length is looked
    // at: a header claiming four billion images names the limit, it does not
    // just say "truncated".
    if expected > u128::from(FILE_BYTES_MAX) {
        return Err(DataError::BadHeader {
            path: path_buf(),
            reason: format!(
                "dimensions {dims:?} make {expected} bytes, above the limit of FILE_BYTES_MAX = \
                 {FILE_BYTES_MAX} bytes for a data file"
            ),
        });
    }
    let expected_bytes = expected as u64;
    let found_bytes = bytes.len() as u64;
    if found_bytes < expected_bytes {
        return Err(truncated(expected_bytes));
    }
    if found_bytes > expected_bytes {
        return Err(DataError::TrailingBytes { path: path_buf(), expected_bytes, found_bytes });
    }
    Ok(dims)
}

/// Checks every label against `classes` (or infers it); returns the class
/// count.
fn check_labels(path: &Path, labels: &[u8], classes: Option<u32>) -> Result<u32, DataError> {
    let classes = match classes {
        Some(classes) => classes.min(CLASSES_MAX),
        None => labels.iter().copied().max().map_or(1, |max| u32::from(max) + 1),
    };
    if let Some((item, &label)) =
        labels.iter().enumerate().find(|(_, label)| u32::from(**label) >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            record: Record::Item(item),
            label: i64::from(label),
            classes,
        });
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|dim| bytes.extend_from_slice(&dim.to_be_bytes()));
        bytes.extend_from_slice(data);
        bytes
    }

    fn parse(images: &[u8], labels: &[u8]) -> Result<Dataset, DataError> {
        parse_idx(Path::new("i"), images, Path::new("l"), labels, &IdxOptions::default())
    }

    #[test]
    fn a_header_claiming_four_billion_images_names_the_limit() {
        let images = idx(IMAGES_MAGIC, &[4_000_000_000, 28, 28], &[]);
        let labels = idx(LABELS_MAGIC, &[4_000_000_000], &[]);
        let error = parse(&images, &labels).unwrap_err();
        match &error {
            DataError::BadHeader { reason, .. } => {
                assert!(reason.contains("FILE_BYTES_MAX"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The labels header alone, too.
        let images = idx(IMAGES_MAGIC, &[1, 1, 1], &[0]);
        assert!(matches!(parse(&images, &labels), Err(DataError::BadHeader { .. })));
    }

    #[test]
    fn images_wider_than_features_max_are_refused() {
        let side = 4097u32; // 4097² > 2^24
        let pixels = vec![0u8; (side * side) as usize];
        let images = idx(IMAGES_MAGIC, &[1, side, side], &pixels);
        let error = parse(&images, &idx(LABELS_MAGIC, &[1], &[0])).unwrap_err();
        assert!(
            matches!(error, DataError::TooManyFeatures { features: 16_785_409, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn bytes_parse_like_files() {
        let images = idx(IMAGES_MAGIC, &[2, 1, 2], &[1, 2, 3, 4]);
        let data = parse(&images, &idx(LABELS_MAGIC, &[2], &[1, 0])).unwrap();
        assert_eq!(
            (data.features, data.labels, data.dim, data.classes),
            (vec![1.0, 2.0, 3.0, 4.0], vec![1, 0], 2, 2)
        );
    }
}
