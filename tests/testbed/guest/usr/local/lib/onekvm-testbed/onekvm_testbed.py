"""Failure injection for the onekvm.fleet test bed.

The capture source is vivid (a virtual V4L2 device). "The dongle fails" = vivid is unbound
(ustreamer reports online: false). "A USB reset of the dongle heals it" is made true by
`watch`: when the kernel logs a reset or a new enumeration of the dongle stand-in's USB
port, vivid is bound again. A udev rule covers the methods that log nothing (authorize,
rebind). `break-capture --permanent` makes the failure survive any reset.

  onekvm-testbed break-capture [--permanent] | heal-capture [--from-event] | status | watch
"""
import os
import re
import sys
import time

VIVID = "/sys/bus/platform/drivers/vivid"
FLAG = "/run/onekvm-testbed/permanent"
CONF = "/etc/onekvm-testbed.conf"


def dongle_port():
    try:
        with open(CONF) as f:
            for line in f:
                if line.startswith("DONGLE_PORT="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "1-1.2"


def bound():
    return os.path.exists(os.path.join(VIVID, "vivid.0"))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()
    try:
        write("/dev/kmsg", "onekvm-testbed: %s\n" % msg)
    except OSError:
        pass


def break_capture(permanent):
    os.makedirs(os.path.dirname(FLAG), exist_ok=True)
    if permanent:
        write(FLAG, "1")
    if bound():
        write(os.path.join(VIVID, "unbind"), "vivid.0")
    log("capture broken%s" % (" permanently" if permanent else ""))


def heal_capture(from_event):
    if from_event and os.path.exists(FLAG):
        log("dongle event ignored: failure is permanent")
        return
    if not from_event and os.path.exists(FLAG):
        os.unlink(FLAG)
    if not bound():
        write(os.path.join(VIVID, "bind"), "vivid.0")
        log("capture healed%s" % (" by a dongle reset" if from_event else ""))


def watch():
    port = re.escape(dongle_port())
    pattern = re.compile(r"usb %s: (reset|new) \S+ USB device number" % port)
    fd = os.open("/dev/kmsg", os.O_RDONLY)
    os.lseek(fd, 0, os.SEEK_END)
    log("watching the kernel log for resets of USB port %s" % dongle_port())
    while True:
        try:
            record = os.read(fd, 8192).decode(errors="replace")
        except BrokenPipeError:  # records overwritten while we slept: carry on
            continue
        if pattern.search(record.split(";", 1)[-1]):
            time.sleep(0.2)
            heal_capture(from_event=True)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0
    cmd = argv[0]
    if cmd == "break-capture":
        break_capture("--permanent" in argv)
    elif cmd == "heal-capture":
        heal_capture("--from-event" in argv)
    elif cmd == "status":
        sys.stdout.write("vivid bound: %s\npermanent failure: %s\n" % (bound(), os.path.exists(FLAG)))
    elif cmd == "watch":
        watch()
    else:
        sys.stderr.write("unknown command %s\n" % cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
