//! CorpusSpec as it appears in experiment files.

use lmgeo_data::{CorpusSpec, Format, Side, Turns, Unit};

fn parse(src: &str) -> Result<CorpusSpec, toml::de::Error> {
    toml::from_str(src)
}

#[test]
fn full_hh_rlhf_example() {
    let spec = parse(
        r#"
        format = "hh-rlhf"
        path = "data/hh-rlhf/harmless-base-test.jsonl.gz"
        side = "both"
        turns = "last-assistant"
        n = 200
        seed = 7
        min_tokens = 8
        max_tokens = 512
        "#,
    )
    .unwrap();
    let expected = CorpusSpec {
        side: Some(Side::Both),
        turns: Some(Turns::LastAssistant),
        n: Some(200),
        seed: 7,
        min_tokens: Some(8),
        max_tokens: Some(512),
        ..CorpusSpec::file(Format::HhRlhf, "data/hh-rlhf/harmless-base-test.jsonl.gz")
    };
    assert_eq!(spec, expected);
    assert!(spec.validate().is_ok());
    assert_eq!(spec.corpus_name(), "hh-rlhf:harmless-base-test");
}

#[test]
fn other_formats() {
    let spec = parse(
        r#"
        format = "jsonl"
        path = "wiki.jsonl"
        text_field = "body"
        id_field = "title"
        "#,
    )
    .unwrap();
    assert_eq!(spec.jsonl_options().text_field, "body");
    assert_eq!(spec.jsonl_options().id_field.as_deref(), Some("title"));

    let spec = parse("format = \"text\"\npath = \"a.txt\"\nunit = \"paragraph\"").unwrap();
    assert_eq!(spec.unit, Some(Unit::Paragraph));

    let spec = parse("format = \"builtin\"").unwrap();
    assert_eq!(spec.corpus_name(), CorpusSpec::default().corpus_name());
    assert_eq!(spec.load().unwrap().len(), 72);

    let spec = parse("format = \"builtin\"\nname = \"lmgeo-mini-pairs\"\nside = \"both\"").unwrap();
    assert_eq!(spec.load().unwrap().preference_pairs().len(), 24);
}

#[test]
fn mistakes_are_reported_by_name() {
    let err = parse("format = \"hh-rlhf\"\npath = \"x\"\nsplit_turns = true").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown field `split_turns`, expected one of `format`"),
        "{err}"
    );
    let err = parse("format = \"hh-rlhf\"\npath = \"x\"\nside = \"best\"").unwrap_err();
    assert!(err.to_string().contains("unknown variant `best`"), "{err}");
    let err = parse("format = \"csv\"").unwrap_err();
    assert!(err.to_string().contains("unknown variant `csv`"), "{err}");
    let err = parse("path = \"x\"").unwrap_err();
    assert!(err.to_string().contains("missing field `format`"), "{err}");
    let err = parse("format = \"builtin\"\nn = -3").unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid value: integer `-3`, expected usize"),
        "{err}"
    );
}

#[test]
fn serialises_back_to_the_same_table() {
    let src = r#"
        format = "hh-rlhf"
        name = "hh-test"
        path = "x.jsonl.gz"
        side = "rejected"
        turns = "first-human"
        n = 10
        seed = 3
        min_chars = 0
        max_chars = 4000
    "#;
    let spec = parse(src).unwrap();
    let written = toml::to_string(&spec).unwrap();
    assert_eq!(parse(&written).unwrap(), spec);
    // Unset options stay out of the written table.
    assert!(!written.contains("text_field"), "{written}");
    assert!(!written.contains("max_tokens"), "{written}");
}
