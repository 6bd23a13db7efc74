//! Key locks that work on a shared filesystem (NFS) as well as a local one.
//!
//! A lock is a file created with `O_CREAT | O_EXCL` (atomic on NFSv3 and
//! later) that names its holder: host, process id and start time, Slurm job
//! and a random token. While it is held, a heartbeat thread refreshes the
//! file's mtime. A waiter breaks a lock whose holder is provably dead (same
//! host, process gone or replaced) or whose heartbeat is older than
//! [`LockSettings::stale_after`].
//!
//! Locks only save work: two holders of one key would both compute it and
//! both publish the same content-addressed blobs and an equivalent action
//! record, each atomically. That is why breaking a lock needs no consensus,
//! and why a rare double break (two waiters judging the same file stale)
//! costs at most one duplicate computation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long a held lock may go without a heartbeat before a waiter breaks
/// it, and how often the holder beats.
#[derive(Clone, Copy, Debug)]
pub struct LockSettings {
    pub heartbeat: Duration,
    pub stale_after: Duration,
}

impl LockSettings {
    /// Defaults, or `LMGEO_LOCK_STALE_SECS` (the heartbeat is a sixth of it):
    /// long enough to ride out an NFS attribute cache and a stalled node,
    /// short enough that a crashed job on another host costs minutes, not
    /// hours.
    pub fn from_env() -> Self {
        let stale = std::env::var("LMGEO_LOCK_STALE_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(120.0);
        Self {
            heartbeat: Duration::from_secs_f64(stale / 6.0),
            stale_after: Duration::from_secs_f64(stale),
        }
    }
}

/// Who holds a lock: written into the lock file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), so that a
    /// recycled pid is not mistaken for the holder.
    pub start_ticks: Option<u64>,
    /// `SLURM_JOB_ID` (and array task) when the holder is a Slurm task.
    pub job: Option<String>,
    pub token: String,
    pub acquired_unix_ms: u128,
}

/// This process's identity, computed once.
pub fn this_process() -> &'static (String, u32, Option<u64>) {
    static ME: OnceLock<(String, u32, Option<u64>)> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        (hostname(), pid, process_start_ticks(pid))
    })
}

/// The host's name as the kernel reports it (`uname -n`).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after its closing parenthesis are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the holder process is certainly gone. Only decidable on the same
/// host; elsewhere the heartbeat decides.
fn holder_is_dead(holder: &Holder) -> bool {
    let (host, _, _) = this_process();
    if &holder.host != host || !Path::new("/proc/self/stat").exists() {
        return false;
    }
    match process_start_ticks(holder.pid) {
        None => true,
        Some(ticks) => holder.start_ticks.is_some_and(|t| t != ticks),
    }
}

/// Holds a key's lock until dropped.
pub struct KeyLock {
    path: PathBuf,
    token: String,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KeyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLock").field("path", &self.path).finish()
    }
}

impl KeyLock {
    /// Takes the lock at `path`, waiting while a live holder has it.
    pub fn acquire(path: &Path, settings: LockSettings) -> io::Result<KeyLock> {
        let mut backoff = Duration::from_millis(10);
        loop {
            match try_create(path) {
                Ok(token) => return Ok(start_heartbeat(path, token, settings)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_stale(path, settings) {
                        break_lock(path);
                        continue;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.heartbeat.take() {
            let _ = handle.join();
        }
        // Only our own lock is removed: if a waiter broke it (we looked
        // dead) and another holder took it since, that one's stays.
        if read_holder(&self.path).is_some_and(|h| h.token == self.token) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn try_create(path: &Path) -> io::Result<String> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let (host, pid, start_ticks) = this_process().clone();
    let token = blake3::hash(
        format!(
            "{host}\0{pid}\0{:?}\0{:?}",
            SystemTime::now(),
            std::thread::current().id()
        )
        .as_bytes(),
    )
    .to_hex()[..24]
        .to_string();
    let job = std::env::var("SLURM_JOB_ID").ok().map(|id| {
        match (
            std::env::var("SLURM_ARRAY_JOB_ID"),
            std::env::var("SLURM_ARRAY_TASK_ID"),
        ) {
            (Ok(array), Ok(task)) => format!("{array}_{task} ({id})"),
            _ => id,
        }
    });
    let holder = Holder {
        host,
        pid,
        start_ticks,
        job,
        token: token.clone(),
        acquired_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    };
    let written = file
        .write_all(&serde_json::to_vec(&holder).expect("holders serialize"))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(token)
}

fn start_heartbeat(path: &Path, token: String, settings: LockSettings) -> KeyLock {
    let (stop, stopped) = mpsc::channel::<()>();
    let beat_path = path.to_path_buf();
    let beat_token = token.clone();
    let heartbeat = std::thread::Builder::new()
        .name("lmgeo-lock-heartbeat".into())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(settings.heartbeat) {
                    Err(RecvTimeoutError::Timeout) => {
                        // A lock broken by a waiter is no longer ours to keep alive.
                        if read_holder(&beat_path).is_none_or(|h| h.token != beat_token) {
                            return;
                        }
                        if let Ok(file) = File::options().append(true).open(&beat_path) {
                            let _ = file.set_modified(SystemTime::now());
                        }
                    }
                    _ => return,
                }
            }
        })
        .ok();
    KeyLock {
        path: path.to_path_buf(),
        token,
        stop: Some(stop),
        heartbeat,
    }
}

fn read_holder(path: &Path) -> Option<Holder> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Whether a lock file may be broken.
pub fn is_stale(path: &Path, settings: LockSettings) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::ZERO);
    match read_holder(path) {
        Some(holder) => holder_is_dead(&holder) || age > settings.stale_after,
        // Being written right now, or left half-written by a crash.
        None => age > settings.heartbeat.max(Duration::from_secs(2)),
    }
}

/// Removes a stale lock: renamed away first, so that of several waiters
/// breaking it at once only one removes the file they all judged.
fn break_lock(path: &Path) {
    let (host, pid, _) = this_process();
    let aside = path.with_extension(format!(
        "broken-{host}-{pid}-{:?}",
        std::thread::current().id()
    ));
    if fs::rename(path, &aside).is_ok() {
        tracing::info!("broke a stale lock {}", path.display());
        let _ = fs::remove_file(&aside);
    }
}

/// The holder of a lock, for `status` and error messages.
pub fn holder(path: &Path) -> Option<Holder> {
    read_holder(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fast() -> LockSettings {
        LockSettings {
            heartbeat: Duration::from_millis(50),
            stale_after: Duration::from_millis(300),
        }
    }

    #[test]
    fn one_holder_at_a_time_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("k.lock"));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (path, inside, most) = (path.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _lock = KeyLock::acquire(&path, fast()).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(!path.exists(), "released locks leave no file");
    }

    #[test]
    fn a_dead_holder_on_this_host_is_broken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        // A process that has exited: its pid no longer has its start time.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let holder = Holder {
            host: this_process().0.clone(),
            pid,
            start_ticks: Some(1),
            job: None,
            token: "dead".into(),
            acquired_unix_ms: 0,
        };
        fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        let slow = LockSettings {
            heartbeat: Duration::from_secs(60),
            stale_after: Duration::from_secs(3600),
        };
        assert!(is_stale(&path, slow));
        let started = std::time::Instant::now();
        let lock = KeyLock::acquire(&path, slow).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(holder_of(&path).pid, std::process::id());
        drop(lock);
    }

    fn holder_of(path: &Path) -> Holder {
        read_holder(path).unwrap()
    }

    #[test]
    fn a_live_holder_elsewhere_is_broken_only_after_its_heartbeat_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let holder = Holder {
            host: "another-host".into(),
            pid: 1,
            start_ticks: None,
            job: Some("77_3 (78)".into()),
            token: "remote".into(),
            acquired_unix_ms: 0,
        };
        fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        assert!(!is_stale(&path, fast()), "a fresh remote lock is respected");
        std::thread::sleep(Duration::from_millis(400));
        assert!(is_stale(&path, fast()), "a silent remote lock goes stale");
        let lock = KeyLock::acquire(&path, fast()).unwrap();
        assert_eq!(holder_of(&path).token, lock.token);
    }

    #[test]
    fn the_heartbeat_keeps_a_long_hold_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let lock = KeyLock::acquire(&path, fast()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        // From another host only the mtime speaks for the holder.
        let age = SystemTime::now()
            .duration_since(fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap();
        assert!(age < fast().stale_after, "heartbeat age {age:?}");
        drop(lock);
        assert!(!path.exists());
    }

    #[test]
    fn a_holder_whose_lock_was_broken_does_not_remove_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let first = KeyLock::acquire(&path, fast()).unwrap();
        break_lock(&path);
        let second = KeyLock::acquire(&path, fast()).unwrap();
        drop(first);
        assert_eq!(holder_of(&path).token, second.token);
        drop(second);
        assert!(!path.exists());
    }
}
