//! Generic JSON lines: one object per line, the text in a named field.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::error::{CorpusError, json_kind};
use crate::io::{for_each_line, is_blank, open, parse_object, string_field};
use crate::text::Text;

/// Options of the JSON lines reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlOptions {
    /// Field holding the text; must be a string in every record.
    pub text_field: String,
    /// Field holding a record id (a string or an integer). Without it the id
    /// is the record's position, which changes if records are inserted.
    pub id_field: Option<String>,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            text_field: "text".to_owned(),
            id_field: None,
        }
    }
}

/// Reads a JSON lines file (plain or gzip). Ids are `{name}:{id}` with the
/// id field's value, else `{name}:{record}` counting non-blank lines from 0.
pub fn read_jsonl(
    path: &Path,
    name: &str,
    options: &JsonlOptions,
) -> Result<Vec<Text>, CorpusError> {
    let reader = open(path)?;
    parse_jsonl(reader, &path.display().to_string(), name, options)
}

/// [`read_jsonl`] on any reader; `origin` names it in error messages.
pub fn parse_jsonl<R: BufRead>(
    reader: R,
    origin: &str,
    name: &str,
    options: &JsonlOptions,
) -> Result<Vec<Text>, CorpusError> {
    let mut texts = Vec::new();
    // Ids must be unique for sampling and digests to mean anything; catch a
    // repeated id here where the line numbers are still known.
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut record = 0usize;
    for_each_line(reader, origin, |line_no, line| {
        if is_blank(line) {
            return Ok(());
        }
        let object = parse_object(line, origin, line_no)?;
        let text = string_field(&object, &options.text_field, origin, line_no)?;
        let local_id = match &options.id_field {
            None => record.to_string(),
            Some(field) => match object.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                Some(other) => {
                    return Err(CorpusError::WrongType {
                        origin: origin.to_owned(),
                        line: line_no,
                        field: field.clone(),
                        expected: "a string or an integer",
                        found: json_kind(other),
                    });
                }
                None => {
                    return Err(CorpusError::MissingField {
                        origin: origin.to_owned(),
                        line: line_no,
                        field: field.clone(),
                        available: object.keys().cloned().collect(),
                    });
                }
            },
        };
        let id = format!("{name}:{local_id}");
        if let Some(&first_line) = first_seen.get(&id) {
            return Err(CorpusError::DuplicateId {
                origin: origin.to_owned(),
                line: line_no,
                first_line,
                id,
            });
        }
        first_seen.insert(id.clone(), line_no);
        texts.push(Text {
            id,
            text: text.to_owned(),
            group: None,
            field: Some(options.text_field.clone()),
            role: None,
            turn: None,
            source_line: line_no,
        });
        record += 1;
        Ok(())
    })?;
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str, id: Option<&str>) -> JsonlOptions {
        JsonlOptions {
            text_field: text.to_owned(),
            id_field: id.map(str::to_owned),
        }
    }

    #[test]
    fn reads_named_fields_and_ids() {
        let input = "{\"body\": \"alpha\", \"key\": \"a\"}\n\n{\"body\": \"beta\", \"key\": 7}\n";
        let texts = parse_jsonl(input.as_bytes(), "m", "c", &opts("body", Some("key"))).unwrap();
        let got: Vec<(&str, &str, usize)> = texts
            .iter()
            .map(|t| (t.id.as_str(), t.text.as_str(), t.source_line))
            .collect();
        assert_eq!(got, vec![("c:a", "alpha", 1), ("c:7", "beta", 3)]);

        let texts = parse_jsonl(input.as_bytes(), "m", "c", &opts("body", None)).unwrap();
        assert_eq!(texts[1].id, "c:1");
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let input = "{\"text\": \"x\", \"id\": 1}\n{\"text\": \"y\", \"id\": 2}\n{\"text\": \"z\", \"id\": \"1\"}\n";
        let err =
            parse_jsonl(input.as_bytes(), "d.jsonl", "c", &opts("text", Some("id"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.jsonl:3: duplicate text id `c:1` (first seen on line 1)"
        );
    }

    #[test]
    fn id_field_errors() {
        let input = "{\"text\": \"x\", \"id\": 1.5}\n";
        let err =
            parse_jsonl(input.as_bytes(), "d.jsonl", "c", &opts("text", Some("id"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.jsonl:1: field `id` must be a string or an integer, found a number"
        );
        let input = "{\"text\": \"x\"}\n";
        let err =
            parse_jsonl(input.as_bytes(), "d.jsonl", "c", &opts("text", Some("uid"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.jsonl:1: missing field `uid` (fields present: `text`)"
        );
    }

    #[test]
    fn missing_text_field_after_good_lines() {
        let input = "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"content\": \"x\", \"meta\": {}}\n";
        let err = parse_jsonl(input.as_bytes(), "d.jsonl", "c", &opts("text", None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.jsonl:3: missing field `text` (fields present: `content`, `meta`)"
        );
    }
}
