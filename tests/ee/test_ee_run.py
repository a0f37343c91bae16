# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The playbooks run the way AWX runs them: inside the execution environment.

The EE image is built here from Debian packages and PyPI wheels (scripts/ee-image.sh); two
podman boxes with sshd on the host's network are the fleet. ansible-navigator runs
provision.yml and health.yml in the EE (`--ee true`, the container on the host network),
from a project that only imports the collection's playbooks, as an AWX project would: the
collection, ansible-core and ssh come from the image. AWX's own path is checked too: the job
is packed with `ansible-runner transmit`, run by `ansible-runner worker` inside the image
(what AWX's receptor does) and unpacked with `ansible-runner process`.

A stage of its own (`make ee`, minutes: image build on first use, two boxes provisioned):
it does not fit the 30-minute budget of `make test`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.fleet import containers
from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run


def recap(stdout: str) -> dict:
    """PLAY RECAP lines as {host: {ok: n, changed: n, failed: n, unreachable: n}}."""
    found = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return found


@pytest.fixture(scope="module")
def ee_image():
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (scripts/setup.sh installs it)")
    done = run([os.path.join(ROOT, "scripts", "ee-image.sh")], env=containers.podman_env(), timeout=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def project(tmp_path_factory, ee_image):
    """Two SSH boxes and an AWX-like project: inventory, key, playbooks importing the collection's."""
    tag = uuid.uuid4().hex[:6]
    names = ["ee-%s-box1" % tag, "ee-%s-box2" % tag]
    work = tmp_path_factory.mktemp("ee-project")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ee-test", "-f", str(key)], check=True)
    box_image = containers.build_ssh_image(containers.build_image())
    try:
        host_vars = containers.start_ssh_boxes(names, box_image, (work / "id_ed25519.pub").read_text().strip())
        common = {"ansible_ssh_private_key_file": str(key),
                  "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}
        for name in names:
            host_vars[name].update(common)
        inventory = containers.write_inventory(str(work / "hosts.yml"), names, host_vars)
        for playbook in ("provision", "health"):
            (work / ("%s.yml" % playbook)).write_text(
                "---\n- name: The collection's %s playbook\n  ansible.builtin.import_playbook: onekvm.fleet.%s\n"
                % (playbook, playbook))
        yield {"dir": work, "inventory": inventory, "names": names, "image": ee_image}
    finally:
        containers.remove_boxes(names)


def navigator(project: dict, *args: str) -> subprocess.CompletedProcess:
    """ansible-navigator run in the EE, as AWX runs a job: nothing of the host's Ansible is used."""
    # ansible-runner starts podman with --ipc=host, which binds the host's /dev/mqueue: navigator
    # refuses to start without that directory, which a minimal host may lack
    os.makedirs("/dev/mqueue", exist_ok=True)
    env = containers.podman_env()
    for name in list(env):
        if name.startswith("ANSIBLE_"):  # the host's collection path must not leak in
            del env[name]
    env.update(ANSIBLE_NAVIGATOR_LOG_FILE=str(project["dir"] / "navigator.log"))
    argv = ["ansible-navigator", "run", *args, "-i", project["inventory"], "--ee", "true", "--ce", "podman",
            "--eei", project["image"], "--pp", "never", "--mode", "stdout", "--pae", "false",
            "--co=--network=host", "--senv", "ANSIBLE_PIPELINING=True", "--senv", "ANSIBLE_NOCOLOR=1",
            "--senv", "ANSIBLE_FORCE_COLOR=0"]
    return run(argv, env=env, cwd=str(project["dir"]), timeout=1800)


def test_image_meets_the_ee_contract(ee_image):
    """What AWX and ansible-navigator use inside the image, asked inside the image."""
    script = ("set -e; python3 -c 'import sys; assert sys.version_info >= (3, 12), sys.version; import PIL'; "
              "ansible-playbook --version | head -1; ansible-runner --version; command -v ssh dumb-init; "
              "ansible-galaxy collection list --format json; pwd; echo HOME=$HOME")
    done = containers.podman("run", "--rm", ee_image, "bash", "-c", script, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    pins = dict(re.findall(r"^(ansible-core|ansible-runner)==(\S+)$",
                           open(os.path.join(ROOT, "requirements-dev.txt"), encoding="utf-8").read(), re.M))
    assert "[core %s]" % pins["ansible-core"] in done.stdout
    assert pins["ansible-runner"] in done.stdout
    listed = json.loads(re.search(r"^\{.*\}$", done.stdout, re.M).group(0))
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        version = yaml.safe_load(f)["version"]
    # the collection and nothing else (ansible-core, not the `ansible` package with its bundle)
    assert listed == {"/usr/share/ansible/collections/ansible_collections": {"onekvm.fleet": {"version": version}}}
    assert "/runner\nHOME=/runner" in done.stdout


def test_provision_runs_in_the_ee_and_a_rerun_changes_nothing(project):
    first = navigator(project, "provision.yml", "-e", '{"fleet_serial": ["100%"]}')
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    totals = recap(first.stdout)
    assert set(totals) >= set(project["names"]), first.stdout[-3000:]
    for name in project["names"]:
        assert totals[name]["failed"] == 0 and totals[name]["unreachable"] == 0, totals
        assert totals[name]["changed"] > 0, totals  # the role really ran on each box
        assert containers.box_exec(name, "systemctl", "is-active", "onekvm-watchdog.service").stdout.strip() == "active"
    again = navigator(project, "provision.yml")  # canary first, with the health gate
    assert again.returncode == 0, again.stdout[-5000:] + again.stderr[-2000:]
    for name in project["names"]:
        assert recap(again.stdout)[name]["changed"] == 0, again.stdout[-3000:]


def test_health_report_from_the_ee(project):
    report_dir = project["dir"] / "report"
    report_dir.mkdir()
    done = navigator(project, "health.yml", "-e", json.dumps({"fleet_health_dir": str(report_dir)}))
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    report = json.loads((report_dir / "fleet-health.json").read_text())
    boxes = {box["name"]: box for box in report["boxes"]}
    assert set(boxes) == set(project["names"])
    for name in project["names"]:
        assert boxes[name]["state"] in ("ok", "warning"), boxes[name]
    assert (report_dir / "fleet-health.html").is_file()


def test_awx_way_runner_worker_in_the_image(project, tmp_path):
    """What AWX does with a job: `ansible-runner transmit` packs project, inventory, extra vars and
    the machine credential's key (env/ssh_key: runner hands it to an ssh-agent); `ansible-runner
    worker` inside the EE runs it (AWX's receptor starts the same command in the same image); the
    event stream comes back to `ansible-runner process`."""
    job = tmp_path / "job"
    for sub in ("project", "inventory", "env"):
        (job / sub).mkdir(parents=True)
    (job / "project" / "health.yml").write_text((project["dir"] / "health.yml").read_text())
    with open(project["inventory"], encoding="utf-8") as f:
        inventory = yaml.safe_load(f)
    for host in inventory["onekvm"]["hosts"].values():
        del host["ansible_ssh_private_key_file"]  # the key comes as AWX's credential does
    (job / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (job / "env" / "ssh_key").write_text((project["dir"] / "id_ed25519").read_text())
    (job / "env" / "extravars").write_text(yaml.safe_dump({"fleet_health_dir": "/runner/artifacts"}))
    (job / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1"}))
    packed = run(["ansible-runner", "transmit", str(job), "-p", "health.yml"], env=containers.podman_env())
    assert packed.returncode == 0, packed.stderr
    worker = subprocess.run(
        ["podman", "run", "--rm", "-i", "--network", "host", project["image"], "ansible-runner", "worker",
         "--private-data-dir", "/runner"], input=packed.stdout, env=containers.podman_env(), capture_output=True,
        text=True, check=False, timeout=900)
    assert worker.returncode == 0, worker.stderr[-3000:]
    result = tmp_path / "result"
    result.mkdir()
    done = subprocess.run(["ansible-runner", "process", str(result)], input=worker.stdout, capture_output=True,
                          text=True, check=False, timeout=300, env=containers.podman_env())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"2 boxes: \d ok, \d with warnings, 0 failing, 0 unreachable", done.stdout), done.stdout[-4000:]
    for name in project["names"]:
        assert recap(done.stdout)[name]["unreachable"] == 0, done.stdout[-3000:]
