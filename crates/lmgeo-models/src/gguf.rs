//! Reading GGUF files: metadata, tensors, and a `VarBuilder` that serves the
//! tensors under Hugging Face names, dequantised to `f32`.
//!
//! The model files (`llama.rs`, `gemma3.rs`) are written against Hugging Face
//! names and conventions so that the same forward code runs on GGUF weights,
//! on safetensors and on randomly initialised weights. Everything that the
//! llama.cpp converter changed on the way to GGUF is undone here, the same way
//! transformers undoes it when it loads a GGUF with `gguf_file=`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::ModelError;

/// How the weights of a GGUF model are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Every tensor dequantised to `f32` at load: the fastest on CPU (dense
    /// f32 matmuls beat candle's quantised kernels several times over unless
    /// the crate is built with `-C target-cpu=native`), and the reference for
    /// all golden tests. Costs four bytes per parameter.
    #[default]
    DequantizedF32,
    /// Projection matrices and the token embedding stay in their GGUF block
    /// format and go through candle's quantised matmul; norms are `f32`.
    /// Less memory (peak RSS of the 512-token benchmark: SmolLM2 437 against
    /// 867 MiB, Gemma 3 490 against 1244 MiB) but, without
    /// `-C target-cpu=native`, 20-50 times slower on these CPUs (about 20
    /// against 500-1400 tokens/s, release, 2 threads). Results differ from the dequantised path because
    /// candle's kernels also quantise the activations to 8 bits; the tests
    /// only require the same next token and cosine > 0.98 per position.
    Quantized,
}

/// Options for loading a GGUF model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub format: WeightFormat,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            format: WeightFormat::DequantizedF32,
            device: Device::Cpu,
        }
    }
}

/// An open GGUF file: its parsed header and a handle to read tensors from.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .field("metadata", &self.content.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Parses the header (metadata and tensor index); tensor data is read on
    /// demand.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut reader = BufReader::new(file);
        let file_size = reader.get_ref().metadata().map_err(io_err)?.len();
        let content = Content::read(&mut reader).map_err(|e| {
            let message = crate::error::candle_message(&e);
            let cut_short = message.contains("remaining") || message.contains("fill whole buffer");
            let hint = if cut_short {
                "the file ends early, as an interrupted download or copy leaves it: fetch it again"
            } else {
                "is it a GGUF file?"
            };
            ModelError::Config {
                path: path.to_path_buf(),
                message: format!("not a readable GGUF file ({message}); {hint}"),
            }
        })?;
        check_tensor_extents(path, &content, file_size)?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// `general.architecture`, e.g. `llama` or `gemma3`.
    pub fn architecture(&self) -> Result<&str, ModelError> {
        self.str("general.architecture")
    }

    fn config_err(&self, message: String) -> ModelError {
        ModelError::Config {
            path: self.path.clone(),
            message,
        }
    }

    fn value(&self, key: &str) -> Result<&Value, ModelError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.config_err(format!("metadata key `{key}` is missing")))
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    /// Any unsigned or non-negative integer value, widened. GGUF writers are
    /// not consistent about the integer width of counts and ids.
    pub fn u64(&self, key: &str) -> Result<u64, ModelError> {
        let v = self.value(key)?;
        value_as_u64(v).ok_or_else(|| {
            self.config_err(format!(
                "metadata `{key}` is {:?}, not a non-negative integer",
                v.value_type()
            ))
        })
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>, ModelError> {
        if self.has_key(key) {
            self.u64(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.u64(key)?;
        usize::try_from(v).map_err(|_| self.config_err(format!("metadata `{key}` = {v} too large")))
    }

    pub fn f64(&self, key: &str) -> Result<f64, ModelError> {
        match self.value(key)? {
            Value::F32(v) => Ok(*v as f64),
            Value::F64(v) => Ok(*v),
            v => value_as_u64(v).map(|u| u as f64).ok_or_else(|| {
                self.config_err(format!(
                    "metadata `{key}` is {:?}, not a number",
                    v.value_type()
                ))
            }),
        }
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, ModelError> {
        if self.has_key(key) {
            self.f64(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.config_err(format!(
                "metadata `{key}` is {:?}, not a bool",
                v.value_type()
            ))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, ModelError> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            v => Err(self.config_err(format!(
                "metadata `{key}` is {:?}, not a string",
                v.value_type()
            ))),
        }
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&str>, ModelError> {
        if self.has_key(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    fn array(&self, key: &str) -> Result<&[Value], ModelError> {
        match self.value(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.config_err(format!(
                "metadata `{key}` is {:?}, not an array",
                v.value_type()
            ))),
        }
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<&str>, ModelError> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(self.config_err(format!(
                    "metadata `{key}` holds {:?}, not strings",
                    v.value_type()
                ))),
            })
            .collect()
    }

    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, ModelError> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                v => Err(self.config_err(format!(
                    "metadata `{key}` holds {:?}, not floats",
                    v.value_type()
                ))),
            })
            .collect()
    }

    pub fn i64_array(&self, key: &str) -> Result<Vec<i64>, ModelError> {
        self.array(key)?
            .iter()
            .map(|v| {
                value_as_i64(v).ok_or_else(|| {
                    self.config_err(format!(
                        "metadata `{key}` holds {:?}, not integers",
                        v.value_type()
                    ))
                })
            })
            .collect()
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(|s| s.as_str())
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(name)
    }

    /// The tensor in its stored block format, shape in candle order
    /// (rows = output features for a projection).
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor, ModelError> {
        let info =
            self.content
                .tensor_infos
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.to_string(),
                    path: self.path.clone(),
                })?;
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| self.config_err("GGUF reader poisoned by an earlier panic".into()))?;
        info.read(&mut *reader, self.content.tensor_data_offset, device)
            .map_err(|e| {
                self.config_err(format!(
                    "tensor `{name}`: {}",
                    crate::error::candle_message(&e)
                ))
            })
    }

    /// The tensor dequantised to `f32`.
    pub fn dequantized(&self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        Ok(self.qtensor(name, device)?.dequantize(device)?)
    }
}

/// Checks that every tensor's data lies inside the file, so that a
/// truncated file is refused when it is opened, naming the problem, and
/// not when its last tensor is read (after the others were loaded).
fn check_tensor_extents(path: &Path, content: &Content, file_size: u64) -> Result<(), ModelError> {
    let mut furthest: Option<(u64, &str)> = None;
    for (name, info) in &content.tensor_infos {
        let invalid = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("tensor `{name}`: {message}"),
        };
        let elements = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| invalid(format!("shape {:?} is too large", info.shape.dims())))?;
        let block = info.ggml_dtype.block_size() as u64;
        if block == 0 || !elements.is_multiple_of(block) {
            return Err(invalid(format!(
                "{elements} elements are not a whole number of {:?} blocks of {block}",
                info.ggml_dtype
            )));
        }
        let end = (elements / block)
            .checked_mul(info.ggml_dtype.type_size() as u64)
            .and_then(|bytes| bytes.checked_add(content.tensor_data_offset))
            .and_then(|bytes| bytes.checked_add(info.offset))
            .ok_or_else(|| invalid("its data offset or size does not fit in 64 bits".into()))?;
        if furthest.is_none_or(|(e, _)| end > e) {
            furthest = Some((end, name.as_str()));
        }
    }
    match furthest {
        Some((needed, name)) if needed > file_size => Err(ModelError::Truncated {
            path: path.to_path_buf(),
            what: format!("tensor `{name}`"),
            needed,
            actual: file_size,
        }),
        _ => Ok(()),
    }
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

fn value_as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x as i64),
        Value::U16(x) => Some(x as i64),
        Value::U32(x) => Some(x as i64),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I8(x) => Some(x as i64),
        Value::I16(x) => Some(x as i64),
        Value::I32(x) => Some(x as i64),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

/// What the llama.cpp converter did to a tensor, to be undone on load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undo {
    None,
    /// Rows of a Q or K projection reordered for llama.cpp's rotary layout;
    /// `heads` is the number of heads the rows belong to.
    RotaryRows {
        heads: usize,
    },
    /// Gemma stores RMSNorm scales as `1 + w`; Hugging Face keeps `w`.
    GemmaNormOffset,
}

/// Maps Hugging Face tensor names to GGUF names for one architecture and says
/// how each tensor was transformed.
#[derive(Clone, Debug)]
pub struct GgufNaming {
    arch: GgufArch,
    n_heads: usize,
    n_kv_heads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GgufArch {
    Llama,
    Gemma3,
}

impl GgufNaming {
    pub fn llama(n_heads: usize, n_kv_heads: usize) -> Self {
        Self {
            arch: GgufArch::Llama,
            n_heads,
            n_kv_heads,
        }
    }

    pub fn gemma3() -> Self {
        Self {
            arch: GgufArch::Gemma3,
            n_heads: 0,
            n_kv_heads: 0,
        }
    }

    /// The GGUF name for a Hugging Face name, or `None` when the name has no
    /// counterpart.
    pub fn gguf_name(&self, hf: &str) -> Option<String> {
        match hf {
            "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
            "model.norm.weight" => return Some("output_norm.weight".into()),
            "lm_head.weight" => return Some("output.weight".into()),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let suffix = match (self.arch, rest) {
            (_, "self_attn.q_proj.weight") => "attn_q.weight",
            (_, "self_attn.k_proj.weight") => "attn_k.weight",
            (_, "self_attn.v_proj.weight") => "attn_v.weight",
            (_, "self_attn.o_proj.weight") => "attn_output.weight",
            (_, "mlp.gate_proj.weight") => "ffn_gate.weight",
            (_, "mlp.up_proj.weight") => "ffn_up.weight",
            (_, "mlp.down_proj.weight") => "ffn_down.weight",
            (_, "input_layernorm.weight") => "attn_norm.weight",
            (GgufArch::Llama, "post_attention_layernorm.weight") => "ffn_norm.weight",
            (GgufArch::Gemma3, "self_attn.q_norm.weight") => "attn_q_norm.weight",
            (GgufArch::Gemma3, "self_attn.k_norm.weight") => "attn_k_norm.weight",
            (GgufArch::Gemma3, "post_attention_layernorm.weight") => "post_attention_norm.weight",
            (GgufArch::Gemma3, "pre_feedforward_layernorm.weight") => "ffn_norm.weight",
            (GgufArch::Gemma3, "post_feedforward_layernorm.weight") => "post_ffw_norm.weight",
            _ => return None,
        };
        Some(format!("blk.{layer}.{suffix}"))
    }

    fn undo(&self, gguf_name: &str) -> Undo {
        match self.arch {
            GgufArch::Llama => {
                if gguf_name.ends_with(".attn_q.weight") {
                    Undo::RotaryRows {
                        heads: self.n_heads,
                    }
                } else if gguf_name.ends_with(".attn_k.weight") {
                    Undo::RotaryRows {
                        heads: self.n_kv_heads,
                    }
                } else {
                    Undo::None
                }
            }
            GgufArch::Gemma3 => {
                if gguf_name.ends_with("norm.weight") {
                    Undo::GemmaNormOffset
                } else {
                    Undo::None
                }
            }
        }
    }
}

/// llama.cpp's converter reorders the rows of every Q and K projection so
/// that its rotary kernel, which rotates adjacent pairs (2i, 2i+1) of a head,
/// computes what Hugging Face's rotary does on the half-split pairs
/// (i, i + head_dim/2). Within each head, GGUF row `2i + j` holds HF row
/// `j * head_dim/2 + i`. We move rows back so that the forward code can use
/// the Hugging Face layout for GGUF, safetensors and random weights alike.
/// The permutation only moves whole rows, so it applies equally to dense
/// matrices and to quantised blocks (which never straddle rows).
fn unpermute_rotary_rows(rows: usize, heads: usize) -> Result<Vec<usize>, String> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(format!(
            "cannot undo the rotary permutation: {rows} rows over {heads} heads"
        ));
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    // src[hf_row] = gguf_row
    let mut src = vec![0; rows];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                src[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    Ok(src)
}

fn permute_rows_dense(t: &Tensor, src: &[usize]) -> candle_core::Result<Tensor> {
    let idx: Vec<u32> = src.iter().map(|&i| i as u32).collect();
    let idx = Tensor::from_vec(idx, src.len(), t.device())?;
    t.index_select(&idx, 0)
}

fn permute_rows_quantized(q: &QTensor, src: &[usize]) -> candle_core::Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let rows = dims[0];
    let data = q.data()?;
    let row_bytes = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for &s in src {
        out.extend_from_slice(&data[s * row_bytes..(s + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(std::borrow::Cow::Owned(out), &q.device(), q.dtype())?;
    QTensor::new(storage, dims)
}

/// A source of tensors that knows the GGUF naming and undoes the converter's
/// transformations. Shared between the `VarBuilder` backend (dense tensors)
/// and the quantised loading path.
#[derive(Clone, Debug)]
pub struct GgufWeights {
    file: Arc<GgufFile>,
    naming: GgufNaming,
}

impl GgufWeights {
    pub fn new(file: Arc<GgufFile>, naming: GgufNaming) -> Self {
        Self { file, naming }
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Resolves a name: a Hugging Face name is translated; a name that is
    /// already a GGUF tensor name is taken as is.
    fn resolve(&self, name: &str) -> Option<String> {
        if let Some(g) = self.naming.gguf_name(name)
            && self.file.tensor_info(&g).is_some()
        {
            return Some(g);
        }
        if self.file.tensor_info(name).is_some() {
            return Some(name.to_string());
        }
        None
    }

    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor {
            name: match self.naming.gguf_name(name) {
                Some(g) => format!("{name} (GGUF `{g}`)"),
                None => name.to_string(),
            },
            path: self.file.path().to_path_buf(),
        }
    }

    /// The tensor in Hugging Face layout and conventions, as `f32`.
    pub fn dense(&self, name: &str, device: &Device) -> Result<Tensor, ModelError> {
        let g = self.resolve(name).ok_or_else(|| self.missing(name))?;
        let t = self.file.dequantized(&g, device)?;
        match self.naming.undo(&g) {
            Undo::None => Ok(t),
            Undo::RotaryRows { heads } => {
                let src = unpermute_rotary_rows(t.dim(0)?, heads)
                    .map_err(|m| self.file.config_err(format!("`{g}`: {m}")))?;
                Ok(permute_rows_dense(&t, &src)?)
            }
            Undo::GemmaNormOffset => Ok((t - 1.0)?),
        }
    }

    /// The tensor in its block format with the rotary reordering undone.
    /// Only for projection matrices and embeddings (norm offsets are not
    /// representable in block formats; ask for those with [`Self::dense`]).
    pub fn quantized(&self, name: &str, device: &Device) -> Result<QTensor, ModelError> {
        let g = self.resolve(name).ok_or_else(|| self.missing(name))?;
        let q = self.file.qtensor(&g, device)?;
        match self.naming.undo(&g) {
            Undo::None => Ok(q),
            Undo::RotaryRows { heads } => {
                let rows = q.shape().dims().first().copied().unwrap_or(0);
                let src = unpermute_rotary_rows(rows, heads)
                    .map_err(|m| self.file.config_err(format!("`{g}`: {m}")))?;
                Ok(permute_rows_quantized(&q, &src)?)
            }
            Undo::GemmaNormOffset => Err(self
                .file
                .config_err(format!("`{g}` is a norm scale; it has no quantised form"))),
        }
    }

    /// The stored block type of a tensor, by Hugging Face or GGUF name.
    pub fn stored_dtype(&self, name: &str) -> Option<GgmlDType> {
        let g = self.resolve(name)?;
        self.file.tensor_info(&g).map(|i| i.ggml_dtype)
    }

    /// A `VarBuilder` serving these tensors dequantised, in `dtype`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend: Box<dyn SimpleBackend> = Box::new(self.clone());
        VarBuilder::from_backend(backend, dtype, device.clone())
    }
}

impl SimpleBackend for GgufWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "shape mismatch for {name}: the file has {:?}, the model expects {s:?}",
                t.shape()
            )
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .dense(name, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        t.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_unpermutation_inverts_the_converter() {
        // The converter's forward permutation, written independently:
        // HF row (h, j, i) -> GGUF row (h, i, j).
        let heads = 3;
        let head_dim = 8;
        let half = head_dim / 2;
        let rows = heads * head_dim;
        let mut gguf_of_hf = vec![0; rows];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    gguf_of_hf[h * head_dim + j * half + i] = h * head_dim + i * 2 + j;
                }
            }
        }
        let src = unpermute_rotary_rows(rows, heads).unwrap();
        assert_eq!(src, gguf_of_hf);
        let mut seen = src.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..rows).collect::<Vec<_>>());
    }

    #[test]
    fn rotary_unpermutation_rejects_bad_shapes() {
        assert!(unpermute_rotary_rows(10, 3).is_err());
        assert!(unpermute_rotary_rows(9, 3).is_err());
        assert!(unpermute_rotary_rows(8, 0).is_err());
    }

    #[test]
    fn names_map_per_architecture() {
        let l = GgufNaming::llama(9, 3);
        assert_eq!(
            l.gguf_name("model.layers.3.post_attention_layernorm.weight")
                .as_deref(),
            Some("blk.3.ffn_norm.weight")
        );
        let g = GgufNaming::gemma3();
        assert_eq!(
            g.gguf_name("model.layers.3.pre_feedforward_layernorm.weight")
                .as_deref(),
            Some("blk.3.ffn_norm.weight")
        );
        assert_eq!(
            g.gguf_name("model.layers.0.self_attn.k_norm.weight")
                .as_deref(),
            Some("blk.0.attn_k_norm.weight")
        );
        assert_eq!(l.gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(l.undo("blk.0.attn_k.weight"), Undo::RotaryRows { heads: 3 });
        assert_eq!(g.undo("blk.0.attn_k_norm.weight"), Undo::GemmaNormOffset);
        assert_eq!(g.undo("blk.0.attn_k.weight"), Undo::None);
    }
}
