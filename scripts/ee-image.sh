#!/usr/bin/env bash
# Build (or reuse) the collection's execution environment image from Debian packages and
# PyPI wheels, without a container registry. Prints the image reference, e.g.
# localhost/onekvm-fleet-ee:1.0.0-0123456789ab.
#
# Why a plain Containerfile (ee/Containerfile) and not ansible-builder: ansible-builder's
# build scripts (assemble, install-from-bindep) are written for dnf/microdnf. Pointed at apt
# with options.package_manager_path they still run `install` without an `apt-get update`
# (a Debian base image carries no package lists), `clean all`, and `pip install` into the
# system Python, which Debian's PEP 668 marker refuses; and they download from PyPI during
# the build. Here the EE is three steps that are easy to check: a base made of Debian
# packages, wheels fetched once on the host (pinned as requirements-dev.txt pins them), and a
# Containerfile that installs them offline. execution-environment.yml stays for those who
# build with ansible-builder on a registry's RPM base image; both take the collection's
# needs from the same files (bindep.txt, requirements.txt, through `ansible-builder introspect`).
#
# Steps: 1. the collection tarball (ansible-galaxy collection build); 2. what it needs
# (`ansible-builder introspect`, bindep evaluated for Debian); 3. a debootstrap trixie tree
# (Python 3.13; bookworm's 3.11 is too old for ansible-core 2.21) with those packages, turned
# into a base image with `podman import`, cached by package list; 4. `podman build`.
#   scripts/ee-image.sh [--plan]     (--plan: print what would go in, build nothing)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${ONEKVM_CACHE:-$HOME/.cache/onekvm-fleet}
MIRROR=${ONEKVM_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
export CONTAINERS_CONF=${CONTAINERS_CONF:-$CACHE/containers.conf}
for tool in ansible-galaxy ansible-builder bindep pip; do
  command -v "$tool" >/dev/null || { echo "ee-image: $tool not found: source \"\$(scripts/setup.sh)\" first" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/onekvm-ee.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CONTEXT=$WORK/context
mkdir -p "$CONTEXT/collections" "$CONTEXT/wheels"

# 1. the collection, as AWX would get it (a tarball)
ansible-galaxy collection build --force --output-path "$CONTEXT/collections" "$ROOT" >/dev/null
# 2. its needs, found the way ansible-builder finds them (meta/execution-environment.yml)
ANSIBLE_COLLECTIONS_PATH=$WORK/installed ansible-galaxy collection install --offline --force \
  -p "$WORK/installed" "$CONTEXT"/collections/*.tar.gz >/dev/null 2>&1
ansible-builder introspect --sanitize --write-pip "$CONTEXT/requirements.txt" \
  --write-bindep "$WORK/bindep.txt" "$WORK/installed" >/dev/null
touch "$CONTEXT/requirements.txt" "$WORK/bindep.txt"
# bindep judges the platform it runs on: this host is Debian, as the image is
system=$(bindep -l newline -f "$WORK/bindep.txt" | sort -u | paste -sd, -)
# dumb-init: the init of the image; python3-venv: Debian's Python is externally managed
PACKAGES=python3,python3-venv,dumb-init${system:+,$system}
# ansible-core and ansible-runner as requirements-dev.txt pins them (one home for versions)
grep -E '^(ansible-core|ansible-runner)==' "$ROOT/requirements-dev.txt" >"$CONTEXT/constraints.txt"
cp "$ROOT/ee/Containerfile" "$CONTEXT/Containerfile"
if [[ ${1:-} == --plan ]]; then
  echo "suite: $SUITE"; echo "packages: $PACKAGES"
  sed 's/^/pin: /' "$CONTEXT/constraints.txt"
  sed -e 's/ *#.*//' -e '/^$/d' -e 's/^/python: /' "$CONTEXT/requirements.txt"
  for tarball in "$CONTEXT"/collections/*.tar.gz; do echo "collection: ${tarball##*/}"; done
  exit 0
fi

# 3. the base image from Debian packages, once per package list
BASE_TAG=$(echo "$SUITE $PACKAGES $MIRROR" | sha256sum | cut -c1-12)
BASE=localhost/onekvm-ee-base:$BASE_TAG
if ! podman image exists "$BASE"; then
  echo "ee-image: debootstrap $SUITE with $PACKAGES (a few minutes, once per package list)" >&2
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  chroot "$WORK/rootfs" apt-get clean
  rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin
  tar -C "$WORK/rootfs" --numeric-owner -cf "$WORK/rootfs.tar" .
  rm -rf "$WORK/rootfs"
  podman import --quiet "$WORK/rootfs.tar" "$BASE" >/dev/null
  rm -f "$WORK/rootfs.tar"
fi

# wheels for the image's Python (3.13, as this venv's when it is 3.13; else told to pip)
pyver=$(podman run --rm "$BASE" python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
pip download --quiet --only-binary=:all: --python-version "$pyver" --dest "$CONTEXT/wheels" \
  -c "$CONTEXT/constraints.txt" ansible-core ansible-runner -r "$CONTEXT/requirements.txt"

# 4. the EE, tagged by everything that went into it
TAG=$(cd "$CONTEXT" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
VERSION=$(awk '/^version:/ {print $2}' "$ROOT/galaxy.yml")
IMAGE=localhost/onekvm-fleet-ee:$VERSION-$TAG
if ! podman image exists "$IMAGE"; then
  podman build --quiet --layers=false --network none --build-arg "BASE=$BASE" -t "$IMAGE" "$CONTEXT" >/dev/null
fi
# keep the newest EE and base only (an image in use stays)
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/onekvm-(fleet-ee|ee-base):' \
             | grep -v -x -e "$IMAGE" -e "$BASE"); do
  podman rmi "$old" >/dev/null 2>&1 || true
done
echo "$IMAGE"
