//! What a Parquet file holds, read from its footer alone: used to check a
//! table written by someone else (an out-of-process plugin) against the
//! columns it promised, without loading its rows.

use std::fmt;
use std::fs::File;
use std::path::Path;

use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::TableError;

/// The broad family of a column's type: what a schema declaration can ask
/// for without naming bit widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnClass {
    /// Signed or unsigned integers of any width.
    Int,
    /// Floating point of any width.
    Float,
    /// UTF-8 text (plain, large or view).
    String,
    Bool,
    /// Lists of any kind (variable, large or fixed size), e.g. vectors.
    List,
    /// Anything else (dates, structs, maps, binary...).
    Other,
}

impl fmt::Display for ColumnClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnClass::Int => "int",
            ColumnClass::Float => "float",
            ColumnClass::String => "string",
            ColumnClass::Bool => "bool",
            ColumnClass::List => "list",
            ColumnClass::Other => "other",
        })
    }
}

/// One column of a Parquet file.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub class: ColumnClass,
    /// The exact Arrow type, for messages.
    pub arrow_type: String,
}

/// The columns and row count of a Parquet file.
#[derive(Clone, Debug, PartialEq)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    pub rows: u64,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn class_of(data_type: &DataType) -> ColumnClass {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ColumnClass::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnClass::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnClass::String,
        DataType::Boolean => ColumnClass::Bool,
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::ListView(_)
        | DataType::LargeListView(_) => ColumnClass::List,
        // Dictionary-encoded text (pandas categoricals) reads as its values.
        DataType::Dictionary(_, values) => class_of(values),
        _ => ColumnClass::Other,
    }
}

/// Reads only the footer of a Parquet file: its columns with their types and
/// its row count. Fails on anything that is not a readable Parquet file.
pub fn parquet_info(path: &Path) -> Result<TableInfo, TableError> {
    let file = File::open(path).map_err(|e| TableError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let columns = builder
        .schema()
        .fields()
        .iter()
        .map(|field| ColumnInfo {
            name: field.name().clone(),
            class: class_of(field.data_type()),
            arrow_type: field.data_type().to_string(),
        })
        .collect();
    Ok(TableInfo { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidy::{Cell, Record, frame_from_records, write_parquet};

    #[test]
    fn footer_gives_columns_classes_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..3)
            .map(|i| {
                vec![
                    ("id".into(), Cell::Str(format!("t{i}"))),
                    ("n".into(), Cell::Int(i)),
                    ("x".into(), Cell::Float(0.5 * i as f64)),
                    ("ok".into(), Cell::Bool(i % 2 == 0)),
                ]
            })
            .collect();
        let path = dir.path().join("t.parquet");
        write_parquet(&mut frame_from_records(&records).unwrap(), &path).unwrap();
        let info = parquet_info(&path).unwrap();
        assert_eq!(info.rows, 3);
        let classes: Vec<(&str, ColumnClass)> = info
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.class))
            .collect();
        assert_eq!(
            classes,
            [
                ("id", ColumnClass::String),
                ("n", ColumnClass::Int),
                ("x", ColumnClass::Float),
                ("ok", ColumnClass::Bool),
            ]
        );
    }

    #[test]
    fn embedding_vectors_are_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut writer = crate::EmbeddingWriter::create(&path, 2, vec![]).unwrap();
        writer
            .push(&crate::MatrixRows {
                text_id: "a",
                text_index: 0,
                layer: 0,
                token_ids: &[1],
                tokens: &["x".to_string()],
                data: &[1.0, 2.0],
            })
            .unwrap();
        writer.finish().unwrap();
        let info = parquet_info(&path).unwrap();
        assert_eq!(info.column("vector").unwrap().class, ColumnClass::List);
        assert_eq!(info.column("layer").unwrap().class, ColumnClass::Int);
        assert_eq!(info.rows, 1);
    }

    #[test]
    fn text_is_not_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        std::fs::write(&path, "text_id,value\na,1\n").unwrap();
        assert!(parquet_info(&path).is_err());
    }
}
