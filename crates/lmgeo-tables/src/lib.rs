//! lmgeo's tables on disk.
//!
//! Two worlds meet here only at the Parquet file, never in memory:
//! - the embedding table (the heavy intermediate), streamed with arrow and
//!   parquet for bounded memory and byte-stable output ([`embeddings`]);
//! - tidy analysis and result tables, built and written with polars
//!   ([`tidy`], [`results`]).

pub mod attention;
pub mod embeddings;
pub mod inspect;
pub mod results;
pub mod tidy;

pub use polars::prelude::DataFrame;

use std::path::{Path, PathBuf};

pub use attention::{AttentionReader, AttentionRow, AttentionWriter};
pub use embeddings::{
    EmbeddingReader, EmbeddingShape, EmbeddingWriter, Extraction, MatrixRows, TextMatrix,
};
pub use inspect::{ColumnClass, ColumnInfo, TableInfo, parquet_info};
pub use results::{ResultRow, results_frame};
pub use tidy::{
    Cell, ColumnKind, Record, filter_equal, format_frame, frame_from_records, read_parquet,
    read_records, set_column_type, write_csv, write_parquet,
};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid table: {0}")]
    Invalid(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
}

impl TableError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TableError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A column of a table lmgeo wrote, as its concrete arrow type; `table`
/// names the kind of table in the error ("embedding", "attention").
pub(crate) fn typed_column<'a, T: 'static>(
    array: &'a arrow::array::ArrayRef,
    table: &str,
) -> Result<&'a T, TableError> {
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| TableError::Invalid(format!("unexpected column type in an {table} table")))
}
