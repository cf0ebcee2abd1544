"""A test target. Arguments (in order, any subset):
  --out N      write lines 'out 1'..'out N' to stdout
  --err N      write lines 'err 1'..'err N' to stderr
  --partial S  write S to stdout with no newline
  --exit C     then exit with code C (default: sleep until killed)
  --ignore-term  ignore SIGTERM
  --env NAME   print 'env NAME=<value>' on stdout
  --cwd        print 'cwd <dir>'
  --args       print 'args <json of sys.argv[1:]>'
  --grandchild start a child in a session of its own (escaping the process group),
               print 'grandchild <pid>'
  --trap SIG   print 'got SIG' each time signal SIG (e.g. USR1) arrives
  --heir       start a child that inherits every fd (as a shell's 'cmd &' does),
               print 'heir <pid>'
"""

import json
import os
import signal
import subprocess
import sys
import time

argv = sys.argv[1:]
code = None
i = 0
while i < len(argv):
    flag = argv[i]
    if flag == "--out":
        i += 1
        for n in range(1, int(argv[i]) + 1):
            sys.stdout.write(f"out {n}\n")  # one write (see --trap)
    elif flag == "--err":
        i += 1
        for n in range(1, int(argv[i]) + 1):
            sys.stderr.write(f"err {n}\n")
    elif flag == "--partial":
        i += 1
        sys.stdout.write(argv[i])
    elif flag == "--exit":
        i += 1
        code = int(argv[i])
    elif flag == "--ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif flag == "--env":
        i += 1
        print(f"env {argv[i]}={os.environ.get(argv[i])}")
    elif flag == "--cwd":
        print(f"cwd {os.getcwd()}")
    elif flag == "--grandchild":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                 start_new_session=True)
        print(f"grandchild {child.pid}")
    elif flag == "--trap":
        i += 1
        name = argv[i]
        # One write of a whole line: a print here, run between the two writes of a
        # print of the main code's, would make one line of both ("readygot USR1").
        signal.signal(getattr(signal, f"SIG{name}"),
                      lambda number, frame, line=f"got {name}\n".encode(): os.write(1, line))
    elif flag == "--heir":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                 close_fds=False, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        print(f"heir {child.pid}")
    elif flag == "--args":
        print("args " + json.dumps(sys.argv[1:]))
    i += 1
sys.stdout.flush()
sys.stderr.flush()
if code is not None:
    sys.exit(code)
sys.stdout.write("ready\n")  # one write (see --trap)
sys.stdout.flush()
while True:
    time.sleep(3600)
