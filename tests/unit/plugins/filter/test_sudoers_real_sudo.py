# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The real sudo judges the role's sudoers drop-in, rendered from hostile inventories.

The role's files (the GPIO config, the sudoers drop-in, the root buttons' wrappers) are
rendered from its filters and templates. The drop-in is installed into a private mount
namespace (``unshare -m``: a temporary /etc/sudoers, /etc/sudoers.d and /etc/passwd are
bound over the real ones there only, so the host's sudo rules stay untouched), and
``sudo -l -U <user> <argv>`` (sudo's own answer: exit 0 and the command printed when the
policy allows it) says what kvmd's user may run as root. For every root button the exact
argv kvmd runs must be allowed, and every variation refused: an extra argument, a changed
or dropped argument, a wildcard's match, another program, another user, another run-as
user or group. The wrappers themselves run under the real /bin/sh and must pass exactly
the button's arguments, whatever they are given.
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.filter.kvmd_gpio import kvmd_gpio, kvmd_gpio_sudoers

TEMPLATES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "onekvm", "templates")
SUDO = shutil.which("sudo") or "/usr/bin/sudo"
OTHER_USER = "onekvmother"
KVMD_SUDO = "/usr/bin/sudo"  # kvmd_gpio's default sudo_bin, what render_role_files uses

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace (unshare -m)")

# Run in the namespace: bind the temporary files over /etc, then answer one argv per line.
_JUDGE = r"""
import json, subprocess, sys
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    subprocess.run(["mount", "--bind", src, dst], check=True)
print("ready", flush=True)
for line in sys.stdin:
    p = subprocess.run(json.loads(line), capture_output=True)
    print(json.dumps([p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")]), flush=True)
"""


class SudoJudge:
    """The real sudo, reading only our sudoers files, in a private mount namespace."""

    def __init__(self, root):
        if not os.path.exists(SUDO) or not os.path.exists("/etc/sudoers"):
            pytest.fail("sudo is not installed (scripts/setup.sh installs it): the real sudo must judge the rules")
        self.root = root
        self.sudoers_d = os.path.join(root, "sudoers.d")
        os.mkdir(self.sudoers_d, 0o755)
        self.drop_in = os.path.join(self.sudoers_d, "onekvm")
        self.passwd = os.path.join(root, "passwd")
        main = os.path.join(root, "sudoers")
        with open(main, "w", encoding="utf-8") as handle:
            handle.write("Defaults env_reset\n@includedir /etc/sudoers.d\n")
        os.chmod(main, 0o440)
        self.users = set()
        self.set_users(["kvmd"])
        binds = [main, "/etc/sudoers", self.sudoers_d, "/etc/sudoers.d", self.passwd, "/etc/passwd"]
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable, "-c", _JUDGE] + binds,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def set_users(self, users):
        """The namespace's /etc/passwd: the host's plus these users (rewritten in place: the bind follows the inode)."""
        users = set(users) | {OTHER_USER}
        if users == self.users:
            return
        with open("/etc/passwd", encoding="utf-8") as handle:
            lines = [line for line in handle.read().splitlines() if line]
        known = {line.split(":", 1)[0] for line in lines}
        lines += ["%s:x:%d:%d::/nonexistent:/usr/sbin/nologin" % (user, 40000 + n, 40000 + n)
                  for n, user in enumerate(sorted(users - known))]
        with open(self.passwd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        self.users = users

    def install(self, text):
        with open(self.drop_in, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(self.drop_in, 0o440)

    def run(self, argv):
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def allows(self, user, argv, *runas):
        rc, out, err = self.run([SUDO, "-n", "-l", "-U", user] + list(runas) + ["--"] + argv)
        assert rc in (0, 1), (argv, rc, out, err)
        return rc == 0

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def judge():
    root = tempfile.mkdtemp(prefix="onekvm-sudo-")
    judge = SudoJudge(root)
    yield judge
    judge.close()
    shutil.rmtree(root)


def render(path, variables):
    """A role template, rendered by Ansible's own templating with these variables."""
    with open(os.path.join(TEMPLATES, path), encoding="utf-8") as handle:
        source = handle.read()
    variables = dict(variables, ansible_managed="Ansible managed")
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(source))


def render_role_files(buttons, user, button_dir):
    """What the role writes for these buttons: kvmd's gpio section, the sudoers drop-in, the wrappers."""
    gpio = kvmd_gpio(buttons, button_dir=button_dir)
    root_buttons = kvmd_gpio_sudoers(buttons, user=user, button_dir=button_dir)
    variables = {"_onekvm_root_buttons": root_buttons, "onekvm_kvmd_user": user, "onekvm_button_dir": button_dir}
    sudoers = render("sudoers.j2", variables) if root_buttons else ""
    wrappers = {button["wrapper"]: render("onekvm-button.sh.j2", dict(variables, item=button)) for button in root_buttons}
    return gpio, root_buttons, sudoers, wrappers


def kvmd_runs(gpio):
    """The argv kvmd's cmd/cmdret drivers start for each button."""
    return {name: driver["cmd"] for name, driver in gpio["drivers"].items() if driver["type"] in ("cmd", "cmdret")}


def wildcard_match(arg):
    """A different string that sudoers' glob would match if ``arg`` reached it unescaped."""
    return arg.replace("*", "0 --state-file /etc/ld.so.preload").replace("?", "Q").replace("[", "").replace("]", "")


def variations(argv):
    """Argument lists a caller might try instead of the allowed one."""
    found = [argv + ["x"], argv + [""], argv + ["#"], argv + ["--anything", "/etc/shadow"], ["/bin/sh", "-c", "id"], ["/bin/sh"]]
    if len(argv) > 1:
        found += [argv[:-1], argv[:-1] + [argv[-1] + "x"], argv[:1] + argv[2:] if len(argv) > 2 else argv[:1] + ["-"]]
        found += [[argv[0]] + [wildcard_match(arg) for arg in argv[1:]]]
    return [variant for variant in found if variant != argv]


def check_with_real_sudo(judge, tmp, buttons, user):
    """Render, install in the namespace, and ask sudo; return the number of sudo questions asked."""
    button_dir = os.path.join(tmp, "buttons")
    gpio, root_buttons, sudoers, wrappers = render_role_files(buttons, user, button_dir)
    shutil.rmtree(button_dir, ignore_errors=True)
    os.mkdir(button_dir, 0o755)
    for path, text in wrappers.items():
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, 0o755)
    other = os.path.join(button_dir, "zz_not_a_button")  # another program in the same directory
    with open(other, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\n")
    os.chmod(other, 0o755)
    judge.set_users([user])
    drop_in = os.path.join(tmp, "drop-in")
    with open(drop_in, "w", encoding="utf-8") as handle:
        handle.write(sudoers)
    check = subprocess.run(["visudo", "-cf", drop_in], capture_output=True, text=True, check=False)
    assert check.returncode == 0, (sudoers, check.stdout, check.stderr)  # the role's validate step would accept it
    judge.install(sudoers)
    asked = 0
    commands = kvmd_runs(gpio)
    for name, argv in commands.items():
        rooted = argv[:2] == [KVMD_SUDO, "-n"]
        if not rooted:
            assert not judge.allows(user, argv), (name, argv, sudoers)
            asked += 1
            continue
        exact = argv[2:]
        assert judge.allows(user, exact), ("the button's own command is refused", name, exact, sudoers)
        assert not judge.allows(OTHER_USER, exact), ("another user", name, sudoers)
        assert not judge.allows(user, exact, "-u", OTHER_USER), ("another run-as user", name, sudoers)
        assert not judge.allows(user, exact, "-g", "daemon"), ("another run-as group", name, sudoers)
        asked += 4
        tries = variations(exact) + [[other]]
        tries += [inner + extra for inner in [b["argv"] for b in root_buttons if b["name"] == name] for extra in ([], ["x"])]
        for variant in tries:
            if variant != exact:
                assert not judge.allows(user, variant), ("a variation is allowed", name, exact, variant, sudoers)
                asked += 1
    for button in root_buttons:  # the wrapper runs exactly the button's argv, whatever it is given
        assert commands[button["name"]][2:] == [button["wrapper"]]
    return asked


def check_wrapper_runs_exact_argv(tmp, root_buttons):
    """Run each wrapper with the real /bin/sh, the command swapped for a recorder, and extra arguments."""
    for button in root_buttons:
        record = os.path.join(tmp, "argv.json")
        recorder = os.path.join(tmp, "recorder")
        with open(recorder, "w", encoding="utf-8") as handle:
            handle.write("#!%s\nimport json, sys\nopen(%r, 'w').write(json.dumps(sys.argv[1:]))\n" % (sys.executable, record))
        os.chmod(recorder, 0o755)
        wrapper_text = render("onekvm-button.sh.j2", {"item": dict(button, argv=[recorder] + button["argv"][1:])})
        wrapper = os.path.join(tmp, "wrapper")
        with open(wrapper, "w", encoding="utf-8") as handle:
            handle.write(wrapper_text)
        os.chmod(wrapper, 0o755)
        subprocess.run(["/bin/sh", wrapper, "--extra", "/etc/shadow", "*"], check=True, env={"PATH": "/usr/bin:/bin"})
        with open(record, encoding="utf-8") as handle:
            assert json.load(handle) == button["argv"][1:], wrapper_text


# --- hostile inventories ---------------------------------------------------------------------
# Values the design must carry exactly (sudoers specials, whitespace, unicode, long) ...
SUDOERS_SPECIALS = list("#*?[]^$\\,:=()!\"' \t\x0b\x0c\r%@+~`&;|<>{}-") + ["\u00a0", "\u2028", "\u00e9", "\U0001f600"]
GOOD_ARG = st.one_of(
    st.text(st.sampled_from(SUDOERS_SPECIALS), max_size=10),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\x00"), max_size=10),
    st.lists(st.sampled_from(['""', "ALL", "/etc/shadow", "#", "*", " ", "\\", "--state-file"]), max_size=4).map("".join),
    st.builds(operator.mul, st.sampled_from(["#", "a*", "\u00e9\\", " ", "x"]), st.integers(100, 2000)),
    st.builds(operator.mul, st.just("y"), st.integers(4090, 4096)),  # up to the length limit
    st.sampled_from(["#cycle", "/dev/ttyUSB*", "^/bin/.*$", "a\\b", '""', "", "--port", "ALL"]),
)
GOOD_PROGRAM = st.sampled_from(["/bin/echo", "/usr/local/bin/kvm-power", "/usr/bin/true", "/opt/a.b/c+d@e:f-g_h"])
GOOD_NAME = st.from_regex(r"\A[a-z_][a-z0-9_-]{0,10}\Z").filter(lambda n: not (n.startswith("__") and n.endswith("__")))
GOOD_PORT = st.sampled_from(["/dev/onekvm-relay", "/dev/ttyUSB0", "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",
                             "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.2:1.0-port0"])
GOOD_USER = st.sampled_from(["kvmd", "kvmd-webui", "_kvmd"])
# ... and values it must refuse, naming the button and the value.
BAD = {
    "arg": st.one_of(st.sampled_from(["a\nb", "a\x00b", "\n", "x\n"]), st.builds(operator.mul, st.just("z"), st.integers(4097, 4200))),
    "program": st.sampled_from(["/bin/ec*", "/bin/../bin/sh", "/bin/./echo", "//bin/echo", "/bin/e cho", "relative", "/bin/#x",
                                "/bin/\u00e9", "/bin/echo\n", "/bin/x,y", "/bin/x=y", "/bin/"]),
    "name": st.one_of(GOOD_NAME.map(lambda n: n + "\n"), st.sampled_from(["a*", "a b", "../x", "a#", "\u00e9", "a,b", "a:b", ""])),
    "port": st.sampled_from(["/dev/ttyUSB*", "/dev/../etc/x", "/dev/./x", "/dev//x", "/dev/x\n", "/dev/x y", "/dev/x#", "/dev/",
                             "/dev/tty?", "/dev/x\\y", "dev/ttyUSB0", "/devx"]),
    "user": st.sampled_from(["ALL", "kvmd\nALL ALL=(ALL) ALL", "%sudo", "#0", "+admins", "kvmd,root", "kvmd ", "", "Kvmd",
                             "kvmd\n", "kvmd:x", "k*", "a" * 33]),
}


@st.composite
def inventories(draw):
    """(buttons, user, the one value the role must refuse or None)."""
    buttons = []
    for index in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cmd", "cmd", "led", "relay"]))
        name = "%s_%d" % (draw(GOOD_NAME), index)
        if kind == "relay":
            buttons.append({"name": name, "kind": "relay", "channel": draw(st.integers(1, 8)), "port": draw(GOOD_PORT)})
        else:
            argv = [draw(GOOD_PROGRAM)] + draw(st.lists(GOOD_ARG, max_size=4))
            buttons.append({"name": name, "kind": kind, "cmd": argv, "sudo": draw(st.booleans())})
    user = draw(GOOD_USER)
    where = draw(st.sampled_from([None, None, None, "arg", "program", "name", "port", "user"]))
    if where is None:
        return buttons, user, None
    bad = draw(BAD[where])
    button = buttons[draw(st.integers(0, len(buttons) - 1))]
    if where == "user":
        user = bad
    elif where == "name":
        button["name"] = bad
    elif where == "port":
        button.clear()
        button.update({"name": "relay_bad", "kind": "relay", "channel": 1, "port": bad})
    else:
        if button["kind"] == "relay":
            button.clear()
            button.update({"name": "cmd_bad", "kind": "cmd", "cmd": ["/bin/echo"], "sudo": True})
        if where == "program":
            button["cmd"][0] = bad
        else:
            button["cmd"].insert(draw(st.integers(1, len(button["cmd"]))), bad)
    return buttons, user, bad


HOSTILE = {"tried": 0, "refused": 0, "judged": 0, "questions": 0}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(inventories())
def test_real_sudo_allows_exactly_each_root_button(judge, tmp_path_factory, inventory):
    buttons, user, bad = inventory
    tmp = str(tmp_path_factory.mktemp("inv"))
    HOSTILE["tried"] += 1
    if bad is not None:
        with pytest.raises(AnsibleFilterError) as refused:
            render_role_files(buttons, user, os.path.join(tmp, "buttons"))
        message = str(refused.value)
        assert repr(bad)[1:12] in message or repr(bad[:40])[1:12] in message, (bad, message)  # names the value
        assert "kvmd user" in message or "button " in message, message  # and the button
        HOSTILE["refused"] += 1
        return
    HOSTILE["questions"] += check_with_real_sudo(judge, tmp, buttons, user)
    check_wrapper_runs_exact_argv(tmp, kvmd_gpio_sudoers(buttons, user=user, button_dir=os.path.join(tmp, "buttons")))
    HOSTILE["judged"] += 1


# --- the cases from the attack, by name -----------------------------------------------------------
@pytest.mark.parametrize("buttons", [
    pytest.param([{"name": "power", "cmd": ["/bin/echo", "#cycle"], "sudo": True}], id="hash-starts-a-comment"),
    pytest.param([{"name": "relay", "kind": "relay", "channel": 1, "port": "/dev/ttyUSB0"},
                  {"name": "glob", "cmd": ["/bin/echo", "/dev/ttyUSB*"], "sudo": True}], id="wildcard"),
    pytest.param([{"name": "re", "cmd": ["/bin/echo", "^/bin/.*$"], "sudo": True}], id="regex-rule"),
    pytest.param([{"name": "bs", "cmd": ["/bin/echo", "a\\b"], "sudo": True}], id="backslash"),
    pytest.param([{"name": "empty", "cmd": ["/bin/echo", '""'], "sudo": True}], id="empty-quotes"),
    pytest.param([{"name": "space", "cmd": ["/bin/echo", "two words", ""], "sudo": True}], id="whitespace-and-empty"),
    pytest.param([{"name": "hid", "cmd": ["/usr/local/sbin/onekvm-reset-hid"], "sudo": True},
                  {"name": "led", "kind": "led", "cmd": ["/bin/echo", "a,b:c=d"], "sudo": True}], id="no-args-and-led"),
])
def test_named_attacks_are_judged_by_real_sudo(judge, tmp_path, buttons):
    assert check_with_real_sudo(judge, str(tmp_path), buttons, "kvmd") > 0


@pytest.mark.parametrize("user", ["ALL", "kvmd\nALL ALL=(ALL) ALL", "%sudo", "kvmd,root", "#0", "kvmd\n"])
def test_user_that_is_not_one_plain_name_is_refused(user):
    with pytest.raises(AnsibleFilterError, match=r"kvmd user .* not a plain user name.*onekvm_kvmd_user"):
        kvmd_gpio_sudoers([{"name": "a", "cmd": ["/bin/true"], "sudo": True}], user=user)


def test_hostile_inventory_counts_are_reported():
    # printed for the note (pytest -s); the property test ran before this one in file order
    print("hostile inventories: %(tried)d tried, %(refused)d refused by the role, %(judged)d judged by sudo "
          "(%(questions)d sudo questions)" % HOSTILE)
    assert HOSTILE["tried"] == 0 or HOSTILE["refused"] + HOSTILE["judged"] == HOSTILE["tried"]
