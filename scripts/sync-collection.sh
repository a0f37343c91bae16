#!/usr/bin/env bash
# Copy the checkout (tracked + untracked, not ignored files) to a temporary
# .../ansible_collections/onekvm/fleet tree: ansible-test insists on a real path with
# that shape (it resolves symlinks). Prints the copy's path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-${TMPDIR:-/tmp}/onekvm-fleet-test/ansible_collections/onekvm/fleet}
mkdir -p "$DEST"
cd "$ROOT"
# keep ansible-test's output and venv caches between runs, refresh everything else
find "$DEST" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
find "$DEST/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} + 2>/dev/null || true
# File names travel NUL-separated as data: never through a shell, never read as tar options.
# (A tracked file deleted in the work tree is left out.)
git ls-files -co --exclude-standard -z |
  while IFS= read -r -d '' f; do
    if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
  done |
  tar --null --verbatim-files-from -T - -cf - | tar -xf - -C "$DEST"
echo "$DEST"
