"""Listening sockets bound once by the caller, held by the supervisors, and handed to each
target by systemd socket activation (docs/workers.md, "Socket activation").

Real processes, real sockets, a real client: curl when the machine has it, else the
standard library. Every request goes to this machine's loopback or a unix socket.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import immortal
from immortal import addresses, listen, process, standby
from conftest import LONG, PROGRAMS, SHORT, TALKER, kill_at_once, proc_state, wait_for

pytestmark = pytest.mark.timeout(120)

LISTENER = str(PROGRAMS / "listener.py")
CURL = shutil.which("curl")
GUNICORN = shutil.which("gunicorn", path=os.path.dirname(sys.executable))


# --- the client ----------------------------------------------------------------------------

def get(address: str, timeout: float = SHORT) -> dict[str, Any]:
    """GET / from the server at ``address`` (as ``status`` shows it): the JSON it answers.

    No waiting for the server to be up: the socket listens from before the target runs,
    so a client's connection waits in the backlog until the target accepts it."""
    unix = address.startswith("unix:")
    where = address[len("unix:"):] if unix else address[len("tcp://"):]
    if CURL:
        command = [CURL, "-sS", "--fail", "--max-time", str(timeout)]
        command += ["--unix-socket", where, "http://target/"] if unix \
            else [f"http://{where}/"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 5)
        assert result.returncode == 0, f"curl {address}: {result.stderr}"
        return json.loads(result.stdout)
    if not unix:
        with urllib.request.urlopen(f"http://{where}/", timeout=timeout) as answer:
            return json.loads(answer.read())
    connection = http.client.HTTPConnection("target", timeout=timeout)
    connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.sock.settimeout(timeout)
    connection.sock.connect(where)
    try:
        connection.request("GET", "/")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def connect(address: str) -> socket.socket:
    """A raw connection to ``address`` (ConnectionRefusedError if nobody holds it)."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(LONG)
        sock.connect(address[len("unix:"):])
        return sock
    host, _, port = address[len("tcp://"):].rpartition(":")
    return socket.create_connection((host.strip("[]"), int(port)), timeout=LONG)


def ask(sock: socket.socket) -> dict[str, Any]:
    """Send a GET on ``sock``, connected already, and read the whole answer."""
    sock.sendall(b"GET / HTTP/1.0\r\nHost: target\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def inode(pid: int, fd: int = 3) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


# --- the pure parts ------------------------------------------------------------------------

def test_activation_gives_every_instance_the_same_sockets_at_3_and_up():
    given = listen.activation((3, 4), ("tcp://0.0.0.0:8000", "unix:/run/app.sock"), 2, "web")
    assert given.fds == {3: 3, 4: 4} and given.pid
    assert given.env == {"IMMORTAL_GROUP": "web", "IMMORTAL_INSTANCE": "2", "LISTEN_FDS": "2",
                         "LISTEN_FDNAMES": "tcp-0.0.0.0-8000:app.sock"}
    base = {"PATH": "/bin", "LISTEN_FDS": "9", "LISTEN_PID": "1", "LISTEN_FDNAMES": "old"}
    assert given.environ(base) == {"PATH": "/bin", **given.env}
    alone = listen.activation((), (), 0, "job")
    assert alone.fds == {} and not alone.pid
    assert alone.environ(base) == {"PATH": "/bin", "IMMORTAL_GROUP": "job",
                                   "IMMORTAL_INSTANCE": "0"}


@pytest.mark.parametrize("given, canonical, name", [
    ("tcp://0.0.0.0:8000", "tcp://0.0.0.0:8000", "tcp-0.0.0.0-8000"),
    ("tcp://localhost:0", "tcp://localhost:0", "tcp-localhost-0"),
    ("tcp://[::1]:80", "tcp://[::1]:80", "tcp-[__1]-80"),
    ("unix:/run/app.sock", "unix:/run/app.sock", "app.sock"),
    ("unix:rel/a:b.sock", "unix:/here/rel/a:b.sock", "a_b.sock"),
])
def test_addresses_in_canonical_form_and_their_names(given, canonical, name):
    assert addresses.check_listen([given], "/here") == (canonical,)
    assert addresses.fdname(canonical) == name


def test_the_standby_takes_as_many_sockets_as_start_allows():
    assert standby.LISTEN_MAX == addresses.MAX_LISTEN


def test_settle_moves_the_sockets_to_3_and_the_other_files_out_of_the_way():
    """In a fresh interpreter, as a role: the files it is handed at any numbers."""
    code = """if True:
        import json, os, socket
        from immortal.listen import settle
        os.closerange(3, 64)
        lock = os.open("/dev/null", os.O_RDONLY)  # 3, inheritable, as a role is passed it
        os.set_inheritable(lock, True)
        a, b = (s.detach() for s in socket.socketpair())  # 4, 5
        c = socket.socket().detach()  # 6
        moved = settle([c, a], [lock, b])
        shown = (3, 4, moved[lock])
        print(json.dumps({"moved": moved,
                          "links": [os.readlink(f"/proc/self/fd/{fd}") for fd in shown],
                          "inheritable": [os.get_inheritable(fd) for fd in shown]}))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=LONG, close_fds=True)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    moved = {int(k): v for k, v in seen["moved"].items()}
    assert moved[6] == 3 and moved[4] == 4  # the sockets, in the order given
    assert moved[3] >= 5 and 5 not in moved  # the lock above them; b was not in the way
    links = seen["links"]
    assert links[0].startswith("socket:") and links[1].startswith("socket:")
    assert links[2] == "/dev/null"
    assert seen["inheritable"] == [False, False, True]


# --- a server and its clients --------------------------------------------------------------

@pytest.mark.parametrize("extra", [{"PWD": "/not/where/it/runs"}, {"A-B": "1", "PPID": "7"}])
def test_the_environment_is_the_groups_exactly_however_the_target_is_spawned(started, extra):
    """LISTEN_PID is set by a shell that execs the target where it adds nothing (dash), else
    by the forked child: either way the target sees the group's environment, no more (a
    shell's PWD, its own PPID) and no less (names a shell would drop)."""
    mine = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8",
            "IMMORTAL_HOME": os.environ["IMMORTAL_HOME"], **extra}
    group = started(LISTENER, listen=["tcp://127.0.0.1:0"], name="web", env=mine)
    seen = get(group.status().listen[0])
    target = group.pids["target"]
    assert seen["env"] == {
        **mine, "IMMORTAL_GROUP_DIR": str(Path(os.environ["IMMORTAL_HOME"]) / "web"),
        "PYTHONUNBUFFERED": "1", "IMMORTAL_GROUP": "web", "IMMORTAL_INSTANCE": "0",
        "LISTEN_FDS": "1", "LISTEN_PID": str(target),
        "LISTEN_FDNAMES": seen["env"]["LISTEN_FDNAMES"]}


@pytest.mark.parametrize("content, error", [(b"echo not a program\n", errno.ENOEXEC),
                                            (None, errno.ENOENT)])
def test_a_file_that_cannot_be_executed_is_an_oserror_with_a_pid_variable(tmp_path, content,
                                                                          error):
    """The shell that sets LISTEN_PID would run a file without '#!' as a script, and say a
    missing one with its exit status: those take the fork, whose exec fails as any spawn's."""
    path = tmp_path / "program"
    if content is not None:
        path.write_bytes(content)
        path.chmod(0o700)
    with pytest.raises(OSError) as failure:
        process.spawn([str(path)], env={"PATH": "/bin"}, cwd=str(tmp_path), umask=None,
                      stdout=1, stderr=2, pid_variable="LISTEN_PID")
    assert failure.value.errno == error


@pytest.mark.parametrize("strategy", ["daemon", "unattached", "development"])
def test_a_stdlib_server_takes_its_sockets_by_socket_activation(started, tmp_path, strategy):
    """tcp then unix: fds 3 and 4 in that order, the protocol's variables exactly, LISTEN_PID
    the target's own pid (the program refuses to run otherwise), the names in order."""
    path = tmp_path / "app.sock"
    # LANG: else the target's Python would add LC_CTYPE itself (PEP 538).
    mine = {"PATH": os.environ["PATH"], "KEPT": "1", "LANG": "C.UTF-8",
            "IMMORTAL_HOME": os.environ["IMMORTAL_HOME"]}
    # The caller's own (from whoever started it): never the target's.
    env = {**mine, "LISTEN_FDS": "7", "LISTEN_PID": "1", "LISTEN_FDNAMES": "stale"}
    group = started(LISTENER, listen=["tcp://127.0.0.1:0", f"unix:{path}"], name="web",
                    env=env, strategy=strategy)
    bound = group.status().listen
    assert bound[0].startswith("tcp://127.0.0.1:") and not bound[0].endswith(":0")
    assert bound[1] == f"unix:{path}"
    port = int(bound[0].rsplit(":", 1)[1])
    seen = get(bound[0])
    target = group.pids["target"]
    assert seen["pid"] == target and seen["fd"] == 3
    assert seen["env"] == {
        **mine, "IMMORTAL_GROUP_DIR": str(Path(os.environ["IMMORTAL_HOME"]) / "web"),
        "PYTHONUNBUFFERED": "1", "IMMORTAL_GROUP": "web", "IMMORTAL_INSTANCE": "0",
        "LISTEN_FDS": "2", "LISTEN_PID": str(target),
        "LISTEN_FDNAMES": f"tcp-127.0.0.1-{port}:app.sock"}
    assert seen["sockets"] == [
        {"fd": 3, "family": "AF_INET", "address": ["127.0.0.1", port]},
        {"fd": 4, "family": "AF_UNIX", "address": str(path)}]
    # The target's only sockets are the two, at 3 and 4 (the rest: pipes, target.lock).
    assert sorted(int(fd) for fd, link in seen["fds"].items()
                  if link.startswith("socket:")) == [3, 4]
    assert get(bound[1])["fd"] == 4
    # Held by the supervisors too, at the same numbers, the same sockets.
    for role in ("daemon", "pump"):
        if role in group.pids:
            assert inode(group.pids[role], 3) == inode(target, 3)
            assert inode(group.pids[role], 4) == inode(target, 4)
    assert "listen   tcp://127.0.0.1:" in str(group.status())
    group.stop(timeout=LONG)
    assert not path.exists(), "the unix socket's file outlived the group"
    with pytest.raises(ConnectionRefusedError):
        connect(bound[0])


def test_a_killed_target_is_restarted_on_the_same_socket_and_no_client_is_refused(
        started, tmp_path):
    state = tmp_path / "pids"
    group = started(LISTENER, ["--state", str(state), "--delay", "0.5"],
                    listen=["tcp://127.0.0.1:0"], name="again")
    address = group.status().listen[0]
    first = get(address)["pid"]
    socket_before = inode(first)
    os.kill(first, signal.SIGKILL)
    # While no target accepts (restarting, then sleeping a second before serving), clients
    # connect: they wait in the backlog, none is refused.
    waiting = [connect(address) for _ in range(5)]
    late = []
    with_curl = threading.Thread(target=lambda: late.append(get(address, LONG)))
    with_curl.start()
    answers = [ask(sock) for sock in waiting]
    with_curl.join(LONG + 10)
    second = group.pids["target"]
    assert second != first
    assert [answer["pid"] for answer in answers + late] == [second] * 6
    assert inode(second) == socket_before
    assert inode(group.pids["daemon"]) == inode(group.pids["pump"]) == socket_before
    assert group.status().restarts == 1


@pytest.mark.parametrize("backpressure", ["block", "drop"])
def test_the_server_serves_on_while_its_pump_and_its_daemon_die(started, backpressure):
    """"drop" runs the monitors on threads: a pump whose daemon dies then ``exec``s into
    the daemon, its sockets kept at their numbers through the exec."""
    group = started(LISTENER, listen=["tcp://127.0.0.1:0"], name="steady",
                    backpressure=backpressure)
    address = group.status().listen[0]
    target = get(address)["pid"]
    failures: list[str] = []
    served: list[int] = []
    done = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 2 * LONG  # bounded, whatever happens
        while not done.is_set() and time.monotonic() < deadline:
            try:
                served.append(ask(connect(address))["pid"])
            except OSError as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_for(lambda: len(served), lambda n: n >= 20, what="requests served")
        pump = group.pids["pump"]
        os.kill(pump, signal.SIGKILL)
        wait_for(lambda: group.pids.get("pump"), lambda p: p not in (None, pump),
                 what="a new pump")
        count = len(served)
        wait_for(lambda: len(served), lambda n: n >= count + 20, what="requests served")
        daemon = group.pids["daemon"]
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: group.pids.get("daemon"), lambda p: p not in (None, daemon),
                 what="the pump to become the daemon")
        count = len(served)
        wait_for(lambda: len(served), lambda n: n >= count + 20, what="requests served")
    finally:
        done.set()
        thread.join(LONG)
    assert failures == [] and set(served) == {target}
    assert inode(group.pids["daemon"]) == inode(group.pids["pump"]) == inode(target)
    group.restart(timeout=LONG)  # the new supervisors hand the sockets on
    assert get(address)["pid"] == group.pids["target"] != target


def test_a_target_left_by_killed_supervisors_is_ended_and_the_address_bound_anew(started):
    group = started(LISTENER, listen=["tcp://127.0.0.1:0"], name="left")
    address = group.status().listen[0]
    orphan = get(address)["pid"]
    roles = [group.pids["daemon"], group.pids["pump"]]
    kill_at_once(*roles)
    wait_for(lambda: [proc_state(pid) for pid in roles],
             lambda states: all(state in (None, "Z") for state in states),
             what="the supervisors to be gone")
    assert get(address)["pid"] == orphan  # serving alone
    again = started(LISTENER, listen=[address], name="left")
    assert again.adopted is None
    assert get(address)["pid"] == again.pids["target"] != orphan
    assert proc_state(orphan) in (None, "Z")  # ended before the address was bound again


def test_a_target_without_listen_gets_its_group_and_instance_but_no_protocol(started, home):
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x"}
    group = started(TALKER, ["--env", "IMMORTAL_GROUP", "--env", "IMMORTAL_INSTANCE",
                             "--env", "LISTEN_FDS", "--env", "LISTEN_PID", "--env",
                             "LISTEN_FDNAMES"], name="plain", env=env)
    wanted = ["env IMMORTAL_GROUP=plain", "env IMMORTAL_INSTANCE=0", "env LISTEN_FDS=None",
              "env LISTEN_PID=None", "env LISTEN_FDNAMES=None"]
    output = Path(group.output or "")
    wait_for(lambda: output.read_text() if output.exists() else "",
             lambda text: all(line in text for line in wanted), what="the target's lines")
    assert group.status().listen == []


# --- unix socket files ---------------------------------------------------------------------

def test_a_stale_socket_file_is_replaced_and_a_live_one_or_a_file_is_refused(
        started, tmp_path, home):
    stale = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()  # its file stays: nobody listens on it
    group = started(LISTENER, listen=[f"unix:{stale}"], name="stale")
    assert get(f"unix:{stale}")["pid"] == group.pids["target"]

    live = tmp_path / "live.sock"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(live))
    holder.listen()
    plain = tmp_path / "plain.sock"
    plain.write_text("mine")
    try:
        with pytest.raises(immortal.ListenError, match="in use") as caught:
            immortal.start(LISTENER, listen=[f"unix:{live}"], name="live")
        assert str(live) in str(caught.value)
        with pytest.raises(immortal.ListenError, match="is not a socket"):
            immortal.start(LISTENER, listen=[f"unix:{plain}"], name="plain")
        assert plain.read_text() == "mine"
        connect(f"unix:{live}").close()  # still the other listener's
    finally:
        holder.close()
    for name in ("live", "plain"):
        assert sorted(os.listdir(home / name)) == ["lock"]


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, kind, fragment", [
    ("tcp://127.0.0.1:8000", immortal.InvalidType, "wrap a single address in a list"),
    ([8000], immortal.InvalidType, "8000"),
    (["http://127.0.0.1:80"], immortal.InvalidSpec, "http://127.0.0.1:80"),
    (["tcp://127.0.0.1"], immortal.InvalidSpec, "':PORT'"),
    (["tcp://127.0.0.1:65536"], immortal.InvalidSpec, "tcp://127.0.0.1:65536"),
    (["tcp://:8000"], immortal.InvalidSpec, "names no host"),
    (["tcp://::1:8000"], immortal.InvalidSpec, "in brackets"),
    (["tcp://[nope]:8000"], immortal.InvalidSpec, "not an IPv6 address"),
    (["tcp://1.2.3:8000"], immortal.InvalidSpec, "not an IPv4 address"),
    (["tcp://bad_host!:8000"], immortal.InvalidSpec, "not a host name"),
    (["unix:"], immortal.InvalidSpec, "'unix:'"),
    (["unix:/" + "x" * 120], immortal.InvalidSpec, "107 bytes"),
    (["unix:/tmp/a.sock", "unix:/tmp/a.sock"], immortal.InvalidSpec, "given twice"),
    (["tcp://127.0.0.1:0"] * 65, immortal.InvalidSpec, "at most 64"),
])
def test_a_bad_address_is_one_clear_error_and_leaves_nothing(home, value, kind, fragment):
    with pytest.raises(kind) as caught:
        immortal.start(TALKER, listen=value, name="bad")
    assert fragment in str(caught.value)
    assert "listen" in str(caught.value)
    assert list(home.iterdir()) == []


def test_an_address_in_use_is_one_clear_error_and_leaves_nothing(home, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    path = tmp_path / "first.sock"
    try:
        for strategy in ("daemon", "unattached", "development"):
            with pytest.raises(immortal.ListenError) as caught:
                immortal.start(TALKER, listen=[f"unix:{path}", f"tcp://127.0.0.1:{port}"],
                               name="taken", strategy=strategy)
            assert isinstance(caught.value, immortal.StartError)
            assert str(caught.value) == (f"cannot listen on 'tcp://127.0.0.1:{port}': the "
                                         "address is in use (another process listens on it)")
            assert not path.exists(), "the first address's socket file was left"
            assert sorted(os.listdir(home / "taken")) == ["lock"]
    finally:
        taken.close()


def test_an_unknown_host_is_one_clear_error(home):
    with pytest.raises(immortal.ListenError, match="no-such-host.invalid"):
        immortal.start(TALKER, listen=["tcp://no-such-host.invalid:8000"], name="nohost")


# --- the command line ----------------------------------------------------------------------

def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "immortal", *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=LONG)


def test_run_listen_on_the_command_line(home, tmp_path):
    """``immortal run --listen`` (its first role in standby: the sockets reach it over its
    socket), and 'status' and 'list' show the addresses."""
    path = tmp_path / "cli.sock"
    result = cli(home, "run", "--listen", "tcp://127.0.0.1:0", "--listen", f"unix:{path}",
                 "-n", "cmd", LISTENER)
    try:
        assert result.returncode == 0, result.stderr
        status = json.loads(cli(home, "status", "cmd", "--json").stdout)
        tcp, unix = status["listen"]
        assert unix == f"unix:{path}" and f"listening on: {tcp}, {unix}" in result.stdout
        assert get(tcp)["pid"] == get(unix)["pid"] == status["pids"]["target"]
        assert f"  listen   {tcp}, {unix}" in cli(home, "status", "cmd").stdout
        table = cli(home, "list").stdout.splitlines()
        assert table[0].endswith("  LISTEN") and table[1].endswith(f"  {tcp},{unix}")
    finally:
        cli(home, "stop", "cmd")
    assert not path.exists()
    bad = cli(home, "run", "--listen", "tcp://127.0.0.1", "-n", "bad", LISTENER)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["immortal: error: 'listen[0]' 'tcp://127.0.0.1' must "
                                       "end with ':PORT', a port from 0 to 65535 (0: one the "
                                       "system chooses)"]


# --- gunicorn ------------------------------------------------------------------------------

@pytest.mark.skipif(GUNICORN is None, reason="gunicorn is not installed (the test extra)")
def test_gunicorn_serves_a_wsgi_app_on_the_sockets_immortal_holds(started, tmp_path):
    """gunicorn reads LISTEN_FDS itself when LISTEN_PID is its pid: no --bind."""
    path = tmp_path / "gunicorn.sock"
    assert GUNICORN is not None
    group = started(GUNICORN, ["--workers", "1", "--chdir", str(PROGRAMS), "wsgi_hello:app"],
                    listen=["tcp://127.0.0.1:0", f"unix:{path}"], name="green")
    tcp, unix = group.status().listen
    master = group.pids["target"]
    seen = get(tcp)
    assert seen["master"] == master
    assert get(unix)["master"] == master
    socket_before = inode(group.pids["pump"])
    group.restart(timeout=LONG)
    wait_for(lambda: group.pids.get("target"), lambda pid: pid not in (None, master),
             what="a new gunicorn")
    assert get(tcp)["master"] == group.pids["target"]
    assert inode(group.pids["pump"]) == socket_before
