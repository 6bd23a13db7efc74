//! `fetch_hub_folder` against a Hub on localhost: a small HTTP server that
//! answers the way huggingface.co's `resolve` endpoint does (a commit id and
//! an ETag in the headers, ranged bodies, 404 for a file the repository does
//! not have), reached through `HF_ENDPOINT` as a user behind a mirror would.
//!
//! One test in this file: `HF_ENDPOINT` is process-wide.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use lmgeo_models::source::{HubOptions, fetch_hub_folder};
use lmgeo_models::{ModelError, Weights};

/// `(repo, revision, file)` to its bytes.
type Files = HashMap<(String, String, String), Vec<u8>>;

struct FakeHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(files: Files) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let files = Arc::new(files);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let files = files.clone();
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &files, &log));
            }
        });
        Self { endpoint, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A 40-hex commit id per revision, as the Hub sends in `x-repo-commit`.
fn commit_of(revision: &str) -> String {
    let h = blake3::hash(revision.as_bytes()).to_hex().to_string();
    h[..40].to_string()
}

fn serve(stream: TcpStream, files: &Files, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range_start = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(spec) = lower.strip_prefix("range: bytes=") {
            range_start = spec.split('-').next().unwrap().trim().parse().unwrap_or(0);
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    log.lock().unwrap().push(path.clone());
    // /<owner>/<name>/resolve/<revision>/<file>
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let found = match parts.as_slice() {
        [owner, name, "resolve", revision, file] => files
            .get(&(
                format!("{owner}/{name}"),
                revision.to_string(),
                file.to_string(),
            ))
            .map(|body| (revision.to_string(), body)),
        _ => None,
    };
    let mut out = stream;
    match found {
        Some((revision, body)) => {
            let end = body.len().saturating_sub(1);
            let slice = &body[range_start.min(body.len())..];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nx-repo-commit: {}\r\netag: \"{}\"\r\n\
                 content-range: bytes {range_start}-{end}/{}\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                commit_of(&revision),
                blake3::hash(body).to_hex(),
                body.len(),
                slice.len(),
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(slice);
        }
        None => {
            let body = b"Entry not found";
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nx-error-code: EntryNotFound\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(body);
        }
    }
    let _ = out.flush();
    // Drain what the client may still send, so that closing does not reset.
    let _ = reader.get_mut().set_nonblocking(true);
    let _ = reader.read(&mut [0u8; 64]);
}

fn file(files: &mut Files, repo: &str, revision: &str, name: &str, body: &[u8]) {
    files.insert(
        (repo.to_string(), revision.to_string(), name.to_string()),
        body.to_vec(),
    );
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[test]
fn fetches_revisions_shards_and_the_cache_through_a_local_hub() {
    let mut files = Files::new();
    // A single-file repository at two revisions.
    file(
        &mut files,
        "org/tiny",
        "main",
        "config.json",
        br#"{"rev": "main"}"#,
    );
    file(
        &mut files,
        "org/tiny",
        "main",
        "model.safetensors",
        b"weights at main",
    );
    file(&mut files, "org/tiny", "main", "tokenizer.json", b"{}");
    file(
        &mut files,
        "org/tiny",
        "step1000",
        "config.json",
        br#"{"rev": "step1000"}"#,
    );
    file(
        &mut files,
        "org/tiny",
        "step1000",
        "model.safetensors",
        b"weights at step1000",
    );
    // A sharded repository without a tokenizer.
    file(&mut files, "org/sharded", "main", "config.json", b"{}");
    let index = br#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
    file(
        &mut files,
        "org/sharded",
        "main",
        "model.safetensors.index.json",
        index,
    );
    file(
        &mut files,
        "org/sharded",
        "main",
        "model-00001-of-00002.safetensors",
        b"shard one",
    );
    file(
        &mut files,
        "org/sharded",
        "main",
        "model-00002-of-00002.safetensors",
        b"shard two",
    );
    // A repository with a config and no weights.
    file(&mut files, "org/empty", "main", "config.json", b"{}");
    let hub = FakeHub::start(files);
    // SAFETY: the only test in this binary, set before any thread reads it.
    unsafe { std::env::set_var("HF_ENDPOINT", &hub.endpoint) };

    let cache = tempfile::tempdir().unwrap();
    let online = HubOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        offline: false,
    };

    let main = fetch_hub_folder("org/tiny", None, Weights::Pretrained, &online).unwrap();
    assert_eq!(read(&main, "config.json"), br#"{"rev": "main"}"#);
    assert_eq!(read(&main, "model.safetensors"), b"weights at main");
    assert_eq!(read(&main, "tokenizer.json"), b"{}");
    assert!(main.ends_with(commit_of("main")), "{}", main.display());

    // A revision is its own snapshot; its missing tokenizer is not an error.
    let step =
        fetch_hub_folder("org/tiny", Some("step1000"), Weights::Pretrained, &online).unwrap();
    assert_eq!(read(&step, "config.json"), br#"{"rev": "step1000"}"#);
    assert_eq!(read(&step, "model.safetensors"), b"weights at step1000");
    assert!(!step.join("tokenizer.json").exists());
    assert_ne!(main, step);

    // Random weights fetch the config only.
    let before = hub.requests().len();
    fetch_hub_folder("org/sharded", None, Weights::Random { seed: 0 }, &online).unwrap();
    let asked: Vec<String> = hub.requests()[before..].to_vec();
    assert!(
        asked.iter().all(|p| !p.contains("safetensors")),
        "random weights downloaded weights: {asked:?}"
    );

    // Every shard the index names, each once.
    let sharded = fetch_hub_folder("org/sharded", None, Weights::Pretrained, &online).unwrap();
    assert_eq!(
        read(&sharded, "model-00001-of-00002.safetensors"),
        b"shard one"
    );
    assert_eq!(
        read(&sharded, "model-00002-of-00002.safetensors"),
        b"shard two"
    );

    let err = fetch_hub_folder("org/empty", None, Weights::Pretrained, &online).unwrap_err();
    let ModelError::Source { message, .. } = &err else {
        panic!("expected a source error, got {err:?}")
    };
    assert!(
        message.contains("no safetensors or pytorch_model.bin weights in org/empty"),
        "{message}"
    );

    let err = fetch_hub_folder("org/absent", None, Weights::Pretrained, &online).unwrap_err();
    assert!(
        err.to_string().contains("no config.json in org/absent"),
        "{err}"
    );

    // Offline: what is cached is served without a request; what is not is
    // an error that says offline mode is on.
    let offline = HubOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        offline: true,
    };
    let before = hub.requests().len();
    let again =
        fetch_hub_folder("org/tiny", Some("step1000"), Weights::Pretrained, &offline).unwrap();
    assert_eq!(again, step);
    assert_eq!(read(&again, "model.safetensors"), b"weights at step1000");
    let err =
        fetch_hub_folder("org/never-fetched", None, Weights::Pretrained, &offline).unwrap_err();
    assert!(err.to_string().contains("offline mode"), "{err}");
    assert_eq!(hub.requests().len(), before, "offline mode made requests");

    // A Hub that does not answer is an error naming the source, not a hang.
    // SAFETY: as above.
    unsafe { std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9") };
    let err = fetch_hub_folder("org/other", None, Weights::Pretrained, &online).unwrap_err();
    assert!(err.to_string().contains("hf:org/other"), "{err}");
    assert!(err.to_string().contains("could not be reached"), "{err}");
}
