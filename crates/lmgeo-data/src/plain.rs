//! Plain text files: one text per line, or one per paragraph.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CorpusError;
use crate::io::{for_each_line, is_blank, open};
use crate::text::Text;

/// What one text is in a plain text file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Every non-blank line.
    #[default]
    Line,
    /// Every run of non-blank lines, separated by blank (or whitespace-only)
    /// lines; the lines are joined with "\n".
    Paragraph,
}

/// A paragraph and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    pub first_line: usize,
    pub text: String,
}

/// Splits `s` into paragraphs at blank lines. Trailing whitespace of every
/// line is dropped (it is invisible and editors disagree about it); leading
/// whitespace is kept, since indentation carries meaning in code and lists.
pub fn split_paragraphs(s: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut acc = Collector::default();
    for_each_line(s.as_bytes(), "", |line_no, line| {
        acc.push(line_no, line, &mut out);
        Ok(())
    })
    .expect("reading from a &str cannot fail");
    acc.finish(&mut out);
    out
}

#[derive(Default)]
struct Collector {
    current: Option<Paragraph>,
}

impl Collector {
    fn push(&mut self, line_no: usize, line: &str, out: &mut Vec<Paragraph>) {
        if is_blank(line) {
            self.finish(out);
            return;
        }
        let line = line.trim_end();
        match &mut self.current {
            Some(p) => {
                p.text.push('\n');
                p.text.push_str(line);
            }
            None => {
                self.current = Some(Paragraph {
                    first_line: line_no,
                    text: line.to_owned(),
                })
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Paragraph>) {
        out.extend(self.current.take());
    }
}

/// Reads a plain text file (UTF-8, plain or gzip). Ids are `{name}:{k}`
/// with `k` counting texts from 0.
pub fn read_text(path: &Path, name: &str, unit: Unit) -> Result<Vec<Text>, CorpusError> {
    let reader = open(path)?;
    parse_text(reader, &path.display().to_string(), name, unit)
}

/// [`read_text`] on any reader; `origin` names it in error messages.
pub fn parse_text<R: BufRead>(
    reader: R,
    origin: &str,
    name: &str,
    unit: Unit,
) -> Result<Vec<Text>, CorpusError> {
    let mut pieces: Vec<Paragraph> = Vec::new();
    match unit {
        Unit::Line => for_each_line(reader, origin, |line_no, line| {
            if !is_blank(line) {
                pieces.push(Paragraph {
                    first_line: line_no,
                    text: line.trim_end().to_owned(),
                });
            }
            Ok(())
        })?,
        Unit::Paragraph => {
            let mut acc = Collector::default();
            for_each_line(reader, origin, |line_no, line| {
                acc.push(line_no, line, &mut pieces);
                Ok(())
            })?;
            acc.finish(&mut pieces);
        }
    }
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(k, p)| Text {
            id: format!("{name}:{k}"),
            text: p.text,
            group: None,
            field: None,
            role: None,
            turn: None,
            source_line: p.first_line,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_split_at_blank_and_whitespace_lines() {
        let s = "\n\nFirst para\nstill first   \n\n\n  indented second\n \t \nthird\n";
        let got = split_paragraphs(s);
        assert_eq!(
            got,
            vec![
                Paragraph {
                    first_line: 3,
                    text: "First para\nstill first".into()
                },
                Paragraph {
                    first_line: 7,
                    text: "  indented second".into()
                },
                Paragraph {
                    first_line: 9,
                    text: "third".into()
                },
            ]
        );
    }

    #[test]
    fn paragraphs_of_crlf_text_without_final_newline() {
        let got = split_paragraphs("a\r\nb\r\n\r\nc");
        let texts: Vec<&str> = got.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, vec!["a\nb", "c"]);
        assert!(split_paragraphs("").is_empty());
        assert!(split_paragraphs("\n \n").is_empty());
    }

    #[test]
    fn line_unit_skips_blank_lines() {
        let texts = parse_text("one\n\n two \nthree".as_bytes(), "m", "t", Unit::Line).unwrap();
        let got: Vec<(&str, &str, usize)> = texts
            .iter()
            .map(|t| (t.id.as_str(), t.text.as_str(), t.source_line))
            .collect();
        assert_eq!(
            got,
            vec![("t:0", "one", 1), ("t:1", " two", 3), ("t:2", "three", 4)]
        );
    }

    #[test]
    fn paragraph_unit_matches_split_paragraphs() {
        let s = "p one\nline two\n\np two\n";
        let texts = parse_text(s.as_bytes(), "m", "t", Unit::Paragraph).unwrap();
        let direct = split_paragraphs(s);
        assert_eq!(texts.len(), direct.len());
        for (t, p) in texts.iter().zip(&direct) {
            assert_eq!(t.text, p.text);
            assert_eq!(t.source_line, p.first_line);
        }
        assert_eq!(texts[1].id, "t:1");
    }
}
