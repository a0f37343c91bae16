# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report filter and the health gate's button check."""

from __future__ import annotations

import json

from ansible_collections.onekvm.fleet.plugins.filter.fleet_health import FilterModule, fleet_health, iso_time
from ansible_collections.onekvm.fleet.plugins.filter.fleet_missing_buttons import fleet_missing_buttons

T0 = 1795000000.0  # 2026-11-18T...Z


def watchdog_state(status="ok", **extra):
    state = {"status": status, "message": "watchdog: %s" % status, "failing_since": None, "last_failure": None,
             "last_action": None, "checked_at": T0 + 100,
             "counters": {"checks": 10, "failures": 0, "recoveries": 0, "needs_human": 0, "rate_limited": 0,
                          "actions": {}, "last_recovery_seconds": None}}
    state.update(extra)
    return state


def collected(name, state=None, **extra):
    box = {"name": name, "reachable": True, "error": None, "collected_at": "2026-11-23T21:00:00Z", "kvmd": "active",
           "watchdog_enabled": True, "watchdog_unit": "active", "watchdog_rc": 0,
           "watchdog_stdout": json.dumps(state if state is not None else watchdog_state()), "watchdog_stderr": "",
           "usb": [{"port": "1-1.2", "id": "534d:2109", "product": "USB Video", "nodes": ["/dev/video0"], "bus": 1}],
           "usb_error": None, "ch9329_skipped": False, "ch9329_error": None,
           "ch9329_info": {"version": "V1.0", "usb_enumerated": True}, "ch9329_port": "/dev/kvmd-hid"}
    box.update(extra)
    return box


def report(*boxes):
    return fleet_health([b["name"] for b in boxes], list(boxes), generated_at="now")


def states(result):
    return [(b["name"], b["state"]) for b in result["boxes"]]


def test_a_healthy_box_is_ok_with_nothing_to_say():
    result = report(collected("kvm1"))
    box = result["boxes"][0]
    assert box["state"] == "ok" and box["problems"] == [] and box["warnings"] == []
    assert box["usb"] == [{"port": "1-1.2", "id": "534d:2109", "product": "USB Video", "nodes": ["/dev/video0"]}]
    assert box["ch9329"] == {"version": "V1.0", "usb_enumerated": True, "port": "/dev/kvmd-hid"}
    assert result["summary"]["ok"] == 1 and result["summary"]["boxes"] == 1


def test_failing_and_unreachable_boxes_come_first_then_warnings_then_ok():
    result = report(
        collected("a-ok"),
        collected("b-warn", ch9329_info=None, ch9329_error="no reply from /dev/kvmd-hid"),
        collected("c-fail", kvmd="failed"),
        {"name": "d-gone", "reachable": False, "error": "Failed to connect to the host via ssh: refused"},
    )
    assert states(result) == [("d-gone", "unreachable"), ("c-fail", "failing"), ("b-warn", "warning"), ("a-ok", "ok")]
    assert result["summary"] == {"unreachable": 1, "failing": 1, "warning": 1, "ok": 1, "boxes": 4, "recoveries": 0,
                                 "needs_human": 0, "last_recovery": None}
    assert "not reachable: Failed to connect" in result["boxes"][0]["problems"][0]
    assert result["boxes"][1]["problems"] == ["kvmd is failed"]
    assert result["boxes"][2]["warnings"] == ["CH9329 did not answer: no reply from /dev/kvmd-hid"]


def test_a_box_nothing_was_collected_from_still_gets_a_row():
    result = fleet_health(["kvm1", "kvm2"], [collected("kvm1")])  # kvm2 failed before collecting anything
    assert states(result) == [("kvm2", "unreachable"), ("kvm1", "ok")]
    result = fleet_health(["kvm1"], [None])
    assert result["boxes"][0]["state"] == "unreachable"


def test_watchdog_states_other_than_ok_fail_the_box():
    for status in ("failing", "recovering", "needs_human"):
        box = report(collected("kvm1", watchdog_state(status)))["boxes"][0]
        assert box["state"] == "failing", status
        assert box["problems"] == ["watchdog watchdog: %s" % status]


def test_missing_watchdog_state_and_stopped_service_are_named():
    missing = json.dumps({"failed": True, "msg": "no watchdog state in /run/onekvm/watchdog.json", "exit_code": 3})
    box = report(collected("kvm1", watchdog_unit="inactive", watchdog_rc=3, watchdog_stdout=missing))["boxes"][0]
    assert box["state"] == "failing"
    assert box["problems"] == ["the watchdog service is inactive", "no watchdog state: no watchdog state in /run/onekvm/watchdog.json"]
    box = report(collected("kvm1", watchdog_rc=127, watchdog_stdout="", watchdog_stderr="onekvm: not found"))["boxes"][0]
    assert box["problems"] == ["no watchdog state: onekvm: not found"]


def test_a_box_without_watchdog_is_not_judged_on_it():
    box = report(collected("kvm1", watchdog_enabled=False, watchdog_unit="inactive", watchdog_rc=None, watchdog_stdout=""))["boxes"][0]
    assert box["state"] == "ok" and box["watchdog"] is None


def test_last_recovery_times_per_box_and_for_the_fleet():
    healed = watchdog_state(last_failure={"since": T0, "ended": T0 + 12.5, "outcome": "recovered", "reasons": ["x"]},
                            last_action={"step": "ioctl", "result": "ok", "at": T0 + 10})
    healed["counters"].update(recoveries=2, last_recovery_seconds=12.5, failures=2)
    older = watchdog_state(last_failure={"since": T0 - 500, "ended": T0 - 490, "outcome": "recovered", "reasons": []})
    older["counters"].update(recoveries=1, last_recovery_seconds=10)
    result = report(collected("kvm1", healed), collected("kvm2", older))
    box = result["boxes"][0]
    assert box["watchdog"]["last_recovery"] == {"at": iso_time(T0 + 12.5), "epoch": T0 + 12.5, "seconds": 12.5}
    assert box["watchdog"]["last_failure"]["outcome"] == "recovered"
    assert result["summary"]["recoveries"] == 3
    assert result["summary"]["last_recovery"] == {"box": "kvm1", "at": iso_time(T0 + 12.5), "seconds": 12.5}


def test_a_glitch_that_cleared_by_itself_is_no_recovery():
    state = watchdog_state(last_failure={"since": T0, "ended": T0 + 3, "outcome": "glitch_cleared", "reasons": []})
    box = report(collected("kvm1", state))["boxes"][0]
    assert box["watchdog"]["last_recovery"] is None and box["state"] == "ok"


def test_odd_input_does_not_raise():
    result = report(collected("kvm1", watchdog_stdout="not json"), collected("kvm2", usb="garbage", ch9329_info=[]))
    assert {b["name"]: b["state"] for b in result["boxes"]} == {"kvm1": "failing", "kvm2": "warning"}
    assert fleet_health(None, None)["boxes"] == []


def test_target_not_enumerated_is_a_warning():
    box = report(collected("kvm1", ch9329_info={"version": "V1.0", "usb_enumerated": False}))["boxes"][0]
    assert box["state"] == "warning" and "not enumerated" in box["warnings"][0]


def test_iso_time():
    assert iso_time(0) == "1970-01-01T00:00:00Z"
    assert iso_time(None) is None and iso_time(True) is None


SEED_GPIO = {
    "scheme": {"toggle_switch": {"driver": "toggle_switch", "pin": 0, "mode": "output", "switch": False},
               "box_ok": {"driver": "box_ok", "pin": 0, "mode": "input"}},
    "view": {"table": [["toggle_switch|confirm|Switch KVM machine"], [], ["#Box", "box_ok|green"]]},
}


def test_buttons_present_in_scheme_and_view():
    assert fleet_missing_buttons(["toggle_switch", "box_ok"], SEED_GPIO) == []


def test_a_channel_without_view_item_or_scheme_entry_is_missing():
    no_view = {"scheme": SEED_GPIO["scheme"], "view": {"table": [["#only a label"]]}}
    assert fleet_missing_buttons(["toggle_switch", "box_ok"], no_view) == ["toggle_switch", "box_ok"]
    assert fleet_missing_buttons(["relay_switch"], SEED_GPIO) == ["relay_switch"]
    assert fleet_missing_buttons(["toggle_switch"], {}) == ["toggle_switch"]
    assert fleet_missing_buttons(["toggle_switch"], None) == ["toggle_switch"]


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {"fleet_health"}


def test_flavour_is_shown_and_one_kvm_0_2_is_judged_on_its_own_service():
    """A One-KVM 0.2 box has no kvmd (its unit is one-kvm.service) and no capture watchdog of ours."""
    kvmd_box = collected("kvm-a01")
    one_kvm = collected("kvm-c01", flavour="onekvm2", service="one-kvm.service", kvmd="active",
                        watchdog_enabled=False, ch9329_skipped=True)
    result = report(kvmd_box, one_kvm)
    rows = {b["name"]: b for b in result["boxes"]}
    assert (rows["kvm-a01"]["flavour"], rows["kvm-c01"]["flavour"]) == ("kvmd", "onekvm2")
    assert (rows["kvm-a01"]["service"], rows["kvm-c01"]["service"]) == ("kvmd", "one-kvm.service")
    assert rows["kvm-c01"]["state"] == "ok", rows["kvm-c01"]
    stopped = report(collected("kvm-c01", flavour="onekvm2", service="one-kvm.service", kvmd="failed",
                               watchdog_enabled=False, ch9329_skipped=True))["boxes"][0]
    assert stopped["state"] == "failing" and stopped["problems"] == ["one-kvm.service is failed"]
