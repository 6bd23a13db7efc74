//! Corpora compiled into the crate, so the default experiment runs on a
//! fresh machine with no data set downloaded. See `corpus/README.md`.

use crate::corpus::Corpus;
use crate::error::CorpusError;
use crate::hh::{HhOptions, parse_hh_rlhf};
use crate::jsonl::{JsonlOptions, parse_jsonl};

/// Short paragraphs on varied subjects (JSON lines: `id`, `topic`, `text`).
pub const MINI: &str = "lmgeo-mini";
/// hh-rlhf-style dialogues with `chosen` and `rejected` replies to the same
/// prompt; read with the hh-rlhf reader, so `side` and `turns` apply.
pub const MINI_PAIRS: &str = "lmgeo-mini-pairs";

const MINI_JSONL: &str = include_str!("../corpus/lmgeo-mini.jsonl");
const MINI_PAIRS_JSONL: &str = include_str!("../corpus/lmgeo-mini-pairs.jsonl");

/// Names accepted by [`load_builtin`].
pub const BUILTIN_NAMES: &[&str] = &[MINI, MINI_PAIRS];

/// The raw JSON lines of a builtin corpus.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    match name {
        MINI => Some(MINI_JSONL),
        MINI_PAIRS => Some(MINI_PAIRS_JSONL),
        _ => None,
    }
}

/// Loads a builtin corpus. `hh` is used by the dialogue corpus only.
/// Ids are `lmgeo-mini:{id}` and `lmgeo-mini-pairs:{record}:{field}[:{turn}]`.
pub fn load_builtin(name: &str, hh: HhOptions) -> Result<Corpus, CorpusError> {
    let origin = format!("builtin:{name}");
    let texts = match name {
        MINI => parse_jsonl(
            MINI_JSONL.as_bytes(),
            &origin,
            MINI,
            &JsonlOptions {
                text_field: "text".to_owned(),
                id_field: Some("id".to_owned()),
            },
        )?,
        MINI_PAIRS => parse_hh_rlhf(MINI_PAIRS_JSONL.as_bytes(), &origin, MINI_PAIRS, hh)?,
        _ => {
            return Err(CorpusError::UnknownBuiltin {
                name: name.to_owned(),
                available: BUILTIN_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    };
    Corpus::new(name, texts)
}
