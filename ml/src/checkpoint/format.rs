//! Encoding and decoding of the checkpoint file (layout in the parent
//! module's docs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{Checkpoint, CheckpointError, FORMAT_VERSION, NamedArray};
use crate::data::LoaderPosition;

/// The first eight bytes of every checkpoint file.
pub(super) const MAGIC: &[u8; 8] = b"ZBMDCKPT";
/// Magic, version, payload length, CRC.
pub(super) const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

/// The CRC of the header's version and length fields followed by the
/// payload, so a damaged length or version is caught like damaged data.
fn checksum(version_and_length: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(version_and_length);
    hasher.update(payload);
    hasher.finalize()
}

pub(super) fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let bytes: Vec<Vec<u8>> = checkpoint.tensors.iter().map(le_bytes).collect();
    let mut seen = HashSet::new();
    let mut views = Vec::with_capacity(checkpoint.tensors.len());
    for (tensor, data) in checkpoint.tensors.iter().zip(&bytes) {
        let bad = |reason: String| CheckpointError::BadTensor { name: tensor.name.clone(), reason };
        if !seen.insert(tensor.name.as_str()) {
            return Err(bad("the name appears twice".to_string()));
        }
        let view = TensorView::new(Dtype::F32, tensor.shape.clone(), data).map_err(|_| {
            bad(format!("shape {:?} does not hold {} values", tensor.shape, tensor.data.len()))
        })?;
        views.push((tensor.name.as_str(), view));
    }
    let payload = safetensors::serialize(views, Some(metadata(checkpoint)?)).map_err(|source| {
        CheckpointError::BadTensor {
            name: "<all>".to_string(),
            reason: format!("safetensors cannot serialize them: {source}"),
        }
    })?;
    let mut file = Vec::with_capacity(HEADER_BYTES + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = checksum(&file[8..20], &payload);
    file.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(&payload);
    Ok(file)
}

fn le_bytes(tensor: &NamedArray) -> Vec<u8> {
    tensor.data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn metadata(checkpoint: &Checkpoint) -> Result<HashMap<String, String>, CheckpointError> {
    let json = |field: &str, value: Result<String, serde_json::Error>| {
        value.map_err(|error| CheckpointError::BadTensor {
            name: format!("<metadata {field}>"),
            reason: error.to_string(),
        })
    };
    let metric_bits: BTreeMap<&str, u64> =
        checkpoint.metrics.iter().map(|(name, value)| (name.as_str(), value.to_bits())).collect();
    let order: Vec<&str> = checkpoint.tensors.iter().map(|t| t.name.as_str()).collect();
    Ok(HashMap::from([
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("step".to_string(), checkpoint.step.to_string()),
        ("rng_state".to_string(), checkpoint.rng_state.to_string()),
        ("loader".to_string(), json("loader", serde_json::to_string(&checkpoint.loader))?),
        ("metrics".to_string(), json("metrics", serde_json::to_string(&metric_bits))?),
        ("extra".to_string(), json("extra", serde_json::to_string(&checkpoint.extra))?),
        ("tensor_order".to_string(), json("tensor_order", serde_json::to_string(&order))?),
    ]))
}

pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let payload = check_frame(bytes, path)?;
    let tensors = SafeTensors::deserialize(payload)
        .map_err(|source| CheckpointError::Payload { path: path.to_path_buf(), source })?;
    let (_, header) = SafeTensors::read_metadata(payload)
        .map_err(|source| CheckpointError::Payload { path: path.to_path_buf(), source })?;
    let empty = HashMap::new();
    let meta = Metadata { path, map: header.metadata().as_ref().unwrap_or(&empty) };
    let version: u32 = meta.parse("format_version")?;
    if version != FORMAT_VERSION {
        return Err(meta.bad("format_version", format!("{version}, expected {FORMAT_VERSION}")));
    }
    let metric_bits: BTreeMap<String, u64> = meta.json("metrics")?;
    let order: Vec<String> = meta.json("tensor_order")?;
    if order.len() != tensors.len() {
        return Err(meta
            .bad("tensor_order", format!("{} names for {} tensors", order.len(), tensors.len())));
    }
    let arrays = read_arrays(&meta, &tensors, order)?;
    Ok(Checkpoint {
        step: meta.parse("step")?,
        tensors: arrays,
        loader: meta.json::<LoaderPosition>("loader")?,
        rng_state: meta.parse("rng_state")?,
        metrics: metric_bits.into_iter().map(|(name, bits)| (name, f64::from_bits(bits))).collect(),
        extra: meta.json("extra")?,
    })
}

/// The tensors in `order`, each checked: named once, present, `F32`, and
/// with a shape whose dimensions multiply without overflow even where one
/// is zero (so a decoded checkpoint always encodes again, and its arrays
/// become tensors).
fn read_arrays(
    meta: &Metadata<'_>,
    tensors: &SafeTensors<'_>,
    order: Vec<String>,
) -> Result<Vec<NamedArray>, CheckpointError> {
    let mut seen = HashSet::with_capacity(order.len());
    let mut arrays = Vec::with_capacity(order.len());
    for name in order {
        if !seen.insert(name.clone()) {
            return Err(meta.bad("tensor_order", format!("names {name:?} twice")));
        }
        let view = tensors
            .tensor(&name)
            .map_err(|_| meta.bad("tensor_order", format!("names {name:?}, not in the file")))?;
        if view.dtype() != Dtype::F32 {
            return Err(
                meta.bad("tensors", format!("{name:?} is {:?}, expected F32", view.dtype()))
            );
        }
        crate::tensor::checked_numel("checkpoint", view.shape())
            .map_err(|error| meta.bad("tensors", format!("{name:?}: {error}")))?;
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        arrays.push(NamedArray::new(name, view.shape().to_vec(), data));
    }
    Ok(arrays)
}

/// Checks magic, version, length and checksum; returns the payload.
fn check_frame<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], CheckpointError> {
    let path_buf = || path.to_path_buf();
    let found_bytes = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if MAGIC.starts_with(bytes) {
            // A prefix of the magic: a write cut short, not a foreign file.
            return Err(CheckpointError::Truncated {
                path: path_buf(),
                expected_bytes: HEADER_BYTES as u64,
                found_bytes,
            });
        }
        let shown = &bytes[..bytes.len().min(MAGIC.len())];
        return Err(CheckpointError::BadMagic {
            path: path_buf(),
            found: String::from_utf8_lossy(shown).into_owned(),
        });
    }
    if bytes.len() < HEADER_BYTES {
        return Err(CheckpointError::Truncated {
            path: path_buf(),
            expected_bytes: HEADER_BYTES as u64,
            found_bytes,
        });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let payload_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let expected_crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let expected_bytes = (HEADER_BYTES as u64).saturating_add(payload_len);
    if found_bytes < expected_bytes {
        return Err(CheckpointError::Truncated { path: path_buf(), expected_bytes, found_bytes });
    }
    if found_bytes > expected_bytes {
        return Err(CheckpointError::TrailingBytes {
            path: path_buf(),
            expected_bytes,
            found_bytes,
        });
    }
    let payload = &bytes[HEADER_BYTES..];
    let found_crc = checksum(&bytes[8..20], payload);
    if found_crc != expected_crc {
        return Err(CheckpointError::ChecksumMismatch {
            path: path_buf(),
            expected: expected_crc,
            found: found_crc,
        });
    }
    // Checked after the CRC: a damaged version field is a checksum error; a
    // valid file from another format version is this one.
    if version != FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            path: path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(payload)
}

/// The safetensors `__metadata__` map, read field by field.
struct Metadata<'a> {
    path: &'a Path,
    map: &'a HashMap<String, String>,
}

impl Metadata<'_> {
    fn bad(&self, field: &str, reason: String) -> CheckpointError {
        CheckpointError::BadMetadata {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            reason,
        }
    }

    fn get(&self, field: &str) -> Result<&str, CheckpointError> {
        self.map
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| self.bad(field, "missing".to_string()))
    }

    fn parse<T: std::str::FromStr>(&self, field: &str) -> Result<T, CheckpointError>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.get(field)?;
        text.parse().map_err(|error| self.bad(field, format!("{text:?}: {error}")))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<T, CheckpointError> {
        serde_json::from_str(self.get(field)?).map_err(|error| self.bad(field, error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint file around `payload`, with a correct header and CRC.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let crc = checksum(&file[8..20], payload);
        file.extend_from_slice(&crc.to_le_bytes());
        file.extend_from_slice(payload);
        file
    }

    /// A payload with `tensors` (name, shape, bytes) and `order` as its
    /// tensor_order, every other field valid.
    fn payload(tensors: &[(&str, Vec<usize>, Vec<u8>)], order: &[&str]) -> Vec<u8> {
        let checkpoint = Checkpoint::default();
        let mut meta = metadata(&checkpoint).unwrap();
        meta.insert("tensor_order".into(), serde_json::to_string(order).unwrap());
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, data)| {
                (*name, TensorView::new(Dtype::F32, shape.clone(), data).unwrap())
            })
            .collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    #[test]
    fn a_name_twice_in_tensor_order_is_refused() {
        // Before: decoded into two arrays of one name, which encode refuses,
        // so a checkpoint that loaded could not be saved again.
        let four = vec![0u8; 4];
        let bytes =
            framed(&payload(&[("a", vec![1], four.clone()), ("b", vec![1], four)], &["a", "a"]));
        let error = decode(&bytes, Path::new("c.ckpt")).unwrap_err();
        assert!(
            matches!(&error, CheckpointError::BadMetadata { field, reason, .. }
                if field == "tensor_order" && reason.contains("twice")),
            "{error:?}"
        );
    }

    #[test]
    fn an_empty_tensor_whose_strides_overflow_is_refused() {
        let bytes = framed(&payload(&[("a", vec![0, 1 << 40, 1 << 40], vec![])], &["a"]));
        let error = decode(&bytes, Path::new("c.ckpt")).unwrap_err();
        assert!(
            matches!(&error, CheckpointError::BadMetadata { field, .. } if field == "tensors"),
            "{error:?}"
        );
        // Zero elements with small dimensions still decode and encode again.
        let bytes = framed(&payload(&[("a", vec![0, 3], vec![])], &["a"]));
        let checkpoint = decode(&bytes, Path::new("c.ckpt")).unwrap();
        let again = decode(&encode(&checkpoint).unwrap(), Path::new("c.ckpt")).unwrap();
        assert!(again.bit_eq(&checkpoint));
    }
}
