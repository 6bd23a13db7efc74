//! Tokenizers built from GGUF metadata against transformers'
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)`: the ids of 300
//! hh-rlhf dialogues and of hand-written edge cases (with and without
//! special tokens, and decoding), per model. Fixtures from
//! `scripts/golden/models_gguf.py`.

mod gguf_support;

use gguf_support::*;
use lmgeo_models::{GgufTokenizer, GgufTokenizerKind, TextTokenizer};

fn first_difference(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Compares every recorded text; on a mismatch prints the text and the first
/// differing position with the tokens around it.
fn check(model: &str, tok: &GgufTokenizer) {
    let file = tokenizer_ids(model);
    let records = hh_records();
    let mut hh = 0;
    let mut agree = 0;
    let mut failures = Vec::new();
    for e in &file.texts {
        let text: &str = match &e.text {
            Some(t) => t,
            None => {
                let t = hh_text(&records, &e.source);
                assert_eq!(
                    Some(format!("{:016x}", fnv1a64(t.as_bytes()))),
                    e.fnv,
                    "{}: the hh-rlhf file differs from the golden one",
                    e.source
                );
                hh += 1;
                t
            }
        };
        let ids = tok.encode(text, true).expect("encode");
        let mut ok = ids == e.ids;
        if !ok {
            let at = first_difference(&ids, &e.ids);
            let show = |v: &[u32]| -> Vec<String> {
                v.iter()
                    .skip(at.saturating_sub(2))
                    .take(5)
                    .map(|&i| format!("{i}:{:?}", tok.token_text(i).unwrap_or_default()))
                    .collect()
            };
            failures.push(format!(
                "{}: first difference at position {at} (ours {} ids, reference {})\n  ours: {:?}\n  want: {:?}\n  text: {:?}",
                e.source,
                ids.len(),
                e.ids.len(),
                show(&ids),
                show(&e.ids),
                text.chars().take(300).collect::<String>()
            ));
        }
        if let Some(want) = &e.ids_no_special {
            let got = tok.encode(text, false).expect("encode");
            if &got != want {
                ok = false;
                failures.push(format!(
                    "{} without special tokens: {got:?} != {want:?}",
                    e.source
                ));
            }
            if let Some(dec) = &e.decoded {
                let got = tok.decode(want).expect("decode");
                if &got != dec {
                    ok = false;
                    failures.push(format!("{} decode: {got:?} != {dec:?}", e.source));
                }
            }
        }
        if ok {
            agree += 1;
        }
    }
    eprintln!(
        "{model}: {agree}/{} texts agree ({hh} hh-rlhf dialogues, {} edge cases)",
        file.texts.len(),
        file.texts.len() - hh
    );
    assert!(hh >= 200, "fewer than 200 hh-rlhf texts recorded");

    // Every dialogue of the split, against digests of the reference ids.
    let mut digest_agree = 0;
    for (source, len, fnv) in &file.digests {
        let text = hh_text(&records, source);
        let ids = tok.encode(text, true).expect("encode");
        if ids.len() == *len && &ids_fnv(&ids) == fnv {
            digest_agree += 1;
        } else if failures.len() < 10 {
            failures.push(format!(
                "{source}: ids differ from the reference ({} ids, reference {len}; only a digest \
                 is recorded for this text, positions are shown for the 300 texts above)\n  text: {:?}",
                ids.len(),
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    eprintln!(
        "{model}: {digest_agree}/{} dialogues of the split agree (digest check)",
        file.digests.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gguf_tokenizer_smollm2_matches_transformers() {
    let tok = GgufTokenizer::from_path(&fetch("smollm2-135m")).expect("tokenizer");
    assert_eq!(tok.kind(), GgufTokenizerKind::ByteLevelBpe);
    assert_eq!(tok.vocab_size(), 49152);
    // No spurious prefix space on the first word (candle's TokenizerFromGguf
    // gives `ĠThe`).
    let ids = tok.encode("The cat", true).unwrap();
    assert_eq!(tok.token_text(ids[0]).as_deref(), Some("The"));
    check("smollm2", &tok);
}

#[test]
fn gguf_tokenizer_gemma3_matches_transformers() {
    let tok = GgufTokenizer::from_path(&fetch("gemma3-270m")).expect("tokenizer");
    assert_eq!(tok.kind(), GgufTokenizerKind::SentencePieceBpe);
    assert_eq!(tok.vocab_size(), 262144);
    let ids = tok.encode("The cat", true).unwrap();
    assert_eq!(ids[0], 2, "Gemma adds <bos>");
    assert_eq!(tok.token_text(ids[1]).as_deref(), Some("The"));
    check("gemma3", &tok);
}
