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
/// the last ones for [`Keep::End`]. Sequences already short enough are
/// returned whole.
pub fn truncate_tokens<T>(ids: &[T], max_len: usize, keep: Keep) -> &[T] {
    if ids.len() <= max_len {
        return ids;
    }
    match keep {
        Keep::Start => &ids[..max_len],
        Keep::End => &ids[ids.len() - max_len..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_requested_end() {
        let ids = [10u32, 11, 12, 13, 14];
        assert_eq!(truncate_tokens(&ids, 3, Keep::Start), &[10, 11, 12]);
        assert_eq!(truncate_tokens(&ids, 3, Keep::End), &[12, 13, 14]);
        assert_eq!(truncate_tokens(&ids, 5, Keep::End), &ids);
        assert_eq!(truncate_tokens(&ids, 9, Keep::Start), &ids);
        assert!(truncate_tokens(&ids, 0, Keep::End).is_empty());
        assert!(truncate_tokens::<u32>(&[], 4, Keep::Start).is_empty());
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
