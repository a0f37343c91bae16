#!/bin/sh
# Install the kvmd stand-in (kvmd_standin.py next to this script) into a root tree:
#   install-kvmd-standin.sh ROOTFS
# Used by both test bed images (the molecule container and the simulated box).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
install -D -m 0644 "$HERE/kvmd_standin.py" "$1/usr/lib/kvmd-standin/kvmd_standin.py"
printf '#!/bin/sh\n# kvmd stand-in (onekvm.fleet test bed): kvmd -m, kvmd --standin-gpio-model, kvmd --run\nexec /usr/bin/python3 /usr/lib/kvmd-standin/kvmd_standin.py "$@"\n' >"$1/usr/bin/kvmd"
chmod 0755 "$1/usr/bin/kvmd"
# kvmd's users as PiKVM ships them (pikvm/kvmd configs/kvmd/htpasswd: admin, password admin, in the
# {SSHA512} form kvmd-htpasswd writes); kvmd.install gives it to kvmd:kvmd with mode 0600
install -d "$1/etc/kvmd"
printf 'admin:{SSHA512}3zSmw/L9zIkpQdX5bcy6HntTxltAzTuGNP6NjHRRgOcNZkA0K+Lsrj3QplO9Gr3BA5MYVVki9rAVnFNCcIdtYC6FkLJWCmHs\n' >"$1/etc/kvmd/htpasswd"
chmod 0600 "$1/etc/kvmd/htpasswd"
