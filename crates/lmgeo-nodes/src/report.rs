//! Report sections: nodes that test a claim of the paper publish a `section`
//! output (JSON of [`lmgeo_report::Section`]); the command line assembles
//! them, in graph order, into `report.md` and `report.html`.

use lmgeo_dag::{NodeError, RunContext};
use lmgeo_report::Section;

pub fn write_section(ctx: &RunContext<'_>, section: &Section) -> Result<(), NodeError> {
    let json =
        serde_json::to_vec_pretty(section).map_err(|e| NodeError::msg(format!("section: {e}")))?;
    std::fs::write(ctx.output_path("section")?, json)?;
    Ok(())
}
