"""A running group of several programs (``start_group``) changed to a new set of them
(``apply``): those added started, those removed stopped, those changed rolled, under the
group's apply lock (``programs.one_change``), so that one change at a time reads the running
programs and hands the group its new ones. Mixed into :class:`immortal.group.Group`, whose
rolling restart it uses.
"""

from __future__ import annotations

import contextlib
import os

from . import settling
from .errors import ImmortalError, InvalidSpec, StartError
from .groupstop import GroupStop
from .groupview import MARGIN
from .state import Status, ensure_dir, read_json, read_scales, write_json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any

    from .programs import Applied


class GroupApply(GroupStop):
    """What ``apply`` needs of a handle, and how it waits for counts to settle."""

    _changing = False  #: within :meth:`changing`

    def _roll(self, before: Status, chosen: int | None, grace: float | None, batch: int,
              program: str | None = None, rolling: bool = False,
              below: int | None = None) -> None:
        raise NotImplementedError  # the Group's

    def _settled(self, counts: dict[str, int], patience: float, what: str,
                 new: tuple[str | None, int] | None = None,
                 before: dict[str, int] | None = None, ticket: int | None = None,
                 scales: dict[str, Any] | None = None) -> Status:
        return settling.wait(self.status, self.name, counts, patience, what, new,
                             None if before is None else (self.directory, before), ticket,
                             scales)

    def apply(self, programs: Mapping[str, Mapping[str, Any]], *,
              timeout: float | None = None) -> Applied:
        """Change a running group of several programs (``start_group``) to ``programs``
        (as ``start_group`` takes them, checked the same way first): the programs added
        are started, those removed stopped (TERM, their grace period, KILL), those whose
        definition changed rolled (a rolling restart with the new one: a replacement that
        fails aborts it, the old processes serving on and the old definition put back,
        ``StartError``), those whose count alone changed scaled, the others untouched
        (the same processes). Returns once it is all done: what became of each program.
        A listening program cannot be added or removed, nor its addresses changed (they
        are bound once, for the group's life)."""
        # The caller's side of a start (the monitors, their checks): imported only here.
        from .programs import build_programs

        with self.changing():
            spec = self.running_spec()
            return self.apply_built(build_programs(self.name, programs, spec.strategy,
                                                   spec.directory), timeout=timeout, spec=spec)

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """The group's programs changed by this handle alone, from the read of its running
        ones (``running_spec``) to an apply's last roll: another change in progress is
        refused (``NotRunning``). Within it, a change read no other's programs."""
        from .programs import one_change

        if self._changing:
            yield
            return
        with one_change(self.directory, self.name):
            self._changing = True
            try:
                yield
            finally:
                self._changing = False

    def running_spec(self) -> Any:
        """The ``Spec`` of a running group of several programs (its ``spec.json``, which
        an apply rewrites); NotRunning, or InvalidSpec for a group of one program."""
        from .spec import Spec

        self._root()
        spec = Spec.from_json(read_json(self.directory / "spec.json") or {})
        if not spec.several:
            raise InvalidSpec(f"group {self.name!r} runs one program (started by start()); "
                              "apply changes a group of several programs (start_group())")
        return spec

    def apply_built(self, new: Sequence[Any], *, timeout: float | None = None,
                    spec: Any = None) -> Applied:
        """``apply`` of ``Program`` records already built and checked (``build_programs``,
        or the group's own from ``running_spec``), within :meth:`changing` (taken here if
        the caller has not). ``spec``: the ``running_spec`` they were built from, read
        within it (else it is read here), and compared with them."""
        if timeout is not None:  # checked before anything changes
            from .checks import check_timeout

            timeout = check_timeout("timeout", timeout)
        with self.changing():
            return self._apply_held(new, timeout,
                                    self.running_spec() if spec is None else spec)

    def _apply_held(self, new: Sequence[Any], timeout: float | None, spec: Any) -> Applied:
        from .programs import compare, note_unrolled, unrolled
        from .spec import program_dir

        applied, sending = compare(spec, tuple(new), unrolled(self.directory))
        # The scales recorded now: one asked while this apply waits makes its wait moot.
        scales = {program: (entry.get("id"), entry.get("at"))
                  for program, entry in read_scales(self.directory).items()}
        for name in applied.added:
            ensure_dir(program_dir(spec.directory, name))
        left = list(applied.changed)  # what this caller has yet to roll, kept in a file
        note_unrolled(self.directory, left)
        self._hand(sending, applied.changed)
        ready = max([p.ready_timeout + p.stop_timeout for p in (*new, *spec.programs)])
        # The programs it left as they were are not waited for: one that gave up (fatal)
        # would fail an apply that did not touch it.
        touched = {*applied.added, *applied.changed, *applied.scaled}
        self._settled({**{p.name: p.workers for p in sending if p.name in touched},
                       **{name: 0 for name in applied.removed}},
                      ready + MARGIN, "did not take its new programs", None,
                      {p.name: p.workers for p in spec.programs}, scales=scales)
        old = {p.name: p for p in spec.programs}
        counts = {p.name: p.workers for p in sending}
        for name in applied.changed:
            # The instances it added run the new definition already: rolled, they would
            # be spawned twice.
            had = old[name].workers if name in old else 0
            below = had if 0 < had < counts.get(name, 0) else None
            try:
                self._roll(self.status(), None, timeout, 1, name, rolling=True, below=below)
            except StartError as exc:  # the old definition back, as the old ones run
                try:
                    self._hand([old[p.name] if p.name == name else p for p in sending], ())
                except ImmortalError:  # a stop (the roll's end, most likely) under way
                    raise StartError(f"{exc}; the apply was not finished", exc.status,
                                     exc.stderr) from None
                note_unrolled(self.directory, left[1:])
                raise StartError(f"{exc}; program {name!r} keeps its old definition"
                                 + _done(applied, name, left[1:]),
                                 exc.status, exc.stderr) from None
            left.remove(name)
            note_unrolled(self.directory, left)
        return applied

    def _hand(self, programs: Sequence[Any], rolls: Sequence[str]) -> None:
        """Ask the group to run ``programs`` (``Program`` records): in a file of its
        directory (each program has its environment: a request would be too small), named
        in the request, removed by the group once read (or here, if it never was). The
        request names the programs rolled next (``rolls``) and who rolls them (``caller``,
        this process): a daemon in the foreground tells systemd its reload is over once
        they are, or once their caller has gone without asking."""
        name = f"apply.{os.urandom(8).hex()}.json"
        write_json(self.directory / name, {"programs": [p.to_json() for p in programs]})
        try:
            self._request("apply", file=name, rolls=list(rolls), caller=os.getpid())
        finally:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                pass


def _done(applied: Applied, failed: str, unrolled: list[str]) -> str:
    """What an apply whose roll of ``failed`` failed had done, and left: the other
    programs' actions, and those changed but not rolled yet (the next apply rolls them)."""
    done = [f"{program} {action}" for program, action in applied.actions().items()
            if program != failed and program not in unrolled and action != "unchanged"]
    return ("; done: " + ", ".join(done) if done else "") + (
        "; not rolled yet (the next apply rolls them): " + ", ".join(unrolled)
        if unrolled else "")
