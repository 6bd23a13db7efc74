//! Readers on real files: gzip detection by content, error messages that
//! name the file and line, paragraphs.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use lmgeo_data::{
    CorpusError, CorpusSpec, Format, HhOptions, JsonlOptions, Side, Turns, Unit, read_hh_rlhf,
    read_jsonl, read_text,
};

const HH: &str = concat!(
    r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?", "rejected": "\n\nHuman: Hi\n\nAssistant: What?"}"#,
    "\n",
    r#"{"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5"}"#,
    "\n",
);

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "plain.jsonl", HH.as_bytes());
    // Misleading names both ways.
    let gz_named_plain = write(dir.path(), "really-gz.jsonl", &gzip(HH.as_bytes()));
    let plain_named_gz = write(dir.path(), "really-plain.jsonl.gz", HH.as_bytes());
    let opts = HhOptions {
        side: Side::Both,
        turns: Turns::Whole,
    };
    let a = read_hh_rlhf(&plain, "hh", opts).unwrap();
    let b = read_hh_rlhf(&gz_named_plain, "hh", opts).unwrap();
    let c = read_hh_rlhf(&plain_named_gz, "hh", opts).unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn concatenated_gzip_members_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = HH.split_at(HH.find('\n').unwrap() + 1);
    let mut bytes = gzip(first.as_bytes());
    bytes.extend(gzip(second.as_bytes()));
    let path = write(dir.path(), "two-members.gz", &bytes);
    let texts = read_hh_rlhf(&path, "hh", HhOptions::default()).unwrap();
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[1].text, "\n\nHuman: 2+2?\n\nAssistant: 4");
}

#[test]
fn bad_json_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!("{HH}{{\"chosen\": \"x\", \"rejected\": \"y\"\n");
    for (name, bytes) in [
        ("bad.jsonl", body.clone().into_bytes()),
        ("bad.jsonl.gz", gzip(body.as_bytes())),
    ] {
        let path = write(dir.path(), name, &bytes);
        let err = read_hh_rlhf(&path, "hh", HhOptions::default()).unwrap_err();
        assert!(matches!(err, CorpusError::Json { line: 3, .. }), "{err:?}");
        let msg = err.to_string();
        let prefix = format!("{}:3:", path.display());
        assert!(msg.starts_with(&prefix), "{msg}");
        assert!(
            msg.contains("invalid JSON: EOF while parsing an object"),
            "{msg}"
        );
    }
}

#[test]
fn missing_field_names_the_field_and_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "prompts.jsonl",
        b"{\"prompt\": \"a\", \"response\": \"b\"}\n",
    );
    let err = read_hh_rlhf(&path, "hh", HhOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:1: missing field `chosen` (fields present: `prompt`, `response`)",
            path.display()
        )
    );
    // The same file through the generic reader, with the right field.
    let texts = read_jsonl(
        &path,
        "p",
        &JsonlOptions {
            text_field: "response".into(),
            id_field: None,
        },
    )
    .unwrap();
    assert_eq!(texts[0].text, "b");
}

#[test]
fn missing_file_is_an_open_error_with_the_path() {
    let err = read_text(Path::new("/no/such/file.txt"), "t", Unit::Line).unwrap_err();
    assert!(matches!(err, CorpusError::Open { .. }));
    assert!(
        err.to_string()
            .starts_with("/no/such/file.txt: cannot read: ")
    );
}

#[test]
fn corrupt_gzip_is_a_read_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gzip(HH.as_bytes());
    let cut = bytes.len() / 2;
    bytes.truncate(cut);
    let path = write(dir.path(), "cut.gz", &bytes);
    let err = read_hh_rlhf(&path, "hh", HhOptions::default()).unwrap_err();
    assert!(
        matches!(err, CorpusError::ReadLine { .. } | CorpusError::Json { .. }),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&path.display().to_string()));
}

#[test]
fn paragraph_files() {
    let dir = tempfile::tempdir().unwrap();
    let body = "Title line\n\nFirst paragraph,\nsecond line.\n\n\n   \nSecond paragraph.\n";
    let path = write(dir.path(), "notes.txt", body.as_bytes());
    let paras = read_text(&path, "n", Unit::Paragraph).unwrap();
    let got: Vec<(&str, usize)> = paras
        .iter()
        .map(|t| (t.text.as_str(), t.source_line))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Title line", 1),
            ("First paragraph,\nsecond line.", 3),
            ("Second paragraph.", 8),
        ]
    );
    let lines = read_text(&path, "n", Unit::Line).unwrap();
    assert_eq!(lines.len(), 4);

    // Through a spec, with the default name derived from the file.
    let spec = CorpusSpec {
        unit: Some(Unit::Paragraph),
        ..CorpusSpec::file(Format::Text, &path)
    };
    let corpus = spec.load().unwrap();
    assert_eq!(corpus.name(), "text:notes");
    assert_eq!(corpus.texts()[2].id, "text:notes:2");
}
