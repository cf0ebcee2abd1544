"""Records (immortal/records.py), and the public ones built on them: ``ExitStatus`` (frozen),
``Status`` and ``Lock`` (mutable), which were dataclasses and must behave as they did."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest

import immortal
from immortal.events import ExitStatus
from immortal.records import (
    FrozenRecordError,
    MutableRecord,
    Record,
    asdict,
    field,
    replace,
)
from immortal.state import Lock, Status, read_status, write_json
from conftest import imported_after

EXIT = ExitStatus(code=1, pid=5, uptime=0.5, decision="backoff", reason="r", delay=1.0,
                  attempt=2)
KILLED = ExitStatus(signal=9, core_dumped=True)
FAILED = ExitStatus(error="ENOENT")
FULL = Status("g", "running", True, {"pump": 3}, 1, 2, EXIT, 3.0, None, "s", 1.0, 2.0, "o",
              "/d", {"pump": 9}, 4, {"file": {"dropped": 4}}, {"since": 5.0, "monitor": None,
                                                               "monitor_since": None})

# What the dataclasses wrote (json.dumps of to_json()), byte for byte; and the fields added
# since, at the end (readiness, listen).
EXIT_JSON = ('{"code": 1, "signal": null, "core_dumped": false, "error": null, "pid": 5, '
             '"uptime": 0.5, "decision": "backoff", "reason": "r", "delay": 1.0, '
             '"attempt": 2, "text": "exited with status 1"}')
KILLED_JSON = ('{"code": null, "signal": 9, "core_dumped": true, "error": null, "pid": null, '
               '"uptime": null, "decision": null, "reason": null, "delay": null, '
               '"attempt": null, "text": "killed by SIGKILL (core dumped)"}')
FAILED_JSON = ('{"code": null, "signal": null, "core_dumped": false, "error": "ENOENT", '
               '"pid": null, "uptime": null, "decision": null, "reason": null, '
               '"delay": null, "attempt": null, "text": "failed to start: ENOENT"}')
FULL_JSON = ('{"name": "g", "state": "running", "running": true, "pids": {"pump": 3}, '
             '"restarts": 1, "spawned": 2, "last_exit": ' + EXIT_JSON + ', '
             '"next_restart_at": 3.0, "reason": null, "strategy": "s", "started_at": 1.0, '
             '"target_started_at": 2.0, "output": "o", "directory": "/d", '
             '"start_times": {"pump": 9}, "dropped": 4, "monitors": {"file": {"dropped": 4}}, '
             '"stalled": {"since": 5.0, "monitor": null, "monitor_since": null}, '
             '"ready": false, "notify_status": null, "listen": []}')
EMPTY_JSON = ('{"name": "x", "state": "stopped", "running": false, "pids": {}, '
              '"restarts": 0, "spawned": 0, "last_exit": null, "next_restart_at": null, '
              '"reason": null, "strategy": null, "started_at": null, '
              '"target_started_at": null, "output": null, "directory": null, '
              '"start_times": {}, "dropped": 0, "monitors": {}, "stalled": null, '
              '"ready": false, "notify_status": null, "listen": []}')


# The public records: what they did as dataclasses ------------------------------------------

def test_to_json_is_what_the_dataclasses_wrote():
    for record, text in ((EXIT, EXIT_JSON), (KILLED, KILLED_JSON), (FAILED, FAILED_JSON),
                         (FULL, FULL_JSON), (Status("x", "stopped"), EMPTY_JSON)):
        assert json.dumps(record.to_json()) == text
    for status in (EXIT, KILLED, FAILED):
        assert ExitStatus.from_json(status.to_json()) == status
    again = Status.from_json("g", json.loads(FULL_JSON))
    assert again == replace(FULL, running=False)  # running is not read: it is proven live


def test_status_round_trips_through_status_json(tmp_path):
    directory = tmp_path / "g"
    directory.mkdir()
    write_json(directory / "status.json", FULL.to_json())
    status = read_status(directory)
    assert status is not None and status.last_exit == EXIT
    assert json.dumps(status.to_json()) == FULL_JSON.replace('"running": true',
                                                             '"running": false')


def test_repr_reads_as_the_dataclasses_did():
    assert repr(EXIT) == ("ExitStatus(code=1, signal=None, core_dumped=False, error=None, "
                          "pid=5, uptime=0.5, decision='backoff', reason='r', delay=1.0, "
                          "attempt=2, instance=None)")
    assert repr(Status("x", "y")) == (
        "Status(name='x', state='y', running=False, pids={}, restarts=0, spawned=0, "
        "last_exit=None, next_restart_at=None, reason=None, strategy=None, started_at=None, "
        "target_started_at=None, output=None, directory=None, start_times={}, dropped=0, "
        "monitors={}, stalled=None, orphans=[], ready=False, notify_status=None, listen=[], "
        "instances=[], roll=None, comment=None, user=None, starting=False, scales={}, "
        "unrolled=[])")
    assert repr(FULL).startswith("Status(name='g', state='running', running=True, "
                                 "pids={'pump': 3}, restarts=1, spawned=2, "
                                 "last_exit=ExitStatus(code=1, ")
    assert repr(Lock(3)) == "Lock(fd=3)"


def test_exit_status_is_immutable_and_hashable():
    for name in ("code", "signal", "other"):
        with pytest.raises(AttributeError):
            setattr(EXIT, name, 2)
        with pytest.raises(FrozenRecordError):
            delattr(EXIT, name)
    assert not hasattr(EXIT, "__dict__")
    assert EXIT == ExitStatus(1, None, False, None, 5, 0.5, "backoff", "r", 1.0, 2)
    assert hash(EXIT) == hash(copy.copy(EXIT)) and len({EXIT, KILLED, copy.copy(EXIT)}) == 2
    assert EXIT != replace(EXIT, attempt=3) and ExitStatus() == ExitStatus()
    assert pickle.loads(pickle.dumps(EXIT)) == EXIT == copy.deepcopy(EXIT)
    assert (EXIT.signal_name, KILLED.signal_name, str(KILLED)) == (
        None, "SIGKILL", "killed by SIGKILL (core dumped)")
    assert immortal.ExitStatus is ExitStatus


def test_status_is_mutable_and_unhashable():
    status = Status("g", "running")
    status.running = True
    status.state = "stopped"
    status.pids["pump"] = 7
    assert (status.running, status.state, status.pids) == (True, "stopped", {"pump": 7})
    assert status == Status("g", "stopped", True, {"pump": 7})
    assert status != Status("g", "stopped")
    with pytest.raises(TypeError):
        hash(status)
    with pytest.raises(AttributeError):
        status.nonsense = 1  # slots: only the fields
    assert pickle.loads(pickle.dumps(FULL)) == FULL == copy.deepcopy(FULL)
    assert immortal.Status is Status


def test_status_mutable_defaults_are_not_shared():
    first, second = Status("a", "running"), Status("b", "running")
    first.pids["pump"] = 1
    first.start_times["pump"] = 2
    assert second.pids == {} and second.start_times == {}
    assert Status("c", "running").pids == {}
    assert first.pids is not second.pids and first.start_times is not second.start_times


def test_lock_close_forgets_its_fd(tmp_path):
    lock = Lock.take(tmp_path)
    assert lock.fd >= 0 and lock == Lock(lock.fd)
    lock.close()
    assert lock.fd == -1 and lock == Lock(-1)
    lock.close()  # twice is fine
    Lock.take(tmp_path).close()  # released: it can be taken again


def test_records_of_different_classes_are_never_equal():
    assert Lock(3) != Lock(4) and Lock(3) == Lock(3)
    assert ExitStatus(code=3) != Lock(3) and Lock(3) != ExitStatus(3)
    assert Status("g", "running") != ExitStatus() and not Status("g", "x") == ("g", "x")


def test_constructors_take_the_same_arguments():
    assert Status("g", "running") == Status(name="g", state="running")
    assert ExitStatus(1) == ExitStatus(code=1)
    for make in (lambda: Status("g"), lambda: Status(), lambda: ExitStatus(nope=1),
                 lambda: ExitStatus(1, code=1), lambda: Lock(), lambda: Lock(1, 2),
                 lambda: Status("g", "x", *range(40))):
        with pytest.raises(TypeError):
            make()
    assert Lock._fields == ("fd",) and EXIT._fields[:3] == ("code", "signal", "core_dumped")
    assert Status.__match_args__[:2] == ("name", "state")


def test_control_commands_do_not_import_dataclasses():
    """Importing state and events (what stop and status need) imports neither."""
    code = "import immortal.state, immortal.events, immortal.records"
    assert imported_after(code, {"dataclasses", "inspect"}) == set()


def test_a_status_in_words_needs_no_renderer():
    """``str(status)`` is the status module's own: the renderer (which sits above it) is not
    imported for it."""
    code = ("from immortal.state import Status\n"
            "text = str(Status('g', 'stopped', reason='gave up', spawned=2, restarts=1))\n"
            "assert text.splitlines() == ['g: stopped (not running)', "
            "'  spawned  2, restarts 1', '  reason   gave up'], text")
    assert imported_after(code, {"immortal.render"}) == set()


# The record machinery ------------------------------------------------------------------------

class Point(Record):
    x: int
    y: int = 0


class Point3(Point):
    z: int = 0


class Bag(MutableRecord):
    name: str
    items: list[int] = field(default_factory=list)
    tags: dict[str, Point] = field(default_factory=dict)
    where: Point = Point(0)


def test_subclasses_add_fields_and_stay_distinct():
    assert Point3._fields == ("x", "y", "z") and Point3(1, 2, 3).z == 3
    assert Point(1, 2) != Point3(1, 2) and repr(Point3(1)) == "Point3(x=1, y=0, z=0)"
    bag = Bag("b")
    bag.items.append(1)
    assert Bag("c").items == [] and bag.where is Bag("d").where  # immutable: shared


def test_definitions_refuse_what_dataclasses_refuse():
    with pytest.raises(ValueError, match="mutable default"):
        class Shared(MutableRecord):
            items: list[int] = []  # noqa: RUF012
    with pytest.raises(TypeError, match="non-default argument 'b' follows"):
        class Order(Record):
            a: int = 0
            b: int
    with pytest.raises(TypeError, match="non-default argument 'b' follows"):
        class Factory(Record):
            a: list[int] = field(default_factory=list)
            b: int


def test_asdict_copies_and_recurses():
    bag = Bag("b", [1], {"p": Point(1)}, Point3(2))
    data = asdict(bag)
    assert data == {"name": "b", "items": [1], "tags": {"p": {"x": 1, "y": 0}},
                    "where": {"x": 2, "y": 0, "z": 0}}
    assert data["items"] is not bag.items
    assert asdict(EXIT) == {**{k: v for k, v in json.loads(EXIT_JSON).items() if k != "text"},
                            "instance": None}
    with pytest.raises(TypeError):
        asdict({"x": 1})


def test_replace_on_records_and_dataclasses():
    bag = Bag("b")
    other = replace(bag, name="c")
    assert (other.name, other.items is bag.items) == ("c", True)  # as dataclasses.replace
    assert replace(Point(1), y=2) == Point(1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        replace(Point(1), w=2)

    @dataclasses.dataclass(frozen=True)
    class Plain:
        a: int

    assert replace(Plain(1), a=2) == Plain(2)
    with pytest.raises(TypeError):
        replace(object(), a=1)
