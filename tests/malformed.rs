//! Every file in tests/malformed/ is an experiment with one mistake. Each
//! starts with `# expect: <text>` lines: the error output must contain each
//! text (the location `file:line:col`, the offending key, what is valid),
//! the exit code must be 2, and the store must be left untouched.

mod common;

use std::path::PathBuf;

#[test]
fn malformed_experiments_are_rejected_with_located_messages() {
    let dir = common::repo_root().join("tests/malformed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} malformed files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let store = tempfile::tempdir().unwrap();
        let store_path = store.path().join("store");
        let relative = file.strip_prefix(common::repo_root()).unwrap();
        for command in ["run", "plan"] {
            let run = common::run(&[
                "--store",
                store_path.to_str().unwrap(),
                command,
                relative.to_str().unwrap(),
            ]);
            let stderr = run.stderr();
            if run.code() != Some(2) {
                failures.push(format!(
                    "{} ({command}): exit code {:?}\n{stderr}",
                    file.display(),
                    run.code()
                ));
            }
            for e in &expected {
                if !stderr.contains(e) {
                    failures.push(format!(
                        "{} ({command}): missing `{e}` in:\n{stderr}",
                        file.display()
                    ));
                }
            }
            if store_path.exists() {
                failures.push(format!(
                    "{} ({command}): the store was created",
                    file.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
