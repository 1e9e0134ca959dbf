//! Sizes that come from users and files are bounded: a model spec asking for
//! a billion-unit layer, a data file larger than the limit, a CSV whose first
//! row is not what it seems. Each is an error that says what happened, never
//! an abort or a panic.

use std::path::PathBuf;

use zbmd_ml::data::{
    CsvOptions, DataError, DataLoader, Dataset, FILE_BYTES_MAX, IdxOptions, LoaderPosition,
    load_csv, load_csv_with_header, load_idx, parse_idx,
};
use zbmd_ml::nn::{ModelError, ModelLimits, Sequential, WIDTH_MAX};
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::{Graph, Tensor};

/// A fresh, empty directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zbmd-ml-bounds-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn model_specs_too_wide_for_memory_are_errors_that_say_how_much() {
    // `zbmd-node train --model '[64, 1000000000, 10]'` used to abort with
    // "memory allocation of 256000000000 bytes failed".
    let error = Sequential::from_spec("[64, 1000000000, 10]", &mut Rng::new(1)).unwrap_err();
    assert!(matches!(error, ModelError::TooWide { width: 1_000_000_000, .. }), "{error:?}");
    assert!(error.to_string().contains("the model would need 300.0 GB"), "{error}");
    // And '[64, 18446744073709551615, 10]' panicked with "capacity overflow".
    let error =
        Sequential::from_spec("[64, 18446744073709551615, 10]", &mut Rng::new(1)).unwrap_err();
    assert!(matches!(error, ModelError::TooWide { .. }), "{error:?}");
    let toml = format!("[[layers]]\nkind = \"linear\"\nin = 2\nout = {}\n", WIDTH_MAX + 1);
    let error = Sequential::from_toml(&toml, &mut Rng::new(1)).unwrap_err();
    assert!(matches!(error, ModelError::TooWide { .. }), "{error:?}");
}

#[test]
fn lowered_limits_apply_and_the_rng_draws_as_before() {
    let small = ModelLimits { parameter_bytes_max: 4096, ..ModelLimits::default() };
    let error = Sequential::from_spec_within("[64, 64]", &small, &mut Rng::new(1)).unwrap_err();
    assert!(matches!(error, ModelError::TooLarge { parameters: 4160, .. }), "{error:?}");
    let within = Sequential::from_spec_within("[8, 4]", &small, &mut Rng::new(3)).unwrap();
    let default = Sequential::from_spec("[8, 4]", &mut Rng::new(3)).unwrap();
    let values = |model: &Sequential| -> Vec<Vec<f32>> {
        model.parameters().iter().map(|(_, t)| t.to_vec_f32()).collect()
    };
    assert_eq!(values(&within), values(&default));
}

#[test]
fn data_files_larger_than_the_limit_are_refused_before_reading() {
    let dir = temp_dir("large");
    let path = dir.join("huge.idx3-ubyte");
    // Sparse: takes no disk, and is never read.
    std::fs::File::create(&path).unwrap().set_len(FILE_BYTES_MAX + 1).unwrap();
    let error = load_idx(&path, &path).unwrap_err();
    assert!(matches!(error, DataError::TooLarge { .. }), "{error:?}");
    let error = load_csv(&path, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::TooLarge { .. }), "{error:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idx_headers_claiming_billions_of_items_are_refused_from_bytes_too() {
    let mut images = 0x0803u32.to_be_bytes().to_vec();
    for dim in [4_000_000_000u32, 28, 28] {
        images.extend_from_slice(&dim.to_be_bytes());
    }
    let mut labels = 0x0801u32.to_be_bytes().to_vec();
    labels.extend_from_slice(&4_000_000_000u32.to_be_bytes());
    let options = IdxOptions::default();
    let error = parse_idx("i".as_ref(), &images, "l".as_ref(), &labels, &options).unwrap_err();
    assert!(error.to_string().contains("above the limit of FILE_BYTES_MAX"), "{error}");
}

#[test]
fn a_csv_header_is_returned_and_a_bom_is_not_one() {
    let dir = temp_dir("csv");
    let path = dir.join("h.csv");
    std::fs::write(&path, "\u{feff}pixel0,pixel1,label\n1,2,0\n").unwrap();
    let data = load_csv_with_header(&path, &CsvOptions::default()).unwrap();
    assert_eq!(data.header.as_deref(), Some(&["pixel0", "pixel1", "label"].map(String::from)[..]));
    assert_eq!(data.dataset.len(), 1);
    std::fs::write(&path, "\u{feff}5,2,0\n1,2,0\n").unwrap();
    assert_eq!(load_csv(&path, &CsvOptions::default()).unwrap().len(), 2);
    std::fs::write(&path, "5,2o,0\n1,2,0\n").unwrap();
    let error = load_csv(&path, &CsvOptions::default()).unwrap_err();
    assert!(matches!(error, DataError::MixedFirstRow { line: 1, column: 2, .. }), "{error:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_loader_position_at_the_last_epoch_a_u64_counts_does_not_overflow() {
    // A position comes from a checkpoint file, which may name any epoch.
    let data = Dataset::new("four", vec![0.0; 4], vec![0, 1, 0, 1], 1, 2).unwrap();
    let mut loader = DataLoader::builder(data).batch_size(2).seed(3).build().unwrap();
    let position = LoaderPosition { epoch: u64::MAX, ..loader.position() };
    loader.seek(&position).unwrap();
    for _ in 0..3 {
        assert_eq!(loader.next_batch().epoch, u64::MAX);
    }
}

#[test]
fn a_product_over_an_empty_inner_dimension_has_the_rows_of_its_left_operand() {
    // [3, 0] x [0, 2] is [3, 2] of zeros. The rows used to be computed as
    // elements / k, 0 whatever the rows when k is 0: a [3, 2] node with no
    // values (a panic in a debug build, out-of-bounds reads later otherwise).
    let mut graph = Graph::new();
    let a = graph.param(&Tensor::zeros(&[3, 0]));
    let b = graph.param(&Tensor::zeros(&[0, 2]));
    let product = graph.matmul(a, b).unwrap();
    assert_eq!(graph.shape(product), &[3, 2]);
    assert_eq!(graph.value(product), &[0.0; 6]);
    let w = graph.param(&Tensor::zeros(&[2, 0]));
    let x = graph.input(&Tensor::zeros(&[4, 0]));
    let linear = graph.linear(x, w, None).unwrap();
    assert_eq!(graph.value(linear), &[0.0; 8]);
    let loss = graph.sum(product).unwrap();
    graph.backward(loss).unwrap();
}
