use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::Text;

/// A blake3 digest of a selected corpus: its ids and texts, in order.
///
/// Caches key on this rather than on the source file, so that two
/// experiments selecting the same texts share results, and changing the
/// seed, the filters or the file's contents invalidates them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorpusDigest([u8; 32]);

/// Prefixed to the hashed stream so that a future change of layout cannot
/// produce colliding digests with the old one.
pub(crate) const DIGEST_DOMAIN: &[u8] = b"lmgeo-data corpus digest v1\0";

impl CorpusDigest {
    /// Layout of the hashed bytes: the domain tag
    /// `b"lmgeo-data corpus digest v1\0"`, the number of texts as
    /// u64 little-endian, then for each text its id and its text, each as a
    /// u64 little-endian byte length followed by the UTF-8 bytes. The lengths
    /// keep ("ab", "c") and ("a", "bc") apart.
    pub fn of_texts(texts: &[Text]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DIGEST_DOMAIN);
        hasher.update(&(texts.len() as u64).to_le_bytes());
        for t in texts {
            for part in [t.id.as_bytes(), t.text.as_bytes()] {
                hasher.update(&(part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
        CorpusDigest(*hasher.finalize().as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The inverse of [`CorpusDigest::to_hex`] (either case accepted).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(CorpusDigest(out))
    }
}

impl fmt::Display for CorpusDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CorpusDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorpusDigest({self})")
    }
}

// As a hex string, so that digests read naturally in TOML, JSON and tables.
impl Serialize for CorpusDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for CorpusDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CorpusDigest::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected 64 hex digits for a corpus digest, got `{s}`"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: &str, body: &str) -> Text {
        Text {
            id: id.into(),
            text: body.into(),
            group: None,
            field: None,
            role: None,
            turn: None,
            source_line: 1,
        }
    }

    #[test]
    fn matches_the_documented_layout() {
        let texts = [text("c:0", "héllo"), text("c:1", "")];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"lmgeo-data corpus digest v1\0");
        bytes.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(b"c:0");
        // "héllo" is 6 bytes in UTF-8 (é takes two).
        bytes.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice("héllo".as_bytes());
        bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(b"c:1");
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(
            CorpusDigest::of_texts(&texts).as_bytes(),
            blake3::hash(&bytes).as_bytes()
        );
    }

    #[test]
    fn boundaries_order_and_content_all_matter() {
        let base = CorpusDigest::of_texts(&[text("a", "bc")]);
        assert_ne!(base, CorpusDigest::of_texts(&[text("ab", "c")]));
        assert_ne!(base, CorpusDigest::of_texts(&[text("a", "bd")]));
        let ab = CorpusDigest::of_texts(&[text("a", "x"), text("b", "y")]);
        let ba = CorpusDigest::of_texts(&[text("b", "y"), text("a", "x")]);
        assert_ne!(ab, ba);
        // Provenance other than id and text is not part of the digest.
        let mut moved = text("a", "bc");
        moved.source_line = 99;
        moved.group = Some("g".into());
        assert_eq!(base, CorpusDigest::of_texts(&[moved]));
        assert_ne!(
            CorpusDigest::of_texts(&[]),
            CorpusDigest::of_texts(&[text("", "")])
        );
    }

    #[test]
    fn hex_round_trip() {
        let d = CorpusDigest::of_texts(&[text("a", "b")]);
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            hex,
            blake3::Hash::from_bytes(*d.as_bytes()).to_hex().as_str()
        );
        assert_eq!(CorpusDigest::from_hex(&hex), Some(d));
        assert_eq!(CorpusDigest::from_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(CorpusDigest::from_hex(&hex[1..]), None);
        assert_eq!(CorpusDigest::from_hex(&format!("g{}", &hex[1..])), None);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<CorpusDigest>(&json).unwrap(), d);
    }
}
