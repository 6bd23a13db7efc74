//! A sweep whose axes multiply to a billion instances is refused before any
//! instance is made: the product is counted first. Its own test binary, so
//! that the peak memory of the children it waits for is only `lmgeo`'s here.

mod common;

/// `n` distinct integers as a TOML array.
fn values(n: usize, start: usize) -> String {
    let items: Vec<String> = (start..start + n).map(|v| v.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Peak resident memory (KiB) of the waited-for children of this process.
fn children_max_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: initialised by the successful call above.
    unsafe { usage.assume_init() }.ru_maxrss
}

#[test]
fn a_billion_instance_sweep_is_refused_by_counting_first() {
    let tmp = tempfile::tempdir().unwrap();
    // 1000 seeds x 1000 row counts x 1000 column counts = 10^9 instances.
    let experiment = format!(
        "name = \"huge\"\n[nodes.data]\nkind = \"synthetic_matrix\"\ntexts = 1\ngrid = {{ seed = {}, rows = {}, cols = {} }}\n",
        values(1000, 1),
        values(1000, 8),
        values(1000, 8)
    );
    let file = tmp.path().join("huge.toml");
    std::fs::write(&file, experiment).unwrap();
    let store = tmp.path().join("store");
    let started = std::time::Instant::now();
    for command in ["plan", "run"] {
        let run = common::run(&[
            "--store",
            store.to_str().unwrap(),
            command,
            file.to_str().unwrap(),
        ]);
        let stderr = run.stderr();
        assert_eq!(run.code(), Some(2), "{command}:\n{stderr}");
        assert!(!stderr.contains("panicked at"), "{stderr}");
        for text in [
            "huge.toml:2:8: node `data` would expand to 1000000000 instances, over the limit of 1000000",
            "`seed` (1000) x `rows` (1000) x `cols` (1000)",
            "max_instances = N",
        ] {
            assert!(stderr.contains(text), "missing `{text}` in:\n{stderr}");
        }
    }
    assert!(
        !store.exists(),
        "a refused experiment must not touch the store"
    );
    // A billion instances would take minutes and hundreds of GiB; counting
    // takes neither. The binary alone is tens of MiB.
    let rss_mib = children_max_rss_kib() / 1024;
    assert!(rss_mib < 300, "lmgeo peaked at {rss_mib} MiB");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "refusing took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_limit_is_the_experiments_to_raise() {
    let tmp = tempfile::tempdir().unwrap();
    // An experiment axis used by two nodes, and a node axis: 3 + 3 x 4 = 15
    // instances in all.
    let experiment = format!(
        "name = \"limit\"\nmax_instances = 14\n[grid]\nseed = {}\n[nodes.data]\nkind = \"synthetic_matrix\"\nseed = \"${{seed}}\"\n[nodes.more]\nkind = \"synthetic_matrix\"\nseed = \"${{seed}}\"\ngrid = {{ rows = {} }}\n",
        values(3, 1),
        values(4, 8)
    );
    let file = tmp.path().join("limit.toml");
    std::fs::write(&file, experiment).unwrap();
    let store = tmp.path().join("store");
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "--store",
            store.to_str().unwrap(),
            "plan",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        common::run(&args)
    };
    let refused = plan(&[]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr());
    assert!(
        refused.stderr().contains(
            "node `more` would expand to 12 instances, over the limit of 14 for the whole experiment (3 before it)"
        ),
        "{}",
        refused.stderr()
    );
    let raised = plan(&["--set", "max_instances=15"]);
    assert!(raised.success(), "{}", raised.stderr());
    assert!(
        raised.stdout().contains("15 nodes: 0 cached, 15 will run"),
        "{}",
        raised.stdout()
    );
    let invalid = plan(&["--set", "max_instances=0"]);
    assert_eq!(invalid.code(), Some(2));
    assert!(
        invalid
            .stderr()
            .contains("`max_instances` must be a positive integer, found 0"),
        "{}",
        invalid.stderr()
    );
}
