//! Cache keys: a blake3 hash over everything that determines a node's
//! results, and the readable pre-image kept beside it so `explain` can say
//! what changed.

use serde::{Deserialize, Serialize};

/// Bumped when the store layout or the key recipe changes.
pub const STORE_SCHEMA: u32 = 1;

/// Everything a node's results depend on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preimage {
    pub schema: u32,
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    pub inputs: Vec<InputKey>,
    pub files: Vec<FileKey>,
    pub environment: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputKey {
    pub port: String,
    /// The upstream instance id: shown by `explain`, not hashed, so renaming
    /// a node does not invalidate its consumers.
    pub node: String,
    pub output: String,
    pub coords: serde_json::Value,
    /// Digest of the upstream's canonical parameters (a node can read them).
    pub params_digest: String,
    /// Digest of the upstream output's bytes.
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileKey {
    /// Shown by `explain`, not hashed: the content decides.
    pub path: String,
    pub digest: String,
}

impl Preimage {
    /// The cache key: 64 hex digits.
    pub fn key(&self) -> String {
        let hashed = serde_json::json!({
            "schema": self.schema,
            "kind": self.kind,
            "kind_version": self.kind_version,
            "params": self.params,
            "inputs": self.inputs.iter().map(|i| serde_json::json!({
                "port": i.port, "output": i.output, "coords": i.coords,
                "params_digest": i.params_digest, "digest": i.digest,
            })).collect::<Vec<_>>(),
            "files": self.files.iter().map(|f| &f.digest).collect::<Vec<_>>(),
            "environment": self.environment,
        });
        digest_json(&hashed)
    }
}

/// blake3 of the canonical encoding of a JSON value.
pub fn digest_json(value: &serde_json::Value) -> String {
    let mut bytes = Vec::new();
    canonical(value, &mut bytes);
    blake3::hash(&bytes).to_hex().to_string()
}

/// An unambiguous byte encoding: object keys sorted, every value tagged and
/// length-prefixed, floats by their bit pattern (so 0.1 and 0.1000000001
/// differ, and -0.0 and 0.0 differ, exactly as the computation would).
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(b'u');
                out.extend_from_slice(&u.to_le_bytes());
            } else {
                out.push(b'd');
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(b's');
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            out.push(b'a');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                canonical(item, out);
            }
        }
        Value::Object(map) => {
            out.push(b'o');
            out.extend_from_slice(&(map.len() as u64).to_le_bytes());
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                canonical(&Value::String(key.clone()), out);
                canonical(&map[key], out);
            }
        }
    }
}

/// Why `new` differs from `old`, one line per difference.
pub fn explain_difference(old: &Preimage, new: &Preimage) -> Vec<String> {
    let mut out = Vec::new();
    if old.schema != new.schema {
        out.push(format!(
            "store schema changed: {} → {}",
            old.schema, new.schema
        ));
    }
    if old.kind != new.kind {
        out.push(format!("kind changed: {} → {}", old.kind, new.kind));
    } else if old.kind_version != new.kind_version {
        out.push(format!(
            "kind `{}` version changed: {} → {}",
            new.kind, old.kind_version, new.kind_version
        ));
    }
    diff_json("", &old.params, &new.params, &mut out);
    let ports = |p: &Preimage| {
        let mut v: Vec<String> = p.inputs.iter().map(|i| i.port.clone()).collect();
        v.dedup();
        v
    };
    let mut all_ports = ports(old);
    for p in ports(new) {
        if !all_ports.contains(&p) {
            all_ports.push(p);
        }
    }
    for port in all_ports {
        let a: Vec<&InputKey> = old.inputs.iter().filter(|i| i.port == port).collect();
        let b: Vec<&InputKey> = new.inputs.iter().filter(|i| i.port == port).collect();
        if a.len() != b.len() {
            out.push(format!(
                "input `{port}` now has {} values (was {})",
                b.len(),
                a.len()
            ));
            continue;
        }
        for (x, y) in a.iter().zip(&b) {
            if x.digest != y.digest {
                out.push(format!(
                    "input `{port}` changed: output `{}` of `{}` has new content",
                    y.output, y.node
                ));
            } else if x.params_digest != y.params_digest
                || x.coords != y.coords
                || x.output != y.output
            {
                out.push(format!(
                    "input `{port}` now comes from `{}` with other parameters or coordinates",
                    y.node
                ));
            }
        }
    }
    if old.files.len() != new.files.len() {
        out.push(format!(
            "the node now reads {} external files (was {})",
            new.files.len(),
            old.files.len()
        ));
    } else {
        for (a, b) in old.files.iter().zip(&new.files) {
            if a.digest != b.digest {
                out.push(format!(
                    "file {} changed (content digest {} → {})",
                    b.path,
                    short(&a.digest),
                    short(&b.digest)
                ));
            }
        }
    }
    if old.environment != new.environment {
        for (k, v) in &new.environment {
            let before = old
                .environment
                .iter()
                .find(|(ok, _)| ok == k)
                .map(|(_, v)| v.as_str());
            if before != Some(v.as_str()) {
                out.push(format!(
                    "environment `{k}` changed: {} → {v}",
                    before.unwrap_or("(unset)")
                ));
            }
        }
        for (k, v) in &old.environment {
            if !new.environment.iter().any(|(nk, _)| nk == k) {
                out.push(format!("environment `{k}` removed (was {v})"));
            }
        }
    }
    out
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn diff_json(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(vb) => diff_json(&p, va, vb, out),
                    None => out.push(format!("parameter `{p}` removed (was {va})")),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(format!("parameter `{p}` added: {vb}"));
                }
            }
        }
        (a, b) if digest_json(a) != digest_json(b) => {
            out.push(format!("parameter `{path}` changed: {a} → {b}"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn preimage(params: serde_json::Value) -> Preimage {
        Preimage {
            schema: STORE_SCHEMA,
            kind: "k".into(),
            kind_version: 1,
            params,
            inputs: vec![],
            files: vec![],
            environment: vec![],
        }
    }

    #[test]
    fn key_ignores_object_key_order_but_not_float_bits() {
        let a = preimage(json!({"a": 1, "b": 0.1}));
        let b = preimage(serde_json::from_str(r#"{"b": 0.1, "a": 1}"#).unwrap());
        assert_eq!(a.key(), b.key());
        let c = preimage(json!({"a": 1, "b": 0.10000000000000002}));
        assert_ne!(a.key(), c.key());
        let d = preimage(json!({"a": 1.0, "b": 0.1}));
        assert_ne!(
            a.key(),
            d.key(),
            "integer 1 and float 1.0 are different parameters"
        );
    }

    #[test]
    fn informational_fields_do_not_change_the_key() {
        let mut a = preimage(json!({}));
        a.files.push(FileKey {
            path: "/a/model.gguf".into(),
            digest: "d1".into(),
        });
        let mut b = a.clone();
        b.files[0].path = "/elsewhere/model.gguf".into();
        assert_eq!(a.key(), b.key());
        b.files[0].digest = "d2".into();
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn differences_are_explained() {
        let a = preimage(json!({"eps": 0.1, "layers": [1, 2]}));
        let mut b = preimage(json!({"eps": 0.2, "layers": [1, 2], "extra": true}));
        b.kind_version = 2;
        let lines = explain_difference(&a, &b);
        assert!(
            lines.contains(&"kind `k` version changed: 1 → 2".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"parameter `eps` changed: 0.1 → 0.2".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"parameter `extra` added: true".to_string()),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 3);
    }
}
