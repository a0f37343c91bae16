#!/usr/bin/env bash
# Prepare what the demo and the tests need. Idempotent and cached under ~/.cache/onekvm-fleet
# (ONEKVM_CACHE); a second run only checks. Prints the env file to source.
#   scripts/setup.sh        everything (as root on Debian): the Debian packages of the stages that
#                           boot a box, run containers or a browser (QEMU, podman, Chromium), the
#                           dev venv (requirements-dev.txt) and the nox venv
#   scripts/setup.sh nox    only a Python >= 3.12 and the nox venv (requirements-nox.txt): enough
#                           for the lint, sanity, units, docs and changelog sessions; no root
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ONEKVM_CACHE:-$HOME/.cache/onekvm-fleet}
MODE=${1:-full}
[[ $MODE == full || $MODE == nox ]] || { echo "usage: scripts/setup.sh [nox]" >&2; exit 2; }
mkdir -p "$CACHE"
is_root() { [[ $(id -u) -eq 0 ]]; }
# shellcheck source=/dev/null
debian_version() { (. /etc/os-release 2>/dev/null && [[ ${ID:-} == debian ]] && echo "${VERSION_ID:-}") || true; }

apt_install() {   # apt_install PACKAGE... (root only; the caller says why)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# sudo: the real sudo judges the role's sudoers rules in the unit tests (as root only; they
# skip for other users, so the nox mode installs it only when it runs as root), and its visudo
# checks the rendered sudoers rules in onekvm.fleet.validate and its tests.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
if [[ $MODE == nox ]] && is_root && command -v dpkg-query >/dev/null && ! installed sudo; then
  echo "setup: installing Debian packages: sudo" >&2
  apt_install sudo
fi
if [[ $MODE == full ]]; then
  APT_PACKAGES=(qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client podman runc
    usbutils uhubctl socat make git chromium sudo)
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if ! is_root; then
      echo "setup: the VM, container and browser stages need Debian packages; as root run: apt-get install ${missing[*]}" >&2
      exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    apt_install "${missing[@]}"
  fi
fi

# ansible-core 2.21 needs Python >= 3.12 on the controller. The routes, in order: ONEKVM_PYTHON,
# python3.13/3.12/3.14/python3 on PATH, pyenv's versions, uv's managed Pythons (uv from PyPI;
# it downloads one where it can reach its host), Debian 13's python3.
new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
real_python() { "$1" -c 'import sys; print(sys.executable)'; }
python_on_path() {
  local c
  for c in python3.13 python3.12 python3.14 python3; do
    command -v "$c" >/dev/null 2>&1 && new_enough "$c" && { real_python "$c"; return; }
  done
  return 1
}
python_from_pyenv() {
  local v c
  command -v pyenv >/dev/null 2>&1 || return 1
  for v in $(pyenv versions --bare 2>/dev/null | sort -rV); do
    c="$(pyenv root)/versions/$v/bin/python3"
    [[ -x $c ]] && new_enough "$c" && { echo "$c"; return; }
  done
  return 1
}
python_from_uv() {
  local boot uvdir="$CACHE/uv" c
  if [[ ! -x $uvdir/bin/uv ]]; then
    # uv comes from PyPI through a venv of the system's python3 (a minimal Debian lacks both)
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
      [[ -n $(debian_version) ]] && is_root || return 1
      apt_install python3 python3-venv || return 1
    fi
    boot=$(command -v python3) || return 1
    rm -rf "$uvdir"
    "$boot" -m venv "$uvdir" >/dev/null 2>&1 || return 1
    "$uvdir/bin/pip" install -q --disable-pip-version-check "$(grep -E '^uv==' "$ROOT/requirements-nox.txt")" >/dev/null 2>&1 || return 1
  fi
  c=$("$uvdir/bin/uv" python find --managed-python '>=3.12' 2>/dev/null) && { echo "$c"; return; }
  echo "setup: asking uv for a managed Python 3.13 (needs its download host)" >&2
  timeout 120 "$uvdir/bin/uv" python install 3.13 >/dev/null 2>&1 || return 1
  "$uvdir/bin/uv" python find --managed-python '>=3.12' 2>/dev/null
}
python_from_debian() {
  [[ $(debian_version) == 13 ]] && is_root || return 1
  echo "setup: installing Debian 13's python3 (3.13)" >&2
  apt_install python3 python3-venv && new_enough /usr/bin/python3 && echo /usr/bin/python3
}
find_python() { python_on_path || python_from_pyenv || python_from_uv || python_from_debian; }

if [[ -n ${ONEKVM_PYTHON:-} ]]; then
  new_enough "$ONEKVM_PYTHON" || { echo "setup: ONEKVM_PYTHON=$ONEKVM_PYTHON is not a Python >= 3.12" >&2; exit 1; }
  PY=$ONEKVM_PYTHON
elif ! PY=$(find_python); then
  if [[ $(debian_version) == 13 ]]; then
    echo "setup: no Python >= 3.12 found; as root run: apt-get install python3 python3-venv" >&2
  else
    echo "setup: ansible-core 2.21 needs Python >= 3.12 and none was found (nor could uv download one): install one (uv python install 3.13, or pyenv install 3.13) or set ONEKVM_PYTHON=/path/to/python3.12+" >&2
  fi
  exit 1
fi
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [[ -n $(debian_version) ]] && is_root; then
    apt_install "python$pyver-venv"
  else
    echo "setup: $PY cannot make virtualenvs; as root run: apt-get install python$pyver-venv" >&2
    exit 1
  fi
fi

# make_venv DIR REQUIREMENTS...: a venv with those requirements, built once (under a lock, so
# two set-ups started side by side do not build the same venv at once).
make_venv() {
  local dir=$1; shift
  [[ -x $dir/.complete ]] && return
  (
    flock 9
    [[ -x $dir/.complete ]] && exit 0
    echo "setup: creating $dir with $("$PY" -V)" >&2
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
    printf '#!/bin/sh\n' >"$dir/.complete"; chmod +x "$dir/.complete"
  ) 9>"$dir.lock"
}
venv_hash() { (cat "$@"; "$PY" -V) | sha256sum | cut -c1-12; }

NOX_VENV="$CACHE/nox-$(venv_hash "$ROOT/requirements-nox.txt")"
make_venv "$NOX_VENV" -r "$ROOT/requirements-nox.txt"
# one envdir per checkout: sessions of two checkouts never share (or rebuild) a venv
CHECKOUT=$(echo "$ROOT" | sha256sum | cut -c1-8)
NOX_ENVDIR="$CACHE/nox-sessions-$CHECKOUT"

# ansible-test / ansible-lint want the checkout at .../ansible_collections/onekvm/fleet.
COLL="$CACHE/collections-$CHECKOUT"
mkdir -p "$COLL/ansible_collections/onekvm"
ln -sfn "$ROOT" "$COLL/ansible_collections/onekvm/fleet"

if [[ $MODE == nox ]]; then
  cat >"$CACHE/env-nox-$CHECKOUT.sh" <<ENVEOF
export ONEKVM_NOX_ENVDIR="$NOX_ENVDIR"
export ONEKVM_COLLECTION_ROOT="$COLL"
export PATH="$NOX_VENV/bin:\$PATH"
ENVEOF
  echo "$CACHE/env-nox-$CHECKOUT.sh"
  exit 0
fi

VENV="$CACHE/venv-$(venv_hash "$ROOT/requirements-dev.txt")"
make_venv "$VENV" -r "$ROOT/requirements-dev.txt"

cat >"$CACHE/env-$CHECKOUT.sh" <<ENVEOF
export ONEKVM_VENV="$VENV"
export ONEKVM_NOX_ENVDIR="$NOX_ENVDIR"
export ONEKVM_COLLECTION_ROOT="$COLL"
export PATH="$VENV/bin:$NOX_VENV/bin:\$PATH"
export ANSIBLE_COLLECTIONS_PATH="$COLL"
ENVEOF
echo "$CACHE/env-$CHECKOUT.sh"
