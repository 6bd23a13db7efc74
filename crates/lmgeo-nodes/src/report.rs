//! Report sections: nodes that test a claim of the paper publish a `section`
//! output (JSON of [`lmgeo_report::Section`]); the command line assembles
//! them, in graph order, into `report.md` and `report.html`.

use lmgeo_dag::{NodeError, OutputPort, RunContext};
use lmgeo_report::Section;

/// The output port of a node that publishes a report section.
pub fn section_output() -> OutputPort {
    OutputPort::published(Section::OUTPUT, "the report section").with_extension("json")
}

pub fn write_section(ctx: &RunContext<'_>, section: &Section) -> Result<(), NodeError> {
    let json =
        serde_json::to_vec_pretty(section).map_err(|e| NodeError::msg(format!("section: {e}")))?;
    std::fs::write(ctx.output_path(Section::OUTPUT)?, json)?;
    Ok(())
}
