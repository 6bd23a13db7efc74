//! `CorpusSpec`: the corpus table of an experiment file (format, path or
//! built-in name, sampling and filters), and loading it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::builtin::{BUILTIN_NAMES, MINI, MINI_PAIRS, load_builtin};
use crate::corpus::{Corpus, Filter};
use crate::error::CorpusError;
use crate::hh::{HhOptions, Side, Turns, read_hh_rlhf};
use crate::jsonl::{JsonlOptions, read_jsonl};
use crate::plain::{Unit, read_text};

/// The kind of source a [`CorpusSpec`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// hh-rlhf JSON lines (`chosen`/`rejected` dialogues), plain or gzip.
    HhRlhf,
    /// JSON lines with a text field, plain or gzip.
    Jsonl,
    /// Plain UTF-8 text, plain or gzip.
    Text,
    /// A corpus compiled into this crate (`lmgeo-mini`, `lmgeo-mini-pairs`).
    Builtin,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::HhRlhf => "hh-rlhf",
            Format::Jsonl => "jsonl",
            Format::Text => "text",
            Format::Builtin => "builtin",
        }
    }
}

/// Which texts an experiment runs on: the source, how to read it, and which
/// of its texts to keep. Meant to be embedded in experiment files:
///
/// ```toml
/// [corpus]
/// format = "hh-rlhf"
/// path = "data/hh-rlhf/harmless-base-test.jsonl.gz"
/// side = "both"              # chosen | rejected | both
/// turns = "last-assistant"   # whole | all | last-assistant | first-human
/// n = 200                    # groups (here: pairs); leave out for all
/// seed = 7
/// min_tokens = 8
/// ```
///
/// Options that do not apply to the chosen format are errors, not silently
/// ignored, so a typo'd or misplaced option is caught before a long run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    pub format: Format,
    /// Builtin: which corpus (default `lmgeo-mini`). Files: the prefix of
    /// every text id (default `{format}:{file stem}`, e.g.
    /// `hh-rlhf:harmless-base-test`). Sampling hashes ids, so pinning the
    /// name keeps a selection stable when the file is renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file to read (not for `builtin`). Relative paths are relative to
    /// the working directory unless [`CorpusSpec::relative_to`] is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// hh-rlhf only: which dialogue of each record (default `chosen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    /// hh-rlhf only: whole dialogues or turns (default `whole`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<Turns>,
    /// jsonl only: the field holding the text (default `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_field: Option<String>,
    /// jsonl only: the field holding a record id (default: the position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_field: Option<String>,
    /// text only: `line` (default) or `paragraph`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    /// How many groups to sample (a chosen/rejected pair counts once; an
    /// ungrouped text is its own group). Absent: every text that passes the
    /// filters, in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Seed of the sampling order; unused without `n`.
    #[serde(default)]
    pub seed: u64,
    /// Minimum length in characters; default 1, because an empty text (for
    /// instance the four empty final replies in hh-rlhf harmless-base-test)
    /// has no tokens to analyse. Set 0 to keep them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_chars: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    /// Token limits, counted with the tokenizer passed to
    /// [`CorpusSpec::select`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
}

/// The builtin `lmgeo-mini` paragraphs, every one of them.
impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec::builtin(MINI)
    }
}

impl CorpusSpec {
    /// A builtin corpus with default options.
    pub fn builtin(name: &str) -> Self {
        CorpusSpec {
            name: Some(name.to_owned()),
            ..CorpusSpec::blank(Format::Builtin)
        }
    }

    /// A file source with default options.
    pub fn file(format: Format, path: impl Into<PathBuf>) -> Self {
        CorpusSpec {
            path: Some(path.into()),
            ..CorpusSpec::blank(format)
        }
    }

    fn blank(format: Format) -> Self {
        CorpusSpec {
            format,
            name: None,
            path: None,
            side: None,
            turns: None,
            text_field: None,
            id_field: None,
            unit: None,
            n: None,
            seed: 0,
            min_chars: None,
            max_chars: None,
            min_tokens: None,
            max_tokens: None,
        }
    }

    /// The same spec with a relative `path` resolved against `base` (for
    /// instance the directory of the experiment file that embeds it).
    pub fn relative_to(&self, base: &Path) -> Self {
        let mut spec = self.clone();
        if let Some(path) = &self.path
            && path.is_relative()
        {
            spec.path = Some(base.join(path));
        }
        spec
    }

    /// The corpus name: `name`, else the builtin default or
    /// `{format}:{file stem}` with `.gz` and one more extension removed.
    pub fn corpus_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match (&self.format, &self.path) {
            (Format::Builtin, _) => MINI.to_owned(),
            (format, Some(path)) => format!("{}:{}", format.as_str(), file_stem(path)),
            (format, None) => format.as_str().to_owned(),
        }
    }

    /// The length limits, with `min_chars` defaulting to 1.
    pub fn filter(&self) -> Filter {
        Filter {
            min_chars: Some(self.min_chars.unwrap_or(1)),
            max_chars: self.max_chars,
            min_tokens: self.min_tokens,
            max_tokens: self.max_tokens,
        }
    }

    pub fn hh_options(&self) -> HhOptions {
        HhOptions {
            side: self.side.unwrap_or_default(),
            turns: self.turns.unwrap_or_default(),
        }
    }

    pub fn jsonl_options(&self) -> JsonlOptions {
        let default = JsonlOptions::default();
        JsonlOptions {
            text_field: self.text_field.clone().unwrap_or(default.text_field),
            id_field: self.id_field.clone(),
        }
    }

    /// Checks that the options fit together; [`CorpusSpec::load`] and
    /// [`CorpusSpec::select`] call it first.
    pub fn validate(&self) -> Result<(), CorpusError> {
        let invalid = |field, reason: String| Err(CorpusError::InvalidSpec { field, reason });
        let format = self.format.as_str();
        let is_dialogue = match self.format {
            Format::HhRlhf => true,
            Format::Builtin => self.name.as_deref() == Some(MINI_PAIRS),
            _ => false,
        };

        match (self.format, &self.path) {
            (Format::Builtin, Some(_)) => {
                return invalid(
                    "path",
                    "not used with format = \"builtin\"; choose the corpus with `name`".into(),
                );
            }
            (Format::Builtin, None) => {}
            (_, None) => return invalid("path", format!("required with format = \"{format}\"")),
            (_, Some(_)) => {}
        }
        if let Some(name) = &self.name {
            if name.is_empty() {
                return invalid("name", "must not be empty".into());
            }
            if self.format == Format::Builtin && !BUILTIN_NAMES.contains(&name.as_str()) {
                return invalid(
                    "name",
                    format!(
                        "unknown builtin corpus `{name}` (available: {})",
                        BUILTIN_NAMES.join(", ")
                    ),
                );
            }
        }
        let dialogue_only =
            "only used with format = \"hh-rlhf\" or the builtin \"lmgeo-mini-pairs\"";
        if self.side.is_some() && !is_dialogue {
            return invalid("side", dialogue_only.into());
        }
        if self.turns.is_some() && !is_dialogue {
            return invalid("turns", dialogue_only.into());
        }
        if self.format != Format::Jsonl {
            if self.text_field.is_some() {
                return invalid("text_field", "only used with format = \"jsonl\"".into());
            }
            if self.id_field.is_some() {
                return invalid("id_field", "only used with format = \"jsonl\"".into());
            }
        }
        if self.unit.is_some() && self.format != Format::Text {
            return invalid("unit", "only used with format = \"text\"".into());
        }
        if self.n == Some(0) {
            return invalid(
                "n",
                "0 selects nothing; leave `n` out to keep every text".into(),
            );
        }
        if let (Some(lo), Some(hi)) = (self.min_chars, self.max_chars)
            && lo > hi
        {
            return invalid("max_chars", format!("{hi} is below min_chars = {lo}"));
        }
        if let (Some(lo), Some(hi)) = (self.min_tokens, self.max_tokens)
            && lo > hi
        {
            return invalid("max_tokens", format!("{hi} is below min_tokens = {lo}"));
        }
        Ok(())
    }

    /// Reads the whole source, without filtering or sampling.
    pub fn load(&self) -> Result<Corpus, CorpusError> {
        self.validate()?;
        let name = self.corpus_name();
        let path = || self.path.as_deref().expect("validate() requires a path");
        let texts = match self.format {
            Format::Builtin => return load_builtin(&name, self.hh_options()),
            Format::HhRlhf => read_hh_rlhf(path(), &name, self.hh_options())?,
            Format::Jsonl => read_jsonl(path(), &name, &self.jsonl_options())?,
            Format::Text => read_text(path(), &name, self.unit.unwrap_or_default())?,
        };
        Corpus::new(name, texts)
    }

    /// Reads the source, then filters and samples it.
    ///
    /// `count_tokens` is the model's tokenizer as a closure (this crate knows
    /// no tokenizers); it is called only when `min_tokens` or `max_tokens` is
    /// set, and then only on the texts examined.
    pub fn select(&self, count_tokens: impl Fn(&str) -> usize) -> Result<Corpus, CorpusError> {
        let corpus = self.load()?;
        self.select_from(&corpus, count_tokens)
    }

    /// Filters and samples an already loaded corpus, so that one load can
    /// serve several selections. Fails if fewer than `n` groups pass.
    pub fn select_from(
        &self,
        corpus: &Corpus,
        count_tokens: impl Fn(&str) -> usize,
    ) -> Result<Corpus, CorpusError> {
        self.validate()?;
        let selected = corpus.select(self.n, self.seed, &self.filter(), count_tokens);
        if let Some(n) = self.n {
            let found = selected.groups().len();
            if found < n {
                let grouped = corpus.groups().len() < corpus.len();
                return Err(CorpusError::NotEnough {
                    corpus: corpus.name().to_owned(),
                    requested: n,
                    available: found,
                    unit: if grouped { "groups" } else { "texts" },
                });
            }
        }
        Ok(selected)
    }
}

/// `harmless-base-test.jsonl.gz` -> `harmless-base-test`.
fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    match name.rfind('.') {
        Some(dot) if dot > 0 => name[..dot].to_owned(),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drop_gz_and_one_extension() {
        assert_eq!(
            file_stem(Path::new("a/b/harmless-base-test.jsonl.gz")),
            "harmless-base-test"
        );
        assert_eq!(file_stem(Path::new("notes.txt")), "notes");
        assert_eq!(file_stem(Path::new("v1.2.data.txt")), "v1.2.data");
        assert_eq!(file_stem(Path::new(".hidden")), ".hidden");
        assert_eq!(file_stem(Path::new("README")), "README");
    }

    #[test]
    fn default_names() {
        let spec = CorpusSpec::file(Format::HhRlhf, "x/harmless-base-test.jsonl.gz");
        assert_eq!(spec.corpus_name(), "hh-rlhf:harmless-base-test");
        assert_eq!(CorpusSpec::default().corpus_name(), "lmgeo-mini");
        let mut spec = CorpusSpec::file(Format::Text, "notes.txt");
        assert_eq!(spec.corpus_name(), "text:notes");
        spec.name = Some("mine".into());
        assert_eq!(spec.corpus_name(), "mine");
    }

    #[test]
    fn relative_paths_resolve_against_a_base() {
        let spec = CorpusSpec::file(Format::Jsonl, "data/x.jsonl");
        assert_eq!(
            spec.relative_to(Path::new("/exp")).path.as_deref(),
            Some(Path::new("/exp/data/x.jsonl"))
        );
        let spec = CorpusSpec::file(Format::Jsonl, "/abs/x.jsonl");
        assert_eq!(
            spec.relative_to(Path::new("/exp")).path.as_deref(),
            Some(Path::new("/abs/x.jsonl"))
        );
    }

    fn reason(spec: &CorpusSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn misplaced_options_are_rejected() {
        let mut spec = CorpusSpec::builtin(MINI);
        spec.side = Some(Side::Both);
        assert_eq!(
            reason(&spec),
            "corpus spec: `side`: only used with format = \"hh-rlhf\" or the builtin \"lmgeo-mini-pairs\""
        );
        spec.name = Some(MINI_PAIRS.into());
        assert!(spec.validate().is_ok());

        let mut spec = CorpusSpec::file(Format::Text, "a.txt");
        spec.text_field = Some("body".into());
        assert_eq!(
            reason(&spec),
            "corpus spec: `text_field`: only used with format = \"jsonl\""
        );

        let mut spec = CorpusSpec::file(Format::Jsonl, "a.jsonl");
        spec.unit = Some(Unit::Paragraph);
        assert_eq!(
            reason(&spec),
            "corpus spec: `unit`: only used with format = \"text\""
        );

        let mut spec = CorpusSpec::builtin(MINI);
        spec.path = Some("x".into());
        assert!(reason(&spec).starts_with("corpus spec: `path`: not used"));

        let spec = CorpusSpec::blank(Format::HhRlhf);
        assert_eq!(
            reason(&spec),
            "corpus spec: `path`: required with format = \"hh-rlhf\""
        );

        let spec = CorpusSpec::builtin("lmgeo-maxi");
        assert_eq!(
            reason(&spec),
            "corpus spec: `name`: unknown builtin corpus `lmgeo-maxi` (available: lmgeo-mini, lmgeo-mini-pairs)"
        );
    }

    #[test]
    fn inconsistent_limits_are_rejected() {
        let spec = CorpusSpec {
            min_tokens: Some(10),
            max_tokens: Some(5),
            ..CorpusSpec::default()
        };
        assert_eq!(
            reason(&spec),
            "corpus spec: `max_tokens`: 5 is below min_tokens = 10"
        );
        let spec = CorpusSpec {
            min_chars: Some(3),
            max_chars: Some(2),
            ..CorpusSpec::default()
        };
        assert_eq!(
            reason(&spec),
            "corpus spec: `max_chars`: 2 is below min_chars = 3"
        );
        let spec = CorpusSpec {
            n: Some(0),
            ..CorpusSpec::default()
        };
        assert!(reason(&spec).starts_with("corpus spec: `n`: 0 selects nothing"));
    }

    #[test]
    fn min_chars_defaults_to_one() {
        assert_eq!(CorpusSpec::default().filter().min_chars, Some(1));
        let spec = CorpusSpec {
            min_chars: Some(0),
            ..CorpusSpec::default()
        };
        assert_eq!(spec.filter().min_chars, Some(0));
    }
}
