//! The content-addressed store.
//!
//! ```text
//! cache/
//!   objects/ab/cdef…        immutable blobs named by their blake3 digest
//!   actions/ab/<key>.json   what a node produced (the commit point)
//!   keys/ab/<key>.json      the key's pre-image, for `explain`
//!   names/<experiment>/…    the last key of each node instance, for `explain`
//!   stat/ab/…               file digests by (path, size, mtime, inode)
//!   runs/<run-id>/          one run's folder; `record.json` (`RunRecord`) when it ends
//!   locks/ab/<key>.lock     O_EXCL lock files naming their holder (see `lock`)
//!   tmp/                    staging; names carry host and pid
//! ```
//!
//! Invariants: a blob is complete and durable before it is linked into
//! `objects/` (where an existing object is never replaced unless corrupt); an
//! action record is written last, after its blobs are durable, so a crash at
//! any point leaves either a full entry or none; a hit whose blob no longer
//! verifies is discarded and recomputed, never used.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::key::Preimage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the store {path} is not a folder: give --store (or LMGEO_STORE) a folder, or a path that does not exist yet"
    )]
    NotAFolder { path: PathBuf },
    #[error("corrupt store record {path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("{path} is not an lmgeo store (it has no {missing}/ folder)")]
    NotAStore {
        path: PathBuf,
        missing: &'static str,
    },
    #[error("blob {digest} is corrupt or missing (expected {expected_size} bytes)")]
    CorruptBlob { digest: String, expected_size: u64 },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A blob reference inside an action record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// What one node execution produced: the commit point of a cache entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub key: String,
    pub kind: String,
    /// The instance id that produced it (informational).
    pub node: String,
    pub outputs: BTreeMap<String, BlobRef>,
    pub created_unix_ms: u128,
    pub elapsed_ms: u64,
    /// The process's peak resident memory when the node finished, in KiB
    /// (process-wide: nodes running in parallel share it).
    pub peak_rss_kib: Option<u64>,
    pub lmgeo_version: String,
}

/// The last key an experiment's node instance had, for `explain`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NameRecord {
    pub key: String,
    pub preimage: Preimage,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StatRecord {
    path: String,
    size: u64,
    mtime_ns: i128,
    inode: u64,
    digest: String,
}

pub use crate::lock::KeyLock;
use crate::lock::LockSettings;

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    locks: LockSettings,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(StoreError::NotAFolder { path: root });
        }
        for dir in [
            "objects", "actions", "keys", "names", "stat", "runs", "tmp", "locks",
        ] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_at(&path))?;
        }
        Ok(Self {
            root,
            locks: LockSettings::from_env(),
        })
    }

    /// Opens a store that must already exist, creating nothing (for
    /// read-only commands such as `verify`).
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in ["objects", "actions"] {
            if !root.join(dir).is_dir() {
                return Err(StoreError::NotAStore {
                    path: root,
                    missing: dir,
                });
            }
        }
        Ok(Self {
            root,
            locks: LockSettings::from_env(),
        })
    }

    /// The same store with other lock timings (tests, and executors that
    /// know their filesystem).
    pub fn with_lock_settings(mut self, locks: LockSettings) -> Self {
        self.locks = locks;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn sharded(&self, dir: &str, name: &str, suffix: &str) -> PathBuf {
        let shard = &name[..name.len().min(2)];
        self.root
            .join(dir)
            .join(shard)
            .join(format!("{name}{suffix}"))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.sharded("objects", digest, "")
    }

    fn action_path(&self, key: &str) -> PathBuf {
        self.sharded("actions", key, ".json")
    }

    fn preimage_path(&self, key: &str) -> PathBuf {
        self.sharded("keys", key, ".json")
    }

    /// A fresh, empty folder under `tmp/` for a node's staging or scratch.
    pub fn temp_dir(&self, label: &str) -> Result<PathBuf, StoreError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let path = self
            .root
            .join("tmp")
            .join(format!("{safe}-{}-{nanos}-{n}", process_tag()));
        fs::create_dir_all(&path).map_err(io_at(&path))?;
        Ok(path)
    }

    /// Moves a finished file into the store; returns its reference.
    ///
    /// Publishing is `link()`, not `rename()`: on a shared filesystem two
    /// tasks may publish the same digest at once, and `link` fails with
    /// EEXIST instead of replacing a complete object under a reader. EEXIST
    /// means the bytes are already there; they are checked, and only a
    /// corrupt copy is replaced.
    pub fn put_file(&self, file: &Path) -> Result<BlobRef, StoreError> {
        {
            // Durable before it becomes visible under its digest.
            let f = File::open(file).map_err(io_at(file))?;
            f.sync_all().map_err(io_at(file))?;
        }
        let (digest, size) = hash_file(file)?;
        let target = self.blob_path(&digest);
        let parent = target.parent().expect("sharded path has a parent");
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        match fs::hard_link(file, &target) {
            Ok(()) => sync_dir(parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let existing_ok = fs::metadata(&target).is_ok_and(|m| m.len() == size)
                    && hash_file(&target).is_ok_and(|(d, _)| d == digest);
                if existing_ok {
                    // Published again just now: `gc --force` spares objects
                    // younger than the runs in progress.
                    if let Ok(f) = File::options().append(true).open(&target) {
                        let _ = f.set_modified(SystemTime::now());
                    }
                } else {
                    fs::rename(file, &target).map_err(io_at(&target))?;
                    sync_dir(parent)?;
                    return Ok(BlobRef { digest, size });
                }
            }
            // A filesystem without hard links: a rename is atomic too.
            Err(_) => {
                fs::rename(file, &target).map_err(io_at(&target))?;
                sync_dir(parent)?;
                return Ok(BlobRef { digest, size });
            }
        }
        fs::remove_file(file).map_err(io_at(file))?;
        Ok(BlobRef { digest, size })
    }

    /// Stores bytes as a blob.
    pub fn put_bytes(&self, bytes: &[u8], label: &str) -> Result<BlobRef, StoreError> {
        let dir = self.temp_dir(label)?;
        let path = dir.join("blob");
        write_file(&path, bytes)?;
        let blob = self.put_file(&path);
        let _ = fs::remove_dir_all(&dir);
        blob
    }

    /// The blob's path after checking its content against its digest.
    pub fn verified_blob(&self, blob: &BlobRef) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(&blob.digest);
        let corrupt = || StoreError::CorruptBlob {
            digest: blob.digest.clone(),
            expected_size: blob.size,
        };
        let meta = fs::metadata(&path).map_err(|_| corrupt())?;
        if meta.len() != blob.size {
            return Err(corrupt());
        }
        let (digest, _) = hash_file(&path).map_err(|_| corrupt())?;
        if digest != blob.digest {
            return Err(corrupt());
        }
        Ok(path)
    }

    /// Reads a blob's bytes after verifying them.
    pub fn read_verified(&self, blob: &BlobRef) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(&blob.digest);
        let bytes = fs::read(&path).map_err(|_| StoreError::CorruptBlob {
            digest: blob.digest.clone(),
            expected_size: blob.size,
        })?;
        if bytes.len() as u64 != blob.size || blake3::hash(&bytes).to_hex().as_str() != blob.digest
        {
            return Err(StoreError::CorruptBlob {
                digest: blob.digest.clone(),
                expected_size: blob.size,
            });
        }
        Ok(bytes)
    }

    /// The action under `key` if it exists and all its blobs are present
    /// with the recorded sizes (contents are verified when read).
    pub fn action(&self, key: &str) -> Option<Action> {
        let path = self.action_path(key);
        let bytes = fs::read(&path).ok()?;
        let action: Action = serde_json::from_slice(&bytes).ok()?;
        if action.key != key {
            return None;
        }
        let complete = action
            .outputs
            .values()
            .all(|b| fs::metadata(self.blob_path(&b.digest)).is_ok_and(|m| m.len() == b.size));
        complete.then_some(action)
    }

    /// Commits an action record: the last write of a cache entry.
    pub fn commit_action(&self, action: &Action) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(action).expect("actions serialize");
        atomic_write(self, &self.action_path(&action.key), &bytes)
    }

    /// Forgets an entry whose blobs turned out corrupt.
    pub fn invalidate(&self, key: &str) {
        let _ = fs::remove_file(self.action_path(key));
    }

    pub fn write_preimage(&self, key: &str, preimage: &Preimage) -> Result<(), StoreError> {
        let path = self.preimage_path(key);
        if path.exists() {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(preimage).expect("pre-images serialize");
        atomic_write(self, &path, &bytes)
    }

    pub fn preimage(&self, key: &str) -> Option<Preimage> {
        let bytes = fs::read(self.preimage_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn name_path(&self, experiment: &str, instance: &str) -> PathBuf {
        let file = format!("{}.json", &blake3::hash(instance.as_bytes()).to_hex()[..32]);
        self.root.join("names").join(experiment).join(file)
    }

    /// Remembers the key an instance had in this run.
    pub fn record_name(
        &self,
        experiment: &str,
        instance: &str,
        record: &NameRecord,
    ) -> Result<(), StoreError> {
        // A rerun with nothing changed rewrites nothing (and fsyncs nothing).
        if self
            .name(experiment, instance)
            .is_some_and(|old| old.key == record.key)
        {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(record).expect("names serialize");
        atomic_write(self, &self.name_path(experiment, instance), &bytes)
    }

    pub fn name(&self, experiment: &str, instance: &str) -> Option<NameRecord> {
        let bytes = fs::read(self.name_path(experiment, instance)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Takes the exclusive lock of a key, waiting for another process (or
    /// thread, or host) that holds it; a dead holder's lock is broken.
    pub fn lock(&self, key: &str) -> Result<KeyLock, StoreError> {
        let path = self.sharded("locks", key, ".lock");
        let parent = path.parent().expect("sharded path has a parent");
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        KeyLock::acquire(&path, self.locks).map_err(io_at(&path))
    }

    /// Who holds a key's lock right now, if anyone.
    pub fn lock_holder(&self, key: &str) -> Option<crate::lock::Holder> {
        crate::lock::holder(&self.sharded("locks", key, ".lock"))
    }

    /// blake3 of a file's content (or of a folder's files, by relative path),
    /// reusing the last digest while size, mtime and inode are unchanged.
    pub fn file_digest(&self, path: &Path) -> Result<String, StoreError> {
        let meta = fs::metadata(path).map_err(io_at(path))?;
        if meta.is_dir() {
            let mut entries = Vec::new();
            collect_files(path, path, &mut entries)?;
            entries.sort();
            let mut hasher = blake3::Hasher::new();
            for relative in entries {
                let digest = self.file_digest(&path.join(&relative))?;
                hasher.update(relative.as_bytes());
                hasher.update(&[0]);
                hasher.update(digest.as_bytes());
                hasher.update(&[0]);
            }
            return Ok(hasher.finalize().to_hex().to_string());
        }
        let absolute = fs::canonicalize(path).map_err(io_at(path))?;
        let record_path = self.sharded(
            "stat",
            &blake3::hash(absolute.to_string_lossy().as_bytes()).to_hex(),
            ".json",
        );
        let current = stat_of(&absolute, &meta);
        if let Ok(bytes) = fs::read(&record_path)
            && let Ok(record) = serde_json::from_slice::<StatRecord>(&bytes)
            && (StatRecord {
                digest: record.digest.clone(),
                ..current.clone()
            }) == record
        {
            return Ok(record.digest);
        }
        let (digest, _) = hash_file(&absolute)?;
        let record = StatRecord {
            digest: digest.clone(),
            ..current
        };
        let bytes = serde_json::to_vec(&record).expect("stat records serialize");
        // The stat record only saves rehashing next time: a store that cannot
        // take it (read-only, full) still gets the digest.
        if let Err(e) = atomic_write(self, &record_path, &bytes) {
            tracing::debug!("stat record of {} not kept: {e}", absolute.display());
        }
        Ok(digest)
    }

    /// Whether this process can write to the store: a file is created in and
    /// removed from its staging folder. The error says why not (a read-only
    /// mount, no permission).
    pub fn check_writable(&self) -> io::Result<()> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let probe = self
            .root
            .join("tmp")
            .join(format!(".writable-{}-{n}", std::process::id()));
        fs::File::create(&probe)?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    /// A new folder for one run's records.
    pub fn new_run_dir(&self, experiment: &str) -> Result<PathBuf, StoreError> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = self
            .root
            .join("runs")
            .join(format!("{millis}-{experiment}-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(io_at(&path))?;
        Ok(path)
    }

    /// Every run folder, oldest first.
    pub fn runs(&self) -> Vec<PathBuf> {
        let mut runs: Vec<PathBuf> = fs::read_dir(self.root.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        runs.sort();
        runs
    }

    /// Keys of every committed action.
    pub fn all_action_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for shard in fs::read_dir(self.root.join("actions"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for entry in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                if let Some(key) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                {
                    keys.push(key.to_string());
                }
            }
        }
        keys.sort();
        keys
    }

    /// Reads an action record without checking its blobs (for `gc`).
    pub fn raw_action(&self, key: &str) -> Option<Action> {
        let bytes = fs::read(self.action_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes everything not reachable from `keep`: action records, their
    /// pre-images, blobs no kept action references, stale temporary files
    /// and old names. Returns what was (or, dry, would be) deleted.
    pub fn collect_garbage(
        &self,
        keep: &BTreeSet<String>,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        self.collect_garbage_sparing(keep, None, dry_run)
    }

    /// As [`Store::collect_garbage`], also sparing every action record and
    /// object modified at or after `since` (what runs in progress, begun
    /// then, have committed or published).
    pub fn collect_garbage_sparing(
        &self,
        keep: &BTreeSet<String>,
        since: Option<SystemTime>,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        let recent = |path: &Path| {
            since.is_some_and(|since| {
                fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since)
            })
        };
        let mut report = GcReport::default();
        let mut live_blobs = BTreeSet::new();
        for key in self.all_action_keys() {
            let path = self.action_path(&key);
            if keep.contains(&key) || recent(&path) {
                if let Some(action) = self.raw_action(&key) {
                    live_blobs.extend(action.outputs.values().map(|b| b.digest.clone()));
                }
                continue;
            }
            report.add(&path, "action");
            let preimage = self.preimage_path(&key);
            if preimage.exists() {
                report.add(&preimage, "pre-image");
            }
            if !dry_run {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(&preimage);
            }
        }
        for shard in fs::read_dir(self.root.join("objects"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for entry in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !live_blobs.contains(&name) && !recent(&entry.path()) {
                    report.add(&entry.path(), "blob");
                    if !dry_run {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        // Temporary folders of runs that died; a live run's are younger.
        let day_ago = SystemTime::now() - std::time::Duration::from_secs(24 * 3600);
        for entry in fs::read_dir(self.root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < day_ago);
            if old {
                report.add(&entry.path(), "temporary");
                if !dry_run {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(report)
    }
}

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub entries: Vec<(PathBuf, &'static str, u64)>,
}

impl GcReport {
    fn add(&mut self, path: &Path, what: &'static str) {
        let size = dir_size(path);
        self.entries.push((path.to_path_buf(), what, size));
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|(_, _, s)| s).sum()
    }
}

fn dir_size(path: &Path) -> u64 {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| dir_size(&e.path()))
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        // Hidden files (editor swap files, .git) do not describe a model.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let relative = path.strip_prefix(root).expect("under root");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// A resumable node's pieces: small entries of their own, keyed by the
/// node's key and the piece's name, each committed as soon as it is
/// written, so a killed run resumes from the last committed piece.
impl crate::node::ChunkStore for Store {
    fn chunk(
        &self,
        node_key: &str,
        chunk: &str,
        produce: &mut dyn FnMut(&Path) -> Result<(), crate::node::NodeError>,
    ) -> Result<PathBuf, crate::node::NodeError> {
        const OUTPUT: &str = "chunk";
        let key = blake3::hash(format!("chunk\0{node_key}\0{chunk}").as_bytes())
            .to_hex()
            .to_string();
        let _lock = self.lock(&key)?;
        if let Some(action) = self.action(&key)
            && let Some(blob) = action.outputs.get(OUTPUT)
        {
            match self.verified_blob(blob) {
                Ok(path) => return Ok(path),
                Err(_) => self.invalidate(&key),
            }
        }
        let dir = self.temp_dir("chunk")?;
        let path = dir.join(OUTPUT);
        let result = produce(&path).and_then(|()| {
            if !path.is_file() {
                return Err(crate::node::NodeError::msg(format!(
                    "chunk `{chunk}` was not written"
                )));
            }
            let blob = self.put_file(&path)?;
            self.commit_action(&Action {
                key: key.clone(),
                kind: "chunk".into(),
                node: chunk.to_string(),
                outputs: [(OUTPUT.to_string(), blob.clone())].into(),
                created_unix_ms: crate::record::now_unix_ms(),
                elapsed_ms: 0,
                peak_rss_kib: None,
                lmgeo_version: env!("CARGO_PKG_VERSION").to_string(),
            })?;
            Ok(self.blob_path(&blob.digest))
        });
        let _ = fs::remove_dir_all(&dir);
        result
    }
}

#[cfg(unix)]
fn stat_of(path: &Path, meta: &fs::Metadata) -> StatRecord {
    use std::os::unix::fs::MetadataExt;
    StatRecord {
        path: path.to_string_lossy().to_string(),
        size: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        inode: meta.ino(),
        digest: String::new(),
    }
}

#[cfg(not(unix))]
fn stat_of(path: &Path, meta: &fs::Metadata) -> StatRecord {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    StatRecord {
        path: path.to_string_lossy().to_string(),
        size: meta.len(),
        mtime_ns,
        inode: 0,
        digest: String::new(),
    }
}

/// blake3 digest and size of a file.
///
/// Read in fixed-size pieces, each hashed on all cores, rather than
/// memory-mapped: a mapped multi-gigabyte output (every layer of a model
/// over a corpus) would count its resident pages towards the run's memory,
/// while buffered reads keep it at one buffer.
pub fn hash_file(path: &Path) -> Result<(String, u64), StoreError> {
    const PIECE: usize = 8 * 1024 * 1024;
    let mut file = File::open(path).map_err(io_at(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; PIECE];
    let mut size = 0u64;
    loop {
        // Fill the whole buffer (short reads happen) so that every piece
        // but the last is large enough to be worth spreading over threads.
        let mut filled = 0;
        while filled < PIECE {
            match file.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_at(path)(e)),
            }
        }
        if filled == 0 {
            break;
        }
        size += filled as u64;
        if filled >= 256 * 1024 {
            hasher.update_rayon(&buffer[..filled]);
        } else {
            hasher.update(&buffer[..filled]);
        }
        if filled < PIECE {
            break;
        }
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// Host and process in temporary names: on a shared store, two hosts' pids
/// may coincide.
fn process_tag() -> String {
    let (host, pid, _) = crate::lock::this_process();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("{host}-{pid}")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = File::create(path).map_err(io_at(path))?;
    file.write_all(bytes).map_err(io_at(path))?;
    file.sync_all().map_err(io_at(path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // Makes a rename durable; not every platform allows opening a folder.
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
    Ok(())
}

/// Write to a temporary file, fsync, rename: readers see the old or the new
/// content, never a mix.
/// Replaces `target` with `bytes` so that a reader (or a crash) sees the
/// old file or the new one, never part of one: written and synced beside
/// it, renamed over it, and the rename synced. For files outside the
/// sharded folders (a run's record), where `tmp/` is not needed.
pub(crate) fn replace_file(target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let parent = target.parent().expect("store paths have parents");
    let name = target.file_name().expect("a file").to_string_lossy();
    let temp = parent.join(format!(".{name}.{}", process_tag()));
    write_file(&temp, bytes)?;
    fs::rename(&temp, target).map_err(io_at(target))?;
    sync_dir(parent)
}

fn atomic_write(store: &Store, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let parent = target.parent().expect("store paths have parents");
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = store
        .root
        .join("tmp")
        .join(format!("write-{}-{n}", process_tag()));
    write_file(&temp, bytes)?;
    fs::rename(&temp, target).map_err(io_at(target))?;
    sync_dir(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_in_the_module_doc_is_the_layout_on_disk() {
        // The folder names of the ```text block at the top of this file.
        let documented: BTreeSet<String> = include_str!("store.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! cache/"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .filter_map(|l| l.trim_start_matches("//!").split_whitespace().next())
            .map(|path| path.split('/').next().unwrap_or(path).to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("cache")).unwrap();
        let created: BTreeSet<String> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(documented, created);
    }

    /// Piecewise hashing must give blake3's one-shot digest, at sizes
    /// around and across the piece boundary.
    #[test]
    fn file_digest_equals_one_shot_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let piece = 8 * 1024 * 1024;
        for len in [
            0,
            1,
            300_000,
            piece - 1,
            piece,
            piece + 1,
            2 * piece + 12_345,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            let (digest, size) = hash_file(&path).unwrap();
            assert_eq!(size, len as u64);
            assert_eq!(digest, blake3::hash(&bytes).to_hex().to_string(), "{len}");
        }
    }

    #[test]
    fn blobs_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_bytes(b"hello", "t").unwrap();
        assert_eq!(blob.digest, blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(store.read_verified(&blob).unwrap(), b"hello");
        let path = store.blob_path(&blob.digest);
        fs::write(&path, b"hellp").unwrap();
        assert!(matches!(
            store.read_verified(&blob),
            Err(StoreError::CorruptBlob { .. })
        ));
        assert!(matches!(
            store.verified_blob(&blob),
            Err(StoreError::CorruptBlob { .. })
        ));
    }

    /// An action whose one output `out` is `blob`.
    fn one_output_action(key: &str, blob: &BlobRef) -> Action {
        Action {
            key: key.to_string(),
            kind: "k".into(),
            node: "n".into(),
            outputs: [("out".to_string(), blob.clone())].into(),
            created_unix_ms: 0,
            elapsed_ms: 0,
            peak_rss_kib: None,
            lmgeo_version: "test".into(),
        }
    }

    #[test]
    fn an_action_with_a_missing_blob_is_not_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_bytes(b"data", "t").unwrap();
        let action = one_output_action(&"ab".repeat(32), &blob);
        store.commit_action(&action).unwrap();
        assert_eq!(store.action(&action.key), Some(action.clone()));
        fs::remove_file(store.blob_path(&blob.digest)).unwrap();
        assert_eq!(store.action(&action.key), None);
    }

    /// What `gc --force` spares for a run in progress: entries modified
    /// since it began, including an old object it published again.
    #[test]
    fn collecting_spares_entries_newer_than_a_live_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let commit = |key: &str, blob: &BlobRef| {
            store.commit_action(&one_output_action(key, blob)).unwrap();
        };
        let age = |path: &Path| {
            let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
            File::options()
                .append(true)
                .open(path)
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        };
        let old = store.put_bytes(b"old", "t").unwrap();
        let shared = store.put_bytes(b"shared", "t").unwrap();
        commit(&"aa".repeat(32), &old);
        for path in [
            store.action_path(&"aa".repeat(32)),
            store.blob_path(&old.digest),
            store.blob_path(&shared.digest),
        ] {
            age(&path);
        }
        let run_began = SystemTime::now() - std::time::Duration::from_secs(1);
        // The live run publishes the old `shared` object again and commits.
        let again = store.put_bytes(b"shared", "t").unwrap();
        assert_eq!(again, shared);
        let fresh = store.put_bytes(b"fresh", "t").unwrap();
        commit(&"bb".repeat(32), &fresh);

        let keep = BTreeSet::new();
        let report = store
            .collect_garbage_sparing(&keep, Some(run_began), true)
            .unwrap();
        let deleted: BTreeSet<PathBuf> = report.entries.iter().map(|e| e.0.clone()).collect();
        let expected: BTreeSet<PathBuf> = [
            store.action_path(&"aa".repeat(32)),
            store.blob_path(&old.digest),
        ]
        .into();
        assert_eq!(deleted, expected);
        // Without the run, everything unreachable goes.
        let report = store.collect_garbage(&keep, true).unwrap();
        assert_eq!(report.entries.len(), 5);
    }

    #[test]
    fn file_digests_are_cached_by_stat_and_refreshed_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let file = dir.path().join("weights.bin");
        fs::write(&file, b"one").unwrap();
        let first = store.file_digest(&file).unwrap();
        assert_eq!(first, blake3::hash(b"one").to_hex().to_string());
        assert_eq!(store.file_digest(&file).unwrap(), first);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&file, b"two").unwrap();
        assert_eq!(
            store.file_digest(&file).unwrap(),
            blake3::hash(b"two").to_hex().to_string()
        );
    }

    #[test]
    fn folder_digests_depend_on_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let model = dir.path().join("model");
        fs::create_dir_all(&model).unwrap();
        fs::write(model.join("config.json"), b"{}").unwrap();
        fs::write(model.join("weights"), b"w").unwrap();
        let a = store.file_digest(&model).unwrap();
        fs::rename(model.join("weights"), model.join("weights2")).unwrap();
        let b = store.file_digest(&model).unwrap();
        assert_ne!(a, b);
    }
}
