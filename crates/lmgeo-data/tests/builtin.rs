//! The corpora shipped in the crate: layout, sizes, shared prompts, and
//! selection on them.

use std::collections::BTreeMap;

use lmgeo_data::{
    BUILTIN_NAMES, CorpusSpec, HhOptions, MINI, MINI_PAIRS, Role, Side, Turns, builtin_source,
    load_builtin, split_turns,
};
use serde_json::Value;

fn raw_records(name: &str) -> Vec<serde_json::Map<String, Value>> {
    builtin_source(name)
        .unwrap()
        .lines()
        .map(|l| match serde_json::from_str(l).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

#[test]
fn names_are_listed_and_unknown_ones_refused() {
    assert_eq!(BUILTIN_NAMES, ["lmgeo-mini", "lmgeo-mini-pairs"]);
    let err = load_builtin("lmgeo-huge", HhOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown builtin corpus `lmgeo-huge` (available: `lmgeo-mini`, `lmgeo-mini-pairs`)"
    );
}

#[test]
fn mini_has_72_paragraphs_of_40_to_200_words_on_seven_topics() {
    let records = raw_records(MINI);
    assert_eq!(records.len(), 72);
    let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "topic", "text"]);
        let topic = r["topic"].as_str().unwrap();
        assert!(r["id"].as_str().unwrap().starts_with(&format!("{topic}-")));
        *topics.entry(topic).or_default() += 1;
        let words = r["text"].as_str().unwrap().split_whitespace().count();
        assert!((40..=200).contains(&words), "{}: {words} words", r["id"]);
    }
    let expected: BTreeMap<&str, usize> = [
        ("code", 10),
        ("cooking", 10),
        ("history", 10),
        ("instructions", 10),
        ("list", 10),
        ("science", 12),
        ("small-talk", 10),
    ]
    .into();
    assert_eq!(topics, expected);

    let corpus = load_builtin(MINI, HhOptions::default()).unwrap();
    assert_eq!(corpus.len(), 72);
    assert_eq!(corpus.texts()[0].id, "lmgeo-mini:science-01");
    for (t, r) in corpus.iter().zip(&records) {
        assert_eq!(t.text, r["text"].as_str().unwrap());
        assert_eq!(t.group, None);
    }
}

#[test]
fn pairs_share_all_but_the_final_reply() {
    let records = raw_records(MINI_PAIRS);
    assert_eq!(records.len(), 24);
    let mut exchanges: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &records {
        let chosen = split_turns(r["chosen"].as_str().unwrap());
        let rejected = split_turns(r["rejected"].as_str().unwrap());
        assert_eq!(chosen.len(), rejected.len(), "{}", r["id"]);
        let n = chosen.len();
        assert_eq!(n % 2, 0, "{}: turns must alternate", r["id"]);
        for (k, t) in chosen.iter().enumerate() {
            let want = if k % 2 == 0 {
                Role::Human
            } else {
                Role::Assistant
            };
            assert_eq!(t.role, Some(want), "{} turn {k}", r["id"]);
            assert!(!t.text.is_empty());
        }
        assert_eq!(chosen[..n - 1], rejected[..n - 1], "{}", r["id"]);
        assert_ne!(chosen[n - 1].text, rejected[n - 1].text);
        assert!(!rejected[n - 1].text.is_empty());
        *exchanges.entry(n / 2).or_default() += 1;
    }
    assert_eq!(exchanges, [(1, 12), (2, 12)].into());

    let both = load_builtin(
        MINI_PAIRS,
        HhOptions {
            side: Side::Both,
            turns: Turns::Whole,
        },
    )
    .unwrap();
    assert_eq!(both.len(), 48);
    assert_eq!(both.preference_pairs().len(), 24);
    assert_eq!(both.texts()[1].id, "lmgeo-mini-pairs:0:rejected");
}

#[test]
fn builtin_sampling_is_pinned() {
    // Rankings computed in Python (blake3 package, ChaCha20 from RFC 7539)
    // from the ids in the JSON files. Renaming ids changes them, which is
    // the point: selections must not drift silently.
    let spec = CorpusSpec {
        n: Some(5),
        ..CorpusSpec::default()
    };
    let ids: Vec<String> = spec
        .select(|_| 0)
        .unwrap()
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(
        ids,
        [
            "cooking-02",
            "list-08",
            "science-06",
            "history-03",
            "history-02"
        ]
        .map(|s| format!("lmgeo-mini:{s}"))
    );

    let spec = CorpusSpec {
        side: Some(Side::Both),
        turns: Some(Turns::LastAssistant),
        n: Some(5),
        seed: 12345,
        ..CorpusSpec::builtin(MINI_PAIRS)
    };
    let corpus = spec.select(|_| 0).unwrap();
    let groups: Vec<&str> = corpus.groups().into_iter().map(|(g, _)| g).collect();
    assert_eq!(
        groups,
        [10, 2, 4, 18, 13].map(|g| format!("lmgeo-mini-pairs:{g}"))
    );
    assert_eq!(corpus.preference_pairs().len(), 5);
}

#[test]
fn the_default_corpus_is_every_embedded_record_in_file_order() {
    let corpus = CorpusSpec::default().select(|_| 0).unwrap();
    assert_eq!(corpus.len(), 72);
    // The same ids and texts, read here from the raw JSON lines.
    let expected: Vec<(String, String)> = raw_records(MINI)
        .iter()
        .map(|r| {
            (
                format!("lmgeo-mini:{}", r["id"].as_str().unwrap()),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let got: Vec<(String, String)> = corpus
        .texts()
        .iter()
        .map(|t| (t.id.clone(), t.text.clone()))
        .collect();
    assert_eq!(got, expected);
    // Stable across loads.
    assert_eq!(
        corpus.texts(),
        CorpusSpec::default().select(|_| 0).unwrap().texts()
    );
}
