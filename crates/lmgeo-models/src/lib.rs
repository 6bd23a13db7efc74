//! Language models on candle that return what the geometry probes need:
//! every layer's hidden states, every layer's attention probabilities and the
//! logits, for one token sequence at a time.
//!
//! This crate depends on candle and the tokenizer stack only; it knows nothing
//! of experiments, caches or tables. Results leave the crate as plain
//! row-major `f32` matrices so that no other crate has to link candle.

mod matrix;
mod output;

pub use matrix::F32Matrix;
pub use output::{AttentionCapture, ForwardOutput, ForwardRequest, LogitsCapture, ModelInfo};
