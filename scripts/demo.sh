#!/usr/bin/env bash
# The main job: boot the simulated OneKVM box and tell the collection's story on it
# (provision, GPIO buttons, a broken dongle the watchdog brings back, an ad hoc reset, the
# fleet health report). The story itself is scripts/demo.py.
# Expects the environment from `source "$(scripts/setup.sh)"` (the Makefile does that).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# a box left running by `make vm-start` would hold the one-VM lock: stop it first
python3 tests/testbed/vm.py stop >/dev/null 2>&1 || true
exec python3 scripts/demo.py
