//! Integration tests for `zbmd_ml::data`: the IDX and CSV loaders and their
//! errors on bad files, the embedded digits data, and the resumable loader.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use zbmd_ml::data::{
    Batch, CsvOptions, DataError, DataLoader, Dataset, IdxOptions, LabelColumn, LoaderPosition,
    Normalize, PREFETCH_DEPTH_MAX, Prefetcher, Record, digits, load_csv, load_idx, load_idx_with,
};

/// A fresh, empty directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zbmd-ml-data-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// Three 2×2 images and their labels.
fn images() -> Vec<u8> {
    idx(0x803, &[3, 2, 2], &[0, 1, 2, 3, 10, 11, 12, 13, 255, 254, 253, 252])
}
fn labels(values: &[u8]) -> Vec<u8> {
    idx(0x801, &[values.len() as u32], values)
}

/// Asserts the error's message names `path`.
fn names_file(error: &DataError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name {}",
        path.display()
    );
}

#[test]
fn idx_loads_raw_and_gzip_alike() {
    let dir = temp_dir("idx_ok");
    let raw = load_idx(
        &write(&dir, "imgs.idx3-ubyte", &images()),
        &write(&dir, "labels.idx1-ubyte", &labels(&[7, 0, 2])),
    )
    .unwrap();
    assert_eq!((raw.len(), raw.dim, raw.classes), (3, 4, 8));
    assert_eq!(raw.row(2), &[255.0, 254.0, 253.0, 252.0]);
    assert_eq!(raw.labels, vec![7, 0, 2]);
    assert_eq!(raw.name, "imgs");
    let zipped = load_idx(
        &write(&dir, "imgs.idx3-ubyte.gz", &gzip(&images())),
        &write(&dir, "labels.idx1-ubyte.gz", &gzip(&labels(&[7, 0, 2]))),
    )
    .unwrap();
    assert_eq!(zipped.features, raw.features);
    assert_eq!(zipped.labels, raw.labels);
}

#[test]
fn idx_truncated_file_says_expected_and_present_bytes() {
    let dir = temp_dir("idx_truncated");
    let mut short = images();
    short.truncate(short.len() - 5);
    let images_path = write(&dir, "imgs.gz", &gzip(&short));
    let labels_path = write(&dir, "labels", &labels(&[1, 2, 3]));
    let error = load_idx(&images_path, &labels_path).unwrap_err();
    assert!(
        matches!(error, DataError::Truncated { expected_bytes: 28, found_bytes: 23, .. }),
        "{error:?}"
    );
    names_file(&error, &images_path);
    // Cut inside the header too.
    let header_cut = write(&dir, "cut", &images()[..10]);
    let error = load_idx(&header_cut, &labels_path).unwrap_err();
    assert!(matches!(error, DataError::Truncated { expected_bytes: 16, found_bytes: 10, .. }));
    names_file(&error, &header_cut);
}

#[test]
fn idx_trailing_bytes_are_an_error() {
    let dir = temp_dir("idx_trailing");
    let mut long = labels(&[1, 2, 3]);
    long.push(9);
    let labels_path = write(&dir, "labels", &long);
    let error = load_idx(&write(&dir, "imgs", &images()), &labels_path).unwrap_err();
    assert!(matches!(error, DataError::TrailingBytes { expected_bytes: 11, found_bytes: 12, .. }));
    names_file(&error, &labels_path);
}

#[test]
fn idx_swapped_files_give_the_wrong_magic_number() {
    let dir = temp_dir("idx_magic");
    let images_path = write(&dir, "imgs", &images());
    let labels_path = write(&dir, "labels", &labels(&[1, 2, 3]));
    let error = load_idx(&labels_path, &images_path).unwrap_err();
    assert!(
        matches!(error, DataError::BadMagic { found: 0x801, expected: 0x803, .. }),
        "{error:?}"
    );
    names_file(&error, &labels_path);
    assert!(error.to_string().contains("0x00000801"), "{error}");
}

#[test]
fn idx_label_out_of_range_names_the_item_value_and_class_count() {
    let dir = temp_dir("idx_label");
    let labels_path = write(&dir, "labels", &labels(&[1, 12, 3]));
    let options = IdxOptions { classes: Some(10) };
    let error = load_idx_with(&write(&dir, "imgs", &images()), &labels_path, &options).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::LabelOutOfRange { record: Record::Item(1), label: 12, classes: 10, .. }
        ),
        "{error:?}"
    );
    names_file(&error, &labels_path);
}

#[test]
fn idx_image_and_label_counts_must_agree() {
    let dir = temp_dir("idx_count");
    let images_path = write(&dir, "imgs", &images());
    let labels_path = write(&dir, "labels", &labels(&[1, 2]));
    let error = load_idx(&images_path, &labels_path).unwrap_err();
    assert!(matches!(error, DataError::CountMismatch { images: 3, labels: 2, .. }));
    names_file(&error, &images_path);
    names_file(&error, &labels_path);
}

#[test]
fn empty_files_are_named() {
    let dir = temp_dir("empty");
    let empty = write(&dir, "empty", b"");
    let error = load_idx(&empty, &write(&dir, "labels", &labels(&[1]))).unwrap_err();
    assert!(matches!(error, DataError::Empty { .. }));
    names_file(&error, &empty);
    let error = load_csv(&empty, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::Empty { .. }));
    names_file(&error, &empty);
    // Blank lines and a header only: still no data.
    let header_only = write(&dir, "header.csv", b"a,b,label\n\n\n");
    let error = load_csv(&header_only, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::Empty { .. }));
    names_file(&error, &header_only);
    // A gzip of nothing.
    let zipped_empty = write(&dir, "empty.gz", &gzip(b""));
    let error = load_csv(&zipped_empty, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::Empty { .. }));
}

#[test]
fn corrupt_gzip_is_named() {
    let dir = temp_dir("gzip");
    let zipped = gzip(b"1,2,0\n3,4,1\n");
    let cut = write(&dir, "cut.csv.gz", &zipped[..zipped.len() - 6]);
    let error = load_csv(&cut, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::Gzip { .. }), "{error:?}");
    names_file(&error, &cut);
}

#[test]
fn csv_loads_raw_and_gzip_alike_with_header_detection() {
    let dir = temp_dir("csv_ok");
    let text = b"x1,x2,y\n0.5,-1,2\n1e3,4,0\n";
    let raw = load_csv(&write(&dir, "d.csv", text), &CsvOptions::default()).unwrap();
    assert_eq!(raw.features, vec![0.5, -1.0, 1000.0, 4.0]);
    assert_eq!((raw.labels.clone(), raw.dim, raw.classes), (vec![2, 0], 2, 3));
    assert_eq!(raw.name, "d");
    let zipped = load_csv(&write(&dir, "d.csv.gz", &gzip(text)), &CsvOptions::default()).unwrap();
    assert_eq!(zipped, raw);
    // The same file with has_header: Some(false) fails on the header line.
    let no_header = CsvOptions { has_header: Some(false), ..CsvOptions::default() };
    let error = load_csv(&write(&dir, "d2.csv", text), &no_header).unwrap_err();
    assert!(matches!(error, DataError::NotNumeric { line: 1, column: 1, .. }));
}

#[test]
fn csv_row_of_the_wrong_width_names_line_and_counts() {
    let dir = temp_dir("csv_width");
    let path = write(&dir, "w.csv", b"1,2,0\n3,4,1\n5,6,7,1\n");
    let error = load_csv(&path, &CsvOptions::default()).unwrap_err();
    assert!(
        matches!(error, DataError::WrongWidth { line: 3, found: 4, expected: 3, .. }),
        "{error:?}"
    );
    names_file(&error, &path);
    // An expected width from the options applies to the first row as well.
    let options = CsvOptions { expected_width: Some(65), ..CsvOptions::default() };
    let error = load_csv(&path, &options).unwrap_err();
    assert!(matches!(error, DataError::WrongWidth { line: 1, found: 3, expected: 65, .. }));
}

#[test]
fn csv_non_numeric_field_names_line_and_column() {
    let dir = temp_dir("csv_nan");
    for (text, field) in
        [(&b"1,2,0\n3,abc,1\n"[..], "abc"), (b"1,2,0\n3,NaN,1\n", "NaN"), (b"1,2,0\n3,,1\n", "")]
    {
        let path = write(&dir, "n.csv", text);
        let error = load_csv(&path, &CsvOptions::default()).unwrap_err();
        match &error {
            DataError::NotNumeric { line: 2, column: 2, field: found, .. } => {
                assert_eq!(found, field)
            }
            other => panic!("{other:?}"),
        }
        names_file(&error, &path);
    }
}

#[test]
fn csv_label_out_of_range_names_line_value_and_class_count() {
    let dir = temp_dir("csv_label");
    let path = write(&dir, "l.csv", b"1,2,0\n3,4,1\n5,6,9\n");
    let options = CsvOptions { classes: Some(3), ..CsvOptions::default() };
    let error = load_csv(&path, &options).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::LabelOutOfRange { record: Record::Line(3), label: 9, classes: 3, .. }
        ),
        "{error:?}"
    );
    names_file(&error, &path);
    assert!(error.to_string().contains("line 3"), "{error}");
    let negative = write(&dir, "neg.csv", b"1,2,-1\n");
    let error = load_csv(&negative, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::LabelOutOfRange { label: -1, .. }));
    names_file(&error, &negative);
}

#[test]
fn csv_label_column_choices() {
    let dir = temp_dir("csv_columns");
    let path = write(&dir, "c.csv", b"2,10,20\n0,30,40\n");
    let first = CsvOptions { label_column: LabelColumn::First, ..CsvOptions::default() };
    let data = load_csv(&path, &first).unwrap();
    assert_eq!((data.labels, data.features), (vec![2, 0], vec![10.0, 20.0, 30.0, 40.0]));
    let outside = CsvOptions { label_column: LabelColumn::Index(3), ..CsvOptions::default() };
    let error = load_csv(&path, &outside).unwrap_err();
    assert!(matches!(error, DataError::LabelColumnOutOfRange { column: 3, width: 3, .. }));
    names_file(&error, &path);
}

#[test]
fn digits_are_embedded_whole() {
    let data = digits();
    assert_eq!((data.len(), data.dim, data.classes), (1797, 64, 10));
    let counts = data.class_counts();
    assert!(counts.iter().all(|&c| (170..=190).contains(&c)), "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 1797);
    assert!(data.features.iter().all(|&x| (0.0..=16.0).contains(&x) && x.fract() == 0.0));
    assert!(data.features.contains(&16.0));
    // The first row of the file (a zero).
    assert_eq!(&data.row(0)[..8], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
    assert_eq!(data.labels[0], 0);
}

#[test]
fn digits_split_and_scale() {
    let mut data = digits();
    data.normalize(Normalize::Divide(16.0));
    assert!(data.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
    let (train, test) = data.split(0.2, 42).unwrap();
    assert_eq!(train.len() + test.len(), 1797);
    assert!((355..=365).contains(&test.len()), "{}", test.len());
    for (class, (&a, &b)) in train.class_counts().iter().zip(&test.class_counts()).enumerate() {
        let share = b as f64 / (a + b) as f64;
        assert!((share - 0.2).abs() < 0.01, "class {class}: {share}");
    }
}

fn small(rows: usize) -> Dataset {
    let features = (0..rows * 2).map(|i| i as f32).collect();
    let labels = (0..rows as u32).map(|i| i % 3).collect();
    Dataset::new("small", features, labels, 2, 3).unwrap()
}

/// Row identities (feature 0 / 2) of a batch.
fn rows_of(batch: &Batch) -> Vec<u32> {
    batch.features.chunks(2).map(|row| row[0] as u32 / 2).collect()
}

#[test]
fn each_epoch_is_a_fresh_permutation_with_a_short_last_batch() {
    let mut loader = DataLoader::builder(small(10)).batch_size(4).seed(1).build().unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    let mut epochs = Vec::new();
    for epoch in 0..3u64 {
        let mut seen = Vec::new();
        for index in 0..3u64 {
            let batch = loader.next_batch();
            assert_eq!((batch.epoch, batch.index), (epoch, index));
            assert_eq!(batch.rows, if index == 2 { 2 } else { 4 });
            assert_eq!(batch.labels.len(), batch.rows);
            for (row, label) in rows_of(&batch).iter().zip(&batch.labels) {
                assert_eq!(row % 3, *label, "a row's label travels with it");
            }
            seen.extend(rows_of(&batch));
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        epochs.push(seen);
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    // Same seed, same sequence; another seed, another.
    let mut again = DataLoader::builder(small(10)).batch_size(4).seed(1).build().unwrap();
    assert_eq!(rows_of(&again.next_batch()), epochs[0][..4]);
    let mut other = DataLoader::builder(small(10)).batch_size(4).seed(2).build().unwrap();
    let first_three: Vec<Vec<u32>> = (0..3).map(|_| rows_of(&other.next_batch())).collect();
    assert_ne!(first_three.concat(), epochs[0]);
}

#[test]
fn drop_last_and_no_shuffle() {
    let mut loader = DataLoader::builder(small(10))
        .batch_size(4)
        .shuffle(false)
        .drop_last(true)
        .build()
        .unwrap();
    assert_eq!(loader.batches_per_epoch(), 2);
    let got: Vec<(u64, Vec<u32>)> = (0..3)
        .map(|_| {
            let batch = loader.next_batch();
            (batch.epoch, rows_of(&batch))
        })
        .collect();
    assert_eq!(got, vec![(0, vec![0, 1, 2, 3]), (0, vec![4, 5, 6, 7]), (1, vec![0, 1, 2, 3])]);
}

#[test]
fn unusable_loader_settings_are_errors() {
    let data = Arc::new(small(5));
    let error = DataLoader::builder(data.clone()).batch_size(0).build().unwrap_err();
    assert!(matches!(error, DataError::BadLoader { .. }));
    let error =
        DataLoader::builder(data.clone()).batch_size(6).drop_last(true).build().unwrap_err();
    assert!(matches!(error, DataError::BadLoader { .. }), "{error}");
    assert!(error.to_string().contains("small"));
    // Without drop_last, one short batch per epoch is fine.
    let loader = DataLoader::builder(data).batch_size(6).build().unwrap();
    assert_eq!(loader.batches_per_epoch(), 1);
}

#[test]
fn a_position_from_another_configuration_is_refused() {
    let mut loader = DataLoader::builder(small(10)).batch_size(4).seed(1).build().unwrap();
    let position = loader.position();
    let mut other_seed = DataLoader::builder(small(10)).batch_size(4).seed(2).build().unwrap();
    assert!(matches!(
        other_seed.seek(&position),
        Err(DataError::PositionMismatch { field: "seed", .. })
    ));
    let mut other_size = DataLoader::builder(small(10)).batch_size(5).seed(1).build().unwrap();
    assert!(matches!(
        other_size.seek(&position),
        Err(DataError::PositionMismatch { field: "batch_size", .. })
    ));
    let past_end = LoaderPosition { batch_index: 3, ..position };
    assert!(loader.seek(&past_end).is_err());
    // A refused seek leaves the loader where it was.
    assert_eq!(loader.position(), position);
}

#[test]
fn the_position_survives_json() {
    let mut loader = DataLoader::builder(small(10)).batch_size(3).seed(5).build().unwrap();
    for _ in 0..6 {
        loader.next_batch();
    }
    let position = loader.position();
    assert_eq!(position.epoch, 1);
    let json = serde_json::to_string(&position).unwrap();
    let back: LoaderPosition = serde_json::from_str(&json).unwrap();
    assert_eq!(back, position);
}

proptest! {
    /// A loader restored from a position taken anywhere yields exactly the
    /// batches the original goes on to yield, across epoch boundaries.
    #[test]
    fn seek_resumes_the_identical_sequence(
        rows in 1usize..40,
        batch_size in 1usize..12,
        drop_last in any::<bool>(),
        seed in any::<u64>(),
        consumed in 0usize..30,
    ) {
        prop_assume!(!drop_last || batch_size <= rows);
        let build = || {
            DataLoader::builder(small(rows))
                .batch_size(batch_size)
                .seed(seed)
                .drop_last(drop_last)
                .build()
                .unwrap()
        };
        let mut original = build();
        for _ in 0..consumed {
            original.next_batch();
        }
        let saved = serde_json::to_string(&original.position()).unwrap();
        let mut restored = build();
        restored.next_batch(); // somewhere else first
        restored.seek(&serde_json::from_str(&saved).unwrap()).unwrap();
        let epochs = 3 * original.batches_per_epoch() as usize;
        for _ in 0..epochs {
            prop_assert_eq!(restored.next_batch(), original.next_batch());
        }
    }
}

#[test]
fn prefetcher_position_is_the_consumers_not_the_prefetched() {
    let build = || DataLoader::builder(small(10)).batch_size(3).seed(9).build().unwrap();
    let mut reference = build();
    let expected: Vec<Batch> = (0..12).map(|_| reference.next_batch()).collect();

    let mut prefetcher = Prefetcher::new(build(), 4).unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        prefetcher.fill();
        assert_eq!(prefetcher.prefetched(), 4);
        let batch = prefetcher.next_batch();
        got.push(batch.clone());
        prefetcher.recycle(batch);
    }
    prefetcher.fill();
    // Five consumed: the position names the sixth, though nine were made.
    let position = prefetcher.position();
    assert_eq!((position.epoch, position.batch_index), (1, 1));
    let mut resumed = build();
    resumed.seek(&position).unwrap();
    got.extend((5..12).map(|_| resumed.next_batch()));
    assert_eq!(got, expected);
    // The prefetcher itself continues identically, and gives back a loader
    // standing at its consumer's position.
    assert_eq!(prefetcher.next_batch(), expected[5]);
    let mut loader = prefetcher.into_loader();
    assert_eq!(loader.next_batch(), expected[6]);
}

#[test]
fn prefetcher_seek_drops_the_queue() {
    let build = || DataLoader::builder(small(10)).batch_size(3).seed(9).build().unwrap();
    let mut prefetcher = Prefetcher::new(build(), 2).unwrap();
    let start = prefetcher.position();
    let first = prefetcher.next_batch();
    prefetcher.fill();
    prefetcher.seek(&start).unwrap();
    assert_eq!(prefetcher.prefetched(), 0);
    assert_eq!(prefetcher.next_batch(), first);
}

#[test]
fn prefetch_depth_is_bounded() {
    let loader = || DataLoader::builder(small(10)).build().unwrap();
    for depth in [0, PREFETCH_DEPTH_MAX + 1] {
        let error = Prefetcher::new(loader(), depth).unwrap_err();
        assert!(matches!(error, DataError::PrefetchDepth { .. }), "{error}");
        assert!(error.to_string().contains(&depth.to_string()));
    }
    assert!(Prefetcher::new(loader(), PREFETCH_DEPTH_MAX).is_ok());
}

#[test]
fn missing_and_binary_files_are_named() {
    let dir = temp_dir("missing");
    let missing = dir.join("nope.csv");
    let error = load_csv(&missing, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::Io { .. }));
    names_file(&error, &missing);
    let binary = write(&dir, "bin.csv", b"1,2,0\n\xff\xfe,1\n");
    let error = load_csv(&binary, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::NotText { offset: 6, .. }), "{error:?}");
    names_file(&error, &binary);
}
