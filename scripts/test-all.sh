#!/usr/bin/env bash
# Run the collection's test stages and print one closing line `total: N passed, N failed`.
#   scripts/test-all.sh [STAGE ...]      (default: all, in the order below)
# Stages run as nox sessions (noxfile.py; no root, no box): lint changelog docs sanity units
# tooling testbed. Stages that need the box, containers or a browser: fleet vm molecule
# (they need the full environment of `source "$(scripts/setup.sh)"`). ee (the execution
# environment built and run with ansible-navigator) only when asked for: `make ee`; it does
# not fit the 30-minute budget of the default stages.
# Counts come from each stage's JUnit XML (tests/output/junit/<stage>/), never from its log.
# PYTEST_ARGS narrows the vm stage (e.g. PYTEST_ARGS=tests/vm/test_usb_reset.py).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAGES=("$@")
# (vm first: the box's stage is the longest, and it runs beside all the others)
((${#STAGES[@]})) || STAGES=(vm lint changelog docs sanity units tooling testbed fleet molecule)
LOGDIR=${ONEKVM_TEST_LOGS:-$ROOT/tests/output/logs/$(date +%Y%m%d-%H%M%S)-$$}
JUNIT=$ROOT/tests/output/junit
mkdir -p "$LOGDIR"

nox_session() {   # nox_session SESSION...: run sessions of noxfile.py in their cached venvs
  local envdir=${ONEKVM_NOX_ENVDIR:-$ROOT/.nox}
  nox -f "$ROOT/noxfile.py" --envdir "$envdir" --reuse-existing-virtualenvs --no-color -s "$@"
}

# The stages that need a box, containers or a browser work on a private copy of the checkout
# (ansible-test and playbooks need .../ansible_collections/onekvm/fleet; runs started side by
# side must not resync each other's tree).
COPY=
vm_pid=
cleanup() {   # a stage still running beside us would work on a removed copy: stop it first
  [[ -n $vm_pid ]] && kill -- "$vm_pid" 2>/dev/null && wait "$vm_pid" 2>/dev/null
  rm -rf "$WORK"
}
prepare_copy() {
  [[ -n $COPY ]] && return
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/onekvm-fleet-test.XXXXXX")
  trap 'cleanup' EXIT
  COPY=$("$ROOT/scripts/sync-collection.sh" "$WORK/ansible_collections/onekvm/fleet")
  export ANSIBLE_COLLECTIONS_PATH="$WORK"
  export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
}

pytest_in_copy() {   # pytest_in_copy STAGE ARGS...: pytest in the copy, JUnit to the stage's dir
  local stage=$1; shift
  cd "$COPY" && python -m pytest -p no:cacheprovider "--junitxml=$JUNIT/$stage/pytest.xml" "$@"
}

run_stage() {   # run_stage STAGE COMMAND...: its result goes to $LOGDIR/STAGE.result
  local stage=$1; shift
  local log="$LOGDIR/$stage.log" start=$SECONDS rc p f s counts
  echo "=== $stage: $*"
  rm -rf "${JUNIT:?}/$stage"; mkdir -p "$JUNIT/$stage"
  if [[ ${QUIET_STAGE:-} == "$stage" ]]; then ( "$@" ) >"$log" 2>&1; rc=$?
  else ( "$@" ) 2>&1 | tee "$log"; rc=${PIPESTATUS[0]}; fi
  counts=$(python3 "$ROOT/scripts/junit_count.py" "$JUNIT/$stage") || counts="0 1 0"
  read -r p f s <<<"$counts"
  # a stage that failed without a failed test case (it could not start, or crashed) is a failure
  ((rc != 0 && f == 0)) && f=1
  # a stage that passed but reported no test case ran nothing: that is a failure too
  ((rc == 0 && p + f == 0)) && f=1
  printf '%d %d %d %s\n' "$p" "$f" "$s" "$(printf '%-9s %-6s (%d passed, %d failed, %d skipped, %ss)  log: %s' "$stage" \
    "$([[ $rc == 0 ]] && echo ok || echo FAILED)" "$p" "$f" "$s" "$((SECONDS - start))" "$log")" >"$LOGDIR/$stage.result"
}

vm_stage() {
  prepare_copy
  # PYTEST_ARGS is split like a shell would (quotes group words: -k 'a or b'), but by
  # shlex, as data: nothing in it is run
  mapfile -d '' -t vm_args < <(python3 -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "${PYTEST_ARGS:-tests/vm}")
  run_stage vm pytest_in_copy vm -v --durations=15 "${vm_args[@]}"
}

# The vm stage (the QEMU box) shares nothing with the other stages but the read-only copy of
# the checkout, and the box idles between its tests' commands: when other stages are asked for
# too, the vm stage runs beside them, its log kept to its file (ONEKVM_TEST_SERIAL=1 runs them
# one after another). Still one VM at a time: vm.py holds its own lock.
vm_beside=
if [[ ${ONEKVM_TEST_SERIAL:-0} != 1 ]] && [[ " ${STAGES[*]} " == *" vm "* ]] && ((${#STAGES[@]} > 1)); then
  vm_beside=1
fi

for stage in "${STAGES[@]}"; do
  case $stage in
    lint|changelog|sanity|units|tooling|testbed) run_stage "$stage" nox_session "$stage" ;;
    docs)     ANTSIBULL_NOX_OUTPUT_JUNIT_XML_PATH=$JUNIT/docs/docs-check.xml run_stage docs nox_session docs-check docs ;;
    fleet)    prepare_copy; run_stage fleet pytest_in_copy fleet -v --durations=15 tests/fleet ;;
    vm)       if [[ -n $vm_beside ]]; then
                prepare_copy
                echo "=== vm: runs beside the other stages; its log: $LOGDIR/vm.log"
                QUIET_STAGE=vm vm_stage &
                vm_pid=$!
              else
                vm_stage
              fi ;;
    molecule) prepare_copy; run_stage molecule "$ROOT/scripts/molecule.sh" ;;
    ee)       prepare_copy; run_stage ee pytest_in_copy ee -v tests/ee ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
if [[ -n $vm_pid ]]; then
  echo "=== waiting for the vm stage (log: $LOGDIR/vm.log)"
  wait "$vm_pid"; vm_pid=
  tail -n 40 "$LOGDIR/vm.log"
fi

passed=0; failed=0; skipped=0
echo
echo "=== summary"
for stage in "${STAGES[@]}"; do
  if [[ -r $LOGDIR/$stage.result ]]; then
    read -r p f s line <"$LOGDIR/$stage.result"
  else
    p=0; f=1; s=0; line="$stage    FAILED (no result: the stage did not finish)"
  fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  echo "$line"
  # the failed cases by name: a CI log's tail must say what failed, not only how many
  ((f > 0)) && python3 "$ROOT/scripts/junit_count.py" --failed "$JUNIT/$stage" | sed "s/^/    $stage FAILED: /"
done
echo "total: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
