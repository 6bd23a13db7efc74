//! The weights of a Hugging Face model folder: safetensors (one file or
//! shards with `model.safetensors.index.json`) or PyTorch `.bin` files (one or
//! sharded; Pythia's intermediate `stepN` revisions only have these), served
//! through one candle `VarBuilder`. Architecture-agnostic: each model file
//! (`bert.rs`, `gpt_neox.rs`) reads its own tensors from it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::ModelError;
use crate::hf_common::read_json;

/// The weight files of a folder, in the order they are searched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightFiles {
    Safetensors(Vec<PathBuf>),
    Pytorch(Vec<PathBuf>),
}

/// Finds the weights: sharded safetensors, `model.safetensors`, sharded `.bin`,
/// `pytorch_model.bin`, in that order of preference.
pub fn weight_files(dir: &Path) -> Result<WeightFiles, ModelError> {
    let st_index = dir.join("model.safetensors.index.json");
    let st_single = dir.join("model.safetensors");
    let pt_index = dir.join("pytorch_model.bin.index.json");
    let pt_single = dir.join("pytorch_model.bin");
    if st_index.is_file() {
        Ok(WeightFiles::Safetensors(shards(dir, &st_index)?))
    } else if st_single.is_file() {
        Ok(WeightFiles::Safetensors(vec![st_single]))
    } else if pt_index.is_file() {
        Ok(WeightFiles::Pytorch(shards(dir, &pt_index)?))
    } else if pt_single.is_file() {
        Ok(WeightFiles::Pytorch(vec![pt_single]))
    } else {
        Err(ModelError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no weights: expected model.safetensors, model.safetensors.index.json, \
                 pytorch_model.bin or pytorch_model.bin.index.json",
            ),
        })
    }
}

/// The shard files named in an index's `weight_map`, each once, all present.
fn shards(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let value = read_json(index)?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config {
            path: index.to_path_buf(),
            message: "no `weight_map` object".into(),
        })?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| ModelError::Config {
            path: index.to_path_buf(),
            message: format!("shard of `{tensor}` is not a file name"),
        })?;
        files.insert(file.to_string());
    }
    files
        .into_iter()
        .map(|f| {
            let path = dir.join(&f);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::Io {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("shard listed in {} is missing", index.display()),
                    ),
                })
            }
        })
        .collect()
}

/// A `VarBuilder` over the folder's weight files, converting to `dtype`.
pub fn weights_var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    match weight_files(dir)? {
        WeightFiles::Safetensors(files) => {
            // SAFETY: the files are memory-mapped read-only; like every safetensors
            // reader we rely on them not being truncated or rewritten while loaded.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
                .map_err(|e| ModelError::Config {
                    path: dir.to_path_buf(),
                    message: format!("cannot read safetensors weights: {e}"),
                })?;
            Ok(vb)
        }
        WeightFiles::Pytorch(files) => {
            let parts = files
                .iter()
                .map(|f| {
                    candle_core::pickle::PthTensors::new(f, None).map_err(|e| ModelError::Config {
                        path: f.clone(),
                        message: format!("cannot read PyTorch weights: {e}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(VarBuilder::from_backend(
                Box::new(PthShards(parts)),
                dtype,
                device.clone(),
            ))
        }
    }
}

/// Several PyTorch checkpoint shards seen as one tensor store.
struct PthShards(Vec<candle_core::pickle::PthTensors>);

impl PthShards {
    fn find(&self, name: &str) -> candle_core::Result<Tensor> {
        for part in &self.0 {
            if part.tensor_infos().contains_key(name)
                && let Some(t) = part.get(name)?
            {
                return Ok(t);
            }
        }
        Err(candle_core::Error::CannotFindTensor {
            path: name.to_string(),
        })
    }
}

impl SimpleBackend for PthShards {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hint: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.find(name)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.tensor_infos().contains_key(name))
    }
}
