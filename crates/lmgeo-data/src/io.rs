//! Opening files (plain or gzip) and walking their lines with numbers.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};

use crate::error::{CorpusError, json_kind};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens `path` for line reading, decompressing it when it starts with the
/// gzip magic bytes. The bytes decide, not the extension: data sets are often
/// renamed or served with a misleading suffix.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, CorpusError> {
    let origin = || path.display().to_string();
    let file = File::open(path).map_err(|source| CorpusError::Open {
        origin: origin(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|source| CorpusError::Open {
        origin: origin(),
        source,
    })?;
    // `fill_buf` on a fresh reader over a regular file returns at least two
    // bytes unless the file is shorter; a one-byte file cannot be gzip.
    if head.starts_with(&GZIP_MAGIC) {
        // Multi-member decoding: `cat a.gz b.gz` is a valid gzip file and
        // some tools write data sets that way.
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(reader))))
    } else {
        Ok(Box::new(reader))
    }
}

/// Calls `f(line_number, line)` for every line of `reader`, 1-based, with the
/// line ending (`\n` or `\r\n`) and a leading UTF-8 byte-order mark removed.
pub(crate) fn for_each_line<R: BufRead>(
    mut reader: R,
    origin: &str,
    mut f: impl FnMut(usize, &str) -> Result<(), CorpusError>,
) -> Result<(), CorpusError> {
    let mut buf = String::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        line_no += 1;
        let read = reader
            .read_line(&mut buf)
            .map_err(|source| CorpusError::ReadLine {
                origin: origin.to_owned(),
                line: line_no,
                source,
            })?;
        if read == 0 {
            return Ok(());
        }
        let mut line = buf.strip_suffix('\n').unwrap_or(&buf);
        line = line.strip_suffix('\r').unwrap_or(line);
        if line_no == 1 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        f(line_no, line)?;
    }
}

/// Parses one JSON-lines record, which must be an object.
pub(crate) fn parse_object(
    line: &str,
    origin: &str,
    line_no: usize,
) -> Result<Map<String, Value>, CorpusError> {
    let value: Value = serde_json::from_str(line).map_err(|e| CorpusError::Json {
        origin: origin.to_owned(),
        line: line_no,
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(CorpusError::NotAnObject {
            origin: origin.to_owned(),
            line: line_no,
            found: json_kind(&other),
        }),
    }
}

/// serde_json appends "at line 1 column N" to its messages; inside a JSON
/// lines file that position is misleading (every record is "line 1"), and our
/// own message already gives the file line and the column.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// The string value of `field` in `record`, with an error that names the
/// fields that do exist when it is absent.
pub(crate) fn string_field<'a>(
    record: &'a Map<String, Value>,
    field: &str,
    origin: &str,
    line_no: usize,
) -> Result<&'a str, CorpusError> {
    match record.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(CorpusError::WrongType {
            origin: origin.to_owned(),
            line: line_no,
            field: field.to_owned(),
            expected: "a string",
            found: json_kind(other),
        }),
        None => Err(CorpusError::MissingField {
            origin: origin.to_owned(),
            line: line_no,
            field: field.to_owned(),
            available: record.keys().cloned().collect(),
        }),
    }
}

/// True for lines that carry no record. JSON lines files often end with a
/// blank line, and some are hand-edited with blank separators.
pub(crate) fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_and_bom_are_removed() {
        let input = "\u{feff}first\r\nsecond\n\nlast-without-newline";
        let mut seen = Vec::new();
        for_each_line(input.as_bytes(), "mem", |n, l| {
            seen.push((n, l.to_owned()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (1, "first".to_owned()),
                (2, "second".to_owned()),
                (3, String::new()),
                (4, "last-without-newline".to_owned()),
            ]
        );
    }

    #[test]
    fn invalid_utf8_reports_the_line() {
        let input: &[u8] = b"ok\nbad \xff byte\n";
        let err = for_each_line(input, "mem.txt", |_, _| Ok(())).unwrap_err();
        assert!(
            matches!(err, CorpusError::ReadLine { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("mem.txt:2: "), "{err}");
    }

    #[test]
    fn json_errors_carry_file_line_and_column() {
        let err = parse_object("{\"a\": }", "x.jsonl", 9).unwrap_err();
        // The bad character `}` is the 7th of the line.
        assert!(
            matches!(
                err,
                CorpusError::Json {
                    line: 9,
                    column: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with("x.jsonl:9:7: invalid JSON: "), "{msg}");
        assert!(!msg.contains("at line 1"), "{msg}");
    }

    #[test]
    fn non_object_records_are_rejected_with_their_type() {
        let err = parse_object("[1, 2]", "x.jsonl", 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.jsonl:3: expected a JSON object, found an array"
        );
    }

    #[test]
    fn missing_field_lists_the_fields_present() {
        let record = parse_object(r#"{"prompt": "p", "response": "r"}"#, "x.jsonl", 4).unwrap();
        let err = string_field(&record, "chosen", "x.jsonl", 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.jsonl:4: missing field `chosen` (fields present: `prompt`, `response`)"
        );
        let err = string_field(
            &parse_object(r#"{"chosen": 3}"#, "x.jsonl", 5).unwrap(),
            "chosen",
            "x.jsonl",
            5,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.jsonl:5: field `chosen` must be a string, found a number"
        );
    }
}
