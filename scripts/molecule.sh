#!/usr/bin/env bash
# Run the role's molecule scenarios in the locally built systemd container image.
#   scripts/molecule.sh [scenario ...]      (default: default failures)
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
((${#SCENARIOS[@]})) || SCENARIOS=(default failures)
cd "$ROOT"
rc=0
for scenario in "${SCENARIOS[@]}"; do
  echo "=== molecule test -s $scenario ($ONEKVM_MOLECULE_IMAGE)"
  molecule test -s "$scenario" || rc=1
done
exit $rc
