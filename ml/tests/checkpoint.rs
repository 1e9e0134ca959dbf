//! Integration tests for `zbmd_ml::checkpoint`: the file format's checks
//! and the store's atomic save, retention and recovery.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use zbmd_ml::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, NamedArray, Snapshot};
use zbmd_ml::data::{DataLoader, Dataset};

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zbmd-ml-ckpt-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A checkpoint with awkward contents: odd floats (NaN with a payload,
/// -0.0, subnormals, infinities), tensors in non-sorted order, a scalar and
/// an empty tensor, a real loader position and NaN metrics.
fn sample(step: u64) -> Checkpoint {
    let data = Dataset::new("d", (0..20).map(|i| i as f32).collect(), vec![0; 10], 2, 1).unwrap();
    let mut loader = DataLoader::builder(data).batch_size(3).seed(step).build().unwrap();
    for _ in 0..5 {
        loader.next_batch();
    }
    let odd = vec![
        f32::from_bits(0x7fc0_1234),
        -0.0,
        f32::from_bits(1),
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0 / 3.0,
    ];
    Checkpoint {
        step,
        tensors: vec![
            NamedArray::new("z.weight", vec![2, 3], odd),
            NamedArray::new("a.bias", vec![3], vec![step as f32, 2.5, -7.0]),
            NamedArray::new("adam.t", vec![], vec![42.0]),
            NamedArray::new("empty", vec![0, 4], vec![]),
        ],
        loader: loader.position(),
        rng_state: 0xdead_beef_0000_0000 ^ step,
        metrics: BTreeMap::from([
            ("loss".to_string(), 0.1 + 0.2),
            ("nan".to_string(), f64::from_bits(0x7ff8_0000_0000_0abc)),
            ("accuracy".to_string(), 0.95),
        ]),
        extra: BTreeMap::from([("model".to_string(), "[64, 32, 10]".to_string())]),
    }
}

fn names_file(error: &CheckpointError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name {}",
        path.display()
    );
}

#[test]
fn encode_decode_round_trips_bit_exactly() {
    let original = sample(7);
    let bytes = original.encode().unwrap();
    assert_eq!(&bytes[..8], b"ZBMDCKPT");
    let back = Checkpoint::decode(&bytes, "mem").unwrap();
    assert!(back.bit_eq(&original), "{back:?}\n!=\n{original:?}");
    let names: Vec<&str> = back.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["z.weight", "a.bias", "adam.t", "empty"]);
    // bit_eq is not vacuous: one flipped mantissa bit, or a NaN payload, differs.
    let mut changed = original.clone();
    changed.tensors[1].data[1] = f32::from_bits(2.5f32.to_bits() ^ 1);
    assert!(!changed.bit_eq(&original));
    let mut changed = original.clone();
    changed.metrics.insert("nan".to_string(), f64::NAN);
    assert!(!changed.bit_eq(&original));
}

#[test]
fn the_payload_is_a_plain_safetensors_file() {
    let bytes = sample(3).encode().unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes[24..]).unwrap();
    let bias = tensors.tensor("a.bias").unwrap();
    assert_eq!(bias.shape(), &[3]);
    assert_eq!(&bias.data()[..4], &3.0f32.to_le_bytes());
}

#[test]
fn clones_and_snapshots_are_bit_exact() {
    let original = sample(11);
    let mut snapshot = Snapshot::new(NonZeroU64::new(5).unwrap());
    assert!(snapshot.latest().is_none());
    assert!(snapshot.due(10) && !snapshot.due(11));
    snapshot.store(original.clone());
    assert!(snapshot.latest().unwrap().bit_eq(&original));
    let copy = snapshot.clone();
    assert!(copy.latest().unwrap().bit_eq(&original));
}

#[test]
fn a_flipped_byte_anywhere_after_the_magic_is_a_checksum_error() {
    let bytes = sample(1).encode().unwrap();
    // Version, length and payload bytes; the length field is covered by the
    // CRC but a flip there first shows up as a size mismatch.
    for at in [8, 30, bytes.len() / 2, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        let error = Checkpoint::decode(&damaged, "ckpt-x.zbmd").unwrap_err();
        assert!(matches!(error, CheckpointError::ChecksumMismatch { .. }), "byte {at}: {error:?}");
        assert!(error.to_string().contains("ckpt-x.zbmd"));
    }
    let mut damaged = bytes.clone();
    damaged[14] ^= 1; // high bytes of the length
    let error = Checkpoint::decode(&damaged, "x").unwrap_err();
    assert!(matches!(error, CheckpointError::Truncated { .. }), "{error:?}");
}

#[test]
fn bad_magic_and_foreign_files() {
    let mut bytes = sample(1).encode().unwrap();
    bytes[0] = b'X';
    let error = Checkpoint::decode(&bytes, "f").unwrap_err();
    assert!(matches!(error, CheckpointError::BadMagic { .. }), "{error:?}");
    let error = Checkpoint::decode(b"PK\x03\x04 a zip file", "f").unwrap_err();
    assert!(matches!(error, CheckpointError::BadMagic { .. }));
}

#[test]
fn a_truncated_file_says_expected_and_present_bytes() {
    let bytes = sample(1).encode().unwrap();
    let total = bytes.len() as u64;
    for cut in [0, 5, 8, 23, 24, 100, bytes.len() - 1] {
        let error = Checkpoint::decode(&bytes[..cut], "t").unwrap_err();
        match error {
            CheckpointError::Truncated { expected_bytes, found_bytes, .. } => {
                assert_eq!(found_bytes, cut as u64);
                assert_eq!(expected_bytes, if cut < 24 { 24 } else { total });
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Checkpoint::decode(&longer, "t").unwrap_err(),
        CheckpointError::TrailingBytes { .. }
    ));
}

#[test]
fn tensors_that_cannot_be_encoded_are_named() {
    let mut checkpoint = sample(1);
    checkpoint.tensors.push(NamedArray::new("a.bias", vec![1], vec![0.0]));
    let error = checkpoint.encode().unwrap_err();
    assert!(matches!(error, CheckpointError::BadTensor { ref name, .. } if name == "a.bias"));
    let mut checkpoint = sample(1);
    checkpoint.tensors[0].shape = vec![4, 4];
    let error = checkpoint.encode().unwrap_err();
    assert!(error.to_string().contains("z.weight"), "{error}");
}

#[test]
fn store_round_trips_and_keeps_the_last_k() {
    let dir = temp_dir("retention");
    let store = CheckpointStore::open(&dir, 3).unwrap();
    assert!(store.latest_valid().unwrap().found.is_none());
    for step in [10, 20, 30, 40, 50] {
        let path = store.save(&sample(step)).unwrap();
        assert_eq!(path, dir.join(format!("ckpt-{step:012}.zbmd")));
    }
    let steps: Vec<u64> = store.list().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![50, 40, 30]);
    let recovery = store.latest_valid().unwrap();
    assert!(recovery.skipped.is_empty());
    let (checkpoint, path) = recovery.found.unwrap();
    assert!(checkpoint.bit_eq(&sample(50)));
    assert_eq!(path, store.path_for(50));
    // Nothing but the three checkpoints is left in the directory.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
}

#[test]
fn keep_last_zero_is_refused() {
    let dir = temp_dir("keep_zero");
    let error = CheckpointStore::open(&dir, 0).unwrap_err();
    assert!(matches!(error, CheckpointError::KeepLastZero { .. }));
    names_file(&error, &dir);
}

#[test]
fn a_truncated_newest_file_is_skipped_and_reported() {
    let dir = temp_dir("truncated");
    let store = CheckpointStore::open(&dir, 5).unwrap();
    store.save(&sample(1)).unwrap();
    let newest = store.save(&sample(2)).unwrap();
    let full = std::fs::read(&newest).unwrap();
    for cut in [0, 7, 24, full.len() / 3, full.len() - 1] {
        std::fs::write(&newest, &full[..cut]).unwrap();
        let recovery = store.latest_valid().unwrap();
        let (checkpoint, path) = recovery.found.unwrap();
        assert_eq!(checkpoint.step, 1, "cut at {cut}");
        assert_eq!(path, store.path_for(1));
        assert_eq!(recovery.skipped.len(), 1);
        let (skipped_path, error) = &recovery.skipped[0];
        assert_eq!(skipped_path, &newest);
        assert!(matches!(error, CheckpointError::Truncated { .. }), "cut at {cut}: {error:?}");
        names_file(error, &newest);
    }
}

#[test]
fn a_flipped_byte_on_disk_is_skipped_as_a_checksum_error() {
    let dir = temp_dir("flip");
    let store = CheckpointStore::open(&dir, 5).unwrap();
    store.save(&sample(1)).unwrap();
    let newest = store.save(&sample(2)).unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();
    let recovery = store.latest_valid().unwrap();
    assert_eq!(recovery.found.unwrap().0.step, 1);
    assert!(matches!(recovery.skipped[0].1, CheckpointError::ChecksumMismatch { .. }));
}

#[test]
fn no_valid_checkpoint_at_all() {
    let dir = temp_dir("none_valid");
    let store = CheckpointStore::open(&dir, 5).unwrap();
    let path = store.save(&sample(4)).unwrap();
    std::fs::write(&path, b"garbage").unwrap();
    let recovery = store.latest_valid().unwrap();
    assert!(recovery.found.is_none());
    assert!(matches!(recovery.skipped[0].1, CheckpointError::BadMagic { .. }));
}

#[test]
fn a_file_renamed_to_another_step_is_refused() {
    let dir = temp_dir("renamed");
    let store = CheckpointStore::open(&dir, 5).unwrap();
    store.save(&sample(1)).unwrap();
    let path = store.save(&sample(2)).unwrap();
    std::fs::rename(&path, store.path_for(9)).unwrap();
    let recovery = store.latest_valid().unwrap();
    assert_eq!(recovery.found.unwrap().0.step, 1);
    match &recovery.skipped[0].1 {
        CheckpointError::BadMetadata { field, .. } => assert_eq!(field, "step"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_crash_mid_save_leaves_the_old_checkpoint_and_its_temp_file_is_cleaned() {
    let dir = temp_dir("crash");
    let store = CheckpointStore::open(&dir, 2).unwrap();
    store.save(&sample(5)).unwrap();
    // Simulate a save of step 6 that died after writing half its temp file:
    // the temp name the store uses, never renamed.
    let bytes = sample(6).encode().unwrap();
    let temp = dir.join(format!(".ckpt-{:012}.{}.tmp", 6, 99999));
    std::fs::write(&temp, &bytes[..bytes.len() / 2]).unwrap();
    // A stray unrelated file is left alone and not read.
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();

    let recovery = store.latest_valid().unwrap();
    assert!(recovery.skipped.is_empty(), "the temp file is never considered");
    assert!(recovery.found.unwrap().0.bit_eq(&sample(5)));

    // Reopening (the restarted process) removes the temp file.
    let store = CheckpointStore::open(&dir, 2).unwrap();
    assert!(!temp.exists());
    assert!(dir.join("notes.txt").exists());
    assert_eq!(store.latest_valid().unwrap().found.unwrap().0.step, 5);
    // And saving continues normally.
    store.save(&sample(6)).unwrap();
    assert_eq!(store.latest_valid().unwrap().found.unwrap().0.step, 6);
}

#[test]
fn saving_the_same_step_again_replaces_it() {
    let dir = temp_dir("same_step");
    let store = CheckpointStore::open(&dir, 2).unwrap();
    store.save(&sample(3)).unwrap();
    let mut changed = sample(3);
    changed.metrics.insert("loss".to_string(), 9.0);
    store.save(&changed).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(store.latest_valid().unwrap().found.unwrap().0.bit_eq(&changed));
}
