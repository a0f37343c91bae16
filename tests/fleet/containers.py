# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fleet of simulated boxes: systemd containers (podman) with the kvmd stand-in.

The image is the role's molecule image (tests/testbed/container-image.sh): Debian bookworm,
systemd as PID 1, kvmd stand-in with `kvmd -m`. The boxes have no USB, so their inventory
turns off what needs a capture dongle (the watchdog still runs, checks ustreamer and
reports). Used by the fleet tests and by benchmarks/fleet_bench.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.environ.get("ONEKVM_CACHE", os.path.expanduser("~/.cache/onekvm-fleet"))
CONTAINERS_CONF = os.environ.get("CONTAINERS_CONF", os.path.join(CACHE, "containers.conf"))

# What a box without USB needs in the inventory; everything else is the role's default.
BOX_VARS = {
    "ansible_connection": "containers.podman.podman",
    "ansible_podman_mount_detection": False,
    "ansible_remote_tmp": "/tmp/.ansible-tmp",
    "ansible_python_interpreter": "/usr/bin/python3",
    "onekvm_capture_usb_id": "",
    # /dev/null stands in for the capture node (always there); no ustreamer: with it enabled
    # but absent every verdict would be "unknown"
    "onekvm_watchdog_video_node": "/dev/null",
    "onekvm_watchdog_ustreamer_enabled": False,
    "onekvm_watchdog_ladder": ["restart_streamer"],
    "onekvm_watchdog_interval": 2,
    "onekvm_gpio_title": "Machines",
    "onekvm_gpio_buttons": [
        {"name": "toggle_switch", "cmd": ["/usr/local/bin/kvm-switch", "next"], "label": "Switch KVM machine",
         "confirm": True},
    ],
    # the boxes have no serial port: the health report shows that as a warning
    "fleet_health_ch9329": True,
}


def podman_env() -> dict:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = CONTAINERS_CONF
    return env


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True, check=check,
                          timeout=timeout)


def build_image() -> str:
    """The box image (built once, cached by recipe)."""
    done = subprocess.run([os.path.join(ROOT, "tests", "testbed", "container-image.sh")], env=podman_env(),
                          capture_output=True, text=True, check=True, timeout=1800)
    return done.stdout.strip().splitlines()[-1]


SSH_BOX = os.path.join(ROOT, "tests", "testbed", "ssh-box", "Containerfile")


def build_ssh_image(box_image: str) -> str:
    """The box image plus sshd (tests/testbed/ssh-box), built once per recipe and box image."""
    with open(SSH_BOX, "rb") as f:
        recipe = hashlib.sha256(f.read() + box_image.encode()).hexdigest()[:12]
    image = "localhost/onekvm-ssh-box:" + recipe
    if podman("image", "exists", image, check=False).returncode != 0:
        podman("build", "--quiet", "--layers=false", "--network", "host", "--build-arg", "BOX=" + box_image,
               "-t", image, "-f", SSH_BOX, os.path.dirname(SSH_BOX), timeout=900)
        for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
            if old.startswith("localhost/onekvm-ssh-box:") and old != image:
                podman("rmi", old, check=False)  # one in use stays
    return image


def free_ports(count: int) -> list:
    """Ports on the loopback that nothing listens on now (one per SSH box)."""
    ports, sockets = [], []
    try:
        for dummy in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def start_ssh_boxes(names: list, image: str, public_key: str, boot_timeout: float = 60) -> dict:
    """Start SSH boxes on the host's network; returns each one's inventory variables (its port)."""
    ports = free_ports(len(names))
    for name in names:
        podman("rm", "-f", name, check=False)
        podman("run", "-d", "--name", name, "--hostname", name, "--network", "host", "--systemd=always", image,
               "/sbin/init")
    script = ('printf "Port %s\\nListenAddress 127.0.0.1\\nPasswordAuthentication no\\n" "$1" '
              '>/etc/ssh/sshd_config.d/onekvm-test.conf && printf "%s\\n" "$2" >/root/.ssh/authorized_keys '
              '&& chmod 600 /root/.ssh/authorized_keys && systemctl start ssh.service')
    for name, port in zip(names, ports):
        wait_booted(name, boot_timeout)
        podman("exec", name, "sh", "-c", script, "sshd-setup", str(port), public_key)
    return {name: {"ansible_connection": "ansible.builtin.ssh", "ansible_host": "127.0.0.1", "ansible_port": port,
                   "ansible_user": "root"} for name, port in zip(names, ports)}


def start_boxes(names: list, image: str, boot_timeout: float = 60) -> None:
    """Start one container per name and wait until systemd has booted each."""
    for name in names:
        podman("rm", "-f", name, check=False)
        podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", image, "/sbin/init")
    for name in names:
        wait_booted(name, boot_timeout)


def wait_booted(name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        done = podman("exec", name, "systemctl", "is-system-running", check=False, timeout=30)
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.5)
    raise RuntimeError("container %s did not finish booting in %s s (systemd says %r)" % (name, timeout, state))


def remove_boxes(names: list) -> None:
    if names:
        podman("rm", "-f", "-t", "0", *names, check=False, timeout=300)


def write_inventory(path: str, names: list, host_vars: dict | None = None, extra_hosts: dict | None = None) -> str:
    """A YAML inventory: the containers in group onekvm (plus any extra hosts, e.g. unreachable ones)."""
    hosts = {name: dict((host_vars or {}).get(name, {})) for name in names}
    hosts.update(extra_hosts or {})
    inventory = {"onekvm": {"hosts": hosts, "vars": BOX_VARS}}
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(inventory, f, sort_keys=False)
    return path


def ansible_env(collections_path: str, forks: int = 20, strategy: str = "free") -> dict:
    """How the fleet is meant to be driven: pipelining, many forks, the free strategy."""
    env = podman_env()
    env.update(
        ANSIBLE_COLLECTIONS_PATH=collections_path,
        ANSIBLE_PIPELINING="True",
        ANSIBLE_FORKS=str(forks),
        ANSIBLE_STRATEGY=strategy,
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_CALLBACK_RESULT_FORMAT="yaml",
        ANSIBLE_LOCALHOST_WARNING="False",
    )
    return env


def box_exec(name: str, *argv: str) -> subprocess.CompletedProcess:
    return podman("exec", name, *argv, check=False)


def box_json(name: str, *argv: str) -> dict:
    return json.loads(box_exec(name, *argv).stdout)
