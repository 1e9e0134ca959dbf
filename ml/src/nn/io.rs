//! Parameters to and from safetensors files, under PyTorch's names.
//!
//! Export writes every parameter as one tensor (F32 by default). Import is
//! strict like PyTorch's `load_state_dict(strict=True)`: every parameter must
//! be present with the model's shape, nothing else may be in the file, and
//! F32, F16 and BF16 are accepted (converted to F32). Nothing is changed
//! unless the whole file checks out.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{ModelError, Sequential};
use crate::tensor::{DType, Tensor};

fn format_error(e: safetensors::SafeTensorError) -> ModelError {
    ModelError::Format(e.to_string())
}

impl Sequential {
    /// The parameters as safetensors bytes, stored as `dtype`.
    pub fn to_safetensors_as(&self, dtype: DType) -> Result<Vec<u8>, ModelError> {
        let st_dtype = match dtype {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
        };
        let params = self.parameters();
        let bytes: Vec<Vec<u8>> =
            params.iter().map(|(_, t)| t.to_dtype(dtype).to_le_bytes()).collect();
        let mut views = Vec::with_capacity(params.len());
        for ((name, tensor), data) in params.iter().zip(&bytes) {
            views.push((
                name.to_string(),
                TensorView::new(st_dtype, tensor.shape().to_vec(), data).map_err(format_error)?,
            ));
        }
        safetensors::serialize(views, None).map_err(format_error)
    }

    /// The parameters as safetensors bytes, F32.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        self.to_safetensors_as(DType::F32)
    }

    /// Writes the parameters to a safetensors file, F32.
    pub fn export_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes)
            .map_err(|source| ModelError::Io { path: path.to_owned(), source })
    }

    /// Replaces the parameters with those in safetensors `bytes`; on any
    /// error the model is unchanged.
    pub fn load_safetensors(&mut self, bytes: &[u8]) -> Result<(), ModelError> {
        let file = SafeTensors::deserialize(bytes).map_err(format_error)?;
        let mut loaded = Vec::with_capacity(self.names.len());
        for (name, tensor) in self.parameters() {
            let view = file.tensor(name).map_err(|_| ModelError::MissingTensor {
                name: name.to_owned(),
                expected: tensor.shape().to_vec(),
            })?;
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                other => {
                    return Err(ModelError::DTypeMismatch {
                        name: name.to_owned(),
                        found: format!("{other:?}"),
                    });
                }
            };
            if view.shape() != tensor.shape() {
                return Err(ModelError::ShapeMismatch {
                    name: name.to_owned(),
                    found: view.shape().to_vec(),
                    expected: tensor.shape().to_vec(),
                });
            }
            loaded.push(Tensor::from_le_bytes(view.data(), dtype, view.shape())?);
        }
        let mut extra: Vec<&str> =
            file.names().into_iter().filter(|n| !self.names.iter().any(|m| m == n)).collect();
        extra.sort_unstable();
        if let Some(name) = extra.first() {
            return Err(ModelError::UnexpectedTensor {
                name: name.to_string(),
                known: self.names.clone(),
            });
        }
        for ((_, slot), tensor) in self.parameters_mut().into_iter().zip(loaded) {
            *slot = tensor;
        }
        Ok(())
    }

    /// Replaces the parameters with those in a safetensors file; on any error
    /// the model is unchanged.
    pub fn import_safetensors(&mut self, path: &Path) -> Result<(), ModelError> {
        let bytes = std::fs::read(path)
            .map_err(|source| ModelError::Io { path: path.to_owned(), source })?;
        self.load_safetensors(&bytes)
    }
}
