# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``onekvm status`` and ``onekvm watchdog``: the capture watchdog on the box command.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

``watchdog`` is what onekvm-watchdog.service runs. An invalid config ends it with exit
code 2 (listed in the unit's RestartPreventExitStatus=), so systemd reports the one clear
error line instead of restarting it in a loop.
"""

from __future__ import annotations

import json
import signal

from . import _kvmd, _watchdog
from ._errors import NotFound


def configure(command: str, parser) -> None:
    if command == "status":
        parser.add_argument("--state-file", default=_watchdog.DEFAULT_STATE_FILE,
                            help="the state file the watchdog writes (default: %(default)s)")
        return
    parser.add_argument("--config", default=_watchdog.DEFAULT_CONFIG_PATH,
                        help="the JSON config rendered by the role (default: %(default)s)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print it with defaults filled in, and exit")
    parser.add_argument("--once", action="store_true",
                        help="run one check (and at most one ladder step), write the reports, and exit")


def run(args) -> dict:
    if args.command == "status":
        return _status(args.state_file)
    config = _watchdog.load_config(args.config)
    if args.check_config:
        return {"message": "watchdog config %s is valid" % args.config, "config": config._asdict()}
    service = _watchdog.Service(config)
    if args.once:
        service.start()
        events = service.check_once()
        return {"message": service.status_line(), "events": events, "state": service.state()}
    stop = _StopFlag()
    service.run(should_stop=stop)
    return {"message": "watchdog stopped (signal %s)" % stop.signum}


class _StopFlag:
    """Set by SIGTERM/SIGINT so the loop ends after the current check, cleanly."""

    def __init__(self) -> None:
        self.signum = None
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, frame) -> None:
        self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None


def _status(path: str) -> dict:
    reset_hid = _kvmd.reset_hid_outcome()
    try:
        state = _watchdog.read_state(path)  # a JSON object, or a clear error
    except NotFound as exc:
        if reset_hid:
            exc.msg += "; Reset HID: %s" % reset_hid["summary"]
        raise
    domains = _object(state.get("domains"))
    if len(domains) > 1:
        summary = "; ".join("%s %s" % (name, _summary(_object(d))) for name, d in domains.items())
    else:
        summary = _summary(state)
    # the file outlives the service (stopped, killed, a --once run), and a pid alone may name
    # any process: running means that pid is a watchdog that started when the file says
    pid = state.get("pid")
    state["running"] = _watchdog.is_watchdog_process(pid, state.get("pid_start"))
    if state["running"]:
        state["message"] = "watchdog: " + summary
    else:
        why = "is another process, not the watchdog that wrote this" if _watchdog.process_alive(pid) else "is gone"
        state["message"] = "watchdog: not running (pid %s %s); its last state: %s" % (_text(pid), why, summary)
    state["reset_hid"] = reset_hid
    if reset_hid:
        state["message"] += "\nReset HID: " + reset_hid["summary"]
    return state


def _summary(state: dict) -> str:
    """One domain's status, its reasons while failing, and its last action."""
    failure = _object(state.get("last_failure"))
    action = _object(state.get("last_action"))
    summary = _text(state.get("status", "?"))
    reasons = failure.get("reasons")
    if summary != "ok" and isinstance(reasons, list) and reasons:
        summary += " (%s)" % "; ".join(_text(r) for r in reasons)
    if action:
        summary += "; last action %s: %s" % (_text(action.get("step")), _text(action.get("result")))
    return summary


def _object(value) -> dict:
    return value if isinstance(value, dict) else {}


def _text(value) -> str:
    return (value if isinstance(value, str) else json.dumps(value))[:200]
