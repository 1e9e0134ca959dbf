//! Writes the seed corpora under `fuzz/corpus/` from code, so every seed is
//! a real encoder's output (a checkpoint from `Checkpoint::encode`, a
//! parameter file from `Sequential::to_safetensors`, the digits' first rows)
//! and can be made again after a format change:
//!
//! ```text
//! cargo test -p zbmd-fuzz-targets --test seeds -- --ignored
//! ```
//!
//! Ignored in normal runs: the seeds are committed, and `tests/corpus.rs`
//! reads them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use zbmd_fuzz_targets::checkpoint_file;
use zbmd_ml::checkpoint::{Checkpoint, NamedArray};
use zbmd_ml::data::{LoaderPosition, digits};
use zbmd_ml::nn::Sequential;
use zbmd_ml::rng::Rng;
use zbmd_ml::tensor::DType;
use zbmd_ml::train::TrainConfig;

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(name), bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The embedded digits' first `rows` rows as CSV, label last.
fn digits_csv(rows: usize) -> String {
    let data = digits();
    let mut text = String::new();
    for row in 0..rows {
        let features: Vec<String> = data.row(row).iter().map(|x| x.to_string()).collect();
        text += &format!("{},{}\n", features.join(","), data.labels[row]);
    }
    text
}

fn with_options(options: u8, text: &[u8]) -> Vec<u8> {
    let mut bytes = vec![options];
    bytes.extend_from_slice(text);
    bytes
}

fn csv_seeds() {
    let rows = digits_csv(4);
    seed("csv", "digits", &with_options(0, rows.as_bytes()));
    seed("csv", "digits-gz", &with_options(0x10, &gzip(rows.as_bytes())));
    seed("csv", "header", &with_options(0, b"x1,x2,y\n0.5,-1,2\n1e3,4,0\n"));
    seed("csv", "bom-crlf", &with_options(0, "\u{feff}1,2,0\r\n3,4,1\r\n\r\n".as_bytes()));
    seed("csv", "label-first", &with_options(1, b"label,a,b\n3,1,2\n0,0.25,-7\n"));
    seed("csv", "semicolons", &with_options(0x20 | 2, b"1;2;0\n4;1;5\n"));
    seed("csv", "said-header", &with_options(0x08 | 0x40, b"1,2x,0\n3,4,1\n"));
    seed("csv", "beyond-f32", &with_options(0, b"1,2,0\n3,1e39,1\n"));
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|dim| bytes.extend_from_slice(&dim.to_be_bytes()));
    bytes.extend_from_slice(data);
    bytes
}

/// The idx target's input: the images file's length, the images, the labels.
fn idx_pair(images: &[u8], labels: &[u8]) -> Vec<u8> {
    let mut bytes = (images.len() as u16).to_le_bytes().to_vec();
    bytes.extend_from_slice(images);
    bytes.extend_from_slice(labels);
    bytes
}

fn idx_seeds() {
    let images = idx(0x803, &[3, 2, 2], &[0, 1, 2, 3, 10, 11, 12, 13, 255, 254, 253, 252]);
    let labels = idx(0x801, &[3], &[7, 0, 2]);
    seed("idx", "three-2x2", &idx_pair(&images, &labels));
    seed("idx", "three-2x2-gz", &idx_pair(&gzip(&images), &gzip(&labels)));
    let data = digits();
    let pixels: Vec<u8> = data.features[..2 * 64].iter().map(|&x| x as u8).collect();
    let images = idx(0x803, &[2, 8, 8], &pixels);
    seed("idx", "digits-8x8", &idx_pair(&images, &idx(0x801, &[2], &[0, 1])));
    seed("idx", "count-mismatch", &idx_pair(&images, &idx(0x801, &[1], &[0])));
}

fn model_seeds() {
    for (name, spec) in [
        ("mlp", "[64, 128, 10]"),
        ("deep", "[4, 5, 6, 7]"),
        ("spaces", " [784,128,10] "),
        ("smallest", "[2,1]"),
        ("zero", "[64, 0]"),
        ("word", "[64, x, 10]"),
    ] {
        seed("model_spec", name, spec.as_bytes());
    }
    let all_kinds = "[[layers]]\nkind = \"embedding\"\ncount = 20\ndim = 8\n\
        [[layers]]\nkind = \"layer_norm\"\nsize = 8\neps = 1e-5\n\
        [[layers]]\nkind = \"linear\"\nin = 8\nout = 16\n\
        [[layers]]\nkind = \"gelu\"\n[[layers]]\nkind = \"dropout\"\np = 0.5\n\
        [[layers]]\nkind = \"tanh\"\n[[layers]]\nkind = \"relu\"\n\
        [[layers]]\nkind = \"linear\"\nin = 16\nout = 3\nbias = false\n";
    seed("model_toml", "all-kinds", all_kinds.as_bytes());
    let mismatch = "[[layers]]\nkind = \"linear\"\nin = 4\nout = 8\n[[layers]]\nkind = \"relu\"\n\
        [[layers]]\nkind = \"linear\"\nin = 9\nout = 2\n";
    seed("model_toml", "mismatch", mismatch.as_bytes());
    let inline = "layers = [{ kind = \"linear\", in = 3, out = 2 }, { kind = \"tanh\" }]\n";
    seed("model_toml", "inline", inline.as_bytes());
}

fn safetensors_seeds() {
    let toml = "[[layers]]\nkind = \"embedding\"\ncount = 5\ndim = 3\n\
        [[layers]]\nkind = \"layer_norm\"\nsize = 3\n\
        [[layers]]\nkind = \"linear\"\nin = 3\nout = 4\n[[layers]]\nkind = \"relu\"\n\
        [[layers]]\nkind = \"linear\"\nin = 4\nout = 2\nbias = false\n";
    let model = Sequential::from_toml(toml, &mut Rng::new(2)).unwrap();
    for (name, dtype) in [("f32", DType::F32), ("f16", DType::F16), ("bf16", DType::BF16)] {
        seed("safetensors_import", name, &model.to_safetensors_as(dtype).unwrap());
    }
    let other = Sequential::from_spec("[3, 4, 2]", &mut Rng::new(2)).unwrap();
    seed("safetensors_import", "other-model", &other.to_safetensors().unwrap());
}

fn train_config_seeds() {
    let default = toml::to_string(&TrainConfig::default()).unwrap();
    seed("train_config", "default", default.as_bytes());
    let adam = "model = \"[64, 32, 10]\"\nepochs = 2\nbatch_size = 32\ngrad_chunk = 8\n\
        seed = 7\ncheckpoint_dir = \"ckpt\"\ncheckpoint_every = 10\nresume = true\n\
        [data]\nkind = \"csv\"\npath = \"train.csv\"\nscale = 16.0\n\
        [optimizer]\nkind = \"adamw\"\nlr = 0.001\n\
        [schedule]\nkind = \"step\"\nlr = 0.1\nstep_size = 10\ngamma = 0.5\n\
        [faults]\nat = [[\"model\", 10], [\"device_oom\", 3]]\n";
    seed("train_config", "adam-csv", adam.as_bytes());
    let idx = "[data]\nkind = \"idx\"\nimages = \"i.idx3-ubyte\"\nlabels = \"l.idx1-ubyte\"\n\
        [optimizer]\nkind = \"sgd\"\nlr = 0.5\nmomentum = 0.0\n";
    seed("train_config", "idx-sgd", idx.as_bytes());
}

fn checkpoint_seeds() {
    let mut metrics = BTreeMap::new();
    metrics.insert("loss".to_string(), 0.25);
    metrics.insert("nan".to_string(), f64::NAN);
    let mut extra = BTreeMap::new();
    extra.insert("model".to_string(), "[2, 3, 1]".to_string());
    let checkpoint = Checkpoint {
        step: 12,
        tensors: vec![
            NamedArray::new("0.weight", vec![3, 2], vec![0.5, -1.0, 2.0, 0.0, 1e-3, 7.0]),
            NamedArray::new("0.bias", vec![3], vec![0.0, 0.1, -0.1]),
            NamedArray::new("sgd.momentum.0.bias", vec![3], vec![1.0, 2.0, 3.0]),
            NamedArray::new("empty", vec![0, 4], vec![]),
        ],
        loader: LoaderPosition {
            epoch: 1,
            batch_index: 2,
            rng_state: 9,
            seed: 42,
            rows: 10,
            batch_size: 4,
        },
        rng_state: 77,
        metrics,
        extra,
    };
    let file = checkpoint.encode().unwrap();
    seed("checkpoint", "real", &file);
    seed("checkpoint", "empty-checkpoint", &Checkpoint::default().encode().unwrap());
    // The payload only: the checkpoint_payload target frames it again.
    seed("checkpoint_payload", "real", &file[24..]);
    assert_eq!(checkpoint_file(&file[24..]), file);
}

fn fault_seeds() {
    for (name, text) in [
        ("docs", "crash=0.01,drop=0.001,delay=0.01:1ms..5ms,seed=42,site.gpu.launch=0.05"),
        ("exp", "delay=0.5:exp(1500us),seed=0x2a"),
        ("fixed", " drop = 1e-7 , delay=0:250ns "),
        ("sites", "site.a=0,site.b.c-d_e=0.125,seed=0"),
        ("empty", ""),
    ] {
        seed("fault_plan", name, text.as_bytes());
    }
    for (name, text) in [
        ("three", "model@10,optimizer@25,device_lost@40"),
        (
            "all",
            "model@1, optimizer@2 ,loader@3,checkpointer@4,metrics@5,device_lost@6,device_oom@7",
        ),
        ("empty", ""),
    ] {
        seed("fault_schedule", name, text.as_bytes());
    }
}

#[test]
#[ignore = "writes fuzz/corpus/: run by hand after a format change"]
fn regenerate_seed_corpus() {
    csv_seeds();
    idx_seeds();
    model_seeds();
    safetensors_seeds();
    train_config_seeds();
    checkpoint_seeds();
    fault_seeds();
}
