#!/usr/bin/env bash
# Build (or reuse) the simulated OneKVM box: a Debian bookworm tree made only from Debian
# packages with debootstrap, configured in place and packed into an ext4 image for a
# direct kernel boot under QEMU. The image is cached outside the repository under a name
# derived from this recipe (this script + tests/testbed/guest/), so changing either rebuilds.
# Prints the image directory (holding rootfs.img, vmlinuz, initrd.img, id_ed25519).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${ONEKVM_CACHE:-$HOME/.cache/onekvm-fleet}
MIRROR=${ONEKVM_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# python3-apt: the role installs packages with Ansible's apt module, which needs it (the box has no network)
PACKAGES=linux-image-amd64,systemd-sysv,openssh-server,python3,python3-apt,python3-usb,python3-serial,usbutils,udev,kmod,iproute2,ifupdown,procps,sudo,ustreamer,v4l-utils,uhubctl,usbip,less

# one build at a time on this machine (concurrent test runs share the cache)
mkdir -p "$CACHE"
exec 9>"$CACHE/build-image.lock"
flock 9

RECIPE=$( (cat "$0" "$HERE/install-kvmd-standin.sh" "$HERE/kvmd_standin.py"; find "$HERE/guest" -type f | sort | xargs cat) \
  | sha256sum | cut -c1-12)
OUT="$CACHE/box-image-$RECIPE"
if [[ -f $OUT/.complete ]]; then echo "$OUT"; exit 0; fi

BASE="$CACHE/box-base-$(echo "$PACKAGES $MIRROR" | sha256sum | cut -c1-12)"

phase() { printf 'build-image: %-28s %5ss\n' "$1" "$(( $(date +%s) - T0 ))" >&2; T0=$(date +%s); }
T0=$(date +%s)
# stage 1, cached by package list: the plain debootstrap tree
if [[ ! -f $BASE/.complete ]]; then
  echo "build-image: debootstrap bookworm from $MIRROR (a few minutes, once per package list)" >&2
  rm -rf "$BASE"; mkdir -p "$BASE"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$BASE/rootfs" "$MIRROR" >"$BASE/debootstrap.log" 2>&1 \
    || { tail -20 "$BASE/debootstrap.log" >&2; exit 1; }
  touch "$BASE/.complete"
  phase debootstrap
fi
# stage 2, cached by the whole recipe: configure a copy and pack it
rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp"; ROOTFS="$OUT.tmp/rootfs"
cp -a "$BASE/rootfs" "$ROOTFS"
phase "copy base tree"

# --- configure the tree in place (no boot needed) ---
ssh-keygen -q -t ed25519 -N '' -C onekvm-testbed -f "$OUT.tmp/id_ed25519"
install -d -m 700 "$ROOTFS/root/.ssh"
install -m 600 "$OUT.tmp/id_ed25519.pub" "$ROOTFS/root/.ssh/authorized_keys"
echo onekvm-sim >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 onekvm-sim\n' >"$ROOTFS/etc/hosts"
printf '/dev/vda / ext4 defaults,noatime 0 1\n' >"$ROOTFS/etc/fstab"
cat >"$ROOTFS/etc/network/interfaces" <<'NET'
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet static
  address 10.0.2.15/24
  gateway 10.0.2.2
NET
printf 'UseDNS no\nPermitRootLogin prohibit-password\n' >"$ROOTFS/etc/ssh/sshd_config.d/testbed.conf"
# the box's own files: kvmd stand-in, capture "dongle" healer, vivid setup
cp -a "$HERE/guest/." "$ROOTFS/"
"$HERE/install-kvmd-standin.sh" "$ROOTFS"
# PyYAML for the kvmd stand-in's config loader, installed here rather than added to PACKAGES so the
# cached debootstrap tree (a few minutes to make) stays the same
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
chroot "$ROOTFS" apt-get install -y -q --no-install-recommends python3-yaml >"$OUT.tmp/apt.log" 2>&1 \
  || { tail -20 "$OUT.tmp/apt.log" >&2; exit 1; }
rm -f "$ROOTFS/etc/resolv.conf"
chroot "$ROOTFS" /bin/sh -e <<'CHROOT'
useradd --system --no-create-home --home-dir /var/lib/kvmd --shell /usr/sbin/nologin kvmd
install -d -o kvmd -g kvmd /var/lib/kvmd
install -d /etc/kvmd/override.d
printf '# Local overrides (kvmd loads override.d/* first, then this file).\n{}\n' >/etc/kvmd/override.yaml
chmod 755 /usr/local/sbin/* /usr/local/bin/* 2>/dev/null || true
systemctl enable kvmd.service onekvm-testbed-healer.service >/dev/null 2>&1
for u in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer e2scrub_reap.service \
         systemd-timesyncd.service getty@tty1.service getty-static.service ifupdown-pre.service; do systemctl mask "$u" >/dev/null 2>&1 || true; done
systemctl set-default multi-user.target >/dev/null
passwd -d root >/dev/null
apt-get clean
CHROOT
phase configure

KVER=$(find "$ROOTFS/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
cp "$ROOTFS/boot/vmlinuz-$KVER" "$OUT.tmp/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KVER" "$OUT.tmp/initrd.img"
mkfs.ext4 -q -F -L onekvm-root -d "$ROOTFS" "$OUT.tmp/rootfs.img" 2G
phase mkfs
rm -rf "$ROOTFS"
touch "$OUT.tmp/.complete"; mv "$OUT.tmp" "$OUT"
# keep the newest few images and base trees (2 GB sparse files each): checkouts of other
# recipes on this machine may still be about to boot theirs
for kind in box-image box-base; do
  find "$CACHE" -maxdepth 1 -name "$kind-*" ! -name '*.tmp' ! -path "$BASE" -printf '%T@ %p\0' |
    sort -z -rn | tail -z -n +4 | cut -z -d' ' -f2- | xargs -0 -r rm -rf --
done
echo "$OUT"
