#!/usr/bin/env bash
# Run the collection's test stages and print one closing line `total: N passed, N failed`.
#   scripts/test-all.sh [STAGE ...]      (default: all, in the order below)
# Stages run as nox sessions (noxfile.py; no root, no box): lint changelog docs sanity units
# tooling testbed. Stages that need the box, containers or a browser: fleet vm molecule
# (they need the full environment of `source "$(scripts/setup.sh)"`).
# Counts come from each stage's JUnit XML (tests/output/junit/<stage>/), never from its log.
# PYTEST_ARGS narrows the vm stage (e.g. PYTEST_ARGS=tests/vm/test_usb_reset.py).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAGES=("$@")
((${#STAGES[@]})) || STAGES=(lint changelog docs sanity units tooling testbed fleet vm molecule)
LOGDIR=${ONEKVM_TEST_LOGS:-$ROOT/tests/output/logs/$(date +%Y%m%d-%H%M%S)-$$}
JUNIT=$ROOT/tests/output/junit
mkdir -p "$LOGDIR"
passed=0; failed=0; skipped=0; report=()

nox_session() {   # nox_session SESSION...: run sessions of noxfile.py in their cached venvs
  local envdir=${ONEKVM_NOX_ENVDIR:-$ROOT/.nox}
  nox -f "$ROOT/noxfile.py" --envdir "$envdir" --reuse-existing-virtualenvs --no-color -s "$@"
}

# The stages that need a box, containers or a browser work on a private copy of the checkout
# (ansible-test and playbooks need .../ansible_collections/onekvm/fleet; runs started side by
# side must not resync each other's tree).
COPY=
prepare_copy() {
  [[ -n $COPY ]] && return
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/onekvm-fleet-test.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  COPY=$("$ROOT/scripts/sync-collection.sh" "$WORK/ansible_collections/onekvm/fleet")
  export ANSIBLE_COLLECTIONS_PATH="$WORK"
  export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
}

pytest_in_copy() {   # pytest_in_copy STAGE ARGS...: pytest in the copy, JUnit to the stage's dir
  local stage=$1; shift
  cd "$COPY" && python -m pytest -p no:cacheprovider "--junitxml=$JUNIT/$stage/pytest.xml" "$@"
}

run_stage() {   # run_stage STAGE COMMAND...
  local stage=$1; shift
  local log="$LOGDIR/$stage.log" start=$SECONDS rc p f s counts
  echo "=== $stage: $*"
  rm -rf "${JUNIT:?}/$stage"; mkdir -p "$JUNIT/$stage"
  ( "$@" ) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  counts=$(python3 "$ROOT/scripts/junit_count.py" "$JUNIT/$stage") || counts="0 1 0"
  read -r p f s <<<"$counts"
  # a stage that failed without a failed test case (it could not start, or crashed) is a failure
  ((rc != 0 && f == 0)) && f=1
  # a stage that passed but reported no test case ran nothing: that is a failure too
  ((rc == 0 && p + f == 0)) && f=1
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  report+=("$(printf '%-9s %-6s (%d passed, %d failed, %d skipped, %ss)  log: %s' "$stage" \
    "$([[ $rc == 0 ]] && echo ok || echo FAILED)" "$p" "$f" "$s" "$((SECONDS - start))" "$log")")
}

for stage in "${STAGES[@]}"; do
  case $stage in
    lint|changelog|sanity|units|tooling|testbed) run_stage "$stage" nox_session "$stage" ;;
    docs)     ANTSIBULL_NOX_OUTPUT_JUNIT_XML_PATH=$JUNIT/docs/docs-check.xml run_stage docs nox_session docs-check docs ;;
    fleet)    prepare_copy; run_stage fleet pytest_in_copy fleet -v tests/fleet ;;
    # PYTEST_ARGS is split like a shell would (quotes group words: -k 'a or b'), but by
    # shlex, as data: nothing in it is run
    vm)       prepare_copy
              mapfile -d '' -t vm_args < <(python3 -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "${PYTEST_ARGS:-tests/vm}")
              run_stage vm pytest_in_copy vm -v "${vm_args[@]}" ;;
    molecule) prepare_copy; run_stage molecule "$ROOT/scripts/molecule.sh" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done

echo
echo "=== summary"
printf '%s\n' "${report[@]}"
echo "total: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
