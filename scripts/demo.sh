#!/usr/bin/env bash
# The main job: boot the simulated OneKVM box and run the collection against it.
# Expects the environment from `source "$(scripts/setup.sh)"` (the Makefile does that).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VM="python3 tests/testbed/vm.py"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
trap '$VM stop >/dev/null 2>&1 || true' EXIT

step "Booting the simulated OneKVM box (image built from Debian packages on first run)"
$VM stop >/dev/null 2>&1 || true
$VM start
INV=$($VM inventory)
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PIPELINING=True

step "Ad hoc: ansible onekvm -m ansible.builtin.ping"
ansible onekvm -i "$INV" -m ansible.builtin.ping

step "The box's USB devices (lsusb -t, by port path)"
ansible onekvm -i "$INV" -m ansible.builtin.command -a "lsusb -t"

if [[ -f plugins/modules/usb_info.py ]]; then
  step "Ad hoc: ansible onekvm -m onekvm.fleet.usb_info"
  ansible onekvm -i "$INV" -m onekvm.fleet.usb_info
fi

step "Summary"
echo "The simulated box booted, answered Ansible and showed its USB devices."
