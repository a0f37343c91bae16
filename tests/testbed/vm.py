# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated OneKVM box: boot, reach and stop the QEMU test VM.

    python3 tests/testbed/vm.py start|stop [--force]|status|ssh [CMD...]|inventory

One VM at a time on a machine: the QEMU process inherits a lock on the cache directory's
``vm.lock`` and holds it for its whole life, so a second start waits for the first box to
go away. A box started by a test run that died is stopped by the next start; one started
by hand (``start``) stays until ``stop``. Each boot runs on a fresh copy-on-write overlay of the cached image: tests may
change the box freely. ``start`` prints how long each boot phase took.

USB topology (xHCI; port paths as sysfs names them):

    1-1    usb-hub "hub1", per-port power switching (power_cycle works)
    1-1.1  usb-serial (FTDI 0403:6001), chardev -> ch9329.sock   CH9329 adapter
    1-1.2  usb-tablet serial TWIN (0627:0001)                      capture dongle stand-in
    1-1.3  usb-tablet serial TWIN (0627:0001)                      its identical twin
    1-1.4  usb-serial (FTDI 0403:6001), chardev -> relay.sock     LCUS relay adapter
    1-2    usb-hub "hub2", no power switching (power_cycle must refuse)
    1-2.1  usb-kbd (0627:0001)
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("ONEKVM_CACHE") or os.path.expanduser("~/.cache/onekvm-fleet")
RUN_DIR = os.path.join(CACHE, "box")
STATE_FILE = os.path.join(RUN_DIR, "state.json")
LOCK_FILE = os.path.join(CACHE, "vm.lock")

USB_DEVICES = [
    "qemu-xhci,id=xhci",
    "usb-hub,bus=xhci.0,port=1,id=hub1,port-power=on",
    "usb-serial,bus=xhci.0,port=1.1,chardev=ch9329,always-plugged=on,id=ch9329adapter",
    "usb-tablet,bus=xhci.0,port=1.2,serial=TWIN,id=dongle",
    "usb-tablet,bus=xhci.0,port=1.3,serial=TWIN,id=twin",
    "usb-serial,bus=xhci.0,port=1.4,chardev=relay,always-plugged=on,id=relayadapter",
    "usb-hub,bus=xhci.0,port=2,id=hub2",
    "usb-kbd,bus=xhci.0,port=2.1,id=kbd",
]


def log(msg: str) -> None:
    sys.stderr.write("box: %s\n" % msg)
    sys.stderr.flush()


def build_image() -> str:
    out = subprocess.run([os.path.join(HERE, "build-image.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.5):
    """Call ``predicate`` until it returns something true or ``timeout`` passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def render_entry_script(python: str, lib_dir: str) -> str:
    """The ``onekvm`` entry script exactly as the role renders it (from the role's template)."""
    import jinja2  # pylint: disable=import-outside-toplevel  # controller side only

    path = os.path.join(REPO, "roles", "onekvm", "templates", "onekvm.py.j2")
    with open(path, encoding="utf-8") as f:
        template = jinja2.Template(f.read(), keep_trailing_newline=True)
    return template.render(onekvm_python=python, onekvm_lib_dir=lib_dir, ansible_managed="installed by the test bed")


class Box:
    """A running (or to-be-started) simulated box."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state or {}

    # ---- paths and state -------------------------------------------------
    @property
    def ssh_port(self) -> int:
        return self.state["ssh_port"]

    @property
    def key(self) -> str:
        # the box's own copy: a build of another image recipe on this machine removes older images
        own = os.path.join(RUN_DIR, "id_ed25519")
        return own if os.path.exists(own) else os.path.join(self.state["image"], "id_ed25519")

    @property
    def ch9329_socket(self) -> str:
        return os.path.join(RUN_DIR, "ch9329.sock")

    @property
    def relay_socket(self) -> str:
        return os.path.join(RUN_DIR, "relay.sock")

    @property
    def monitor_socket(self) -> str:
        return os.path.join(RUN_DIR, "monitor.sock")

    @property
    def console_log(self) -> str:
        return os.path.join(RUN_DIR, "console.log")

    @property
    def inventory(self) -> str:
        return os.path.join(RUN_DIR, "inventory.ini")

    @classmethod
    def load(cls) -> Box | None:
        try:
            with open(STATE_FILE) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        box = cls(state)
        return box if box.alive() else None

    def orphaned(self) -> bool:
        """Started by a test run that has died (so nobody will stop it)."""
        owner = self.state.get("owner")
        return bool(owner) and not os.path.exists("/proc/%d" % owner)

    def alive(self) -> bool:
        pid = self.state.get("pid")
        if not pid:
            return False
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                return b"qemu-system" in f.read()
        except OSError:
            return False

    # ---- lifecycle -------------------------------------------------------
    def start(self, boot_timeout: float = 420.0, owner: int | None = None) -> Box:
        """Boot a box. ``owner``: the pid of the run that will stop it (None: stopped by hand)."""
        stale = Box.load()
        if stale and stale.orphaned():
            log("stopping a box left running by a dead test run (pid %d)" % stale.state["pid"])
            stale.stop()
        t0 = time.monotonic()
        image = build_image()
        t_image = time.monotonic()
        os.makedirs(CACHE, exist_ok=True)
        lock_fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another simulated box is running on this machine; waiting for it to stop")
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        t_lock = time.monotonic()
        if not os.path.exists(os.path.join(image, ".complete")):
            # removed while this run waited for the lock (a build of another recipe keeps only its own)
            image = build_image()
        subprocess.run(["rm", "-rf", RUN_DIR], check=True)
        os.makedirs(RUN_DIR)
        subprocess.run(["install", "-m", "600", os.path.join(image, "id_ed25519"), os.path.join(RUN_DIR, "id_ed25519")],
                       check=True)
        overlay = os.path.join(RUN_DIR, "overlay.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        os.path.join(image, "rootfs.img"), overlay], check=True)
        port = free_port()
        self.state = {"image": image, "ssh_port": port, "run_dir": RUN_DIR, "owner": owner}
        cmd = [
            "qemu-system-x86_64", "-name", "onekvm-sim", "-machine", "q35", "-accel", "tcg,thread=multi",
            "-cpu", "max", "-smp", "2", "-m", "1024", "-nodefaults", "-no-user-config",
            "-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initrd.img"),
            "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet loglevel=4 panic=-1",
            "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe" % overlay,
            "-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22" % port,
            "-device", "virtio-net-pci,netdev=n0",
            "-display", "none", "-serial", "file:" + self.console_log,
            "-monitor", "unix:%s,server=on,wait=off" % self.monitor_socket,
            "-chardev", "socket,id=ch9329,path=%s,server=on,wait=off" % self.ch9329_socket,
            "-chardev", "socket,id=relay,path=%s,server=on,wait=off" % self.relay_socket,
            "-no-reboot",
        ]
        for dev in USB_DEVICES:
            cmd += ["-device", dev]
        # QEMU inherits the lock descriptor and keeps the machine-wide lock while it lives.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(os.path.join(RUN_DIR, "qemu.log"), "w"),
                                stderr=subprocess.STDOUT, pass_fds=(lock_fd,), start_new_session=True)
        os.close(lock_fd)
        self.state["pid"] = proc.pid
        self._write_inventory()
        with open(STATE_FILE, "w") as f:
            json.dump(self.state, f)
        t_qemu = time.monotonic()
        phases = {"image": t_image - t0, "wait for lock": t_lock - t_image, "qemu start": t_qemu - t_lock}
        marks = {"kernel": "Linux version", "userspace": "Run /init", "systemd": "systemd["}
        seen = {}
        deadline = time.monotonic() + boot_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError("QEMU exited with %s; see %s" % (proc.returncode, os.path.join(RUN_DIR, "qemu.log")))
            console = self._console()
            for name, needle in marks.items():
                if name not in seen and needle in console:
                    seen[name] = time.monotonic()
            if self.run("true", check=False, timeout=10, connect_timeout=3).returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the box did not answer ssh within %ds; console: %s" % (boot_timeout, self.console_log))
            time.sleep(1)
        t_ssh = time.monotonic()
        phases["boot to ssh"] = t_ssh - t_qemu
        for name in marks:
            if name in seen:
                phases["  (%s seen at)" % name] = seen[name] - t_qemu
        self.state["boot_phases"] = phases
        self.state["boot_seconds"] = t_ssh - t_lock
        with open(STATE_FILE, "w") as f:
            json.dump(self.state, f)
        for name, secs in phases.items():
            log("%-22s %6.1f s" % (name, secs))
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        pid = self.state["pid"]
        self.run("systemctl poweroff --no-block", check=False, timeout=10, connect_timeout=3)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.3)
        if self.alive():
            os.kill(pid, signal.SIGKILL)
            while self.alive():
                time.sleep(0.1)
        subprocess.run(["ssh", "-O", "exit", "-o", "ControlPath=%s" % self._control_path(), "box"],
                       capture_output=True, check=False)
        try:
            os.unlink(STATE_FILE)
        except FileNotFoundError:
            pass

    # ---- talking to the box ----------------------------------------------
    def _control_path(self) -> str:
        return os.path.join(RUN_DIR, "ssh-control")

    def ssh_options(self, connect_timeout: int = 10) -> list:
        return ["-i", self.key, "-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=%d" % connect_timeout, "-o", "ControlMaster=auto",
                "-o", "ControlPath=%s" % self._control_path(), "-o", "ControlPersist=600"]

    def run(self, cmd: str, check: bool = True, timeout: float = 120, connect_timeout: int = 10,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on the box as root."""
        argv = ["ssh"] + self.ssh_options(connect_timeout) + ["root@127.0.0.1", cmd]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            if check:
                raise
            return subprocess.CompletedProcess(argv, 124, exc.stdout or "", exc.stderr or "")
        if check and res.returncode != 0:
            raise AssertionError("box command failed (rc=%d): %s\nstdout: %s\nstderr: %s"
                                 % (res.returncode, cmd, res.stdout, res.stderr))
        return res

    def put_tree(self, local_dir: str, remote_dir: str) -> None:
        """Copy a local directory's contents to the box (tar over ssh, symlinks followed)."""
        tar = subprocess.Popen(["tar", "-C", local_dir, "-chf", "-", "--exclude=__pycache__", "."],
                               stdout=subprocess.PIPE)
        remote = shlex.quote(remote_dir)
        argv = ["ssh"] + self.ssh_options() + ["root@127.0.0.1", "mkdir -p %s && tar -C %s -xf -" % (remote, remote)]
        subprocess.run(argv, stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()

    def install_cli(self) -> None:
        """Install the box command from this checkout, as the role lays it out."""
        src = os.path.join(REPO, "plugins", "module_utils")
        self.run("rm -rf /usr/local/lib/onekvm/onekvm")
        self.put_tree(src, "/usr/local/lib/onekvm/onekvm")
        # owned and moded as the role installs them: a role run on this box then finds the modules
        # in place by checksum and copies none of them
        self.run("chown -R root:root /usr/local/lib/onekvm/onekvm && "
                 "find /usr/local/lib/onekvm/onekvm -type f -exec chmod 0644 {} + && "
                 "find /usr/local/lib/onekvm/onekvm -type d -exec chmod 0755 {} +")
        entry = render_entry_script("/usr/bin/python3", "/usr/local/lib/onekvm")
        self.run("touch /usr/local/lib/onekvm/onekvm/__init__.py && cat > /usr/local/bin/onekvm && "
                 "chmod 755 /usr/local/bin/onekvm", input=entry)

    # ---- One-KVM 0.2 on the same box (the flavour switched) -------------------
    ONEKVM2_FILES = {"sim": "/usr/lib/one-kvm-sim/onekvm2_sim.py", "bin": "/usr/bin/one-kvm",
                     "unit": "/lib/systemd/system/one-kvm.service", "data": "/etc/one-kvm"}

    def install_onekvm2(self, user: str, password: str, timeout: float = 90) -> None:
        """Make this box a One-KVM 0.2 box: kvmd off, the simulator as one-kvm.service.

        Installed over ssh (the simulator needs only the box's python3), so the image stays
        the same: the unit is One-KVM's own (tests/testbed/one-kvm.service), the data
        directory is seeded with one user as One-KVM's setup wizard would leave it.
        """
        files = self.ONEKVM2_FILES
        with open(os.path.join(HERE, "onekvm2_sim.py"), encoding="utf-8") as f:
            self.run("install -d %s && cat > %s" % (os.path.dirname(files["sim"]), files["sim"]), input=f.read())
        self.run("cat > %s && chmod 755 %s" % (files["bin"], files["bin"]),
                 input="#!/bin/sh\n# One-KVM 0.2 stand-in (onekvm.fleet test bed)\n"
                       "exec /usr/bin/python3 %s --access-log \"$@\"\n" % files["sim"])
        with open(os.path.join(HERE, "one-kvm.service"), encoding="utf-8") as f:
            self.run("cat > %s" % files["unit"], input=f.read())
        self.run("umask 077 && cat > /run/one-kvm-init && %s --init-user %s --init-password-file /run/one-kvm-init "
                 "--init-only; rc=$?; rm -f /run/one-kvm-init; exit $rc" % (files["bin"], shlex.quote(user)),
                 input=password)
        # a capture watchdog set up for kvmd would restart kvmd's streamer: the role sets it up again
        self.run("systemctl stop onekvm-watchdog.service", check=False)
        self.run("systemctl disable --now kvmd.service && systemctl daemon-reload && "
                 "systemctl enable --now one-kvm.service")
        up = wait_for(lambda: self.run("python3 -c \"import urllib.request as u; "
                                       "u.urlopen('http://127.0.0.1:8080/api/health', timeout=5)\"",
                                       check=False).returncode == 0, timeout)
        assert up, "one-kvm.service did not answer on port 8080: %s" % self.run(
            "journalctl -u one-kvm.service -n 20 --no-pager", check=False).stdout

    def uninstall_onekvm2(self) -> None:
        """Back to a kvmd box: one-kvm.service and its data gone, kvmd running again."""
        files = self.ONEKVM2_FILES
        self.run("systemctl disable --now one-kvm.service; rm -rf %s %s %s %s; systemctl daemon-reload; "
                 "systemctl reset-failed one-kvm.service; systemctl enable --now kvmd.service"
                 % (files["unit"], files["bin"], os.path.dirname(files["sim"]), files["data"]), check=False)

    def serial_by_path(self, port_path: str, timeout: float = 60) -> str:
        """The stable /dev/serial/by-path name of the USB-serial adapter at ``port_path`` (like 1-1.1)."""
        def find():
            res = self.run("ls /dev/serial/by-path/ | grep -- 'usb-0:%s:1.0-port0$'" % port_path.split("-", 1)[1],
                           check=False)
            return res.stdout.strip()
        name = wait_for(find, timeout)
        assert name, "no /dev/serial/by-path entry for the USB-serial adapter at %s" % port_path
        return "/dev/serial/by-path/" + name

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> dict:
        """Run ``onekvm --json ARGS`` on the box and return its JSON (plus ``rc``)."""
        res = self.run("onekvm --json " + " ".join(shlex.quote(a) for a in args), check=False, timeout=timeout)
        try:
            data = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        except ValueError:
            data = {"stdout": res.stdout}
        data["rc"] = res.returncode
        if check and res.returncode != 0:
            raise AssertionError("onekvm %s failed (rc=%d): %s %s" % (" ".join(args), res.returncode, data, res.stderr))
        if not res.stdout.strip():
            data["stderr"] = res.stderr
        return data

    def _write_inventory(self) -> None:
        ssh_args = " ".join(o for o in self.ssh_options()[4:])
        with open(self.inventory, "w") as f:
            f.write("[onekvm]\nbox ansible_host=127.0.0.1 ansible_port=%d ansible_user=root "
                    "ansible_ssh_private_key_file=%s ansible_python_interpreter=/usr/bin/python3 "
                    "ansible_ssh_common_args=%s\n" % (self.ssh_port, self.key, shlex.quote(ssh_args)))

    def ansible_env(self) -> dict:
        env = dict(os.environ)
        env.update({"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                    "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "True"})
        return env

    def ansible(self, module: str, args: dict | None = None, check_mode: bool = False, timeout: float = 300) -> dict:
        """Run one module ad hoc against the box; return its result for the host."""
        argv = ["ansible", "box", "-i", self.inventory, "-m", module]
        if args:
            argv += ["-a", json.dumps(args)]
        if check_mode:
            argv.append("--check")
        res = subprocess.run(argv, capture_output=True, text=True, env=self.ansible_env(), timeout=timeout, check=False)
        try:
            data = json.loads(res.stdout[res.stdout.index("{"):])
            return data["plays"][0]["tasks"][0]["hosts"]["box"]
        except (ValueError, KeyError, IndexError):
            raise AssertionError("ansible %s gave no result (rc=%d)\nstdout: %s\nstderr: %s"
                                 % (module, res.returncode, res.stdout, res.stderr)) from None

    def apply_role(self, extra_vars: dict, tasks_from: tuple = (), timeout: float = 900) -> subprocess.CompletedProcess:
        """Run the role onekvm.fleet.onekvm (or its task files ``tasks_from``, in order) against the box.

        Some task files are much cheaper than the whole role under TCG: ``("render", "watchdog")``, or
        ``("preflight", "commands", "udev", "gpio")`` for the buttons. render.yml takes the box's OS
        family from its caller, as the role's preflight passes it; gpio.yml the wrappers render.yml
        made, as apply.yml passes them.
        """
        import tempfile  # pylint: disable=import-outside-toplevel

        if tasks_from:
            task_vars = {"_onekvm_os_family": "{{ ansible_facts.os_family }}",
                         "_onekvm_root_wanted": "{{ _onekvm_files.values() | selectattr('button', 'defined') | list }}"}
            tasks = [{"name": "OS family", "ansible.builtin.setup": {"gather_subset": ["min"]}}]
            tasks += [{"name": "Role tasks " + name, "vars": task_vars,
                       "ansible.builtin.include_role": {"name": "onekvm.fleet.onekvm", "tasks_from": name}}
                      for name in tasks_from]
        else:
            tasks = [{"name": "Role", "ansible.builtin.include_role": {"name": "onekvm.fleet.onekvm"}}]
        play = [{"hosts": "box", "gather_facts": False, "tasks": tasks}]
        with tempfile.TemporaryDirectory() as tmp:
            play_path = os.path.join(tmp, "play.yml")
            vars_path = os.path.join(tmp, "vars.json")
            with open(play_path, "w") as f:
                json.dump(play, f)
            with open(vars_path, "w") as f:
                json.dump(extra_vars, f)
            return subprocess.run(["ansible-playbook", "-i", self.inventory, play_path, "-e", "@" + vars_path],
                                  capture_output=True, text=True, env=self.ansible_env(), timeout=timeout, check=False)

    def install_rendered(self, extra_vars: dict, only: tuple = (), timeout: float = 300) -> list:
        """Put the files the role renders for this box in place, as its handlers then apply them.

        The role's offline entry point (the playbook onekvm.fleet.validate, run on the controller:
        the same ``_onekvm_files`` its apply tasks write, checked as the box would check them) renders
        them with the box's file modes; one tar over ssh puts them on the box, owned by root; then
        systemd, udev and kvmd take them up as the role's handlers make them. Seconds instead of the
        minutes a role run takes under TCG; the role's apply tasks have their own molecule tests.
        With ``only`` (paths on the box), just those files are put in place and only systemd is
        reloaded (udev and kvmd are left alone): the caller does what the task files that write
        them do next. Returns the paths written on the box.
        """
        import tempfile  # pylint: disable=import-outside-toplevel

        with tempfile.TemporaryDirectory() as tmp:
            vars_path = os.path.join(tmp, "vars.json")
            with open(vars_path, "w") as f:
                json.dump(extra_vars, f)
            out = os.path.join(tmp, "validate")
            res = subprocess.run(["ansible-playbook", "-i", self.inventory, "onekvm.fleet.validate", "-e", "fleet_hosts=box",
                                  "-e", "validate_dir=" + out, "-e", "@" + vars_path],
                                 capture_output=True, text=True, env=self.ansible_env(), timeout=timeout, check=False)
            if res.returncode != 0:
                raise AssertionError("the role's offline render failed:\n" + res.stdout[-4000:] + res.stderr[-2000:])
            root = os.path.join(out, "box")
            paths = sorted(os.path.relpath(os.path.join(d, name), root) for d, _subdirs, names in os.walk(root) for name in names)
            if only:
                missing = sorted(set(only) - {"/" + path for path in paths})
                if missing:
                    raise AssertionError("the role renders none of %s for these settings" % ", ".join(missing))
                paths = [path for path in paths if "/" + path in only]
            # only the files: directories that exist on the box keep their owner and mode
            tar = subprocess.Popen(["tar", "-C", root, "--owner=root", "--group=root", "-cf", "-", "--"] + paths,
                                   stdout=subprocess.PIPE)
            argv = ["ssh"] + self.ssh_options() + ["root@127.0.0.1", "tar -C / --no-overwrite-dir -xpf -"]
            subprocess.run(argv, stdin=tar.stdout, check=True, capture_output=True, timeout=120)
            tar.wait()
        if only:
            self.run("systemctl daemon-reload", timeout=120)
            return ["/" + path for path in paths]
        self.run("systemctl daemon-reload && udevadm control --reload && "
                 "udevadm trigger --action=add --subsystem-match=video4linux --subsystem-match=tty && udevadm settle && "
                 "systemctl restart kvmd", timeout=180)
        return ["/" + path for path in paths]

    def kvmd_api(self, method: str, path: str) -> dict:
        """A request to kvmd's API on its unix socket on the box (the stand-in's, like kvmd's)."""
        script = ("import http.client,json,socket,sys\n"
                  "class C(http.client.HTTPConnection):\n"
                  "    def connect(self):\n"
                  "        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(300)\n"
                  "        self.sock.connect('/run/kvmd/kvmd.sock')\n"
                  "c = C('localhost'); c.request(sys.argv[1], sys.argv[2]); print(c.getresponse().read().decode())\n")
        res = self.run("python3 -c %s %s %s" % (shlex.quote(script), shlex.quote(method), shlex.quote(path)),
                       check=False, timeout=320)
        if res.returncode != 0:
            return {"ok": False, "error": res.stderr.strip()}
        return json.loads(res.stdout)

    def monitor(self, command: str, timeout: float = 10) -> str:
        """Send one command to QEMU's human monitor and return its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(self.monitor_socket)
            banner = b""
            while b"(qemu)" not in banner:
                banner += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            out = b""
            while out.count(b"(qemu)") < 1:
                out += s.recv(4096)
        text = out.decode(errors="replace").replace("\r", "")
        lines = [ln for ln in text.split("\n") if ln.strip() and not ln.startswith("(qemu)") and command not in ln]
        return "\n".join(lines)

    def log_mark(self) -> str:
        mark = "onekvm-mark-%d" % time.monotonic_ns()
        self.run("echo %s > /dev/kmsg" % mark)
        return mark

    def kernel_log_since(self, mark: str) -> str:
        out = self.run("dmesg").stdout
        idx = out.rfind(mark)
        return out[idx + len(mark):] if idx >= 0 else out

    def _console(self) -> str:
        try:
            with open(self.console_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def main(argv: list) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0
    cmd = argv[0]
    if cmd == "start":
        box = Box.load() or Box().start()
        sys.stdout.write("box running: ssh port %d, inventory %s\n" % (box.ssh_port, box.inventory))
    elif cmd == "stop":
        box = Box.load()
        if box and box.state.get("owner") and not box.orphaned() and "--force" not in argv:
            sys.stderr.write("the box belongs to a running test run (pid %d); use --force\n" % box.state["owner"])
            return 1
        if box:
            box.stop()
        sys.stdout.write("box stopped\n")
    elif cmd == "status":
        box = Box.load()
        sys.stdout.write(json.dumps(box.state if box else {"running": False}, indent=2) + "\n")
    elif cmd == "inventory":
        box = Box.load()
        if not box:
            sys.stderr.write("no box running\n")
            return 1
        sys.stdout.write(box.inventory + "\n")
    elif cmd == "ssh":
        box = Box.load()
        if not box:
            sys.stderr.write("no box running\n")
            return 1
        res = box.run(" ".join(argv[1:]) or "true", check=False)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.returncode
    else:
        sys.stderr.write("unknown command %s\n" % cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
