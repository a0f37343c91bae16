#!/usr/bin/env bash
# Run the role's molecule scenarios in the locally built systemd container image.
#   scripts/molecule.sh [scenario ...]      (default: default failures one-kvm)
# Expects the environment from `source "$(scripts/setup.sh)"`. Builds (or reuses) the image
# with tests/testbed/container-image.sh; one container at a time (2-core machines).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ONEKVM_CACHE:-$HOME/.cache/onekvm-fleet}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$CACHE/containers.conf}
ONEKVM_MOLECULE_IMAGE=$("$ROOT/tests/testbed/container-image.sh")
export ONEKVM_MOLECULE_IMAGE
# molecule's prerun is off (it would install a copy of the collection under ~/.ansible)
if ! ansible-galaxy collection list onekvm.fleet >/dev/null 2>&1; then
  echo "molecule: onekvm.fleet is not on ANSIBLE_COLLECTIONS_PATH; run: source \"\$(scripts/setup.sh)\"" >&2
  exit 2
fi
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(default failures one-kvm)
JUNIT=$ROOT/tests/output/junit/molecule
mkdir -p "$JUNIT"
cd "$ROOT"
rc=0
for scenario in "${SCENARIOS[@]}"; do
  echo "=== molecule test -s $scenario ($ONEKVM_MOLECULE_IMAGE)"
  if [[ $scenario == failures ]]; then
    echo "NOTE: the 'failures' scenario makes the role fail on purpose: each 'fatal:' block below is"
    echo "      expected, and the rescue task right after it checks the message and the box."
  fi
  start=$SECONDS
  if molecule test -s "$scenario"; then result=; else result="molecule test -s $scenario failed"; rc=1; fi
  # one JUnit test case per scenario (the scenario name travels as an argument, not as code)
  python3 - "$JUNIT/$scenario.xml" "$scenario" "$((SECONDS - start))" "$result" <<'PYEOF'
import sys
from xml.etree import ElementTree as ET
path, scenario, seconds, failure = sys.argv[1:]
suites = ET.Element("testsuites")
suite = ET.SubElement(suites, "testsuite", name="molecule", tests="1", failures=str(int(bool(failure))))
case = ET.SubElement(suite, "testcase", classname="molecule", name=scenario, time=seconds)
if failure:
    ET.SubElement(case, "failure", message=failure)
ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
PYEOF
done
exit $rc
