//! Running lmgeo experiments on a Slurm cluster.
//!
//! The store is the only shared state: every instance that misses it
//! becomes one array task running `lmgeo run-node`, which is idempotent (a
//! committed key is a no-op; otherwise lock, check again, compute, publish,
//! commit). The driver submits with `sbatch`, follows all its jobs with one
//! `squeue` per poll, and trusts the store's action records, not Slurm's
//! job states, for success.
//!
//! - [`commands`]: the Slurm command-line tools and pure parsers of their output.
//! - [`driver`]: attached runs (poll until done) and detached submissions
//!   (one dependent wave per depth).
//! - [`run`]: what a run leaves in its folder for its tasks and for `status`.

pub mod commands;
pub mod driver;
pub mod run;

pub use commands::{Slurm, SlurmCli, SlurmError};
pub use driver::{Detached, DriverError, DriverOptions, run_attached, submit_detached};
pub use run::{ManifestLine, Progress, RunSpec};
