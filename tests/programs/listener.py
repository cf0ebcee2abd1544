"""A test target: a stdlib HTTP server on the sockets it is handed by socket activation.

It takes fds 3 .. 3 + LISTEN_FDS - 1 (``socket.socket(fileno=...)``) and refuses to run
(exit 3, a line on stderr) unless ``LISTEN_PID`` is its own pid. Every GET is answered
with a JSON object: its pid, its instance (``IMMORTAL_INSTANCE``), the fd the request came
in on, the environment and the open fds it saw at start (each fd's ``/proc`` link), and
each listen socket's family and address. ``GET /?hold=S`` holds the connection S seconds
before answering, ``GET /?until=PATH`` until PATH exists (at most a minute; it makes
``PATH.<its pid>`` first, to say it holds one); it serves one at a time: the next
connection goes to another instance.
It prints 'serving <pid>' once it accepts.

  --state FILE  append its pid to FILE; if FILE already had one (a restart), wait
                --delay seconds before accepting: clients connect meanwhile
  --delay S     (default 0.5)
  --broken FILE  exit 4 at start, a line on stderr, if FILE exists (a broken release)
  --graceful    on SIGTERM, answer the request in hand and exit 0 at once (``os._exit``:
                nothing is left to clean up); it serves every socket from one loop,
                non-blocking (as gunicorn's workers do: an accept that another instance
                won returns at once)
  --finalize    with --graceful, exit through ``sys.exit`` instead: CPython's finalization,
                as most Python servers end
"""

import http.server
import json
import os
import select
import signal
import socket
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
finalize = "--finalize" in argv

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
        if "until" in query:
            open(f"{query['until'][0]}.{os.getpid()}", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(query["until"][0]) and time.monotonic() < deadline:
                time.sleep(0.01)
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


def serve_gracefully(servers: list[Server]) -> None:
    """Serve every socket until SIGTERM, then return: between two requests, never in one.
    The handler only wakes the loop (``set_wakeup_fd``), so a request in hand is answered."""
    wake, woken = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGTERM, lambda *_: None)
    by_fd = {server.socket.fileno(): server for server in servers}
    for server in servers:
        server.socket.setblocking(False)
    print(f"serving {os.getpid()}", flush=True)
    while True:
        readable, _, _ = select.select([wake, *by_fd], [], [])
        if wake in readable:
            return
        for fd in readable:
            server = by_fd[fd]
            try:
                connection, address = server.socket.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another instance took it
            server.process_request(connection, address)


servers = [Server(sock) for sock in sockets]
if graceful:
    serve_gracefully(servers)
    if finalize:
        sys.exit(0)
    # Nothing is left to finish once the last request is answered: the interpreter's own
    # clean-up (most of a graceful exit's time, see docs/benchmarks.md) is skipped.
    sys.stdout.flush()
    os._exit(0)
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"serving {os.getpid()}", flush=True)
servers[0].serve_forever()
