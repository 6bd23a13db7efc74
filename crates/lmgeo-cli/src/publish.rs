//! After a run: the tidy results tables, the published per-node tables and
//! a run record in the output folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lmgeo_dag::{Graph, RunReport, Scalar, Store};
use lmgeo_tables::{Cell, ResultRow};

/// Where a run's outputs went.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub out_dir: PathBuf,
    pub report_html: PathBuf,
    pub results_parquet: PathBuf,
    pub results_csv: PathBuf,
    pub rows: usize,
}

pub fn cell(scalar: &Scalar) -> Cell {
    match scalar {
        Scalar::String(s) => Cell::Str(s.clone()),
        Scalar::Integer(i) => Cell::Int(*i),
        Scalar::Float(x) => Cell::Float(*x),
        Scalar::Bool(b) => Cell::Bool(*b),
    }
}

/// A file name for an instance id (`entropy[model=a,layer=3]` →
/// `entropy[model=a,layer=3]` with path separators and odd characters
/// replaced).
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// Makes a section served from the cache this node's own. A cached result
/// may have been computed by another node (same kind, parameters and inputs:
/// in this experiment, differing only in a setting outside the key, or in
/// another experiment), and sections name their figures and title after the
/// node that computed them: that node's id, `producer`, is replaced by this
/// one's. Figures still clashing with one already taken are renamed after
/// this node, and the section says so.
fn adopt_section(
    section: &mut lmgeo_report::Section,
    producer: Option<&str>,
    node: &str,
    taken: &mut std::collections::HashSet<String>,
) {
    if let Some(producer) = producer.filter(|p| *p != node) {
        let prefix = format!("{producer}-");
        for figure in &mut section.figures {
            if let Some(rest) = figure.name.strip_prefix(&prefix) {
                figure.name = format!("{node}-{rest}");
            }
        }
        section.title = section
            .title
            .replace(&format!("({producer})"), &format!("({node})"));
    }
    let mut renamed = false;
    for figure in &mut section.figures {
        let mut name = figure.name.clone();
        let mut attempt = 1;
        while taken.contains(&figure_name(&name).to_ascii_lowercase()) {
            name = match attempt {
                1 => format!("{node}-{}", figure.name),
                n => format!("{node}-{}-{n}", figure.name),
            };
            attempt += 1;
        }
        if name != figure.name {
            figure.name = name;
            renamed = true;
        }
        taken.insert(figure_name(&figure.name).to_ascii_lowercase());
    }
    if renamed {
        section.notes.push(format!(
            "Figures of `{node}` are renamed after it: their names were taken by another node's."
        ));
    }
}

/// Writes `results.parquet`, `results.csv`, the published node outputs under
/// `nodes/`, `run.json` and the report into `out`.
pub fn collect_results(
    graph: &Graph,
    store: &Store,
    report: &RunReport,
    out: &Path,
    overrides: &[String],
) -> anyhow::Result<RunSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let nodes_dir = out.join("nodes");
    if nodes_dir.exists() {
        std::fs::remove_dir_all(&nodes_dir)
            .with_context(|| format!("clearing {}", nodes_dir.display()))?;
    }
    let mut rows = Vec::new();
    let mut records = Vec::new();
    let mut sections = Vec::new();
    let mut figure_names = std::collections::HashSet::new();
    for (instance, outcome) in graph.instances.iter().zip(&report.outcomes) {
        let mut published = Vec::new();
        if outcome.status.succeeded() {
            let params = instance.configured.params.to_string();
            let coords: Vec<(String, Cell)> = instance
                .coords
                .iter()
                .map(|(a, v)| (a.clone(), cell(v)))
                .collect();
            for metric in &outcome.metrics {
                rows.push(ResultRow {
                    experiment: graph.experiment.name.clone(),
                    node: instance.id.clone(),
                    kind: instance.kind.name().to_string(),
                    metric: metric.metric.clone(),
                    value: metric.value,
                    coords: coords.clone(),
                    dims: metric
                        .dims
                        .iter()
                        .map(|(d, v)| (d.clone(), cell(v)))
                        .collect(),
                    params: params.clone(),
                });
            }
            let action = outcome
                .action
                .as_ref()
                .expect("a successful node has an action");
            for output in instance
                .configured
                .interface
                .outputs
                .iter()
                .filter(|o| o.publish)
            {
                let blob = &action.outputs[&output.name];
                let source = match store.verified_blob(blob) {
                    Ok(path) => path,
                    Err(e) => {
                        // Discarded, so that running again recomputes it.
                        store.invalidate(&action.key);
                        return Err(e).with_context(|| {
                            format!(
                                "output `{}` of `{}` is corrupt in the store {}; its entry was discarded, run again to recompute it",
                                output.name,
                                instance.id,
                                store.root().display()
                            )
                        });
                    }
                };
                let dir = nodes_dir.join(file_name(&instance.id));
                std::fs::create_dir_all(&dir)?;
                let target = dir.join(format!("{}.{}", output.name, output.extension));
                write_then_rename(&target, |temp| {
                    std::fs::copy(&source, temp)?;
                    Ok(())
                })
                .with_context(|| format!("copying to {}", target.display()))?;
                published.push(
                    target
                        .strip_prefix(out)
                        .unwrap_or(&target)
                        .display()
                        .to_string(),
                );
                if output.name == lmgeo_report::Section::OUTPUT {
                    let mut section: lmgeo_report::Section =
                        serde_json::from_slice(&std::fs::read(&target)?).with_context(|| {
                            format!("reading the report section of `{}`", instance.id)
                        })?;
                    // Several instances of one node publish one section
                    // each: say which one this is.
                    if !instance.coords.is_empty() {
                        section.title = format!("{} ({:#})", section.title, instance.coords);
                    }
                    let producer = outcome.action.as_ref().map(|a| a.node.as_str());
                    adopt_section(&mut section, producer, &instance.id, &mut figure_names);
                    sections.push(section);
                }
            }
        }
        records.push(serde_json::json!({
            "node": instance.id,
            "kind": instance.kind.name(),
            "kind_version": instance.kind.version(),
            "coords": instance.coords.to_json(),
            "params": instance.configured.params,
            "status": outcome.status.to_string(),
            "key": outcome.key,
            "elapsed_ms": outcome.elapsed.as_millis() as u64,
            "compute_ms": outcome.action.as_ref().map(|a| a.elapsed_ms),
            "peak_rss_kib": outcome.action.as_ref().and_then(|a| a.peak_rss_kib),
            "published": published,
        }));
    }
    let mut frame = lmgeo_tables::results_frame(&rows)?;
    let results_parquet = out.join("results.parquet");
    let results_csv = out.join("results.csv");
    write_then_rename(&results_parquet, |temp| {
        Ok(lmgeo_tables::write_parquet(&mut frame, temp)?)
    })?;
    write_then_rename(&results_csv, |temp| {
        Ok(lmgeo_tables::write_csv(&mut frame, temp)?)
    })?;
    let run = serde_json::json!({
        "experiment": graph.experiment.name,
        "file": graph.experiment.file.path.display().to_string(),
        "lmgeo_version": env!("CARGO_PKG_VERSION"),
        "store": store.root().display().to_string(),
        "nodes": records,
    });
    let bytes = serde_json::to_vec_pretty(&run)?;
    write_then_rename(&out.join("run.json"), |temp| {
        Ok(std::fs::write(temp, &bytes)?)
    })?;
    let written = write_report(graph, store, report, out, overrides, sections)?;
    Ok(RunSummary {
        out_dir: out.to_path_buf(),
        report_html: written,
        results_parquet,
        results_csv,
        rows: rows.len(),
    })
}

/// Writes a file of the output folder under a temporary name beside it and
/// renames it into place: a run killed while publishing leaves the previous
/// file or the new one, never a torn one.
fn write_then_rename(
    target: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let written = write(&temp).and_then(|()| {
        std::fs::File::open(&temp)?.sync_all()?;
        std::fs::rename(&temp, target)?;
        Ok(())
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("writing {}", target.display()))
}

/// A figure name safe as a file name.
fn figure_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.trim_start_matches('.').chars().take(120).collect()
}

/// `report.md` and `report.html` from the sections nodes published, in graph
/// order, with the settings that produced them.
fn write_report(
    graph: &Graph,
    store: &Store,
    run: &RunReport,
    out: &Path,
    overrides: &[String],
    mut sections: Vec<lmgeo_report::Section>,
) -> anyhow::Result<PathBuf> {
    let experiment = &graph.experiment;
    let title = match &experiment.description {
        Some(d) => format!("{}: {d}", experiment.name),
        None => experiment.name.clone(),
    };
    // The experiment file says what its claims are and where they come
    // from; the generic part says only how the report was made.
    let mut intro = format!(
        "Generated by lmgeo {} from {}.",
        env!("CARGO_PKG_VERSION"),
        experiment.file.path.display()
    );
    if let Some(own) = &experiment.report.intro {
        intro = format!("{intro} {}", own.trim());
    }
    let mut report = lmgeo_report::Report::new(title).intro(format!(
        "{intro} Each section states a claim, the evidence this run found, and a verdict; the tables behind the figures are in results.parquet and nodes/."
    ));
    report = report
        .setting(
            "experiment file",
            experiment.file.path.display().to_string(),
        )
        .setting("lmgeo version", env!("CARGO_PKG_VERSION"))
        .setting(
            "overrides",
            if overrides.is_empty() {
                "none".to_string()
            } else {
                overrides.join(" ")
            },
        );
    let failed = run
        .outcomes
        .iter()
        .filter(|o| !o.status.succeeded())
        .count();
    report = report.setting(
        "nodes",
        format!("{} ({failed} not successful)", graph.instances.len()),
    );
    for (instance, outcome) in graph.instances.iter().zip(&run.outcomes) {
        if instance.configured.interface.files.is_empty()
            && instance.configured.interface.environment.is_empty()
        {
            continue;
        }
        let Some(preimage) = outcome.key.as_deref().and_then(|k| store.preimage(k)) else {
            continue;
        };
        for file in &preimage.files {
            report = report.setting(
                format!("{} reads", instance.id),
                format!(
                    "{} (blake3 {})",
                    file.path,
                    &file.digest[..16.min(file.digest.len())]
                ),
            );
        }
        for (key, value) in &preimage.environment {
            report = report.setting(format!("{} {key}", instance.id), value.clone());
        }
        report = report.setting(
            format!("{} parameters", instance.id),
            instance.configured.params.to_string(),
        );
    }
    for section in &mut sections {
        for figure in &mut section.figures {
            figure.name = figure_name(&figure.name);
        }
    }
    for section in sections {
        report = report.section(section);
    }
    let written = report.write(out).context("writing the report")?;
    Ok(written.html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmgeo_report::{LinePlot, NamedFigure, Section, Verdict};

    fn section_of(node: &str) -> Section {
        let plot = LinePlot {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            x_log: false,
            y_log: false,
            series: vec![],
        };
        Section::new(format!("Curves ({node})"), "", Verdict::Inconclusive, "")
            .figure(NamedFigure::new(format!("{node}-curves"), "", plot))
    }

    #[test]
    fn a_section_computed_by_another_node_is_renamed_after_this_one() {
        let mut taken = std::collections::HashSet::new();
        let mut own = section_of("first");
        adopt_section(&mut own, Some("first"), "first", &mut taken);
        let mut shared = section_of("first");
        adopt_section(&mut shared, Some("first"), "second[k=1]", &mut taken);
        assert_eq!(shared.figures[0].name, "second[k=1]-curves");
        assert_eq!(shared.title, "Curves (second[k=1])");
        assert!(shared.notes.is_empty());
    }

    #[test]
    fn names_still_clashing_are_renamed_after_the_node_with_a_note() {
        let mut taken = std::collections::HashSet::new();
        let mut first = section_of("x");
        adopt_section(&mut first, None, "a", &mut taken);
        // Same name, and no producer to rename from (case differs only).
        let mut second = section_of("X");
        adopt_section(&mut second, None, "b", &mut taken);
        assert_eq!(first.figures[0].name, "x-curves");
        assert_eq!(second.figures[0].name, "b-X-curves");
        assert_eq!(second.notes.len(), 1);
        let mut third = section_of("x");
        adopt_section(&mut third, None, "b", &mut taken);
        assert_eq!(third.figures[0].name, "b-x-curves-2");
    }
}
