//! Token-level truncation, as extraction does it.

use serde::{Deserialize, Serialize};

/// Which end of a token sequence survives truncation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    Start,
    /// The default: the information-gain and Lasso analyses study the last
    /// token against its context, and in hh-rlhf the final reply (where
    /// `chosen` and `rejected` differ) is at the end. Keeping the start would
    /// make long chosen/rejected pairs identical.
    #[default]
    End,
}

/// At most `max_len` tokens of `ids`: the first ones for [`Keep::Start`],
/// the last ones for [`Keep::End`]. With `Keep::End`, the first `pinned`
/// tokens (a BOS or CLS the model expects at position 0) stay in front of
/// the kept end. Sequences already short enough are returned whole.
pub fn truncate_tokens<T: Copy>(ids: &[T], max_len: usize, keep: Keep, pinned: usize) -> Vec<T> {
    if ids.len() <= max_len {
        return ids.to_vec();
    }
    match keep {
        Keep::Start => ids[..max_len].to_vec(),
        Keep::End => {
            let pinned = pinned.min(max_len);
            let mut kept = ids[..pinned].to_vec();
            kept.extend_from_slice(&ids[ids.len() - (max_len - pinned)..]);
            kept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_requested_end() {
        let ids = [10u32, 11, 12, 13, 14];
        assert_eq!(truncate_tokens(&ids, 3, Keep::Start, 0), [10, 11, 12]);
        assert_eq!(truncate_tokens(&ids, 3, Keep::End, 0), [12, 13, 14]);
        assert_eq!(truncate_tokens(&ids, 5, Keep::End, 0), ids);
        assert_eq!(truncate_tokens(&ids, 9, Keep::Start, 0), ids);
        assert!(truncate_tokens(&ids, 0, Keep::End, 0).is_empty());
        assert!(truncate_tokens::<u32>(&[], 4, Keep::Start, 0).is_empty());
    }

    #[test]
    fn a_pinned_start_token_stays_in_front_of_the_kept_end() {
        let ids = [1u32, 11, 12, 13, 14];
        assert_eq!(truncate_tokens(&ids, 3, Keep::End, 1), [1, 13, 14]);
        assert_eq!(truncate_tokens(&ids, 1, Keep::End, 1), [1]);
        // Pinning does not change keeping the start or a short sequence.
        assert_eq!(truncate_tokens(&ids, 3, Keep::Start, 1), [1, 11, 12]);
        assert_eq!(truncate_tokens(&ids, 5, Keep::End, 1), ids);
        // More pinned tokens than room: the first `max_len` of them.
        assert_eq!(truncate_tokens(&ids, 2, Keep::End, 3), [1, 11]);
        assert!(truncate_tokens(&ids, 0, Keep::End, 1).is_empty());
    }

    #[test]
    fn the_length_is_the_smaller_of_the_input_and_the_limit() {
        for len in 0..8usize {
            let ids: Vec<usize> = (0..len).collect();
            for max_len in 0..8 {
                for pinned in 0..3 {
                    for keep in [Keep::Start, Keep::End] {
                        let kept = truncate_tokens(&ids, max_len, keep, pinned);
                        assert_eq!(kept.len(), len.min(max_len));
                        // Strictly increasing: no token twice, order kept.
                        assert!(kept.windows(2).all(|w| w[0] < w[1]));
                    }
                }
            }
        }
    }

    #[test]
    fn keep_reads_from_config_words() {
        #[derive(Deserialize)]
        struct Cfg {
            keep: Keep,
        }
        let c: Cfg = serde_json::from_str(r#"{"keep": "start"}"#).unwrap();
        assert_eq!(c.keep, Keep::Start);
        let c: Cfg = serde_json::from_str(r#"{"keep": "end"}"#).unwrap();
        assert_eq!(c.keep, Keep::End);
        assert!(serde_json::from_str::<Cfg>(r#"{"keep": "middle"}"#).is_err());
        assert_eq!(Keep::default(), Keep::End);
    }
}
