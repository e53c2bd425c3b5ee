#!/usr/bin/env bash
# The fault matrix (services/fantasy/tests/faults.rs): every cell, one at a
# time (so recovery times are not skewed by a neighbour), then the table for
# benches/RESULTS.md from what each cell wrote.
#
#   scripts/fault-matrix.sh                 # every cell
#   scripts/fault-matrix.sh postgres        # the cells whose name matches
#
# The README's test command runs the same cells, two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
out=target/tmp/fault-matrix
rm -rf "$out"
cargo build --workspace --bins
status=0
cargo nextest run -p fantasy --test faults --test-threads 1 --no-fail-fast "$@" || status=$?
python3 - "$out" <<'PY'
import json, pathlib, sys
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
print("| cell | fault | longest pause in predictions (s) | recovery (s) | frames delivered | cell wall time (s) |")
print("|---|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| `{r['cell']}` | {r['fault']} | {r['pause_s']:.1f} | {r['recovery_s']:.1f} | "
          f"{r['frames']} | {r['test_s']:.0f} |")
PY
exit "$status"
