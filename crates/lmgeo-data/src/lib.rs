//! Corpora for lmgeo: the texts an experiment runs on.
//!
//! - Readers for hh-rlhf preference data ([`read_hh_rlhf`]), generic JSON
//!   lines ([`read_jsonl`]) and plain text ([`read_text`]); gzip is detected
//!   from the bytes. Every text carries a stable id and its source line.
//! - [`CorpusSpec`], the serde description of a corpus that experiment files
//!   embed, and [`Corpus`], the loaded texts.
//! - Deterministic selection ([`Corpus::select`]): length filters (tokens
//!   through a caller's closure; this crate knows no tokenizer) and seeded
//!   sampling that is stable across platforms and file orders and that
//!   extends, rather than reshuffles, when `n` grows. Aligned pairs are
//!   sampled and filtered as a whole.
//! - [`truncate_tokens`], for the token-level truncation done at extraction.
//! - The builtin corpora `lmgeo-mini` and `lmgeo-mini-pairs`.

mod builtin;
mod corpus;
mod error;
mod hh;
mod io;
mod jsonl;
mod plain;
mod spec;
mod text;
mod truncate;

pub use builtin::{BUILTIN_NAMES, MINI, MINI_PAIRS, builtin_source, load_builtin};
pub use corpus::{Corpus, Filter, ranking_key};
pub use error::CorpusError;
pub use hh::{HhOptions, Role, Side, Turn, Turns, parse_hh_rlhf, read_hh_rlhf, split_turns};
pub use io::open;
pub use jsonl::{JsonlOptions, parse_jsonl, read_jsonl};
pub use plain::{Paragraph, Unit, parse_text, read_text, split_paragraphs};
pub use spec::{CorpusSpec, Format};
pub use text::Text;
pub use truncate::{Keep, truncate_tokens};
