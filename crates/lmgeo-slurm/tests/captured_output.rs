//! The parsers against output captured from a real Slurm 22.05
//! (`tests/fixtures/slurm/`, see its README for the commands).

use std::path::PathBuf;

use lmgeo_slurm::commands::{JobState, parse_max_array_size, parse_sbatch_parsable, parse_squeue};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/slurm")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Timeline captures hold several snapshots separated by `# +Ns` lines.
fn snapshots(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in text.lines() {
        if line.starts_with('#') {
            out.push(String::new());
        } else {
            let last = out.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    out
}

#[test]
fn every_captured_squeue_output_parses() {
    let mut files = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("squeue-")
            || name.contains(".more-fields")
            || name.contains("without--array")
        {
            continue;
        }
        if name.ends_with(".exit.txt") || name.ends_with(".stderr.txt") {
            continue;
        }
        files += 1;
        for snapshot in snapshots(&read(&name)) {
            let entries = parse_squeue(&snapshot).unwrap_or_else(|e| panic!("{name}: {e}"));
            for e in entries {
                assert!(
                    !e.job.is_empty() && e.job.chars().all(|c| c.is_ascii_digit()),
                    "{name}: {e:?}"
                );
            }
        }
    }
    assert!(files >= 10, "only {files} squeue captures");
}

#[test]
fn a_throttled_array_lists_each_task_with_its_reason() {
    let entries = parse_squeue(&read("squeue-array-throttled-1-running.txt")).unwrap();
    assert_eq!(entries.len(), 8);
    let running = entries
        .iter()
        .filter(|e| e.state == JobState::Alive("RUNNING".into()))
        .count();
    assert_eq!(running, 2);
    assert!(
        entries
            .iter()
            .filter(|e| e.state.name() == "PENDING")
            .all(|e| e.reason == "JobArrayTaskLimit")
    );
    let mut tasks: Vec<u32> = entries.iter().map(|e| e.task.unwrap()).collect();
    tasks.sort();
    assert_eq!(tasks, (0..8).collect::<Vec<_>>());
}

#[test]
fn ended_jobs_read_as_ended_and_requeued_ones_as_alive() {
    for (file, state) in [
        ("squeue-completed.txt", "COMPLETED"),
        ("squeue-failed.txt", "FAILED"),
        ("squeue-cancelled.txt", "CANCELLED"),
        ("squeue-dependency-never-satisfied-kill.txt", "CANCELLED"),
    ] {
        let entries = parse_squeue(&read(file)).unwrap();
        assert!(!entries.is_empty(), "{file}");
        assert!(
            entries
                .iter()
                .all(|e| e.state == JobState::Ended(state.into())),
            "{file}: {entries:?}"
        );
    }
    // After `scontrol requeue` and preemption the tasks wait to run again.
    for file in [
        "squeue-requeue-1-timeline.txt",
        "squeue-preempt-1-timeline.txt",
    ] {
        for snapshot in snapshots(&read(file)) {
            for e in parse_squeue(&snapshot).unwrap() {
                assert!(matches!(e.state, JobState::Alive(_)), "{file}: {e:?}");
            }
        }
    }
    assert!(
        parse_squeue(&read("squeue-empty.stdout.txt"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn sbatch_and_scontrol_captures() {
    assert!(parse_sbatch_parsable(&read("sbatch-parsable-array.stdout.txt")).is_ok());
    assert!(parse_sbatch_parsable(&read("sbatch-parsable-plain.stdout.txt")).is_ok());
    assert_eq!(
        parse_max_array_size(&read("scontrol-show-config.txt")),
        1001
    );
}
