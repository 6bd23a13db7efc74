#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/) for a fixed number of executions each,
# seeded from the repository's own inputs, then minimises each corpus.
#
#   scripts/fuzz/run.sh [RUNS] [TARGET...]     # default: 200000, spec set manifest
#   FUZZ_JOBS=2 scripts/fuzz/run.sh 1000000 spec
#   FUZZ_MAX_TIME=600 scripts/fuzz/run.sh 200000   # stop a target after 600 s
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Crashes land in fuzz/artifacts/TARGET/; copy them, with the minimised
# corpus (fuzz/corpus/TARGET after the run), to tests/fuzz-regressions/TARGET/
# so that tests/fuzz_regressions.rs replays them on stable.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-200000}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(spec set manifest)
jobs=${FUZZ_JOBS:-1}
max_time=${FUZZ_MAX_TIME:-0}
# -jobs=1 would still fork a worker that logs to a file: only ask for jobs
# when there are several.
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")

cd "$root/fuzz"
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    # Seeds: what the repository already knows about each input, and the
    # regression files of earlier runs.
    case "$target" in
        spec) seeds=("$root"/tests/malformed/*.toml "$root"/experiments/*.toml "$root"/tests/fixtures/*.toml) ;;
        set) seeds=("$root"/fuzz/seeds/set/*) ;;
        manifest) seeds=("$root"/examples/plugins/*/plugin.toml) ;;
        *) echo "unknown target $target (spec, set, manifest)" >&2; exit 2 ;;
    esac
    if [ -d "$root/tests/fuzz-regressions/$target" ]; then
        seeds+=("$root/tests/fuzz-regressions/$target"/*)
    fi
    for seed in "${seeds[@]}"; do
        [ -f "$seed" ] && cp "$seed" "$corpus/seed-$(basename "$(dirname "$seed")")-$(basename "$seed")"
    done
    echo "== $target: $runs executions, corpus $(ls "$corpus" | wc -l) files"
    start=$(date +%s)
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that
    # needs 2 GiB is a memory blow-up. Both count as crashes.
    cargo +nightly fuzz run --sanitizer none "$target" "$corpus" -- \
        -runs="$runs" -max_total_time="$max_time" "${parallel[@]}" \
        -dict=dict/toml.dict -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | tee "artifacts/$target/last-run.log" | grep -E "^(#[0-9]+\s+(DONE|INITED)|stat::|==|SUMMARY|Test unit written|panicked)" || true
    echo "== $target: $(( $(date +%s) - start )) s"
    cargo +nightly fuzz cmin --sanitizer none "$target" "$corpus" >/dev/null 2>&1 || true
    echo "== $target: minimised corpus $(ls "$corpus" | wc -l) files; crashes: $(ls "artifacts/$target" | grep -c -E '^(crash|timeout|oom|slow-unit)-' || true)"
done
