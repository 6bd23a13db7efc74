//! The real hh-rlhf harmless-base test split from the project's shared data.
//! Expected numbers were counted from the file with a separate Python script
//! (json + regular expressions), not with this crate.
//!
//! The file lives outside the repository (in `shared/`, beside the checkout);
//! it is found by walking up from this crate or through `LMGEO_HH_RLHF`.
//! Without it the tests say so and pass, unless `LMGEO_REQUIRE_DATA=1`.

use std::io::Read;
use std::path::PathBuf;

use lmgeo_data::{CorpusSpec, Format, HhOptions, Side, Turns, read_hh_rlhf, split_turns};

const RELATIVE: &str = "data/hh-rlhf/harmless-base-test.jsonl.gz";
const RECORDS: usize = 2312;

fn data_file() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LMGEO_HH_RLHF") {
        return Some(PathBuf::from(p));
    }
    let found = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(RELATIVE))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("LMGEO_REQUIRE_DATA").as_deref() != Ok("1"),
            "{RELATIVE} not found above {} and LMGEO_REQUIRE_DATA=1",
            env!("CARGO_MANIFEST_DIR")
        );
        eprintln!("skipping: {RELATIVE} not found");
    }
    found
}

fn spec(path: PathBuf, side: Side, turns: Turns) -> CorpusSpec {
    CorpusSpec {
        side: Some(side),
        turns: Some(turns),
        ..CorpusSpec::file(Format::HhRlhf, path)
    }
}

#[test]
fn counts_records_and_pairs() {
    let Some(path) = data_file() else { return };
    let chosen = read_hh_rlhf(&path, "hh", HhOptions::default()).unwrap();
    assert_eq!(chosen.len(), RECORDS);
    assert!(chosen.iter().all(|t| t.text.starts_with("\n\nHuman: ")));

    let corpus = spec(path, Side::Both, Turns::Whole).load().unwrap();
    assert_eq!(corpus.name(), "hh-rlhf:harmless-base-test");
    assert_eq!(corpus.len(), 2 * RECORDS);
    let pairs = corpus.preference_pairs();
    assert_eq!(pairs.len(), RECORDS);
    let t = &corpus.texts()[2 * 17];
    assert_eq!(t.id, "hh-rlhf:harmless-base-test:17:chosen");
    assert_eq!(t.source_line, 18);
    assert!(
        t.text
            .starts_with("\n\nHuman: What's in the news these days?\n\nAssistant: ")
    );
    for (c, r) in pairs {
        let (c, r) = (&corpus.texts()[c], &corpus.texts()[r]);
        assert_eq!(c.group, r.group);
        assert_ne!(c.text, r.text);
    }
}

#[test]
fn pairs_share_their_prompt() {
    let Some(path) = data_file() else { return };
    let corpus = spec(path, Side::Both, Turns::Whole).load().unwrap();
    let mut same_first_prompt = 0;
    let mut same_context = 0;
    for (c, r) in corpus.preference_pairs() {
        let tc = split_turns(&corpus.texts()[c].text);
        let tr = split_turns(&corpus.texts()[r].text);
        if tc[0] == tr[0] {
            same_first_prompt += 1;
        }
        // Everything but the final reply. In 5 records one reply itself
        // contains a "\n\nHuman:" or "\n\nAssistant:", so the contexts,
        // split at the last marker, differ there.
        if tc[..tc.len() - 1] == tr[..tr.len() - 1] {
            same_context += 1;
        }
    }
    assert_eq!(same_first_prompt, RECORDS);
    assert_eq!(same_context, RECORDS - 5);
}

#[test]
fn turns_and_final_replies() {
    let Some(path) = data_file() else { return };
    let all = read_hh_rlhf(
        &path,
        "hh",
        HhOptions {
            side: Side::Chosen,
            turns: Turns::All,
        },
    )
    .unwrap();
    // 5756 Human and 5764 Assistant markers in the chosen dialogues.
    assert_eq!(all.len(), 11520);
    assert_eq!(
        all.iter()
            .filter(|t| t.role.as_deref() == Some("human"))
            .count(),
        5756
    );

    let last = spec(path.clone(), Side::Both, Turns::LastAssistant)
        .load()
        .unwrap();
    assert_eq!(last.len(), 2 * RECORDS);
    assert!(last.iter().all(|t| t.role.as_deref() == Some("assistant")));
    // The final replies always differ; four chosen ones are empty
    // (records 86, 516, 925 and 1103).
    let pairs = last.preference_pairs();
    assert_eq!(pairs.len(), RECORDS);
    assert!(
        pairs
            .iter()
            .all(|&(c, r)| last.texts()[c].text != last.texts()[r].text)
    );
    let empty: Vec<&str> = last
        .iter()
        .filter(|t| t.text.is_empty())
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(
        empty,
        [
            "hh-rlhf:harmless-base-test:86:chosen:3",
            "hh-rlhf:harmless-base-test:516:chosen:1",
            "hh-rlhf:harmless-base-test:925:chosen:1",
            "hh-rlhf:harmless-base-test:1103:chosen:1",
        ]
    );
    // Selection drops those four records whole (min_chars defaults to 1),
    // keeping the remaining pairs aligned.
    let selected = spec(path, Side::Both, Turns::LastAssistant)
        .select(|_| 0)
        .unwrap();
    assert_eq!(selected.preference_pairs().len(), RECORDS - 4);
    assert_eq!(selected.len(), 2 * (RECORDS - 4));
}

#[test]
fn sampling_on_the_real_split() {
    let Some(path) = data_file() else { return };
    let mut s = spec(path.clone(), Side::Both, Turns::LastAssistant);
    s.n = Some(100);
    s.seed = 3;
    let corpus = s.load().unwrap();
    let small = s.select_from(&corpus, |_| 0).unwrap();
    assert_eq!(small.len(), 200);
    assert_eq!(small.preference_pairs().len(), 100);
    s.n = Some(110);
    let large = s.select_from(&corpus, |_| 0).unwrap();
    assert_eq!(&large.texts()[..200], small.texts());
    assert_eq!(small.texts(), {
        let mut again = s.clone();
        again.n = Some(100);
        again.select(|_| 0).unwrap().texts().to_vec()
    });
    assert_ne!(small.texts(), large.texts());

    // The selection follows the records, not the file: a decompressed copy
    // under another file name, with the name pinned, selects the same texts.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.jsonl");
    std::fs::write(&copy, raw).unwrap();
    let mut pinned = s.clone();
    pinned.n = Some(100);
    pinned.name = Some("hh-rlhf:harmless-base-test".into());
    let mut moved = pinned.clone();
    moved.path = Some(copy);
    assert_eq!(
        pinned.select(|_| 0).unwrap().texts(),
        moved.select(|_| 0).unwrap().texts()
    );
    assert_eq!(pinned.select(|_| 0).unwrap().texts(), small.texts());

    // Asking for more pairs than exist is an error, not a short corpus.
    s.n = Some(RECORDS);
    let err = s.select_from(&corpus, |_| 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "corpus `hh-rlhf:harmless-base-test`: asked for 2312 groups, but only 2308 pass the filters"
    );
}
