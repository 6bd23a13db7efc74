//! The registry's fetch logic on local wheels: assembly from several
//! packages, digest verification, repair of a corrupt file, refusal of a
//! wrong digest, concurrent fetchers, and the error when pip is missing.
//! (The real PyPI path runs in the golden tests, which fetch the models.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lmgeo_models::ModelError;
use lmgeo_models::pypi_models::{
    ArtifactSpec, Entry, FetchProgress, ModelSpec, PipFetcher, WheelFetcher, WheelMember, WheelPin,
    ensure_with, model_names, model_spec, recorded_digest,
};

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

/// Writes a wheel (a zip, stored) with the given members.
fn write_wheel(dir: &Path, pin: &WheelPin, members: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join(format!(
        "{}-{}-py3-none-any.whl",
        pin.package.replace('-', "_"),
        pin.version
    ));
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    path
}

/// Serves wheels from a folder, counting calls, optionally slowly.
struct LocalFetcher {
    dir: PathBuf,
    calls: AtomicUsize,
    delay_ms: u64,
}

impl WheelFetcher for LocalFetcher {
    fn fetch(&self, pin: &WheelPin, into: &Path) -> Result<PathBuf, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        let name = format!(
            "{}-{}-py3-none-any.whl",
            pin.package.replace('-', "_"),
            pin.version
        );
        let src = self.dir.join(&name);
        let dst = into.join(&name);
        std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        Ok(dst)
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    wheels: PathBuf,
    models: PathBuf,
    spec: &'static ModelSpec,
    content: Vec<u8>,
}

/// A fake model whose 3 MB file is split over two packages.
fn fixture(digest_override: Option<&'static str>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&wheels).unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (a, b) = content.split_at(1_234_567);
    let p1 = WheelPin {
        package: "fake-model-part1",
        version: "1.0.0",
    };
    let p2 = WheelPin {
        package: "fake-model-part2",
        version: "1.0.0",
    };
    write_wheel(
        &wheels,
        &p1,
        &[("fake/readme.txt", b"hi"), ("fake/data/m.bin.part0", a)],
    );
    write_wheel(&wheels, &p2, &[("fake2/data/m.bin.part1", b)]);
    let digest: &'static str = match digest_override {
        Some(d) => d,
        None => Box::leak(blake3::hash(&content).to_hex().to_string().into_boxed_str()),
    };
    let parts: &'static [WheelMember] = leak([
        WheelMember {
            package: "fake-model-part1",
            member: "fake/data/m.bin.part0",
        },
        WheelMember {
            package: "fake-model-part2",
            member: "fake2/data/m.bin.part1",
        },
    ]);
    let artifacts: &'static [ArtifactSpec] = leak([ArtifactSpec {
        file: "m.bin",
        parts,
        size: content.len() as u64,
        blake3: digest,
    }]);
    let spec = leak(ModelSpec {
        name: "fake-model",
        description: "test",
        architecture: "none",
        wheels: leak([p1, p2]),
        artifacts,
        entry: Entry::File("m.bin"),
    });
    Fixture {
        _tmp: tmp,
        wheels,
        models,
        spec,
        content,
    }
}

fn fetcher(f: &Fixture, delay_ms: u64) -> LocalFetcher {
    LocalFetcher {
        dir: f.wheels.clone(),
        calls: AtomicUsize::new(0),
        delay_ms,
    }
}

/// Files in the model folder other than the artifacts: leftovers.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "m.bin")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn registry_knows_its_models_and_their_digests() {
    let names = model_names();
    for n in ["smollm2-135m", "gemma3-270m", "minilm-l6"] {
        assert!(names.contains(&n), "{n}");
        let d = recorded_digest(n).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(d, model_spec(n).unwrap().digest());
    }
    assert_eq!(
        recorded_digest("smollm2-135m").unwrap(),
        model_spec("smollm2-135m").unwrap().artifacts[0].blake3
    );
    assert_eq!(
        model_spec("gemma3-270m").unwrap().artifacts[0].parts.len(),
        4
    );
    assert!(recorded_digest("no-such-model").is_none());
    let err = lmgeo_models::ensure_model("no-such-model", Path::new("/nonexistent"), &|_| {})
        .unwrap_err();
    match err {
        ModelError::Source { message, .. } => {
            assert!(message.contains("smollm2-135m"), "{message}")
        }
        e => panic!("unexpected error {e}"),
    }
}

#[test]
fn registry_assembles_parts_and_then_finds_them() {
    let f = fixture(None);
    let fetch = fetcher(&f, 0);
    let events = Mutex::new(Vec::new());
    let progress = |p: FetchProgress| events.lock().unwrap().push(p);
    let path = ensure_with(f.spec, &f.models, &progress, &fetch).unwrap();
    assert_eq!(path, f.models.join("fake-model").join("m.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), f.content);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "installed files are readable by all");
    }
    assert_eq!(fetch.calls.load(Ordering::SeqCst), 2);
    assert!(matches!(
        events.lock().unwrap().last(),
        Some(FetchProgress::Installed { .. })
    ));
    assert!(leftovers(&f.models.join("fake-model")).is_empty());

    events.lock().unwrap().clear();
    ensure_with(f.spec, &f.models, &progress, &fetch).unwrap();
    assert_eq!(
        fetch.calls.load(Ordering::SeqCst),
        2,
        "present file fetched again"
    );
    assert!(matches!(
        events.lock().unwrap().last(),
        Some(FetchProgress::Present { .. })
    ));
}

#[test]
fn registry_replaces_a_corrupt_file() {
    let f = fixture(None);
    let fetch = fetcher(&f, 0);
    let dir = f.models.join("fake-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.bin"), b"truncated download").unwrap();
    let saw_mismatch = AtomicUsize::new(0);
    let progress = |p: FetchProgress| {
        if matches!(p, FetchProgress::Mismatch { .. }) {
            saw_mismatch.fetch_add(1, Ordering::SeqCst);
        }
    };
    let path = ensure_with(f.spec, &f.models, &progress, &fetch).unwrap();
    assert_eq!(saw_mismatch.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read(path).unwrap(), f.content);
}

#[test]
fn registry_refuses_content_with_another_digest() {
    let f = fixture(Some(
        "0000000000000000000000000000000000000000000000000000000000000000",
    ));
    let fetch = fetcher(&f, 0);
    let err = ensure_with(f.spec, &f.models, &|_| {}, &fetch).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("expected") && msg.contains("blake3"), "{msg}");
    let dir = f.models.join("fake-model");
    assert!(
        !dir.join("m.bin").exists(),
        "a file with the wrong digest was installed"
    );
    assert!(
        leftovers(&dir).is_empty(),
        "left behind: {:?}",
        leftovers(&dir)
    );
}

#[test]
fn registry_concurrent_fetchers_never_expose_a_partial_file() {
    let f = fixture(None);
    let dest = f.models.join("fake-model").join("m.bin");
    let done = std::sync::atomic::AtomicBool::new(false);
    let partial_seen = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if let Ok(bytes) = std::fs::read(&dest)
                    && bytes != f.content
                {
                    partial_seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let f = &f;
                s.spawn(move || {
                    let fetch = fetcher(f, 20 * i);
                    ensure_with(f.spec, &f.models, &|_| {}, &fetch).unwrap()
                })
            })
            .collect();
        for w in workers {
            assert_eq!(w.join().unwrap(), dest);
        }
        done.store(true, Ordering::SeqCst);
    });
    assert_eq!(partial_seen.load(Ordering::SeqCst), 0);
    assert_eq!(std::fs::read(&dest).unwrap(), f.content);
    assert!(leftovers(&f.models.join("fake-model")).is_empty());
}

#[test]
fn registry_says_when_pip_cannot_run() {
    let f = fixture(None);
    let pip = PipFetcher {
        python: "/nonexistent/python3".into(),
        wheel_dir: None,
    };
    let err = ensure_with(f.spec, &f.models, &|_| {}, &pip).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cannot run") && msg.contains("LMGEO_PYTHON"),
        "{msg}"
    );
}

#[test]
fn registry_uses_a_local_wheel_folder_first() {
    let f = fixture(None);
    let pip = PipFetcher {
        python: "/nonexistent/python3".into(),
        wheel_dir: Some(f.wheels.clone()),
    };
    let path = ensure_with(f.spec, &f.models, &|_| {}, &pip).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), f.content);
}
