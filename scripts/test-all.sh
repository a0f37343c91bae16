#!/usr/bin/env bash
# Run the collection's test stages and print one closing line `total: N passed, N failed`.
#   scripts/test-all.sh [lint] [sanity] [units] [testbed] [fleet] [vm] [molecule]   (default: all)
# Expects the environment from `source "$(scripts/setup.sh)"` (the Makefile does that).
# PYTEST_ARGS narrows the vm stage (e.g. PYTEST_ARGS=tests/vm/test_usb_reset.py).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAGES=("$@")
((${#STAGES[@]})) || STAGES=(lint sanity units testbed fleet vm molecule)
LOGDIR=${ONEKVM_TEST_LOGS:-$ROOT/tests/output/logs/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGDIR"
# a private copy per run: ansible-test needs .../ansible_collections/onekvm/fleet, and runs
# started side by side must not resync each other's tree
WORK=$(mktemp -d "${TMPDIR:-/tmp}/onekvm-fleet-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
COPY=$("$ROOT/scripts/sync-collection.sh" "$WORK/ansible_collections/onekvm/fleet")
export ANSIBLE_COLLECTIONS_PATH="$WORK"
export PYTHONPATH="${COPY%/ansible_collections/onekvm/fleet}${PYTHONPATH:+:$PYTHONPATH}"
passed=0; failed=0; report=()

# Add a stage's counts: the sum of pytest's summary lines (ansible-test units prints one per
# group) if it printed any, else the stage counts as 1 check.
count() {
  local stage=$1 rc=$2 log=$3 lines p f
  lines=$(grep -E '^(=+ )?([0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)(, )?)+ in [0-9.]+s' "$log")
  if [[ -n $lines ]]; then
    p=$(grep -oE '[0-9]+ passed' <<<"$lines" | awk '{s += $1} END {print s + 0}')
    f=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$lines" | awk '{s += $1} END {print s + 0}')
    ((rc != 0 && f == 0)) && f=1
  elif ((rc == 0)); then p=1; f=0; else p=0; f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  report+=("$(printf '%-9s %s  (%d passed, %d failed, %ss)  log: %s' "$stage" "$([[ $rc == 0 ]] && echo ok || echo FAILED)" "$p" "$f" "$SECONDS_STAGE" "$log")")
}

run_stage() {
  local stage=$1; shift
  local log="$LOGDIR/$stage.log" start=$SECONDS rc
  echo "=== $stage: $*"
  ( "$@" ) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  SECONDS_STAGE=$((SECONDS - start))
  count "$stage" "$rc" "$log"
}

for stage in "${STAGES[@]}"; do
  case $stage in
    lint)     run_stage lint bash -c "cd '$ROOT' && ansible-lint --offline --profile production" ;;
    sanity)   run_stage sanity bash -c "cd '$COPY' && ansible-test sanity --requirements --python 3.13 --color no" ;;
    units)    run_stage units bash -c "cd '$COPY' && ansible-test units --local --python 3.13 --color no" ;;
    testbed)  run_stage testbed bash -c "cd '$COPY' && python -m pytest -q -p no:cacheprovider tests/testbed" ;;
    fleet)    run_stage fleet bash -c "cd '$COPY' && python -m pytest -v -p no:cacheprovider tests/fleet" ;;
    vm)       run_stage vm bash -c "cd '$COPY' && python -m pytest -v -p no:cacheprovider ${PYTEST_ARGS:-tests/vm}" ;;
    molecule) run_stage molecule bash -c "'$ROOT/scripts/molecule.sh'" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done

echo
echo "=== summary"
printf '%s\n' "${report[@]}"
echo "total: $passed passed, $failed failed"
((failed == 0))
