#!/usr/bin/env bash
# Build (or reuse) the systemd container image the role's molecule scenarios run in.
# No registry is used: a debootstrap bookworm tree (Debian packages only) is configured in
# place and turned into a podman image with `podman import`. The image tag is derived from
# this recipe (this script + tests/testbed/container/), so changing either rebuilds it.
# The plain debootstrap tree is cached outside the repository by package list.
# Also writes the containers.conf this host needs for systemd as PID 1 (see docs).
# Prints the image reference, e.g. localhost/onekvm-molecule:0123456789ab.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${ONEKVM_CACHE:-$HOME/.cache/onekvm-fleet}
MIRROR=${ONEKVM_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# What a One-KVM (Armbian bookworm) box has that the role relies on, plus python3-yaml for
# the kvmd stand-in's `kvmd -m`.
PACKAGES=systemd-sysv,python3,python3-usb,python3-serial,python3-yaml,sudo,udev,procps

mkdir -p "$CACHE"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$CACHE/containers.conf}
if [[ ! -f $CONTAINERS_CONF ]]; then
  # crun refuses this host's hybrid cgroups; raising ulimits needs a capability root lacks
  cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

RECIPE=$( (cat "$0" "$HERE/install-kvmd-standin.sh" "$HERE/kvmd_standin.py"; find "$HERE/container" -type f | sort | xargs cat) \
  | sha256sum | cut -c1-12)
IMAGE="localhost/onekvm-molecule:$RECIPE"
if podman image exists "$IMAGE"; then echo "$IMAGE"; exit 0; fi

BASE="$CACHE/container-base-$(echo "$PACKAGES $MIRROR" | sha256sum | cut -c1-12)"
if [[ ! -f $BASE/.complete ]]; then
  echo "container-image: debootstrap bookworm from $MIRROR (a few minutes, once per package list)" >&2
  rm -rf "$BASE"; mkdir -p "$BASE"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$BASE/rootfs" "$MIRROR" >"$BASE/debootstrap.log" 2>&1 \
    || { tail -20 "$BASE/debootstrap.log" >&2; exit 1; }
  touch "$BASE/.complete"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/onekvm-container.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
cp -a "$BASE/rootfs" "$ROOTFS"
# the kvmd stand-in: service, `kvmd -m`, config directory (real kvmd is not installable here)
cp -a "$HERE/container/." "$ROOTFS/"
"$HERE/install-kvmd-standin.sh" "$ROOTFS"
chroot "$ROOTFS" /bin/sh -e <<'CHROOT'
useradd --system --no-create-home --home-dir /var/lib/kvmd --shell /usr/sbin/nologin kvmd
install -d -o kvmd -g kvmd /var/lib/kvmd
install -d /etc/kvmd/override.d
chown kvmd:kvmd /etc/kvmd/htpasswd
chmod 755 /usr/local/bin/rw /usr/local/bin/ro
systemctl enable kvmd.service >/dev/null 2>&1
for u in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer e2scrub_reap.service \
         systemd-timesyncd.service getty@tty1.service console-getty.service; do
  systemctl mask "$u" >/dev/null 2>&1 || true
done
systemctl set-default multi-user.target >/dev/null 2>&1
apt-get clean
rm -rf /var/lib/apt/lists/*
CHROOT
echo onekvm-molecule >"$ROOTFS/etc/hostname"
tar -C "$ROOTFS" --numeric-owner -cf "$WORK/rootfs.tar" .
podman import --quiet --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' "$WORK/rootfs.tar" "$IMAGE" >/dev/null
# keep only the newest image and base tree
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/onekvm-molecule:' | grep -v ":$RECIPE\$"); do
  podman rmi "$old" >/dev/null 2>&1 || true  # an image in use (a running scenario) stays
done
find "$CACHE" -maxdepth 1 -name 'container-base-*' ! -path "$BASE" -exec rm -rf {} +
echo "$IMAGE"
