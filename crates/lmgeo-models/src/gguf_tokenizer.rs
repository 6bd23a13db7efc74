//! Tokenizers built from a GGUF file's metadata, matching what transformers
//! builds from the same file with `AutoTokenizer.from_pretrained(dir,
//! gguf_file=...)`.
//!
//! The pieces (BPE model, normalizer, pre-tokenizer, decoder, added tokens)
//! are those of the `tokenizers` crate, the engine behind transformers' fast
//! tokenizers; what lives here is reading the vocabulary out of GGUF and
//! assembling it the way the reference does:
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE with the file's merges, the
//!   GPT-2 pre-tokenizer split and no prefix space. (candle's
//!   `TokenizerFromGguf` adds a prefix space, so a text's first word comes out
//!   as `ĠThe` rather than `The`.) transformers applies the GPT-2 split for
//!   every `tokenizer.ggml.pre` it has no special regex for, `smollm`
//!   included, so we do the same; files that name a pre-tokenizer with a
//!   different split are rejected rather than tokenized differently.
//! - `tokenizer.ggml.model = llama` with a Gemma architecture: SentencePiece
//!   BPE with byte fallback, spaces spelled `▁`, no dummy prefix. Gemma files
//!   carry no merges; they are rebuilt from the vocabulary, ranked by the
//!   position of the merged token in the file (Gemma's scores do not follow
//!   the merge order; the file order does, which is what transformers uses).
//!
//! Control tokens become special tokens and user-defined tokens plain added
//! tokens, both matched whole in the raw text; BOS/EOS are added as the file's
//! `add_bos_token`/`add_eos_token` say (a SentencePiece file without the flag
//! gets BOS, as llama.cpp and transformers both assume).

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::GgufFile;
use crate::{ModelError, TextTokenizer};

/// Which family of tokenizer a GGUF file describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufTokenizerKind {
    /// `gpt2`: byte-level BPE.
    ByteLevelBpe,
    /// `llama` in a Gemma file: SentencePiece BPE with byte fallback.
    SentencePieceBpe,
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// `tokenizer.ggml.pre` values for which transformers installs a split regex
/// other than GPT-2's; we do not implement those splits.
const OTHER_SPLITS: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "tekken",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "qwen35",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
];

/// A tokenizer assembled from GGUF metadata.
pub struct GgufTokenizer {
    inner: Tokenizer,
    kind: GgufTokenizerKind,
    bos: Option<u32>,
    eos: Option<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    map
}

/// Python's `str.isspace`: Unicode White_Space plus the four ASCII
/// separators U+001C..U+001F, which Python also strips.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

impl GgufTokenizer {
    /// Reads the tokenizer of the GGUF file at `path`.
    pub fn from_path(path: &Path) -> Result<Self, ModelError> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Self, ModelError> {
        let model = f.str("tokenizer.ggml.model")?;
        let arch = f.architecture()?;
        let tokens = f.str_array("tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            return Err(tok_err(format!("{}: empty vocabulary", f.path().display())));
        }
        let types = if f.has_key("tokenizer.ggml.token_type") {
            f.i64_array("tokenizer.ggml.token_type")?
        } else {
            Vec::new()
        };
        let id = |key: &str| -> Result<Option<u32>, ModelError> {
            match f.u64_opt(key)? {
                Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Some(v) => Err(tok_err(format!("{key} = {v} is outside the vocabulary"))),
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        let (kind, default_bos) = match (model, arch) {
            ("gpt2", _) => (GgufTokenizerKind::ByteLevelBpe, false),
            ("llama", "gemma" | "gemma2" | "gemma3") => (GgufTokenizerKind::SentencePieceBpe, true),
            (m, a) => {
                return Err(ModelError::Unsupported(format!(
                    "GGUF tokenizer `{m}` for architecture `{a}`"
                )));
            }
        };
        let add_bos = f
            .bool_opt("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_bos);
        let add_eos = f.bool_opt("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        let mut inner = match kind {
            GgufTokenizerKind::ByteLevelBpe => {
                let pre = f.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
                if OTHER_SPLITS.contains(&pre) {
                    return Err(ModelError::Unsupported(format!(
                        "GGUF pre-tokenizer `{pre}` (a split other than GPT-2's)"
                    )));
                }
                let merges = f.str_array("tokenizer.ggml.merges")?;
                byte_level(&tokens, &merges)?
            }
            GgufTokenizerKind::SentencePieceBpe => {
                let unk_text = unk.map(|u| tokens[u as usize]).unwrap_or("<unk>");
                sentencepiece_gemma(&tokens, unk_text)?
            }
        };
        add_gguf_added_tokens(&mut inner, &tokens, &types, kind)?;
        let bos_tok = bos.map(|b| (tokens[b as usize].to_string(), b));
        let eos_tok = eos.map(|e| (tokens[e as usize].to_string(), e));
        if let Some(pp) = post_processor(
            if add_bos { bos_tok.as_ref() } else { None },
            if add_eos { eos_tok.as_ref() } else { None },
        )? {
            inner.with_post_processor(Some(pp));
        }
        Ok(Self {
            inner,
            kind,
            bos,
            eos,
            vocab_size: tokens.len(),
        })
    }

    pub fn kind(&self) -> GgufTokenizerKind {
        self.kind
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    /// The assembled `tokenizers` pipeline, e.g. to save as `tokenizer.json`.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner
    }
}

fn byte_level(tokens: &[&str], merges: &[&str]) -> Result<Tokenizer, ModelError> {
    let map = byte_to_char();
    let alphabet: std::collections::HashSet<char> = map.iter().copied().collect();
    let mut vocab: tokenizers::models::bpe::Vocab = Default::default();
    for (i, t) in tokens.iter().enumerate() {
        // A token written outside the byte alphabet (some converters store
        // raw text) is respelled byte by byte, as transformers does.
        let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
            t.to_string()
        } else {
            t.bytes().map(|b| map[b as usize]).collect()
        };
        vocab.insert(spelled, i as u32);
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for m in merges {
        let parts: Vec<&str> = m.split(' ').collect();
        match parts.as_slice() {
            [a, b] => pairs.push((a.to_string(), b.to_string())),
            _ => return Err(tok_err(format!("malformed merge `{m}`"))),
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(tok_err)?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tk)
}

/// Merges implied by a vocabulary without a merge list: every split of every
/// token into two vocabulary entries, ranked best first by `score` of the
/// merged token, then by the lengths (in characters) of the left and right
/// parts, longest first; ties keep vocabulary order, and within one token the
/// splits are ordered by the ids of their parts.
fn merges_from_vocab(tokens: &[String], score: impl Fn(usize) -> f64) -> Vec<(String, String)> {
    let mut vocab: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.as_str(), i);
    }
    let mut seen = std::collections::HashSet::with_capacity(tokens.len());
    // (score, left chars, right chars, left, right)
    let mut all: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    let mut local: Vec<(usize, usize, &str, &str)> = Vec::new();
    for t in tokens {
        if !seen.insert(t.as_str()) {
            continue;
        }
        let s = score(vocab[t.as_str()]);
        local.clear();
        for (at, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, l, r));
            }
        }
        local.sort_by_key(|&(li, ri, _, _)| (li, ri));
        for &(_, _, l, r) in &local {
            all.push((s, l.chars().count(), r.chars().count(), l, r));
        }
    }
    // Stable, descending on the key: equal keys keep their order.
    all.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
    });
    all.into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

fn sentencepiece_gemma(tokens: &[&str], unk: &str) -> Result<Tokenizer, ModelError> {
    // Tokens made only of whitespace, spaces included, are stored with real
    // spaces; the normalizer turns spaces into `▁`, so respell them.
    let respelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.contains(' ') && t.chars().all(py_isspace) {
                "\u{2581}".repeat(t.chars().count())
            } else {
                t.to_string()
            }
        })
        .collect();
    let merges = merges_from_vocab(&respelled, |i| -(i as f64));
    let mut vocab: tokenizers::models::bpe::Vocab = Default::default();
    for (i, t) in respelled.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk.to_string())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(tok_err)?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_normalizer(Some(Replace::new(" ", "\u{2581}").map_err(tok_err)?))
        .map_err(tok_err)?;
    // A no-op after the normalizer (no spaces are left), kept so the
    // pipeline is the reference's piece for piece.
    tk.with_pre_tokenizer(Some(
        Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(tok_err)?,
    ));
    tk.with_decoder(Some(DecoderSequence::new(vec![
        DecoderWrapper::Replace(Replace::new("\u{2581}", " ").map_err(tok_err)?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ])));
    Ok(tk)
}

fn add_gguf_added_tokens(
    tk: &mut Tokenizer,
    tokens: &[&str],
    types: &[i64],
    kind: GgufTokenizerKind,
) -> Result<(), ModelError> {
    let alphabet: Option<std::collections::HashSet<char>> = match kind {
        GgufTokenizerKind::ByteLevelBpe => Some(byte_to_char().iter().copied().collect()),
        GgufTokenizerKind::SentencePieceBpe => None,
    };
    let mut special = Vec::new();
    let mut plain = Vec::new();
    for (t, ty) in tokens.iter().zip(types.iter()) {
        match *ty {
            // A control token spelled outside the byte alphabet cannot be a
            // real byte-level token (a converter mislabel); adding it would
            // grow the vocabulary past the model's, so skip it.
            TOKEN_TYPE_CONTROL
                if alphabet
                    .as_ref()
                    .is_none_or(|a| t.chars().all(|c| a.contains(&c))) =>
            {
                special.push(AddedToken::from(t.to_string(), true).normalized(false));
            }
            // Only entries the model's vocabulary knows under this very
            // spelling (whitespace tokens were respelled above).
            TOKEN_TYPE_USER_DEFINED if tk.token_to_id(t).is_some() => {
                plain.push(AddedToken::from(t.to_string(), false).normalized(false));
            }
            _ => {}
        }
    }
    tk.add_special_tokens(special).map_err(tok_err)?;
    tk.add_tokens(plain).map_err(tok_err)?;
    Ok(())
}

fn post_processor(
    bos: Option<&(String, u32)>,
    eos: Option<&(String, u32)>,
) -> Result<Option<TemplateProcessing>, ModelError> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    for (t, id) in [bos, eos].into_iter().flatten() {
        if t.contains(':') || t.chars().any(char::is_whitespace) {
            return Err(ModelError::Unsupported(format!(
                "special token `{t}` cannot appear in a template"
            )));
        }
        specials.push((t.clone(), *id));
    }
    if let Some((b, _)) = bos {
        single.push(format!("{b}:0"));
        pair.push(format!("{b}:0"));
    }
    single.push("$A:0".to_string());
    pair.push("$A:0".to_string());
    if let Some((e, _)) = eos {
        single.push(format!("{e}:0"));
        pair.push(format!("{e}:0"));
    }
    if let Some((b, _)) = bos {
        pair.push(format!("{b}:1"));
    }
    pair.push("$B:1".to_string());
    if let Some((e, _)) = eos {
        pair.push(format!("{e}:1"));
    }
    let pp = TemplateProcessing::builder()
        .try_single(single.join(" "))
        .map_err(tok_err)?
        .try_pair(pair.join(" "))
        .map_err(tok_err)?
        .special_tokens(specials)
        .build()
        .map_err(tok_err)?;
    Ok(Some(pp))
}

impl TextTokenizer for GgufTokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(ModelError::Request(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        self.inner.decode(ids, false).map_err(tok_err)
    }

    fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_onto_printables() {
        let m = byte_to_char();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b' ' as usize], '\u{120}');
        assert_eq!(m[b'\n' as usize], '\u{10a}');
        assert_eq!(m[b'A' as usize], 'A');
    }

    #[test]
    fn merges_follow_token_order_then_lengths() {
        let toks: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = merges_from_vocab(&toks, |i| -(i as f64));
        // "ab" (id 3) before "bc" (id 4) before the two splits of "abc",
        // where the longer left part ("ab" + "c") ranks first.
        let expect = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")];
        let got: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, expect);
    }
}
