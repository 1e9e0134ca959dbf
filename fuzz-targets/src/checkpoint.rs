//! The checkpoint file (`ZBMDCKPT`, a CRC, then a safetensors payload with
//! metadata).

use zbmd_ml::checkpoint::{Checkpoint, FORMAT_VERSION};
use zbmd_ml::tensor::Tensor;

use super::says_something;

/// The name decode errors must carry.
const PATH: &str = "fuzz.ckpt";

/// Bytes through `Checkpoint::decode`: a decoded checkpoint's arrays match
/// their shapes and become tensors, and encoding it then decoding the result
/// gives the same checkpoint bit for bit. An error names the file.
pub fn checkpoint(data: &[u8]) {
    match Checkpoint::decode(data, PATH) {
        Ok(decoded) => check_round_trip(&decoded),
        Err(error) => {
            says_something(&error);
            assert!(error.to_string().contains(PATH), "{error} does not name the file");
        }
    }
}

/// The bytes as a checkpoint's payload, framed with a valid header and CRC,
/// then as [`checkpoint`]: the CRC stops almost every mutation of a whole
/// file, this target reaches the safetensors and metadata parsing behind it.
pub fn checkpoint_payload(data: &[u8]) {
    checkpoint(&checkpoint_file(data));
}

/// A checkpoint file around `payload`: magic, version, length, CRC-32 of
/// the version and length followed by the payload (the layout in
/// `zbmd_ml::checkpoint`'s docs).
pub fn checkpoint_file(payload: &[u8]) -> Vec<u8> {
    let mut file = b"ZBMDCKPT".to_vec();
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&file[8..20]);
    hasher.update(payload);
    file.extend_from_slice(&hasher.finalize().to_le_bytes());
    file.extend_from_slice(payload);
    file
}

fn check_round_trip(decoded: &Checkpoint) {
    for array in &decoded.tensors {
        let tensor = Tensor::from_vec(array.data.clone(), &array.shape);
        assert!(tensor.is_ok(), "{:?} does not hold its data: {tensor:?}", array.name);
    }
    let bytes = decoded.encode().expect("a decoded checkpoint encodes");
    let again = Checkpoint::decode(&bytes, PATH).expect("an encoded checkpoint decodes");
    assert!(again.bit_eq(decoded), "encode then decode changed the checkpoint");
}
