# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the fleet tests: where the collection is, and a small fleet of containers."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from ansible_collections.onekvm.fleet.tests.fleet import containers

ROOT = containers.ROOT


def collections_path() -> str:
    """A directory holding ansible_collections/onekvm/fleet = this checkout."""
    parts = ROOT.split(os.sep)
    if parts[-3:] == ["ansible_collections", "onekvm", "fleet"]:
        return os.sep.join(parts[:-3])
    for candidate in (os.environ.get("ONEKVM_COLLECTION_ROOT"), *os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":")):
        if candidate and os.path.realpath(os.path.join(candidate, "ansible_collections", "onekvm", "fleet")) == ROOT:
            return candidate
    pytest.fail("run from a tree at .../ansible_collections/onekvm/fleet (scripts/sync-collection.sh) or source scripts/setup.sh's env")
    return ""


@pytest.fixture(scope="session")
def coll_path() -> str:
    return collections_path()


def run(argv, env=None, cwd=ROOT, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, coll_path):
    """Two provisioned container boxes plus one unreachable host, in group onekvm.

    The boxes have no USB and no ustreamer; their watchdog watches a stand-in video node
    (/run/fake-video) that a test can remove and restore to make a real failure and recovery.
    """
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh installs it)")
    tag = uuid.uuid4().hex[:6]
    names = ["fleet-%s-box1" % tag, "fleet-%s-box2" % tag]
    workdir = tmp_path_factory.mktemp("fleet")
    image = containers.build_image()
    containers.start_boxes(names, image)
    try:
        for name in names:
            containers.box_exec(name, "touch", "/run/fake-video")
        host_vars = {name: {"onekvm_watchdog_video_node": "/run/fake-video", "onekvm_watchdog_grace": 1} for name in names}
        # nothing listens on port 9 of the loopback: the connection is refused at once
        gone = {"fleet-%s-gone" % tag: {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9}}
        inventory = containers.write_inventory(str(workdir / "hosts.yml"), names, host_vars, gone)
        env = containers.ansible_env(coll_path)
        # one batch here (the canary rollout has its own test): half the time
        done = run(["ansible-playbook", "-i", inventory, "-l", "!fleet-%s-gone" % tag, "onekvm.fleet.provision",
                    "-e", '{"fleet_serial": ["100%"]}'], env=env)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        yield {"names": names, "gone": list(gone)[0], "inventory": inventory, "env": env, "workdir": workdir}
    finally:
        containers.remove_boxes(names)
