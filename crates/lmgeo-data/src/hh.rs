//! The hh-rlhf preference format (Bai et al. 2022): one JSON object per line
//! with a `chosen` and a `rejected` dialogue, each a string of
//! "\n\nHuman: ..." and "\n\nAssistant: ..." turns.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CorpusError;
use crate::io::{for_each_line, is_blank, open, parse_object, string_field};
use crate::text::Text;

/// Which dialogue of each preference record to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    #[default]
    Chosen,
    Rejected,
    /// Both, as an aligned pair sharing a `group`.
    Both,
}

impl Side {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Side::Chosen => &["chosen"],
            Side::Rejected => &["rejected"],
            Side::Both => &["chosen", "rejected"],
        }
    }
}

/// How much of each dialogue becomes a text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Turns {
    /// The dialogue string exactly as stored, markers included.
    #[default]
    Whole,
    /// Every turn as its own text (marker removed), with role and index.
    All,
    /// Only the final Assistant reply: in hh-rlhf the part where `chosen`
    /// and `rejected` differ.
    LastAssistant,
    /// Only the opening Human prompt.
    FirstHuman,
}

/// Options of the hh-rlhf reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HhOptions {
    pub side: Side,
    pub turns: Turns,
}

/// The speaker of a dialogue turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Human,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Human => "human",
            Role::Assistant => "assistant",
        }
    }

    fn marker(self) -> &'static str {
        match self {
            Role::Human => "Human:",
            Role::Assistant => "Assistant:",
        }
    }
}

/// One turn of a dialogue, borrowed from the dialogue string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    /// 0-based position among the dialogue's turns.
    pub index: usize,
    /// `None` for text before the first marker (absent in hh-rlhf itself).
    pub role: Option<Role>,
    /// The turn's words with the marker removed and surrounding whitespace
    /// trimmed (hh-rlhf is inconsistent about spaces after the colon).
    pub text: &'a str,
}

/// Splits a dialogue at its "\n\nHuman:" and "\n\nAssistant:" markers.
///
/// A marker counts only after a blank line (or at the very start): the data
/// contains replies such as "Assistant: Human: Okay, ..." where the second
/// "Human:" is part of the reply, and hh-rlhf's own tooling splits the same
/// way. Leading non-blank text before any marker becomes a turn without role.
pub fn split_turns(dialogue: &str) -> Vec<Turn<'_>> {
    // (start of marker, end of marker, role)
    let mut marks: Vec<(usize, usize, Role)> = Vec::new();
    for role in [Role::Human, Role::Assistant] {
        let marker = role.marker();
        if dialogue.starts_with(marker) {
            marks.push((0, marker.len(), role));
        }
        let spaced = format!("\n\n{marker}");
        for (at, _) in dialogue.match_indices(&spaced) {
            marks.push((at, at + spaced.len(), role));
        }
    }
    marks.sort_unstable_by_key(|m| m.0);

    let mut turns = Vec::with_capacity(marks.len() + 1);
    let first_mark = marks.first().map_or(dialogue.len(), |m| m.0);
    let preamble = dialogue[..first_mark].trim();
    if !preamble.is_empty() {
        turns.push(Turn {
            index: 0,
            role: None,
            text: preamble,
        });
    }
    for (k, &(_, content_start, role)) in marks.iter().enumerate() {
        let content_end = marks.get(k + 1).map_or(dialogue.len(), |next| next.0);
        turns.push(Turn {
            index: turns.len(),
            role: Some(role),
            text: dialogue[content_start..content_end].trim(),
        });
    }
    turns
}

/// Reads an hh-rlhf file (plain or gzip). Ids are
/// `{name}:{record}:{field}` for whole dialogues and
/// `{name}:{record}:{field}:{turn}` for turns, `record` counting non-blank
/// lines from 0.
pub fn read_hh_rlhf(path: &Path, name: &str, options: HhOptions) -> Result<Vec<Text>, CorpusError> {
    let reader = open(path)?;
    parse_hh_rlhf(reader, &path.display().to_string(), name, options)
}

/// [`read_hh_rlhf`] on any reader; `origin` names it in error messages.
pub fn parse_hh_rlhf<R: BufRead>(
    reader: R,
    origin: &str,
    name: &str,
    options: HhOptions,
) -> Result<Vec<Text>, CorpusError> {
    let mut texts = Vec::new();
    let mut record = 0usize;
    for_each_line(reader, origin, |line_no, line| {
        if is_blank(line) {
            return Ok(());
        }
        let object = parse_object(line, origin, line_no)?;
        let record_key = format!("{name}:{record}");
        for &field in options.side.fields() {
            let dialogue = string_field(&object, field, origin, line_no)?;
            push_texts(
                &mut texts,
                dialogue,
                &record_key,
                field,
                options.turns,
                (origin, line_no),
            )?;
        }
        record += 1;
        Ok(())
    })?;
    Ok(texts)
}

fn push_texts(
    out: &mut Vec<Text>,
    dialogue: &str,
    record_key: &str,
    field: &str,
    turns: Turns,
    (origin, line_no): (&str, usize),
) -> Result<(), CorpusError> {
    let make = |text: &str, group: String, turn: Option<&Turn<'_>>| Text {
        id: match turn {
            Some(t) => format!("{record_key}:{field}:{}", t.index),
            None => format!("{record_key}:{field}"),
        },
        text: text.to_owned(),
        group: Some(group),
        field: Some(field.to_owned()),
        role: turn.and_then(|t| t.role).map(|r| r.as_str().to_owned()),
        turn: turn.map(|t| t.index),
        source_line: line_no,
    };
    let missing = |wanted| CorpusError::MissingTurn {
        origin: origin.to_owned(),
        line: line_no,
        field: field.to_owned(),
        wanted,
    };
    match turns {
        Turns::Whole => out.push(make(dialogue, record_key.to_owned(), None)),
        Turns::All => {
            // Align the two sides turn by turn: chosen turn k and rejected
            // turn k form one group.
            for turn in split_turns(dialogue) {
                let group = format!("{record_key}:{}", turn.index);
                out.push(make(turn.text, group, Some(&turn)));
            }
        }
        Turns::LastAssistant => {
            let turns = split_turns(dialogue);
            let last = turns
                .iter()
                .rev()
                .find(|t| t.role == Some(Role::Assistant))
                .ok_or_else(|| missing("Assistant"))?;
            // Grouped by record, not by turn index: in a few hh-rlhf records
            // the two replies sit at different indices because one of them
            // contains a stray "\n\nHuman:".
            out.push(make(last.text, record_key.to_owned(), Some(last)));
        }
        Turns::FirstHuman => {
            let turns = split_turns(dialogue);
            let first = turns
                .iter()
                .find(|t| t.role == Some(Role::Human))
                .ok_or_else(|| missing("Human"))?;
            out.push(make(first.text, record_key.to_owned(), Some(first)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(turns: &[Turn<'_>]) -> Vec<Option<&'static str>> {
        turns.iter().map(|t| t.role.map(Role::as_str)).collect()
    }

    #[test]
    fn splits_a_two_exchange_dialogue() {
        let d = "\n\nHuman: Hi there.\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:  Fine, thanks.";
        let turns = split_turns(d);
        assert_eq!(
            roles(&turns),
            vec![
                Some("human"),
                Some("assistant"),
                Some("human"),
                Some("assistant")
            ]
        );
        let texts: Vec<&str> = turns.iter().map(|t| t.text).collect();
        assert_eq!(
            texts,
            vec!["Hi there.", "Hello!", "How are you?", "Fine, thanks."]
        );
        assert_eq!(
            turns.iter().map(|t| t.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn markers_inside_a_line_are_text() {
        let d = "\n\nHuman: Go on.\n\nAssistant: Human: Okay, so next you mix it.";
        let turns = split_turns(d);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[1].text, "Human: Okay, so next you mix it.");
    }

    #[test]
    fn single_newlines_do_not_split() {
        let d = "Human: A list please.\n\nAssistant: 1. one\nHuman: not a turn\n2. two";
        let turns = split_turns(d);
        assert_eq!(roles(&turns), vec![Some("human"), Some("assistant")]);
        assert_eq!(turns[1].text, "1. one\nHuman: not a turn\n2. two");
    }

    #[test]
    fn preamble_and_empty_final_reply() {
        let d = "System note\n\nHuman: Hi\n\nAssistant:";
        let turns = split_turns(d);
        assert_eq!(roles(&turns), vec![None, Some("human"), Some("assistant")]);
        assert_eq!(turns[0].text, "System note");
        assert_eq!(turns[2].text, "");
        assert_eq!(turns[2].index, 2);
    }

    #[test]
    fn text_without_markers_is_one_roleless_turn() {
        assert_eq!(
            split_turns("just words"),
            vec![Turn {
                index: 0,
                role: None,
                text: "just words"
            }]
        );
        assert!(split_turns("  \n ").is_empty());
    }

    const TWO_RECORDS: &str = concat!(
        r#"{"chosen": "\n\nHuman: Q1\n\nAssistant: good1", "rejected": "\n\nHuman: Q1\n\nAssistant: bad1"}"#,
        "\n\n",
        r#"{"chosen": "\n\nHuman: Q2\n\nAssistant: A\n\nHuman: more?\n\nAssistant: good2", "rejected": "\n\nHuman: Q2\n\nAssistant: A\n\nHuman: more?\n\nAssistant: bad2"}"#,
        "\n"
    );

    fn parse(side: Side, turns: Turns) -> Vec<Text> {
        parse_hh_rlhf(
            TWO_RECORDS.as_bytes(),
            "mem",
            "hh",
            HhOptions { side, turns },
        )
        .unwrap()
    }

    #[test]
    fn whole_dialogues_keep_the_raw_string() {
        let texts = parse(Side::Chosen, Turns::Whole);
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0].id, "hh:0:chosen");
        assert_eq!(texts[0].text, "\n\nHuman: Q1\n\nAssistant: good1");
        // The blank line 2 is skipped but still counted for line numbers.
        assert_eq!(texts[1].id, "hh:1:chosen");
        assert_eq!(texts[1].source_line, 3);
        assert_eq!(texts[1].group.as_deref(), Some("hh:1"));
        assert_eq!(texts[1].role, None);
    }

    #[test]
    fn both_sides_share_a_group() {
        let texts = parse(Side::Both, Turns::Whole);
        let summary: Vec<(&str, &str, &str)> = texts
            .iter()
            .map(|t| {
                (
                    t.id.as_str(),
                    t.group.as_deref().unwrap(),
                    t.field.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("hh:0:chosen", "hh:0", "chosen"),
                ("hh:0:rejected", "hh:0", "rejected"),
                ("hh:1:chosen", "hh:1", "chosen"),
                ("hh:1:rejected", "hh:1", "rejected"),
            ]
        );
    }

    #[test]
    fn last_assistant_and_first_human() {
        let last = parse(Side::Both, Turns::LastAssistant);
        let got: Vec<(&str, &str, Option<usize>)> = last
            .iter()
            .map(|t| (t.id.as_str(), t.text.as_str(), t.turn))
            .collect();
        assert_eq!(
            got,
            vec![
                ("hh:0:chosen:1", "good1", Some(1)),
                ("hh:0:rejected:1", "bad1", Some(1)),
                ("hh:1:chosen:3", "good2", Some(3)),
                ("hh:1:rejected:3", "bad2", Some(3)),
            ]
        );
        assert!(last.iter().all(|t| t.role.as_deref() == Some("assistant")));
        assert_eq!(last[2].group.as_deref(), Some("hh:1"));

        let first = parse(Side::Rejected, Turns::FirstHuman);
        let got: Vec<(&str, &str)> = first
            .iter()
            .map(|t| (t.id.as_str(), t.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![("hh:0:rejected:0", "Q1"), ("hh:1:rejected:0", "Q2")]
        );
    }

    #[test]
    fn all_turns_are_grouped_by_record_and_index() {
        let texts = parse(Side::Both, Turns::All);
        // 2 + 4 turns per side, two sides.
        assert_eq!(texts.len(), 12);
        // Record 0 gives 2 + 2 texts; record 1 chosen starts at index 4.
        let t = &texts[4 + 2];
        assert_eq!(t.id, "hh:1:chosen:2");
        assert_eq!(t.group.as_deref(), Some("hh:1:2"));
        assert_eq!(t.role.as_deref(), Some("human"));
        assert_eq!(t.text, "more?");
    }

    #[test]
    fn missing_side_and_missing_turn_are_errors() {
        let input = "{\"chosen\": \"\\n\\nHuman: Q\\n\\nAssistant: A\"}\n";
        let err = parse_hh_rlhf(
            input.as_bytes(),
            "f.jsonl",
            "hh",
            HhOptions {
                side: Side::Both,
                turns: Turns::Whole,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.jsonl:1: missing field `rejected` (fields present: `chosen`)"
        );

        let input = "{\"chosen\": \"\\n\\nHuman: only a question\"}\n";
        let err = parse_hh_rlhf(
            input.as_bytes(),
            "f.jsonl",
            "hh",
            HhOptions {
                side: Side::Chosen,
                turns: Turns::LastAssistant,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                CorpusError::MissingTurn { line: 1, wanted: "Assistant", field, .. } if field == "chosen"
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("f.jsonl:1: field `chosen` has no Assistant turn")
        );
    }
}
