"""kvmd stand-in for the onekvm.fleet test bed.

Records each start, then does what kvmd's streamer controller does for this project's
purposes: runs ustreamer on /run/kvmd/ustreamer.sock (process title "kvmd/streamer: ...",
like kvmd's) and starts it again about one second after it exits.
"""
import os
import signal
import subprocess
import sys
import time

STARTS = "/var/lib/kvmd/standin-starts"
USTREAMER = [
    "/usr/bin/ustreamer", "--device=/dev/kvmd-video", "--unix=/run/kvmd/ustreamer.sock", "--unix-rm",
    "--unix-mode=0660", "--resolution=640x480", "--format=YUYV", "--desired-fps=2", "--workers=1",
    "--quality=50",
]

child = None


def stop(signum, frame):
    if child and child.poll() is None:
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
with open(STARTS, "a") as f:
    f.write("%d %.3f\n" % (os.getpid(), time.time()))
sys.stdout.write("kvmd stand-in started\n")
sys.stdout.flush()
while True:
    # argv[0] named like kvmd names its streamer, so "kill the kvmd/streamer process" works as on a box
    child = subprocess.Popen(["kvmd/streamer: " + USTREAMER[0]] + USTREAMER[1:], executable=USTREAMER[0])
    child.wait()
    sys.stdout.write("streamer exited with %s, restarting in 1 s\n" % child.returncode)
    sys.stdout.flush()
    time.sleep(1)
