//! The data loaders: CSV and IDX (MNIST) files, gzip'd or raw.

use std::path::Path;

use zbmd_ml::data::{
    CLASSES_MAX, CsvOptions, Dataset, FEATURES_MAX, IdxOptions, LabelColumn, parse_csv, parse_idx,
};

use super::says_something;

/// What every loaded dataset satisfies, whatever file it came from.
fn check_dataset(dataset: &Dataset) {
    assert!(!dataset.is_empty() && dataset.dim > 0, "an empty dataset loaded");
    assert!(dataset.dim <= FEATURES_MAX, "rows of {} features", dataset.dim);
    assert_eq!(Some(dataset.features.len()), dataset.len().checked_mul(dataset.dim));
    assert!(dataset.classes >= 1 && dataset.classes <= CLASSES_MAX);
    assert!(dataset.labels.iter().all(|&label| label < dataset.classes), "a label out of range");
    assert!(dataset.features.iter().all(|x| x.is_finite()), "a feature that is not finite");
}

/// The CSV options the first byte picks: label column (bits 0-1), header
/// mode (bits 2-3), a class count (bit 4), `;` as the delimiter (bit 5),
/// an expected width of 3 (bit 6).
fn csv_options(byte: u8) -> CsvOptions {
    let label_column = match byte & 3 {
        0 => LabelColumn::Last,
        1 => LabelColumn::First,
        2 => LabelColumn::Index(1),
        _ => LabelColumn::Index(2),
    };
    let has_header = match (byte >> 2) & 3 {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    };
    CsvOptions {
        label_column,
        has_header,
        expected_width: (byte & 0x40 != 0).then_some(3),
        classes: (byte & 0x10 != 0).then_some(10),
        delimiter: if byte & 0x20 != 0 { ';' } else { ',' },
    }
}

/// CSV bytes through `zbmd_ml::data::parse_csv`, the first byte picking
/// the options (label column, header mode, a class count, `;` as the
/// delimiter, an expected width): a loaded dataset is consistent, finite and
/// within the limits; a header is only taken where the options allow one,
/// and has as many fields as the rows.
pub fn csv(data: &[u8]) {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    let options = csv_options(first);
    let path = Path::new("fuzz.csv");
    match parse_csv(path, file, &options) {
        Ok(loaded) => {
            check_dataset(&loaded.dataset);
            if let Some(classes) = options.classes {
                assert_eq!(loaded.dataset.classes, classes);
            }
            if options.has_header == Some(false) {
                assert!(loaded.header.is_none(), "a header taken against the options");
            }
            if let Some(header) = &loaded.header {
                assert_eq!(header.len(), loaded.dataset.dim + 1, "a header of another width");
            }
        }
        Err(error) => {
            says_something(&error);
            assert!(error.to_string().contains("fuzz.csv"), "{error} does not name the file");
        }
    }
}

/// An IDX images file and a labels file: the first two bytes (little-endian)
/// give the images file's length, the labels file is what follows it.
/// Through `zbmd_ml::data::parse_idx`: a loaded dataset is consistent and
/// holds bytes (0..=255) as features.
pub fn idx(data: &[u8]) {
    let [low, high, rest @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
    let (images, labels) = rest.split_at(split);
    let loaded =
        parse_idx(Path::new("images"), images, Path::new("labels"), labels, &IdxOptions::default());
    match loaded {
        Ok(dataset) => {
            check_dataset(&dataset);
            assert!(dataset.classes <= 256, "{} classes from u8 labels", dataset.classes);
            let is_byte = |x: &f32| (0.0..=255.0).contains(x) && x.fract() == 0.0;
            assert!(dataset.features.iter().all(is_byte), "a pixel that is not a byte");
        }
        Err(error) => says_something(&error),
    }
}
