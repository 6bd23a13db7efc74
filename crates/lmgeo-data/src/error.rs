//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong while reading or selecting a corpus.
///
/// Every variant that concerns a file names it (`origin`, a path or
/// `builtin:NAME`) and, where one line is at fault, its 1-based number, so a
/// message reads like a compiler diagnostic: `data.jsonl:17: missing field`.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{origin}: cannot read: {source}")]
    Open {
        origin: String,
        #[source]
        source: std::io::Error,
    },

    /// A read failed part-way: corrupt gzip stream, invalid UTF-8, I/O error.
    #[error("{origin}:{line}: cannot read line: {source}{}", read_hint(.source))]
    ReadLine {
        origin: String,
        line: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("{origin}:{line}:{column}: invalid JSON: {message}")]
    Json {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{origin}:{line}: expected a JSON object, found {found}")]
    NotAnObject {
        origin: String,
        line: usize,
        found: &'static str,
    },

    #[error("{origin}:{line}: missing field `{field}` (fields present: {})", FieldList(.available))]
    MissingField {
        origin: String,
        line: usize,
        field: String,
        available: Vec<String>,
    },

    #[error("{origin}:{line}: field `{field}` must be {expected}, found {found}")]
    WrongType {
        origin: String,
        line: usize,
        field: String,
        expected: &'static str,
        found: &'static str,
    },

    /// A dialogue lacks the turn that `turns = ...` asked for.
    #[error(
        "{origin}:{line}: field `{field}` has no {wanted} turn (a dialogue is \"\\n\\nHuman: ...\\n\\nAssistant: ...\")"
    )]
    MissingTurn {
        origin: String,
        line: usize,
        field: String,
        wanted: &'static str,
    },

    #[error("{origin}:{line}: duplicate text id `{id}` (first seen on line {first_line})")]
    DuplicateId {
        origin: String,
        line: usize,
        first_line: usize,
        id: String,
    },

    #[error("unknown builtin corpus `{name}` (available: {})", FieldList(.available))]
    UnknownBuiltin {
        name: String,
        available: Vec<String>,
    },

    /// A corpus specification that cannot be carried out as written.
    #[error("corpus spec: `{field}`: {reason}")]
    InvalidSpec { field: &'static str, reason: String },

    #[error(
        "corpus `{corpus}`: asked for {requested} {unit}, but only {available} pass the filters"
    )]
    NotEnough {
        corpus: String,
        requested: usize,
        available: usize,
        unit: &'static str,
    },
}

/// What to do about a failed read, for the two causes a user can fix.
fn read_hint(e: &std::io::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("UTF-8") {
        " (the file must be UTF-8 text: convert it, e.g. `iconv -f latin1 -t utf-8 IN > OUT`)"
    } else if text.contains("deflate")
        || text.contains("gzip")
        || e.kind() == std::io::ErrorKind::UnexpectedEof
    {
        " (the file starts as gzip but does not decompress: it is damaged or cut short; `gzip -t FILE` checks it; fetch it again)"
    } else {
        ""
    }
}

/// Renders `a, b, c` with backticks, or `none` for an empty list.
struct FieldList<'a>(&'a [String]);

impl fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        Ok(())
    }
}

/// The JSON type of a value, as a user would name it in a message.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
