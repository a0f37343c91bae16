#!/usr/bin/env bash
# Install everything the demo and the tests need on a fresh Debian 12 machine (as root):
# Debian packages, a Python >= 3.12 virtualenv with the pinned tools, and the
# ansible_collections/onekvm/fleet path that ansible-test and ansible-lint expect.
# Idempotent and cached: a second run only checks. Prints the paths it prepared.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ONEKVM_CACHE:-$HOME/.cache/onekvm-fleet}
mkdir -p "$CACHE"

# ansible-test sanity silently skips its shell script check when shellcheck is missing;
# sudo judges the role's sudoers rules in the unit tests.
APT_PACKAGES=(qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client podman runc
  usbutils uhubctl socat make git chromium shellcheck sudo)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then echo "setup: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

find_python() {
  local c v
  for c in python3.13 python3.12 python3.14 python3; do
    if command -v "$c" >/dev/null 2>&1; then
      v=$("$c" -c 'import sys; print(sys.version_info >= (3, 12))' 2>/dev/null || true)
      [[ $v == True ]] && { command -v "$c"; return; }
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | sort -rV); do
      c="$(pyenv root)/versions/$v/bin/python3"
      [[ -x $c ]] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' && { echo "$c"; return; }
    done
  fi
  return 1
}
PY=${ONEKVM_PYTHON:-$(find_python || true)}
if [[ -z $PY ]]; then
  echo "setup: ansible-core 2.21 needs Python >= 3.12 on the controller and none was found." >&2
  echo "       Install one (e.g. 'pyenv install 3.13', or Debian 13's python3) or set ONEKVM_PYTHON." >&2
  exit 1
fi

REQ_HASH=$( (cat "$ROOT/requirements-dev.txt"; "$PY" -V) | sha256sum | cut -c1-12)
VENV="$CACHE/venv-$REQ_HASH"
if [[ ! -x $VENV/.complete ]]; then
  echo "setup: creating $VENV with $("$PY" -V)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt" 2> >(grep -v "is ignored: it is neither" >&2)
  printf '#!/bin/sh\n' >"$VENV/.complete"; chmod +x "$VENV/.complete"
fi

# ansible-test / ansible-lint want the checkout at .../ansible_collections/onekvm/fleet.
COLL="$CACHE/collections-$(echo "$ROOT" | sha256sum | cut -c1-8)"
mkdir -p "$COLL/ansible_collections/onekvm"
ln -sfn "$ROOT" "$COLL/ansible_collections/onekvm/fleet"

# ansible-test bootstraps pip in its venvs with a script from a host we cannot reach;
# it looks for a cached copy first. This stand-in does the same with ensurepip + PyPI.
mkdir -p "$HOME/.ansible/test/cache"
# The pinned pip version is read from ansible-test itself so an upgrade keeps working.
PIP_PIN=$("$VENV/bin/python" - <<'PYEOF'
import importlib.util, pathlib, re
root = pathlib.Path(importlib.util.find_spec("ansible_test").submodule_search_locations[0])
text = (root / "_internal" / "python_requirements.py").read_text()
print(" ".join(sorted(set(re.findall(r"pip='([0-9.]+)'", text)))))
PYEOF
)
[[ -n $PIP_PIN ]] || { echo "setup: could not find ansible-test's pip pin" >&2; exit 1; }
for v in $PIP_PIN; do
  cp "$ROOT/scripts/get_pip_standin.py" "$HOME/.ansible/test/cache/get_pip_${v//./_}.py"
done

cat >"$CACHE/env.sh" <<ENVEOF
export ONEKVM_VENV="$VENV"
export ONEKVM_COLLECTION_ROOT="$COLL"
export PATH="$VENV/bin:\$PATH"
export ANSIBLE_COLLECTIONS_PATH="$COLL"
ENVEOF
echo "$CACHE/env.sh"
