//! `corpus`: texts from hh-rlhf, JSON lines, plain text or the built-in
//! corpora, selected deterministically, as a table.

use std::path::Path;

use lmgeo_dag::{
    ExternalFile, Interface, MetricRow, Node, NodeError, OutputPort, ParamError, RunContext,
};
use lmgeo_data::{CorpusSpec, Format};
use lmgeo_tables::{Cell, Record};

/// The `texts` table columns: `text_id`, `text`, `group`, `field`, `role`,
/// `turn`, `source_line`.
pub struct CorpusNode;

impl Node for CorpusNode {
    type Params = CorpusSpec;
    const KIND: &'static str = "corpus";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "texts from hh-rlhf, JSON lines, plain text or the built-in corpora";

    fn interface(&self, spec: &CorpusSpec) -> Result<Interface, ParamError> {
        spec.validate()
            .map_err(|e| ParamError::node(e.to_string()))?;
        if spec.filter().needs_tokens() {
            return Err(ParamError::node(
                "token-count filters need the model's tokenizer: use `min_tokens`/`max_tokens` on the `extract` node",
            ));
        }
        let mut interface = Interface {
            outputs: vec![OutputPort::published(
                "texts",
                "the selected texts, one row each",
            )],
            ..Interface::default()
        };
        match (&spec.format, &spec.path) {
            (Format::Builtin, _) => {
                // Built-in corpora are compiled in: their content is part of
                // the key through this digest.
                let name = spec
                    .name
                    .clone()
                    .unwrap_or_else(|| lmgeo_data::MINI.to_string());
                let source = lmgeo_data::builtin_source(&name).ok_or_else(|| {
                    ParamError::field(
                        "name",
                        format!(
                            "`{name}` is not a built-in corpus; use one of {}",
                            lmgeo_data::BUILTIN_NAMES.join(", ")
                        ),
                    )
                })?;
                interface.environment.push((
                    "builtin_corpus".into(),
                    blake3::hash(source.as_bytes()).to_hex().to_string(),
                ));
            }
            (_, Some(path)) => interface.files.push(ExternalFile {
                path: path.clone(),
                known_digest: None,
            }),
            (_, None) => return Err(ParamError::field("path", "is required for this format")),
        }
        Ok(interface)
    }

    fn run(&self, spec: &CorpusSpec, ctx: &mut RunContext<'_>) -> Result<(), NodeError> {
        let loaded = spec.load()?;
        let corpus = spec.select_from(&loaded, |_| 0)?;
        if corpus.is_empty() {
            let source = match &spec.path {
                Some(path) => path.display().to_string(),
                None => format!("the corpus `{}`", loaded.name()),
            };
            return Err(NodeError::msg(if loaded.is_empty() {
                format!(
                    "{source} holds no texts (it is empty, or has only blank lines): point `path` at a corpus file, or check that the file was written completely"
                )
            } else {
                format!(
                    "none of the {} texts of {source} passes the filters: relax `min_chars`/`max_chars` (an empty text is dropped unless min_chars = 0)",
                    loaded.len()
                )
            }));
        }
        write_texts(corpus.texts(), &ctx.output_path("texts")?)?;
        ctx.emit(MetricRow::new("texts", corpus.len() as f64));
        ctx.emit(MetricRow::new("groups", corpus.groups().len() as f64));
        Ok(())
    }
}

pub fn write_texts(texts: &[lmgeo_data::Text], path: &Path) -> Result<(), NodeError> {
    let records: Vec<Record> = texts
        .iter()
        .map(|t| {
            vec![
                ("text_id".into(), Cell::Str(t.id.clone())),
                ("text".into(), Cell::Str(t.text.clone())),
                ("group".into(), Cell::Str(t.unit_key().to_string())),
                ("field".into(), t.field.clone().into()),
                ("role".into(), t.role.clone().into()),
                ("turn".into(), t.turn.into()),
                ("source_line".into(), Cell::Int(t.source_line as i64)),
            ]
        })
        .collect();
    let mut frame = lmgeo_tables::frame_from_records(&records)?;
    // Columns that are null for every text of a corpus still get their type.
    lmgeo_tables::set_column_type(&mut frame, "field", lmgeo_tables::ColumnKind::Str)?;
    lmgeo_tables::set_column_type(&mut frame, "role", lmgeo_tables::ColumnKind::Str)?;
    lmgeo_tables::set_column_type(&mut frame, "turn", lmgeo_tables::ColumnKind::Int)?;
    lmgeo_tables::write_parquet(&mut frame, path)?;
    Ok(())
}

/// Texts read back from a `texts` table: (id, text, group).
pub fn read_texts(path: &Path) -> Result<Vec<(String, String, String)>, NodeError> {
    let frame = lmgeo_tables::read_parquet(path)?;
    let ids = frame.column("text_id")?.str()?.clone();
    let texts = frame.column("text")?.str()?.clone();
    let groups = frame.column("group")?.str()?.clone();
    Ok(ids
        .iter()
        .zip(texts.iter())
        .zip(groups.iter())
        .map(|((id, text), group)| {
            (
                id.unwrap_or_default().to_string(),
                text.unwrap_or_default().to_string(),
                group.unwrap_or_default().to_string(),
            )
        })
        .collect())
}
