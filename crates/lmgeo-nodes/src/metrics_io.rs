//! Reading an upstream node's `metrics` output inside a node.

use std::path::Path;

use lmgeo_dag::{MetricRow, NodeError};

/// Reads an upstream node's `metrics` output.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, NodeError> {
    let bytes = std::fs::read(path)?;
    MetricRow::read_all(&bytes)
        .map_err(|e| NodeError::msg(format!("reading metrics {}: {e}", path.display())))
}
