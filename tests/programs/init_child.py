"""A target for the PID 1 tests: ``init_child.py [N]``.

Leaves N orphans behind (each a grandchild whose parent exits at once, so that it comes to
the namespace's init), which wait until the target lets them go, then prints 'ready PID'.
SIGUSR1 prints 'got USR1' and lets the orphans go: they exit, and init must reap them.
SIGUSR2 makes it send SIGTERM to PID 1 from inside the namespace (as a container's own
process would: the kernel delivers a signal to init only if init handles it).
"""

import os
import signal
import sys

hold, release = os.pipe()


def let_go(*_):
    print("got USR1", flush=True)
    global release
    if release >= 0:
        os.close(release)
        release = -1


signal.signal(signal.SIGUSR1, let_go)
signal.signal(signal.SIGUSR2, lambda *_: os.kill(1, signal.SIGTERM))
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the target's process group's
            os.close(release)
            os.read(hold, 1)  # until the target closes its end: an orphan of init's by then
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
os.close(hold)
print(f"ready {os.getpid()}", flush=True)
while True:
    signal.pause()
