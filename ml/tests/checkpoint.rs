//! Integration tests for `zbmd_ml::checkpoint`: the file format's checks
//! and the store's atomic save, retention and recovery.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use zbmd_ml::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, ContentError, LOCK_FILE, NamedArray, RunIdentity,
    Snapshot,
};
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
    // Nothing but the three checkpoints (and the directory's lock file) is
    // left in the directory.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [LOCK_FILE, "ckpt-000000000030.zbmd", "ckpt-000000000040.zbmd", "ckpt-000000000050.zbmd"]
    );
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
    drop(store);
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

fn run(lr: &str) -> RunIdentity {
    RunIdentity::new(BTreeMap::from([
        ("model".to_string(), "[2, 3]".to_string()),
        ("lr".to_string(), lr.to_string()),
    ]))
}

/// `sample(step)` stamped as a checkpoint of `run`.
fn sample_of(run: &RunIdentity, step: u64) -> Checkpoint {
    let mut checkpoint = sample(step);
    run.stamp(&mut checkpoint.extra);
    checkpoint
}

fn open_run(dir: &Path, keep: usize, run: &RunIdentity) -> CheckpointStore {
    CheckpointStore::open_run(dir, keep, run.clone(), Box::new(|_| Ok(()))).unwrap()
}

#[test]
fn garbage_named_with_high_steps_no_longer_pushes_good_checkpoints_out() {
    // Before run identities, pruning kept the highest step numbers by name:
    // these two files made every new checkpoint vanish as it was written.
    let dir = temp_dir("garbage_high_steps");
    let ours = run("0.1");
    for step in [999_999, 888_888] {
        std::fs::write(dir.join(format!("ckpt-{step:012}.zbmd")), b"garbage").unwrap();
        let theirs = format!("ckpt-{step:012}-{}.zbmd", ours.id());
        std::fs::write(dir.join(theirs), b"garbage with our run's name").unwrap();
    }
    let store = open_run(&dir, 2, &ours);
    for step in [10, 20, 30] {
        store.save(&sample_of(&ours, step)).unwrap();
    }
    let steps: Vec<u64> = store.list().unwrap().into_iter().map(|(step, _)| step).collect();
    // Our two newest valid ones are kept; the invalid files named for our
    // run are listed and skipped, never counted, never deleted.
    assert_eq!(steps, [999_999, 888_888, 30, 20]);
    let recovery = store.latest_valid().unwrap();
    assert_eq!(recovery.found.unwrap().0.step, 30);
    assert_eq!(recovery.skipped.len(), 2);
    assert_eq!(store.others().unwrap().len(), 2, "the other files are left alone");
}

#[test]
fn each_run_prunes_and_resumes_only_its_own_checkpoints() {
    let dir = temp_dir("two_runs");
    let (first, second) = (run("0.1"), run("0.01"));
    let store = open_run(&dir, 2, &first);
    for step in [100, 200, 300] {
        store.save(&sample_of(&first, step)).unwrap();
    }
    drop(store);
    let store = open_run(&dir, 2, &second);
    assert!(store.latest_valid().unwrap().found.is_none(), "the first run's are not ours");
    let others: Vec<u64> = store.others().unwrap().iter().map(|other| other.step).collect();
    assert_eq!(others, [300, 200]);
    for step in [10, 20, 30] {
        store.save(&sample_of(&second, step)).unwrap();
    }
    // The second run kept its own newest two, and did not touch the first's.
    let ours: Vec<u64> = store.list().unwrap().iter().map(|(step, _)| *step).collect();
    assert_eq!(ours, [30, 20]);
    assert_eq!(store.others().unwrap().len(), 2);
    assert_eq!(store.latest_valid().unwrap().found.unwrap().0.step, 30);
    // The identity inside each file names its settings.
    let theirs = store.others().unwrap().remove(0);
    let bytes = std::fs::read(&theirs.path).unwrap();
    let decoded = Checkpoint::decode(&bytes, &theirs.path).unwrap();
    let identity = RunIdentity::of_checkpoint(&decoded).unwrap();
    assert_eq!(second.differences(&identity), ["lr: 0.1 there, 0.01 here"]);
}

#[test]
fn a_store_refuses_a_checkpoint_of_another_run_and_a_renamed_file() {
    let dir = temp_dir("wrong_run");
    let (ours, theirs) = (run("0.1"), run("0.2"));
    let store = open_run(&dir, 3, &ours);
    let error = store.save(&sample_of(&theirs, 5)).unwrap_err();
    assert!(error.to_string().contains("run.id"), "{error}");
    assert!(store.save(&sample(5)).is_err(), "an unstamped checkpoint is refused too");
    // Another run's file renamed to our run's name is found out.
    drop(store);
    let other = open_run(&dir, 3, &theirs);
    let path = other.save(&sample_of(&theirs, 5)).unwrap();
    drop(other);
    let store = open_run(&dir, 3, &ours);
    std::fs::rename(&path, store.path_for(5)).unwrap();
    let recovery = store.latest_valid().unwrap();
    assert!(recovery.found.is_none());
    assert!(recovery.skipped[0].1.to_string().contains("run.id"), "{:?}", recovery.skipped);
}

#[test]
fn the_content_check_refuses_a_checkpoint_that_passes_its_checksum() {
    let dir = temp_dir("content_check");
    let ours = run("0.1");
    let infinite =
        ContentError::NonFinite { tensor: "0.weight".to_string(), index: 3, value: f32::INFINITY };
    let refused = infinite.clone();
    let check = move |checkpoint: &Checkpoint| match checkpoint.step {
        7 => Err(refused.clone()),
        _ => Ok(()),
    };
    let store = CheckpointStore::open_run(&dir, 5, ours.clone(), Box::new(check)).unwrap();
    store.save(&sample_of(&ours, 6)).unwrap();
    store.save(&sample_of(&ours, 7)).unwrap();
    let recovery = store.latest_valid().unwrap();
    assert_eq!(recovery.found.unwrap().0.step, 6);
    match &recovery.skipped[0].1 {
        CheckpointError::BadContents { source, .. } => assert_eq!(source, &infinite),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid() {
    let dir = temp_dir("lock");
    let store = CheckpointStore::open(&dir, 2).unwrap();
    let error = CheckpointStore::open(&dir, 2).unwrap_err();
    match &error {
        CheckpointError::Locked { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains(&format!("pid {}", std::process::id())), "{error}");
    // Released when the store closes: no stale lock.
    drop(store);
    CheckpointStore::open(&dir, 2).unwrap();
}

#[test]
fn a_failed_save_leaves_no_temp_file_and_old_temp_names_are_cleaned() {
    let dir = temp_dir("failed_save");
    // What builds before this one left when a save was cut short.
    std::fs::write(dir.join("ckpt-000000000004.zbmd.tmp"), b"half").unwrap();
    let store = CheckpointStore::open(&dir, 2).unwrap();
    assert!(!dir.join("ckpt-000000000004.zbmd.tmp").exists());
    // A save whose rename fails (a folder stands where the file goes).
    std::fs::create_dir(store.path_for(5)).unwrap();
    std::fs::write(store.path_for(5).join("x"), b"x").unwrap();
    assert!(store.save(&sample(5)).is_err());
    assert!(!store.temp_path_for(5).exists(), "the temp file was removed");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "the lock file and the folder only: {names:?}");
}
