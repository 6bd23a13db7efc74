//! The tidy results table of a run: one row per (node instance, metric,
//! dimensions), with every coordinate and parameter that produced it.

use polars::prelude::DataFrame;

use crate::TableError;
use crate::tidy::{Cell, Record, frame_from_records};

/// One metric value with its provenance.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRow {
    pub experiment: String,
    pub node: String,
    pub kind: String,
    pub metric: String,
    pub value: f64,
    /// Sweep coordinates of the node instance (model, layer, ...).
    pub coords: Vec<(String, Cell)>,
    /// The metric's own dimensions (layer, text, k, statistic, ...).
    pub dims: Vec<(String, Cell)>,
    /// The node's canonical parameters as JSON.
    pub params: String,
}

/// Columns every results table starts with.
pub const FIXED_COLUMNS: [&str; 5] = ["experiment", "node", "kind", "metric", "value"];

/// The results frame: fixed columns, then coordinates, then dimensions (a
/// dimension named like a coordinate is prefixed `dim_`), then `params`.
pub fn results_frame(rows: &[ResultRow]) -> Result<DataFrame, TableError> {
    let records: Vec<Record> = rows
        .iter()
        .map(|r| {
            let mut record: Record = vec![
                ("experiment".into(), Cell::Str(r.experiment.clone())),
                ("node".into(), Cell::Str(r.node.clone())),
                ("kind".into(), Cell::Str(r.kind.clone())),
                ("metric".into(), Cell::Str(r.metric.clone())),
                ("value".into(), Cell::Float(r.value)),
            ];
            for (name, cell) in &r.coords {
                record.push((name.clone(), cell.clone()));
            }
            for (name, cell) in &r.dims {
                let clash = FIXED_COLUMNS.contains(&name.as_str())
                    || name == "params"
                    || r.coords.iter().any(|(c, _)| c == name);
                let name = if clash {
                    format!("dim_{name}")
                } else {
                    name.clone()
                };
                record.push((name, cell.clone()));
            }
            record.push(("params".into(), Cell::Str(r.params.clone())));
            record
        })
        .collect();
    if records.is_empty() {
        // An empty run still gets a table with the fixed columns.
        let empty: Vec<Record> = vec![
            FIXED_COLUMNS
                .iter()
                .map(|c| {
                    (
                        c.to_string(),
                        if *c == "value" {
                            Cell::Float(0.0)
                        } else {
                            Cell::Str(String::new())
                        },
                    )
                })
                .chain([("params".to_string(), Cell::Str(String::new()))])
                .collect(),
        ];
        let frame = frame_from_records(&empty)?;
        return Ok(frame.head(Some(0)));
    }
    let mut frame = frame_from_records(&records)?;
    // `params` last, whatever order records introduced columns in.
    let mut names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|n| n != "params")
        .collect();
    names.push("params".into());
    frame = frame.select(names)?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_and_dimensions_become_columns() {
        let rows = vec![
            ResultRow {
                experiment: "e".into(),
                node: "entropy[model=a]".into(),
                kind: "entropy".into(),
                metric: "erank".into(),
                value: 3.0,
                coords: vec![("model".into(), Cell::from("a"))],
                dims: vec![
                    ("layer".into(), Cell::Int(2)),
                    ("model".into(), Cell::from("a")),
                ],
                params: "{}".into(),
            },
            ResultRow {
                experiment: "e".into(),
                node: "fit".into(),
                kind: "power_law".into(),
                metric: "exponent".into(),
                value: -0.5,
                coords: vec![],
                dims: vec![],
                params: "{\"x\":1}".into(),
            },
        ];
        let frame = results_frame(&rows).unwrap();
        let names: Vec<&str> = frame
            .get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "experiment",
                "node",
                "kind",
                "metric",
                "value",
                "model",
                "layer",
                "dim_model",
                "params"
            ]
        );
        assert_eq!(frame.height(), 2);
    }

    #[test]
    fn an_empty_run_has_the_fixed_columns() {
        let frame = results_frame(&[]).unwrap();
        assert_eq!(frame.height(), 0);
        assert_eq!(frame.width(), 6);
    }
}
