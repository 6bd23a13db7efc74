//! Fixture loading and tolerance checks shared by the integration tests.
//! The fixtures are written by scripts/golden/probes.py (numpy, scipy,
//! scikit-learn) and hold their own inputs.

#![allow(dead_code)]

use faer::Mat;
use serde_json::Value;

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

pub fn nums(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

pub fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("index") as usize)
        .collect()
}

pub fn matrix(v: &Value) -> Mat<f64> {
    let rows: Vec<Vec<f64>> = v.as_array().expect("rows").iter().map(nums).collect();
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    Mat::from_fn(n, d, |i, j| rows[i][j])
}

/// `|got - want| <= rel |want| + abs`, with a message naming the quantity.
#[track_caller]
pub fn assert_close(got: f64, want: f64, rel: f64, abs: f64, what: &str) {
    let err = (got - want).abs();
    assert!(
        err <= rel * want.abs() + abs,
        "{what}: got {got:e}, want {want:e}, |diff| = {err:e} (allowed {rel:e} rel + {abs:e} abs)"
    );
}

/// Largest relative error seen, for reporting.
pub fn rel_err(got: f64, want: f64) -> f64 {
    if want == 0.0 {
        got.abs()
    } else {
        (got - want).abs() / want.abs()
    }
}
