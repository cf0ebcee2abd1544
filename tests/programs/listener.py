"""A test target: a stdlib HTTP server on the sockets it is handed by socket activation.

It takes fds 3 .. 3 + LISTEN_FDS - 1 (``socket.socket(fileno=...)``) and refuses to run
(exit 3, a line on stderr) unless ``LISTEN_PID`` is its own pid. Every GET is answered
with a JSON object: its pid, its instance (``IMMORTAL_INSTANCE``), the fd the request came
in on, the environment and the open fds it saw at start (each fd's ``/proc`` link), and
each listen socket's family and address. ``GET /?hold=S`` holds the connection S seconds
before answering (it serves one at a time: the next connection goes to another instance).
It prints 'serving <pid>' once it accepts.

  --state FILE  append its pid to FILE; if FILE already had one (a restart), wait
                --delay seconds before accepting: clients connect meanwhile
  --delay S     (default 0.5)
  --broken FILE  exit 4 at start, a line on stderr, if FILE exists (a broken release)
  --graceful    on SIGTERM, answer the request in hand and exit 0 (an accept that another
                instance won gives up after 0.1 s: SO_RCVTIMEO, so that the exit is prompt)
"""

import http.server
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

SEEN_ENV = dict(os.environ)
SEEN_FDS = {int(fd): os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}

argv = sys.argv[1:]
state = argv[argv.index("--state") + 1] if "--state" in argv else None
delay = float(argv[argv.index("--delay") + 1]) if "--delay" in argv else 0.5
broken = argv[argv.index("--broken") + 1] if "--broken" in argv else None
graceful = "--graceful" in argv
NO_TIMEOUT = struct.pack("ll", 0, 0)

if broken is not None and os.path.exists(broken):
    print(f"broken: {broken} exists", file=sys.stderr, flush=True)
    sys.exit(4)

if os.environ.get("LISTEN_PID") != str(os.getpid()):
    print(f"LISTEN_PID is {os.environ.get('LISTEN_PID')!r}, not {os.getpid()}",
          file=sys.stderr, flush=True)
    sys.exit(3)
count = int(os.environ["LISTEN_FDS"])
sockets = [socket.socket(fileno=3 + index) for index in range(count)]

if state is not None:
    restarted = os.path.exists(state) and os.path.getsize(state) > 0
    with open(state, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    if restarted:
        time.sleep(delay)


def describe(sock: socket.socket) -> dict:
    name = sock.getsockname()
    return {"fd": sock.fileno(), "family": sock.family.name,
            "address": name if isinstance(name, str) else list(name[:2])}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if "hold" in query:
            time.sleep(float(query["hold"][0]))
        body = json.dumps({"pid": os.getpid(), "instance": os.environ.get("IMMORTAL_INSTANCE"),
                           "fd": self.server.socket.fileno(),
                           "env": SEEN_ENV, "fds": SEEN_FDS,
                           "sockets": [describe(s) for s in sockets]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "client"  # a unix socket's client has no address

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(http.server.HTTPServer):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(("", 0), Handler, bind_and_activate=False)
        self.socket = sock  # bound and listening already: taken as it is

    def get_request(self) -> tuple:
        connection, address = self.socket.accept()
        if graceful:
            # An accepted socket inherits the listening one's SO_RCVTIMEO: a client slow to
            # send its request (a loaded machine) would be closed on without an answer.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, NO_TIMEOUT)
        return connection, address


servers = [Server(sock) for sock in sockets]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
if graceful:
    import signal

    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100000))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=servers[0].shutdown, daemon=True).start())
print(f"serving {os.getpid()}", flush=True)
servers[0].serve_forever(poll_interval=0.05 if graceful else 0.5)
