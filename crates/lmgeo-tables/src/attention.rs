//! The attention table: for chosen query positions of each text, every
//! layer's and head's attention probabilities over the keys.
//!
//! Columns: `text_id` (utf8), `text_index` (u32), `layer` (i32, 1-based like
//! the block it belongs to), `query` (u32), `head` (u32), `weights` (list of
//! f32, one per key position). Rows are grouped by text, layer, query, head.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float32Builder, Int32Array, Int32Builder, ListArray, ListBuilder,
    RecordBatch, StringArray, StringBuilder, UInt32Array, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{TableError, typed_column};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text_id", DataType::Utf8, false),
        Field::new("text_index", DataType::UInt32, false),
        Field::new("layer", DataType::Int32, false),
        Field::new("query", DataType::UInt32, false),
        Field::new("head", DataType::UInt32, false),
        Field::new(
            "weights",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
    ]))
}

/// One query row of one layer: `heads x keys` probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionRow {
    pub text_id: String,
    pub text_index: u32,
    pub layer: i32,
    pub query: u32,
    pub heads: usize,
    pub keys: usize,
    /// Row-major `heads x keys`.
    pub weights: Vec<f32>,
}

impl AttentionRow {
    pub fn head(&self, h: usize) -> &[f32] {
        &self.weights[h * self.keys..(h + 1) * self.keys]
    }
}

pub struct AttentionWriter {
    schema: Arc<Schema>,
    writer: ArrowWriter<File>,
    text_id: StringBuilder,
    text_index: UInt32Builder,
    layer: Int32Builder,
    query: UInt32Builder,
    head: UInt32Builder,
    weights: ListBuilder<Float32Builder>,
    buffered: usize,
}

const BATCH_ROWS: usize = 8 * 1024;

impl AttentionWriter {
    pub fn create(path: &Path, metadata: Vec<(String, String)>) -> Result<Self, TableError> {
        let file = File::create(path).map_err(|e| TableError::io(path, e))?;
        let mut metadata = metadata;
        metadata.push(("lmgeo.table".into(), "attention".into()));
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_created_by(format!("lmgeo-tables {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(
                metadata
                    .into_iter()
                    .map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let schema = schema();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
        Ok(Self {
            schema,
            writer,
            text_id: StringBuilder::new(),
            text_index: UInt32Builder::new(),
            layer: Int32Builder::new(),
            query: UInt32Builder::new(),
            head: UInt32Builder::new(),
            weights: ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
                "item",
                DataType::Float32,
                false,
            ))),
            buffered: 0,
        })
    }

    pub fn push(&mut self, row: &AttentionRow) -> Result<(), TableError> {
        if row.weights.len() != row.heads * row.keys {
            return Err(TableError::Invalid(format!(
                "attention of `{}` layer {}: {} weights for {} heads x {} keys",
                row.text_id,
                row.layer,
                row.weights.len(),
                row.heads,
                row.keys
            )));
        }
        for h in 0..row.heads {
            self.text_id.append_value(&row.text_id);
            self.text_index.append_value(row.text_index);
            self.layer.append_value(row.layer);
            self.query.append_value(row.query);
            self.head.append_value(h as u32);
            self.weights.values().append_slice(row.head(h));
            self.weights.append(true);
            self.buffered += 1;
        }
        if self.buffered >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TableError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.text_id.finish()),
            Arc::new(self.text_index.finish()),
            Arc::new(self.layer.finish()),
            Arc::new(self.query.finish()),
            Arc::new(self.head.finish()),
            Arc::new(self.weights.finish()),
        ];
        self.writer
            .write(&RecordBatch::try_new(self.schema.clone(), columns)?)?;
        self.buffered = 0;
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), TableError> {
        self.flush()?;
        self.writer.close()?;
        Ok(())
    }
}

/// Reads an attention table back as one [`AttentionRow`] per (text, layer,
/// query), streaming.
pub struct AttentionReader {
    batches: ParquetRecordBatchReader,
    current: Option<RecordBatch>,
    row: usize,
}

impl AttentionReader {
    pub fn open(path: &Path) -> Result<Self, TableError> {
        let file = File::open(path).map_err(|e| TableError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(4096);
        if builder.schema().field_with_name("weights").is_err() {
            return Err(TableError::Invalid(format!(
                "{} is not an lmgeo attention table",
                path.display()
            )));
        }
        Ok(Self {
            batches: builder.build()?,
            current: None,
            row: 0,
        })
    }

    fn next_row(&mut self) -> Result<Option<AttentionRow>, TableError> {
        let mut out: Option<AttentionRow> = None;
        loop {
            if self
                .current
                .as_ref()
                .is_none_or(|b| self.row >= b.num_rows())
            {
                match self.batches.next() {
                    Some(batch) => {
                        self.current = Some(batch?);
                        self.row = 0;
                        continue;
                    }
                    None => return Ok(out),
                }
            }
            let batch = self.current.as_ref().expect("checked above");
            let col = |name: &str| batch.column_by_name(name).expect("schema checked");
            let text_ids = typed_column::<StringArray>(col("text_id"), "attention")?;
            let text_index = typed_column::<UInt32Array>(col("text_index"), "attention")?;
            let layers = typed_column::<Int32Array>(col("layer"), "attention")?;
            let queries = typed_column::<UInt32Array>(col("query"), "attention")?;
            let lists = typed_column::<ListArray>(col("weights"), "attention")?;
            while self.row < batch.num_rows() {
                let r = self.row;
                let (text_id, layer, query) =
                    (text_ids.value(r), layers.value(r), queries.value(r));
                if let Some(o) = &out
                    && (o.text_id != text_id || o.layer != layer || o.query != query)
                {
                    return Ok(out);
                }
                self.row += 1;
                let values = lists.value(r);
                let values = typed_column::<Float32Array>(&values, "attention")?;
                let o = out.get_or_insert_with(|| AttentionRow {
                    text_id: text_id.to_string(),
                    text_index: text_index.value(r),
                    layer,
                    query,
                    heads: 0,
                    keys: values.len(),
                    weights: Vec::new(),
                });
                if values.len() != o.keys {
                    return Err(TableError::Invalid(
                        "attention heads of one query differ in length".into(),
                    ));
                }
                o.weights.extend_from_slice(values.values());
                o.heads += 1;
            }
        }
    }
}

impl Iterator for AttentionReader {
    type Item = Result<AttentionRow, TableError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("att.parquet");
        let rows: Vec<AttentionRow> = (0..3)
            .map(|i| AttentionRow {
                text_id: format!("t{}", i / 2),
                text_index: (i / 2) as u32,
                layer: 1 + i % 2,
                query: 4,
                heads: 2,
                keys: 5,
                weights: (0..10).map(|k| (k + i) as f32 / 10.0).collect(),
            })
            .collect();
        let mut w = AttentionWriter::create(&path, vec![]).unwrap();
        for r in &rows {
            w.push(r).unwrap();
        }
        w.finish().unwrap();
        let back: Vec<AttentionRow> = AttentionReader::open(&path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, rows);
    }
}
