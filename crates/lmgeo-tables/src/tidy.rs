//! Tidy tables built from records, written as Parquet and CSV through polars,
//! so they open as they are in pandas, polars and DuckDB.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::TableError;

/// One cell of a tidy table.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Str(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Str(s)
    }
}
impl From<i64> for Cell {
    fn from(i: i64) -> Self {
        Cell::Int(i)
    }
}
impl From<usize> for Cell {
    fn from(i: usize) -> Self {
        Cell::Int(i as i64)
    }
}
impl From<f64> for Cell {
    fn from(x: f64) -> Self {
        Cell::Float(x)
    }
}
impl From<bool> for Cell {
    fn from(b: bool) -> Self {
        Cell::Bool(b)
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// A record: named cells in column order.
pub type Record = Vec<(String, Cell)>;

#[derive(Clone, Copy, PartialEq, Debug)]
enum ColumnType {
    Unknown,
    Bool,
    Int,
    Float,
    Str,
}

fn widen(current: ColumnType, cell: &Cell) -> ColumnType {
    use ColumnType::*;
    let incoming = match cell {
        Cell::Null => return current,
        Cell::Bool(_) => Bool,
        Cell::Int(_) => Int,
        Cell::Float(_) => Float,
        Cell::Str(_) => Str,
    };
    match (current, incoming) {
        (Unknown, t) => t,
        (a, b) if a == b => a,
        (Int, Float) | (Float, Int) => Float,
        _ => Str,
    }
}

fn cell_text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Str(s) => Some(s.clone()),
        Cell::Int(i) => Some(i.to_string()),
        Cell::Float(x) => Some(x.to_string()),
        Cell::Bool(b) => Some(b.to_string()),
    }
}

/// Builds a frame from records whose columns may differ: the columns are the
/// union in first-seen order, missing cells are null, and each column takes
/// the narrowest type that holds all its cells (integers and floats make
/// floats; any other mix becomes text).
pub fn frame_from_records(records: &[Record]) -> Result<DataFrame, TableError> {
    let mut names: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for record in records {
        for (name, _) in record {
            if !index.contains_key(name) {
                index.insert(name.clone(), names.len());
                names.push(name.clone());
            }
        }
    }
    let mut cells: Vec<Vec<&Cell>> = vec![Vec::with_capacity(records.len()); names.len()];
    let null = Cell::Null;
    for record in records {
        let mut row: Vec<&Cell> = vec![&null; names.len()];
        for (name, cell) in record {
            row[index[name]] = cell;
        }
        for (column, cell) in cells.iter_mut().zip(row) {
            column.push(cell);
        }
    }
    let mut columns = Vec::with_capacity(names.len());
    for (name, column) in names.iter().zip(&cells) {
        let kind = column.iter().fold(ColumnType::Unknown, |t, c| widen(t, c));
        let name = PlSmallStr::from(name.as_str());
        let series = match kind {
            ColumnType::Bool => Series::new(
                name,
                column
                    .iter()
                    .map(|c| match c {
                        Cell::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ColumnType::Int => Series::new(
                name,
                column
                    .iter()
                    .map(|c| match c {
                        Cell::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ColumnType::Float => Series::new(
                name,
                column
                    .iter()
                    .map(|c| match c {
                        Cell::Int(i) => Some(*i as f64),
                        // NaN and infinities are recorded as missing: every
                        // reader agrees on null, not on NaN.
                        Cell::Float(x) if x.is_finite() => Some(*x),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            ColumnType::Str | ColumnType::Unknown => Series::new(
                name,
                column.iter().map(|c| cell_text(c)).collect::<Vec<_>>(),
            ),
        };
        columns.push(series.into_column());
    }
    Ok(DataFrame::new(records.len(), columns)?)
}

/// Writes a frame as Parquet (zstd, statistics, single-threaded so the bytes
/// are reproducible).
pub fn write_parquet(frame: &mut DataFrame, path: &Path) -> Result<(), TableError> {
    let file = File::create(path).map_err(|e| TableError::io(path, e))?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .set_parallel(false)
        .finish(frame)?;
    Ok(())
}

pub fn write_csv(frame: &mut DataFrame, path: &Path) -> Result<(), TableError> {
    let mut file = File::create(path).map_err(|e| TableError::io(path, e))?;
    CsvWriter::new(&mut file)
        .include_header(true)
        .finish(frame)?;
    Ok(())
}

pub fn read_parquet(path: &Path) -> Result<DataFrame, TableError> {
    let file = File::open(path).map_err(|e| TableError::io(path, e))?;
    Ok(ParquetReader::new(file).finish()?)
}

/// Reads a tidy Parquet table back as records (the inverse of
/// [`frame_from_records`]): integers of any width come back as
/// [`Cell::Int`], floats as [`Cell::Float`], missing values as
/// [`Cell::Null`]. A column of any other type (lists, dates, binary) is an
/// error naming it, since a record holds only scalars.
pub fn read_records(path: &Path) -> Result<Vec<Record>, TableError> {
    let frame = read_parquet(path)?;
    let height = frame.height();
    let mut columns: Vec<(String, Vec<Cell>)> = Vec::with_capacity(frame.width());
    for column in frame.columns() {
        let name = column.name().to_string();
        let dtype = column.dtype().clone();
        let cells: Vec<Cell> = if dtype.is_integer() {
            let cast = column.cast(&DataType::Int64)?;
            cast.i64()?.iter().map(Cell::from).collect()
        } else if dtype.is_float() {
            let cast = column.cast(&DataType::Float64)?;
            cast.f64()?.iter().map(Cell::from).collect()
        } else if dtype == DataType::String {
            column
                .str()?
                .iter()
                .map(|v| v.map_or(Cell::Null, |s| Cell::Str(s.to_string())))
                .collect()
        } else if dtype == DataType::Boolean {
            column.bool()?.iter().map(Cell::from).collect()
        } else if dtype == DataType::Null {
            vec![Cell::Null; height]
        } else {
            return Err(TableError::Invalid(format!(
                "{}: column `{name}` has type {dtype}; only text, numbers and booleans can be read as records",
                path.display()
            )));
        };
        columns.push((name, cells));
    }
    Ok((0..height)
        .map(|row| {
            columns
                .iter()
                .map(|(name, cells)| (name.clone(), cells[row].clone()))
                .collect()
        })
        .collect())
}

/// A column type for [`set_column_type`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Int,
    Float,
    Str,
    Bool,
}

/// Casts a column, e.g. to give an all-null column its intended type
/// (records with only missing cells cannot say what they would hold).
pub fn set_column_type(
    frame: &mut DataFrame,
    name: &str,
    kind: ColumnKind,
) -> Result<(), TableError> {
    let dtype = match kind {
        ColumnKind::Int => DataType::Int64,
        ColumnKind::Float => DataType::Float64,
        ColumnKind::Str => DataType::String,
        ColumnKind::Bool => DataType::Boolean,
    };
    if frame.column(name)?.dtype() != &dtype {
        let cast = frame.column(name)?.cast(&dtype)?;
        frame.with_column(cast)?;
    }
    Ok(())
}

/// The rows whose text column `column` equals `value`.
pub fn filter_equal(frame: &DataFrame, column: &str, value: &str) -> Result<DataFrame, TableError> {
    let keep = frame.column(column)?.str()?.equal(value);
    Ok(frame.filter(&keep)?)
}

/// A frame as aligned text, at most `max_rows` rows.
pub fn format_frame(frame: &DataFrame, max_rows: usize) -> String {
    // polars reads its display limits from the environment.
    // SAFETY: set before any other thread formats frames in this process
    // (the CLI formats once, at the end).
    unsafe {
        std::env::set_var("POLARS_FMT_MAX_ROWS", max_rows.to_string());
        std::env::set_var("POLARS_FMT_MAX_COLS", "40");
        std::env::set_var("POLARS_FMT_STR_LEN", "60");
        std::env::set_var("POLARS_TABLE_WIDTH", "220");
    }
    format!("{frame}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heterogeneous_records_make_a_union_of_typed_columns() {
        let records = vec![
            vec![
                ("metric".into(), Cell::from("a")),
                ("value".into(), Cell::Float(1.5)),
                ("layer".into(), Cell::Int(3)),
            ],
            vec![
                ("metric".into(), Cell::from("b")),
                ("value".into(), Cell::Int(2)),
                ("model".into(), Cell::from("m")),
            ],
            vec![
                ("metric".into(), Cell::from("c")),
                ("value".into(), Cell::Float(f64::NAN)),
            ],
        ];
        let frame = frame_from_records(&records).unwrap();
        assert_eq!(frame.shape(), (3, 4));
        let names: Vec<&str> = frame
            .get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(names, ["metric", "value", "layer", "model"]);
        assert_eq!(frame.column("value").unwrap().dtype(), &DataType::Float64);
        assert_eq!(frame.column("layer").unwrap().dtype(), &DataType::Int64);
        let values: Vec<Option<f64>> = frame
            .column("value")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(values, [Some(1.5), Some(2.0), None]);
        let layers: Vec<Option<i64>> = frame
            .column("layer")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(layers, [Some(3), None, None]);
    }

    #[test]
    fn records_come_back_from_parquet_with_their_types() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            vec![
                ("metric".into(), Cell::from("a")),
                ("value".into(), Cell::Float(1.5)),
                ("layer".into(), Cell::Int(3)),
                ("ok".into(), Cell::Bool(true)),
            ],
            vec![
                ("metric".into(), Cell::from("b")),
                ("value".into(), Cell::Float(-2.0)),
            ],
        ];
        let path = dir.path().join("r.parquet");
        write_parquet(&mut frame_from_records(&records).unwrap(), &path).unwrap();
        let back = read_records(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], records[0]);
        assert_eq!(
            back[1],
            vec![
                ("metric".to_string(), Cell::from("b")),
                ("value".to_string(), Cell::Float(-2.0)),
                ("layer".to_string(), Cell::Null),
                ("ok".to_string(), Cell::Null),
            ]
        );
    }

    #[test]
    fn parquet_round_trips_through_polars_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..50)
            .map(|i| {
                vec![
                    ("i".into(), Cell::Int(i)),
                    ("x".into(), Cell::Float(i as f64 / 7.0)),
                    ("s".into(), Cell::Str(format!("t{i}"))),
                ]
            })
            .collect();
        let mut frame = frame_from_records(&records).unwrap();
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_parquet(&mut frame, &a).unwrap();
        write_parquet(&mut frame, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let back = read_parquet(&a).unwrap();
        assert!(back.equals_missing(&frame));
        let csv = dir.path().join("a.csv");
        write_csv(&mut frame, &csv).unwrap();
        let text = std::fs::read_to_string(csv).unwrap();
        assert!(text.starts_with("i,x,s\n0,0.0,t0\n"), "{}", &text[..40]);
    }
}
