#!/usr/bin/env bash
# Run the benchmarks and print their figures (they are measurements, not tests).
#   scripts/bench.sh [benchmarks/NAME.py ...]     (default: all)
# Expects the environment from `source "$(scripts/setup.sh)"` (the Makefile does that).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/onekvm-fleet-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
COPY=$("$ROOT/scripts/sync-collection.sh" "$WORK/ansible_collections/onekvm/fleet")
export ANSIBLE_COLLECTIONS_PATH="$WORK" PYTHONPATH="$WORK"
cd "$COPY"
mkdir -p "$ROOT/tests/output"
scripts=("$@")
((${#scripts[@]})) || mapfile -t scripts < <(ls benchmarks/*.py)
for s in "${scripts[@]}"; do
  echo "=== $s"
  python3 "$s"
done 2>&1 | tee "$ROOT/tests/output/bench.txt"
