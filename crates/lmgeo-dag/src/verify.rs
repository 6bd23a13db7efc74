//! Checking a whole store: what `lmgeo verify` runs.
//!
//! A store is consistent when every committed action record parses, names
//! its own key, and every blob it references exists with the recorded size
//! and blake3 digest; when every object under `objects/` hashes to its name
//! (publishing never exposes a partial blob); and when the other atomically
//! written records (pre-images, names, stat records) parse. Leftovers a
//! crash is allowed to leave behind (staging under `tmp/`, lock files of dead
//! holders, run folders without a record) are counted, not reported as
//! problems: none of them is visible as committed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::key::Preimage;
use crate::store::{Action, NameRecord, Store, hash_file};

/// One inconsistency found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file at fault (an action record, an object, a record).
    pub path: PathBuf,
    pub kind: ProblemKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A file that cannot be read at all.
    Unreadable(String),
    /// A record that does not parse: a half-written entry visible as
    /// committed.
    Malformed(String),
    /// An action record stored under another key's name.
    WrongKey { recorded: String },
    /// A committed action references a blob that is not in `objects/`.
    MissingBlob { output: String, digest: String },
    /// A committed action references a blob whose content no longer matches.
    CorruptBlob {
        output: String,
        digest: String,
        expected_size: u64,
        actual_size: u64,
    },
    /// An object whose content does not hash to its name (no action
    /// references it; one that is referenced is reported as `CorruptBlob`).
    CorruptObject { actual_digest: String },
    /// A file where the layout has none (e.g. a stray file in `actions/`).
    Unexpected,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.kind {
            ProblemKind::Unreadable(e) => write!(f, "{path}: cannot be read: {e}"),
            ProblemKind::Malformed(e) => {
                write!(f, "{path}: record does not parse (half-written?): {e}")
            }
            ProblemKind::WrongKey { recorded } => {
                write!(f, "{path}: action record names another key ({recorded})")
            }
            ProblemKind::MissingBlob { output, digest } => {
                write!(f, "{path}: output `{output}`: blob {digest} is missing")
            }
            ProblemKind::CorruptBlob {
                output,
                digest,
                expected_size,
                actual_size,
            } => write!(
                f,
                "{path}: output `{output}`: blob {digest} does not match its digest \
                 ({actual_size} bytes, {expected_size} recorded)"
            ),
            ProblemKind::CorruptObject { actual_digest } => write!(
                f,
                "{path}: object content hashes to {actual_digest}, not to its name"
            ),
            ProblemKind::Unexpected => write!(f, "{path}: unexpected file in the store layout"),
        }
    }
}

/// What [`verify`] checked and found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Committed action records (chunks included).
    pub actions: usize,
    /// Objects hashed.
    pub objects: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Pre-image, name and stat records parsed.
    pub records: usize,
    /// Entries under `tmp/` (staging a crash may leave; never committed).
    pub temporary: usize,
    /// Lock files present (a crashed holder's are broken by the next waiter).
    pub locks: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Hashes every object once and checks every record; reads only.
pub fn verify(store: &Store) -> VerifyReport {
    let mut report = VerifyReport::default();
    let root = store.root();

    // Every object, hashed once: digest → (actual digest, size), or the
    // read error.
    let mut objects: BTreeMap<String, Result<(String, u64), String>> = BTreeMap::new();
    for (shard, path) in sharded_files(&root.join("objects"), &mut report) {
        let name = file_name(&path);
        if !name.starts_with(&shard) {
            report.problems.push(Problem {
                path,
                kind: ProblemKind::Unexpected,
            });
            continue;
        }
        let hashed = hash_file(&path).map_err(|e| e.to_string());
        if let Ok((_, size)) = &hashed {
            report.objects += 1;
            report.bytes += size;
        }
        objects.insert(name, hashed);
    }

    let mut referenced = BTreeMap::new();
    for (shard, path) in sharded_files(&root.join("actions"), &mut report) {
        let Some(key) = file_name(&path).strip_suffix(".json").map(str::to_string) else {
            report.problems.push(Problem {
                path,
                kind: ProblemKind::Unexpected,
            });
            continue;
        };
        let Some(action) = parse::<Action>(&path, &mut report) else {
            continue;
        };
        report.actions += 1;
        if action.key != key || !key.starts_with(&shard) {
            report.problems.push(Problem {
                path: path.clone(),
                kind: ProblemKind::WrongKey {
                    recorded: action.key.clone(),
                },
            });
        }
        for (output, blob) in &action.outputs {
            referenced.insert(blob.digest.clone(), ());
            let kind = match objects.get(&blob.digest) {
                None => Some(ProblemKind::MissingBlob {
                    output: output.clone(),
                    digest: blob.digest.clone(),
                }),
                Some(Err(e)) => Some(ProblemKind::Unreadable(format!(
                    "output `{output}`: blob {}: {e}",
                    blob.digest
                ))),
                Some(Ok((actual, size))) if *actual != blob.digest || *size != blob.size => {
                    Some(ProblemKind::CorruptBlob {
                        output: output.clone(),
                        digest: blob.digest.clone(),
                        expected_size: blob.size,
                        actual_size: *size,
                    })
                }
                Some(Ok(_)) => None,
            };
            if let Some(kind) = kind {
                report.problems.push(Problem {
                    path: path.clone(),
                    kind,
                });
            }
        }
    }

    for (name, hashed) in &objects {
        if referenced.contains_key(name) {
            continue;
        }
        let path = store.blob_path(name);
        match hashed {
            Ok((actual, _)) if actual != name => report.problems.push(Problem {
                path,
                kind: ProblemKind::CorruptObject {
                    actual_digest: actual.clone(),
                },
            }),
            Ok(_) => {}
            Err(e) => report.problems.push(Problem {
                path,
                kind: ProblemKind::Unreadable(e.clone()),
            }),
        }
    }

    for (_, path) in sharded_files(&root.join("keys"), &mut report) {
        if parse::<Preimage>(&path, &mut report).is_some() {
            report.records += 1;
        }
    }
    for (_, path) in sharded_files(&root.join("names"), &mut report) {
        if parse::<NameRecord>(&path, &mut report).is_some() {
            report.records += 1;
        }
    }
    for (_, path) in sharded_files(&root.join("stat"), &mut report) {
        if parse::<serde_json::Value>(&path, &mut report).is_some() {
            report.records += 1;
        }
    }

    report.temporary = fs::read_dir(root.join("tmp")).into_iter().flatten().count();
    report.locks = sharded_files_quiet(&root.join("locks")).len();
    report
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, report: &mut VerifyReport) -> Option<T> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            report.problems.push(Problem {
                path: path.to_path_buf(),
                kind: ProblemKind::Unreadable(e.to_string()),
            });
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            report.problems.push(Problem {
                path: path.to_path_buf(),
                kind: ProblemKind::Malformed(e.to_string()),
            });
            None
        }
    }
}

/// `(folder name, path)` of every file one level below the folders of `dir`
/// (the `ab/…` shards; `names/<experiment>/…` has the same shape). A file
/// directly in `dir`, or a folder where a file belongs, is a problem.
fn sharded_files(dir: &Path, report: &mut VerifyReport) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return files,
        Err(e) => {
            report.problems.push(Problem {
                path: dir.to_path_buf(),
                kind: ProblemKind::Unreadable(e.to_string()),
            });
            return files;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            report.problems.push(Problem {
                path,
                kind: ProblemKind::Unexpected,
            });
            continue;
        }
        let shard = file_name(&path);
        match fs::read_dir(&path) {
            Ok(inner) => {
                for file in inner.flatten() {
                    let file_path = file.path();
                    if file_path.is_dir() {
                        report.problems.push(Problem {
                            path: file_path,
                            kind: ProblemKind::Unexpected,
                        });
                    } else {
                        files.push((shard.clone(), file_path));
                    }
                }
            }
            Err(e) => report.problems.push(Problem {
                path,
                kind: ProblemKind::Unreadable(e.to_string()),
            }),
        }
    }
    files.sort();
    files
}

fn sharded_files_quiet(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|shard| fs::read_dir(shard.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobRef;

    fn action(key: &str, outputs: &[(&str, &BlobRef)]) -> Action {
        Action {
            key: key.to_string(),
            kind: "k".into(),
            node: "n".into(),
            outputs: outputs
                .iter()
                .map(|(n, b)| (n.to_string(), (*b).clone()))
                .collect(),
            created_unix_ms: 0,
            elapsed_ms: 0,
            peak_rss_kib: None,
            lmgeo_version: "test".into(),
        }
    }

    /// A store with two committed actions sharing one blob.
    fn populated() -> (tempfile::TempDir, Store, BlobRef, BlobRef) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let a = store.put_bytes(b"first output", "t").unwrap();
        let b = store.put_bytes(&vec![7u8; 100_000], "t").unwrap();
        store
            .commit_action(&action(&"ab".repeat(32), &[("x", &a), ("y", &b)]))
            .unwrap();
        store
            .commit_action(&action(&"cd".repeat(32), &[("z", &b)]))
            .unwrap();
        (dir, store, a, b)
    }

    #[test]
    fn a_consistent_store_verifies() {
        let (_dir, store, _, _) = populated();
        let report = verify(&store);
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(report.actions, 2);
        assert_eq!(report.objects, 2);
        assert_eq!(report.bytes, 12 + 100_000);
    }

    #[test]
    fn a_flipped_byte_is_reported_for_every_action_that_uses_the_blob() {
        let (_dir, store, _, b) = populated();
        let path = store.blob_path(&b.digest);
        let mut bytes = fs::read(&path).unwrap();
        bytes[50_000] ^= 1;
        fs::write(&path, bytes).unwrap();
        let report = verify(&store);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        for problem in &report.problems {
            assert!(
                matches!(&problem.kind, ProblemKind::CorruptBlob { digest, .. } if *digest == b.digest),
                "{problem}"
            );
        }
    }

    #[test]
    fn a_truncated_blob_is_reported_with_its_size() {
        let (_dir, store, a, _) = populated();
        fs::write(store.blob_path(&a.digest), b"first").unwrap();
        let report = verify(&store);
        assert_eq!(
            report.problems,
            vec![Problem {
                path: store
                    .root()
                    .join("actions/ab")
                    .join(format!("{}.json", "ab".repeat(32))),
                kind: ProblemKind::CorruptBlob {
                    output: "x".into(),
                    digest: a.digest.clone(),
                    expected_size: 12,
                    actual_size: 5,
                },
            }]
        );
    }

    #[test]
    fn a_deleted_blob_is_reported_as_missing() {
        let (_dir, store, a, _) = populated();
        fs::remove_file(store.blob_path(&a.digest)).unwrap();
        let report = verify(&store);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            matches!(&report.problems[0].kind, ProblemKind::MissingBlob { output, .. } if output == "x")
        );
        assert!(report.problems[0].to_string().contains("is missing"));
    }

    #[test]
    fn a_half_written_action_record_is_reported() {
        let (_dir, store, _, _) = populated();
        let path = store
            .root()
            .join("actions/cd")
            .join(format!("{}.json", "cd".repeat(32)));
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let report = verify(&store);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(matches!(report.problems[0].kind, ProblemKind::Malformed(_)));
        assert_eq!(report.problems[0].path, path);
    }

    #[test]
    fn an_action_under_another_key_and_a_corrupt_orphan_object_are_reported() {
        let (_dir, store, a, _) = populated();
        let wrong = store
            .root()
            .join("actions/ef")
            .join(format!("{}.json", "ef".repeat(32)));
        fs::create_dir_all(wrong.parent().unwrap()).unwrap();
        fs::write(
            &wrong,
            serde_json::to_vec(&action(&"ab".repeat(32), &[("x", &a)])).unwrap(),
        )
        .unwrap();
        let orphan = store.put_bytes(b"nobody uses me", "t").unwrap();
        fs::write(store.blob_path(&orphan.digest), b"nobody uses mE").unwrap();
        let report = verify(&store);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p.kind, ProblemKind::WrongKey { .. }) && p.path == wrong)
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p.kind, ProblemKind::CorruptObject { .. }))
        );
    }

    #[test]
    fn staging_leftovers_are_counted_not_reported() {
        let (_dir, store, _, _) = populated();
        let staging = store.temp_dir("stage-killed").unwrap();
        fs::write(staging.join("embeddings"), b"half an output").unwrap();
        let report = verify(&store);
        assert!(report.is_consistent(), "{:?}", report.problems);
        assert_eq!(report.temporary, 1);
    }
}
