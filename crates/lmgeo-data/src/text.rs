//! One text and where it came from.

use serde::{Deserialize, Serialize};

/// One text of a corpus, with enough provenance to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// Stable and unique within a corpus, e.g.
    /// `hh-rlhf:harmless-base-test:17:chosen`. Sampling ranks by a keyed hash
    /// of it, so the same id is picked by the same seed whatever the file order.
    pub id: String,
    pub text: String,
    /// Texts sharing a group are aligned alternatives of one item (the
    /// `chosen` and `rejected` dialogue of one hh-rlhf record) and are always
    /// sampled and filtered together. `None`: the text is its own group.
    pub group: Option<String>,
    /// The record field the text came from (`chosen`, `rejected`), if any.
    pub field: Option<String>,
    /// The speaker of a dialogue turn (`human`, `assistant`), if the text is one.
    pub role: Option<String>,
    /// 0-based index of the turn within its dialogue, if the text is one.
    pub turn: Option<usize>,
    /// 1-based line of the file where the text (or its record) starts.
    pub source_line: usize,
}

impl Text {
    /// The unit that sampling and filtering act on: the group, else the text.
    pub fn unit_key(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.id)
    }
}
