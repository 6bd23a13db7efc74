//! The embedding table: every token's vector at every extracted layer, one
//! row per (text, layer, position), streamed to and from Parquet.
//!
//! Rows are grouped by text, then layer, then position, so a reader can hand
//! out one `n x d` matrix per (text, layer) while holding only one record
//! batch and one matrix in memory.
//!
//! Columns: `text_id` (utf8), `text_index` (u32), `layer` (i32), `position`
//! (u32), `token_id` (u32), `token` (utf8), `vector` (fixed-size list of f32).
//! Layer 0 is the embedding output, 1..=L the blocks, and L+1 the final norm
//! where the model has one (see the `final_norm_layer` metadata key).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, FixedSizeListBuilder, Float32Array, Float32Builder,
    Int32Array, Int32Builder, RecordBatch, StringArray, StringBuilder, UInt32Array, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::{TableError, typed_column};

/// One (text, layer) matrix to append.
pub struct MatrixRows<'a> {
    pub text_id: &'a str,
    pub text_index: u32,
    pub layer: i32,
    pub token_ids: &'a [u32],
    pub tokens: &'a [String],
    /// Row-major `n x hidden`.
    pub data: &'a [f32],
}

/// One (text, layer) matrix read back.
#[derive(Clone, Debug, PartialEq)]
pub struct TextMatrix {
    pub text_id: String,
    pub text_index: u32,
    pub layer: i32,
    pub token_ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub rows: usize,
    pub cols: usize,
    /// Row-major `rows x cols`.
    pub data: Vec<f32>,
}

impl TextMatrix {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

fn schema(hidden: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text_id", DataType::Utf8, false),
        Field::new("text_index", DataType::UInt32, false),
        Field::new("layer", DataType::Int32, false),
        Field::new("position", DataType::UInt32, false),
        Field::new("token_id", DataType::UInt32, false),
        Field::new("token", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                hidden as i32,
            ),
            false,
        ),
    ]))
}

/// Rows per record batch (and at most per row group): bounds writer memory.
const BATCH_ROWS: usize = 16 * 1024;

/// Streams (text, layer) matrices into a Parquet file.
pub struct EmbeddingWriter {
    path: PathBuf,
    hidden: usize,
    schema: Arc<Schema>,
    writer: ArrowWriter<File>,
    text_id: StringBuilder,
    text_index: UInt32Builder,
    layer: Int32Builder,
    position: UInt32Builder,
    token_id: UInt32Builder,
    token: StringBuilder,
    vector: FixedSizeListBuilder<Float32Builder>,
    buffered: usize,
    rows: u64,
}

/// Writer settings fixed so the same rows give the same bytes.
fn writer_properties(metadata: Vec<(String, String)>) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(BATCH_ROWS * 4))
        .set_created_by(format!("lmgeo-tables {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(
            metadata
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v))
                .collect(),
        ))
        .build()
}

impl EmbeddingWriter {
    pub fn create(
        path: &Path,
        hidden: usize,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, TableError> {
        if hidden == 0 {
            return Err(TableError::Invalid("hidden size must be positive".into()));
        }
        let file = File::create(path).map_err(|e| TableError::io(path, e))?;
        let schema = schema(hidden);
        let mut metadata = metadata;
        metadata.push(("lmgeo.table".into(), "embeddings".into()));
        metadata.push(("lmgeo.hidden_size".into(), hidden.to_string()));
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(metadata)))?;
        Ok(Self {
            path: path.to_path_buf(),
            hidden,
            schema,
            writer,
            text_id: StringBuilder::new(),
            text_index: UInt32Builder::new(),
            layer: Int32Builder::new(),
            position: UInt32Builder::new(),
            token_id: UInt32Builder::new(),
            token: StringBuilder::new(),
            vector: FixedSizeListBuilder::new(Float32Builder::new(), hidden as i32)
                .with_field(Arc::new(Field::new("item", DataType::Float32, false))),
            buffered: 0,
            rows: 0,
        })
    }

    pub fn push(&mut self, m: &MatrixRows<'_>) -> Result<(), TableError> {
        let n = m.token_ids.len();
        if m.tokens.len() != n || m.data.len() != n * self.hidden {
            return Err(TableError::Invalid(format!(
                "text `{}` layer {}: {} token ids, {} token strings and {} values for hidden size {}",
                m.text_id,
                m.layer,
                n,
                m.tokens.len(),
                m.data.len(),
                self.hidden
            )));
        }
        for i in 0..n {
            self.text_id.append_value(m.text_id);
            self.text_index.append_value(m.text_index);
            self.layer.append_value(m.layer);
            self.position.append_value(i as u32);
            self.token_id.append_value(m.token_ids[i]);
            self.token.append_value(&m.tokens[i]);
            self.vector
                .values()
                .append_slice(&m.data[i * self.hidden..(i + 1) * self.hidden]);
            self.vector.append(true);
        }
        self.buffered += n;
        self.rows += n as u64;
        if self.buffered >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), TableError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.text_id.finish()),
            Arc::new(self.text_index.finish()),
            Arc::new(self.layer.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.token_id.finish()),
            Arc::new(self.token.finish()),
            Arc::new(self.vector.finish()),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.writer.write(&batch)?;
        self.buffered = 0;
        Ok(())
    }

    /// Writes what is buffered and closes the file; returns the row count.
    pub fn finish(mut self) -> Result<u64, TableError> {
        self.flush_batch()?;
        self.writer.close()?;
        let _ = &self.path;
        Ok(self.rows)
    }
}

/// What the `extract` step records about an embedding table, in its
/// Parquet key-value metadata (`lmgeo.*` keys); the probes read it back
/// with [`Extraction::of`]. One owner for the keys, so writer and readers
/// cannot drift apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extraction {
    /// The model as the experiment named it.
    pub model: String,
    pub architecture: String,
    /// Where it ran (`cpu`, `cuda:0`).
    pub device: String,
    /// Transformer blocks (layer 0 is the embedding output).
    pub n_layers: usize,
    /// The layer number given to the final norm's output.
    pub final_norm_layer: i32,
    /// The layers the table holds, in the order they were requested.
    pub layers: Vec<i32>,
}

impl Extraction {
    const MODEL: &'static str = "lmgeo.model";
    const ARCHITECTURE: &'static str = "lmgeo.architecture";
    const DEVICE: &'static str = "lmgeo.device";
    const N_LAYERS: &'static str = "lmgeo.n_layers";
    const FINAL_NORM_LAYER: &'static str = "lmgeo.final_norm_layer";
    const LAYERS: &'static str = "lmgeo.layers";

    /// The key-value pairs for [`EmbeddingWriter::create`].
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let layers: Vec<String> = self.layers.iter().map(i32::to_string).collect();
        vec![
            (Self::MODEL.into(), self.model.clone()),
            (Self::ARCHITECTURE.into(), self.architecture.clone()),
            (Self::DEVICE.into(), self.device.clone()),
            (Self::N_LAYERS.into(), self.n_layers.to_string()),
            (
                Self::FINAL_NORM_LAYER.into(),
                self.final_norm_layer.to_string(),
            ),
            (Self::LAYERS.into(), layers.join(",")),
        ]
    }

    /// The record of a table written by `extract`; `None` for tables from
    /// elsewhere (plugins, the demo nodes) or with a damaged record.
    pub fn of(reader: &EmbeddingReader) -> Option<Self> {
        let layers = reader.metadata(Self::LAYERS)?;
        Some(Self {
            model: reader.metadata(Self::MODEL)?.to_string(),
            architecture: reader.metadata(Self::ARCHITECTURE)?.to_string(),
            device: reader.metadata(Self::DEVICE).unwrap_or("cpu").to_string(),
            n_layers: reader.metadata(Self::N_LAYERS)?.parse().ok()?,
            final_norm_layer: reader.metadata(Self::FINAL_NORM_LAYER)?.parse().ok()?,
            layers: if layers.is_empty() {
                Vec::new()
            } else {
                layers
                    .split(',')
                    .map(|l| l.trim().parse().ok())
                    .collect::<Option<Vec<i32>>>()?
            },
        })
    }
}

/// The length of the `vector` column's lists: the hidden size. An error
/// when the file has no such column (it is not an embedding table).
fn vector_width<T>(
    builder: &parquet::arrow::arrow_reader::ArrowReaderBuilder<T>,
    path: &Path,
) -> Result<usize, TableError> {
    match builder
        .schema()
        .field_with_name("vector")
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::FixedSizeList(_, size)) => Ok(size as usize),
        _ => Err(TableError::Invalid(format!(
            "{} is not an lmgeo embedding table (no fixed-size `vector` column)",
            path.display()
        ))),
    }
}

/// Reads an embedding table back as one matrix per (text, layer).
pub struct EmbeddingReader {
    batches: ParquetRecordBatchReader,
    hidden: usize,
    metadata: Vec<(String, String)>,
    current: Option<RecordBatch>,
    row: usize,
    layers: Option<Vec<i32>>,
}

impl EmbeddingReader {
    pub fn open(path: &Path) -> Result<Self, TableError> {
        let file = File::open(path).map_err(|e| TableError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(8 * 1024);
        let metadata: Vec<(String, String)> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let hidden = vector_width(&builder, path)?;
        Ok(Self {
            batches: builder.build()?,
            hidden,
            metadata,
            current: None,
            row: 0,
            layers: None,
        })
    }

    /// Only yield these layers.
    pub fn with_layers(mut self, layers: Vec<i32>) -> Self {
        self.layers = Some(layers);
        self
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn next_matrix(&mut self) -> Result<Option<TextMatrix>, TableError> {
        let mut matrix: Option<TextMatrix> = None;
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
                    None => return Ok(matrix),
                }
            }
            let batch = self.current.as_ref().expect("checked above");
            let column = |name: &str| batch.column_by_name(name).expect("schema checked");
            let text_ids = typed_column::<StringArray>(column("text_id"), "embedding")?;
            let text_index = typed_column::<UInt32Array>(column("text_index"), "embedding")?;
            let layers = typed_column::<Int32Array>(column("layer"), "embedding")?;
            let token_ids = typed_column::<UInt32Array>(column("token_id"), "embedding")?;
            let tokens = typed_column::<StringArray>(column("token"), "embedding")?;
            let vectors = typed_column::<FixedSizeListArray>(column("vector"), "embedding")?;
            let values = typed_column::<Float32Array>(vectors.values(), "embedding")?;
            while self.row < batch.num_rows() {
                let r = self.row;
                let text_id = text_ids.value(r);
                let layer = layers.value(r);
                if let Some(m) = &matrix
                    && (m.text_id != text_id || m.layer != layer)
                {
                    return Ok(matrix);
                }
                self.row += 1;
                if self
                    .layers
                    .as_ref()
                    .is_some_and(|keep| !keep.contains(&layer))
                {
                    continue;
                }
                let m = matrix.get_or_insert_with(|| TextMatrix {
                    text_id: text_id.to_string(),
                    text_index: text_index.value(r),
                    layer,
                    token_ids: Vec::new(),
                    tokens: Vec::new(),
                    rows: 0,
                    cols: self.hidden,
                    data: Vec::new(),
                });
                m.token_ids.push(token_ids.value(r));
                m.tokens.push(tokens.value(r).to_string());
                let start = (vectors.offset() + r) * self.hidden;
                m.data
                    .extend_from_slice(&values.values()[start..start + self.hidden]);
                m.rows += 1;
            }
        }
    }
}

/// How many texts and which layers an embedding table holds, and its width:
/// what a reader needs to plan how much of the table to hold at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingShape {
    pub texts: usize,
    /// Ascending.
    pub layers: Vec<i32>,
    pub hidden: usize,
}

impl EmbeddingShape {
    /// Reads only the `text_id` and `layer` columns (the vectors, nearly all
    /// of the file, are skipped).
    pub fn of(path: &Path) -> Result<Self, TableError> {
        let file = File::open(path).map_err(|e| TableError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(64 * 1024);
        let hidden = vector_width(&builder, path)?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["text_id", "layer"]);
        let mut texts = std::collections::HashSet::new();
        let mut layers = std::collections::BTreeSet::new();
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    TableError::Invalid(format!("{}: no `{name}` column", path.display()))
                })
            };
            let text_ids = typed_column::<StringArray>(column("text_id")?, "embedding")?;
            let layer = typed_column::<Int32Array>(column("layer")?, "embedding")?;
            // Rows come grouped by text, so only a change of text is looked up.
            let mut last: Option<&str> = None;
            for r in 0..batch.num_rows() {
                let id = text_ids.value(r);
                if last != Some(id) {
                    if !texts.contains(id) {
                        texts.insert(id.to_string());
                    }
                    last = Some(id);
                }
                layers.insert(layer.value(r));
            }
        }
        Ok(Self {
            texts: texts.len(),
            layers: layers.into_iter().collect(),
            hidden,
        })
    }
}

impl Iterator for EmbeddingReader {
    type Item = Result<TextMatrix, TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_matrix().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(
        text: &str,
        layer: i32,
        n: usize,
        d: usize,
        base: f32,
    ) -> (Vec<u32>, Vec<String>, Vec<f32>, String, i32) {
        let ids: Vec<u32> = (0..n as u32).collect();
        let tokens: Vec<String> = ids.iter().map(|i| format!("t{i}")).collect();
        let data: Vec<f32> = (0..n * d).map(|i| base + i as f32).collect();
        (ids, tokens, data, text.to_string(), layer)
    }

    fn push(
        w: &mut EmbeddingWriter,
        text_id: &str,
        text_index: u32,
        layer: i32,
        (token_ids, tokens, data): (&[u32], &[String], &[f32]),
    ) {
        w.push(&MatrixRows {
            text_id,
            text_index,
            layer,
            token_ids,
            tokens,
            data,
        })
        .unwrap();
    }

    #[test]
    fn the_extraction_record_reads_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let extraction = Extraction {
            model: "smollm2-135m".into(),
            architecture: "llama".into(),
            device: "cpu".into(),
            n_layers: 30,
            final_norm_layer: 31,
            layers: vec![0, 15, 31],
        };
        let writer = EmbeddingWriter::create(&path, 2, extraction.to_metadata()).unwrap();
        writer.finish().unwrap();
        let reader = EmbeddingReader::open(&path).unwrap();
        assert_eq!(Extraction::of(&reader), Some(extraction));
        // A table written without the record has none.
        let other = dir.path().join("o.parquet");
        EmbeddingWriter::create(&other, 2, vec![])
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(
            Extraction::of(&EmbeddingReader::open(&other).unwrap()),
            None
        );
    }

    #[test]
    fn matrices_round_trip_in_order_and_bytes_are_stable() {
        let dir = tempfile::tempdir().unwrap();
        let d = 3;
        let inputs = vec![
            matrix("a", 0, 2, d, 0.0),
            matrix("a", 1, 2, d, 100.0),
            matrix("b", 0, 5, d, 200.0),
            matrix("b", 1, 5, d, 300.0),
        ];
        let write = |path: &Path| {
            let mut w =
                EmbeddingWriter::create(path, d, vec![("model".into(), "toy".into())]).unwrap();
            for (i, (ids, tokens, data, text, layer)) in inputs.iter().enumerate() {
                push(&mut w, text, (i / 2) as u32, *layer, (ids, tokens, data));
            }
            w.finish().unwrap()
        };
        let first = dir.path().join("a.parquet");
        let second = dir.path().join("b.parquet");
        assert_eq!(write(&first), 14);
        write(&second);
        assert_eq!(
            std::fs::read(&first).unwrap(),
            std::fs::read(&second).unwrap()
        );

        let reader = EmbeddingReader::open(&first).unwrap();
        assert_eq!(reader.metadata("model"), Some("toy"));
        let read: Vec<TextMatrix> = reader.map(Result::unwrap).collect();
        assert_eq!(read.len(), 4);
        for (m, (ids, tokens, data, text, layer)) in read.iter().zip(&inputs) {
            assert_eq!(&m.text_id, text);
            assert_eq!(m.layer, *layer);
            assert_eq!(&m.token_ids, ids);
            assert_eq!(&m.tokens, tokens);
            assert_eq!(&m.data, data);
            assert_eq!(m.cols, d);
        }

        let only_layer_one: Vec<TextMatrix> = EmbeddingReader::open(&first)
            .unwrap()
            .with_layers(vec![1])
            .map(Result::unwrap)
            .collect();
        assert_eq!(only_layer_one.len(), 2);
        assert!(only_layer_one.iter().all(|m| m.layer == 1));
    }

    #[test]
    fn the_shape_counts_texts_and_layers_without_the_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let d = 4;
        let mut w = EmbeddingWriter::create(&path, d, vec![]).unwrap();
        for (t, text) in ["x", "y", "z"].iter().enumerate() {
            for layer in [3, 0, 7] {
                let (ids, tokens, data, _, _) = matrix(text, layer, 2 + t, d, 0.0);
                push(&mut w, text, t as u32, layer, (&ids, &tokens, &data));
            }
        }
        w.finish().unwrap();
        let shape = EmbeddingShape::of(&path).unwrap();
        assert_eq!(
            shape,
            EmbeddingShape {
                texts: 3,
                layers: vec![0, 3, 7],
                hidden: d
            }
        );
    }

    #[test]
    fn matrices_spanning_batches_are_reassembled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let d = 2;
        let n = 9000; // more than one read batch of 8192 rows
        let (ids, tokens, data, _, _) = matrix("long", 0, n, d, 0.0);
        let mut w = EmbeddingWriter::create(&path, d, vec![]).unwrap();
        for layer in 0..2 {
            push(&mut w, "long", 0, layer, (&ids, &tokens, &data));
        }
        w.finish().unwrap();
        let read: Vec<TextMatrix> = EmbeddingReader::open(&path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].rows, n);
        assert_eq!(read[1].data, data);
    }

    #[test]
    fn inconsistent_rows_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EmbeddingWriter::create(&dir.path().join("x.parquet"), 4, vec![]).unwrap();
        let err = w
            .push(&MatrixRows {
                text_id: "t",
                text_index: 0,
                layer: 0,
                token_ids: &[1, 2],
                tokens: &["a".into(), "b".into()],
                data: &[0.0; 7],
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("7 values for hidden size 4"),
            "{err}"
        );
    }
}
