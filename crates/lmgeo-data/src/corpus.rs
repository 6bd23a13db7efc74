//! A loaded corpus and its deterministic selection: length filters, seeded
//! sampling by a keyed hash of each unit (a text, or an aligned pair) so the
//! same seed picks the same units whatever the file order, and `n` growing
//! extends a sample instead of reshuffling it.

use std::collections::HashMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::CorpusError;
use crate::text::Text;

/// Length limits a text must meet to be selected. `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// In Unicode scalar values (`str::chars`), not bytes.
    pub min_chars: Option<usize>,
    pub max_chars: Option<usize>,
    /// Counted by the caller's tokenizer; see [`Corpus::select`].
    pub min_tokens: Option<usize>,
    pub max_tokens: Option<usize>,
}

impl Filter {
    pub fn needs_tokens(&self) -> bool {
        self.min_tokens.is_some() || self.max_tokens.is_some()
    }

    /// Whether `text` meets every limit. `count_tokens` is only called when a
    /// token limit is set, and only after the character limits passed, since
    /// tokenising is the expensive part.
    pub fn accepts(&self, text: &str, count_tokens: &dyn Fn(&str) -> usize) -> bool {
        if self.min_chars.is_some() || self.max_chars.is_some() {
            let chars = text.chars().count();
            if !within(chars, self.min_chars, self.max_chars) {
                return false;
            }
        }
        if self.needs_tokens() {
            let tokens = count_tokens(text);
            if !within(tokens, self.min_tokens, self.max_tokens) {
                return false;
            }
        }
        true
    }
}

fn within(x: usize, min: Option<usize>, max: Option<usize>) -> bool {
    min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m)
}

/// An ordered, named list of texts with unique ids.
///
/// Serialisable for writing a selection out; deliberately not
/// deserialisable, since that would bypass the unique-id check of
/// [`Corpus::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Corpus {
    name: String,
    texts: Vec<Text>,
}

/// One sampling unit: a group, or an ungrouped text.
struct Unit<'a> {
    key: &'a str,
    members: Vec<usize>,
}

impl Corpus {
    /// Fails on a repeated id, naming the two source lines.
    pub fn new(name: impl Into<String>, texts: Vec<Text>) -> Result<Self, CorpusError> {
        let name = name.into();
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
        for t in &texts {
            if let Some(&first_line) = first.get(t.id.as_str()) {
                return Err(CorpusError::DuplicateId {
                    origin: name.clone(),
                    line: t.source_line,
                    first_line,
                    id: t.id.clone(),
                });
            }
            first.insert(&t.id, t.source_line);
        }
        Ok(Corpus { name, texts })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn texts(&self) -> &[Text] {
        &self.texts
    }

    pub fn into_texts(self) -> Vec<Text> {
        self.texts
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Text> {
        self.texts.iter()
    }

    /// Sampling units (groups; an ungrouped text is its own) in order of
    /// first appearance, each with the indices of its texts in corpus order.
    pub fn groups(&self) -> Vec<(&str, Vec<usize>)> {
        self.units()
            .into_iter()
            .map(|u| (u.key, u.members))
            .collect()
    }

    /// `(chosen, rejected)` index pairs: every group made of exactly one
    /// `chosen` and one `rejected` text, in order of first appearance.
    pub fn preference_pairs(&self) -> Vec<(usize, usize)> {
        self.units()
            .into_iter()
            .filter_map(|u| {
                let [a, b] = u.members[..] else {
                    return None;
                };
                let field = |i: usize| self.texts[i].field.as_deref();
                match (field(a), field(b)) {
                    (Some("chosen"), Some("rejected")) => Some((a, b)),
                    (Some("rejected"), Some("chosen")) => Some((b, a)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The first `n` units (groups) in the seed's order, or all if there are
    /// fewer. Texts come out unit by unit in that order, so `sample(n, s)` is
    /// a prefix of `sample(n + k, s)`.
    pub fn sample(&self, n: usize, seed: u64) -> Corpus {
        self.select(Some(n), seed, &Filter::default(), |_| 0)
    }

    /// Keeps the units all of whose texts pass `filter`, in corpus order.
    pub fn filter(&self, filter: &Filter, count_tokens: impl Fn(&str) -> usize) -> Corpus {
        self.select(None, 0, filter, count_tokens)
    }

    /// Filtering, then sampling.
    ///
    /// A unit is kept only if all its texts pass, so pairs stay aligned.
    /// With `n = None` every passing unit is kept in corpus order and `seed`
    /// is unused. With `n = Some(k)`, units are ranked by a keyed blake3 hash
    /// of their key (group or id) whose key comes from ChaCha20 seeded with
    /// `seed`; the first `k` passing units in that order are kept. Hence:
    /// the choice does not depend on file order or platform, a larger `k`
    /// extends a smaller one, and `count_tokens` runs only on the units
    /// examined until `k` are found, not on the whole corpus.
    pub fn select(
        &self,
        n: Option<usize>,
        seed: u64,
        filter: &Filter,
        count_tokens: impl Fn(&str) -> usize,
    ) -> Corpus {
        let passes = |u: &Unit<'_>| {
            u.members
                .iter()
                .all(|&i| filter.accepts(&self.texts[i].text, &count_tokens))
        };
        let mut units = self.units();
        let texts = match n {
            None => {
                let mut keep: Vec<usize> = units
                    .iter()
                    .filter(|u| passes(u))
                    .flat_map(|u| u.members.iter().copied())
                    .collect();
                keep.sort_unstable();
                keep.into_iter().map(|i| self.texts[i].clone()).collect()
            }
            Some(n) => {
                let key = ranking_key(seed);
                let mut ranked: Vec<([u8; 32], Unit<'_>)> = units
                    .drain(..)
                    .map(|u| (*blake3::keyed_hash(&key, u.key.as_bytes()).as_bytes(), u))
                    .collect();
                // Unit keys are unique, so ties in the hash (never seen in
                // practice) still resolve the same way everywhere.
                ranked.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(b.1.key)));
                ranked
                    .iter()
                    .map(|(_, u)| u)
                    .filter(|u| passes(u))
                    .take(n)
                    .flat_map(|u| u.members.iter().map(|&i| self.texts[i].clone()))
                    .collect()
            }
        };
        Corpus {
            name: self.name.clone(),
            texts,
        }
    }

    fn units(&self) -> Vec<Unit<'_>> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut units: Vec<Unit<'_>> = Vec::new();
        for (i, t) in self.texts.iter().enumerate() {
            let key = t.unit_key();
            match index.get(key) {
                Some(&u) => units[u].members.push(i),
                None => {
                    index.insert(key, units.len());
                    units.push(Unit {
                        key,
                        members: vec![i],
                    });
                }
            }
        }
        units
    }
}

impl<'a> IntoIterator for &'a Corpus {
    type Item = &'a Text;
    type IntoIter = std::slice::Iter<'a, Text>;
    fn into_iter(self) -> Self::IntoIter {
        self.texts.iter()
    }
}

/// The blake3 key that ranks units for `seed`: the first 32 bytes of the
/// ChaCha20 stream (20 rounds, stream 0, counter 0) whose 256-bit key is
/// `seed` as 8 little-endian bytes followed by 24 zero bytes.
///
/// Spelled out rather than `seed_from_u64` so that the mapping is fixed by
/// this comment, not by a library's choice of seed expansion.
pub fn ranking_key(seed: u64) -> [u8; 32] {
    let mut chacha_key = [0u8; 32];
    chacha_key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(chacha_key);
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, body: &str, group: Option<&str>, field: Option<&str>) -> Text {
        Text {
            id: id.into(),
            text: body.into(),
            group: group.map(Into::into),
            field: field.map(Into::into),
            role: None,
            turn: None,
            source_line: 1,
        }
    }

    fn ids(c: &Corpus) -> Vec<&str> {
        c.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let mut a = t("x", "1", None, None);
        a.source_line = 4;
        let mut b = t("x", "2", None, None);
        b.source_line = 9;
        let err = Corpus::new("c", vec![a, b]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "c:9: duplicate text id `x` (first seen on line 4)"
        );
    }

    #[test]
    fn filter_limits_are_inclusive_and_count_chars_not_bytes() {
        let f = Filter {
            min_chars: Some(3),
            max_chars: Some(4),
            ..Filter::default()
        };
        let no_tokens = |_: &str| -> usize { unreachable!("no token limit set") };
        assert!(!f.accepts("ab", &no_tokens));
        assert!(f.accepts("abc", &no_tokens));
        // Four characters, eight bytes.
        assert!(f.accepts("éééé", &no_tokens));
        assert!(!f.accepts("abcde", &no_tokens));

        let words = |s: &str| s.split_whitespace().count();
        let f = Filter {
            min_tokens: Some(2),
            max_tokens: Some(3),
            ..Filter::default()
        };
        assert!(!f.accepts("one", &words));
        assert!(f.accepts("one two", &words));
        assert!(f.accepts("one two three", &words));
        assert!(!f.accepts("one two three four", &words));
    }

    #[test]
    fn groups_are_filtered_as_a_whole() {
        let c = Corpus::new(
            "c",
            vec![
                t("a:c", "long enough", Some("a"), Some("chosen")),
                t("a:r", "no", Some("a"), Some("rejected")),
                t("b:c", "long enough", Some("b"), Some("chosen")),
                t("b:r", "long enough too", Some("b"), Some("rejected")),
                t("solo", "x", None, None),
            ],
        )
        .unwrap();
        let f = Filter {
            min_chars: Some(3),
            ..Filter::default()
        };
        let kept = c.filter(&f, |_| 0);
        assert_eq!(ids(&kept), vec!["b:c", "b:r"]);
        assert_eq!(kept.preference_pairs(), vec![(0, 1)]);
    }

    #[test]
    fn preference_pairs_need_one_of_each_side() {
        let c = Corpus::new(
            "c",
            vec![
                t("1r", "", Some("1"), Some("rejected")),
                t("1c", "", Some("1"), Some("chosen")),
                t("2c", "", Some("2"), Some("chosen")),
                t("3c", "", Some("3"), Some("chosen")),
                t("3c2", "", Some("3"), Some("chosen")),
            ],
        )
        .unwrap();
        assert_eq!(c.preference_pairs(), vec![(1, 0)]);
        let groups: Vec<(&str, Vec<usize>)> = c.groups();
        assert_eq!(
            groups,
            vec![("1", vec![0, 1]), ("2", vec![2]), ("3", vec![3, 4])]
        );
    }

    #[test]
    fn sampling_takes_whole_groups_in_hash_order() {
        let texts: Vec<Text> = (0..30)
            .flat_map(|g| {
                let group = format!("g{g}");
                [
                    t(&format!("{group}:c"), "x", Some(&group), Some("chosen")),
                    t(&format!("{group}:r"), "y", Some(&group), Some("rejected")),
                ]
            })
            .collect();
        let c = Corpus::new("c", texts).unwrap();
        let s = c.sample(7, 3);
        assert_eq!(s.len(), 14);
        assert_eq!(s.preference_pairs().len(), 7);

        // The order is that of the keyed hash of the group names.
        let key = ranking_key(3);
        let mut expected: Vec<(blake3::Hash, String)> = (0..30)
            .map(|g| {
                let name = format!("g{g}");
                (blake3::keyed_hash(&key, name.as_bytes()), name)
            })
            .collect();
        expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let picked: Vec<&str> = s.iter().step_by(2).map(|t| t.unit_key()).collect();
        let want: Vec<&str> = expected[..7].iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(picked, want);
    }

    #[test]
    fn asking_for_more_than_exists_gives_everything() {
        let c = Corpus::new(
            "c",
            (0..5).map(|i| t(&i.to_string(), "x", None, None)).collect(),
        )
        .unwrap();
        let s = c.sample(50, 0);
        let mut got = ids(&s);
        got.sort_unstable();
        assert_eq!(got, vec!["0", "1", "2", "3", "4"]);
        assert!(c.sample(0, 0).is_empty());
    }

    #[test]
    fn token_counter_runs_only_until_enough_units_are_found() {
        use std::cell::Cell;
        let c = Corpus::new(
            "c",
            (0..1000)
                .map(|i| t(&i.to_string(), "a b c", None, None))
                .collect(),
        )
        .unwrap();
        let calls = Cell::new(0usize);
        let f = Filter {
            min_tokens: Some(1),
            ..Filter::default()
        };
        let s = c.select(Some(10), 1, &f, |s| {
            calls.set(calls.get() + 1);
            s.split_whitespace().count()
        });
        assert_eq!(s.len(), 10);
        assert_eq!(calls.get(), 10);
    }
}
