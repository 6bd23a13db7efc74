//! The activations of the feed-forward blocks, plain (BERT, GPT-NeoX) or gated
//! (`act(gate) * up`, the Llama-family decoders), and where each runs: this
//! crate's kernels ([`crate::kernels`]) on host memory, or candle tensor ops
//! on any device, as [`Ops`] says.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::ModelError;
use crate::kernels::{self, ActivateInPlace, with_f32};
use crate::tensor_ops::Ops;

/// The activations Hugging Face configs name in `hidden_act` that our models
/// support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact GELU, x * Phi(x) (Pythia, BERT).
    GeluErf,
    /// `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`: the tanh approximation
    /// (Gemma's GeGLU).
    GeluTanh,
    Relu,
    /// `silu` / `swish` (Llama's SwiGLU).
    Silu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.has_kernel(x) {
            return self.apply_to_fresh(x.copy()?);
        }
        self.apply_tensor_op(x)
    }

    /// Where this crate's kernel replaces candle's op: the exact GELU on host
    /// `f32` (candle computes its erf with scalar libm calls).
    fn has_kernel(self, x: &Tensor) -> bool {
        self == Self::GeluErf && x.device().is_cpu() && x.dtype() == candle_core::DType::F32
    }

    /// candle's own op, on any device.
    fn apply_tensor_op(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::GeluErf => x.gelu_erf(),
            // candle's `gelu` is the tanh approximation.
            Self::GeluTanh => x.gelu(),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }

    /// Applies the activation to a fresh result the way `ops` says.
    pub(crate) fn apply_with(self, x: Tensor, ops: Ops) -> candle_core::Result<Tensor> {
        match ops {
            Ops::CpuKernels => self.apply_to_fresh(x),
            Ops::Tensor => self.apply_tensor_op(&x),
        }
    }

    /// Like [`Self::apply`], but may overwrite `x`, which must own its storage
    /// (a fresh result, not a view shared with another tensor): the exact GELU
    /// then runs in place with this crate's vectorised erf.
    pub(crate) fn apply_to_fresh(self, x: Tensor) -> candle_core::Result<Tensor> {
        if self.has_kernel(&x) {
            let x = x.contiguous()?;
            x.inplace_op1(&ActivateInPlace(self))?;
            return Ok(x);
        }
        self.apply(&x)
    }

    /// `act(gate) * up` over a fused `n x 2f` projection output (gate first).
    pub(crate) fn gated(self, gate_up: &Tensor, ops: Ops) -> Result<Tensor, ModelError> {
        let (n, two_f) = gate_up.dims2()?;
        let f = two_f / 2;
        if ops == Ops::Tensor {
            let (gate, up) = (gate_up.narrow(1, 0, f)?, gate_up.narrow(1, f, f)?);
            return Ok((self.apply_tensor_op(&gate)? * up)?);
        }
        let mut out = vec![0f32; n * f];
        with_f32(gate_up, |s| {
            out.par_chunks_mut(f).enumerate().for_each(|(p, o)| {
                let (g, u) = s[p * two_f..(p + 1) * two_f].split_at(f);
                kernels::gate(self, g, u, o);
            })
        })?;
        Ok(Tensor::from_vec(out, (n, f), &Device::Cpu)?)
    }

    /// `act(gate) * up` over two separate `n x f` outputs (the quantised path).
    pub(crate) fn gated_pair(
        self,
        gate: &Tensor,
        up: &Tensor,
        ops: Ops,
    ) -> Result<Tensor, ModelError> {
        if ops == Ops::Tensor {
            return Ok((self.apply_tensor_op(gate)? * up)?);
        }
        let (n, f) = gate.dims2()?;
        let mut out = vec![0f32; n * f];
        with_f32(gate, |g| {
            with_f32(up, |u| {
                out.par_chunks_mut(f).enumerate().for_each(|(p, o)| {
                    let row = p * f..(p + 1) * f;
                    kernels::gate(self, &g[row.clone()], &u[row], o);
                })
            })
        })??;
        Ok(Tensor::from_vec(out, (n, f), &Device::Cpu)?)
    }
}
