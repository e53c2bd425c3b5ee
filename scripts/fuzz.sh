#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (cargo fuzz) and runs each for a
# bounded time, seeded from the checked-in corpus (fuzz/corpus/<target>/,
# copied to a scratch directory so runs never touch the repository).
#
#   bash scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh codec espn
#
# Settings (environment):
#   FUZZ_SECONDS    seconds per target (default 60; libFuzzer -max_total_time)
#   FUZZ_JOBS       targets run at once (default 1)
#   FUZZ_SANITIZER  address (default) or none: cargo fuzz --sanitizer
#   FUZZ_FEATURES   features of the fuzz crate (default: collector). Empty
#                   leaves out `collector_config`, which builds the whole
#                   collector crate (~400 crates); the other targets compile
#                   the parser modules alone (fuzz/src/lib.rs)
#   FUZZ_SCRATCH    scratch directory (default: a new one under ${TMPDIR:-/tmp})
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang
#                   (default 10; libFuzzer -timeout)
#   FUZZ_RSS_MB     memory limit in MiB (default 2048; libFuzzer -rss_limit_mb)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable
# toolchain RUSTC_BOOTSTRAP=1 is set, as cargo fuzz passes nightly flags.
# Exits non-zero if any target found a crash, a panic, a hang or an OOM,
# and prints where each input that did it was saved.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/fuzz"

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-address}
features=${FUZZ_FEATURES-collector}
timeout=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
scratch=${FUZZ_SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/fantasy-fuzz.XXXXXX")}
mkdir -p "$scratch"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
echo "fuzz.sh: building the targets (sanitizer: $sanitizer)"
build=(cargo fuzz build -O --sanitizer "$sanitizer")
if [ -n "$features" ]; then
    build+=(--features "$features")
fi
nice -n 19 "${build[@]}"
bin_dir="$root/fuzz/target/$triple/release"

# Runs one target; its log is $scratch/<target>.log, its findings are under
# $scratch/artifacts/<target>/.
run_one() {
    local t=$1
    if [ ! -x "$bin_dir/$t" ]; then
        echo skipped >"$scratch/$t.rc"
        return
    fi
    local corpus="$scratch/corpus/$t" artifacts="$scratch/artifacts/$t/"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$root/fuzz/corpus/$t" ]; then
        cp -r "$root/fuzz/corpus/$t/." "$corpus/"
    fi
    local rc=0
    nice -n 19 "$bin_dir/$t" "$corpus" \
        -max_total_time="$seconds" \
        -timeout="$timeout" \
        -rss_limit_mb="$rss_mb" \
        -artifact_prefix="$artifacts" \
        -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$scratch/$t.rc"
}

echo "fuzz.sh: running each target for ${seconds}s, $jobs at a time; scratch: $scratch"
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=0
printf '\n%-18s %12s %10s %8s  %s\n' target executions exec/s corpus result
for t in "${targets[@]}"; do
    log="$scratch/$t.log"
    rc=$(cat "$scratch/$t.rc")
    if [ "$rc" = skipped ]; then
        printf '%-18s %12s %10s %8s  %s\n' "$t" - - - "skipped (not built with FUZZ_FEATURES=$features)"
        continue
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    files=$(find "$scratch/corpus/$t" -type f | wc -l)
    mapfile -t found < <(find "$scratch/artifacts/$t" -type f \
        \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | sort)
    if [ "$rc" -eq 0 ] && [ "${#found[@]}" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc)"
        failed=1
    fi
    printf '%-18s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$files" "$result"
    for f in "${found[@]}"; do
        echo "    input: $f"
        echo "    replay: $bin_dir/$t $f"
    done
    if [ "$result" != ok ]; then
        echo "    log: $log"
    fi
done
exit "$failed"
