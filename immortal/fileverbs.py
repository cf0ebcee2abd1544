"""The configuration file's group, by its verbs: ``up``, ``down`` and ``reload``.

One file is one group (``config.Config``): ``up`` starts it (``start_group``) or, if it
runs, starts the programs of the file it does not run yet, leaving the others untouched;
``down`` stops it, or some of its programs (an apply without them); ``reload`` makes the
running group match the file (``Group.apply``: new programs started, removed ones stopped,
changed ones rolled, unchanged ones untouched). What cannot change in a running group (its
strategy, its start timeout, a listening program's addresses) is said, not done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from .config import Config
from .configfile import DEFAULT
from .errors import AlreadyRunning, ImmortalError, InvalidSpec, NotRunning, did_you_mean
from .group import Group, attach
from .names import check_name
from .programs import Applied
from .records import Record, replace
from .spec import Program, Spec
from .state import home

#: what became of a program: ``started`` (by this call), ``running`` (it was, untouched),
#: and ``Applied.actions()``'s words for a reload or a down of some programs
Actions = dict[str, str]


class Outcome(Record):
    """What ``up``, ``down`` or ``reload`` did: the group, and each program's action."""

    group: Group
    actions: Actions
    notes: tuple[str, ...] = ()  #: what the file asks that a running group cannot take
    #: which environment a reload applied and who chose it, if the group runs in one or
    #: is given one
    applied: str = ""


def chosen(config: Config, programs: Sequence[str]) -> list[str]:
    """``programs`` checked against the file's (all of them if none is named), in the
    file's order; InvalidSpec for a name the file does not have."""
    for name in programs:
        if name not in config.programs:
            raise InvalidSpec(f"{config.path}: no program {name!r}; the file has "
                              f"{', '.join(config.programs)}"
                              + did_you_mean(name, config.programs))
    return [name for name in config.programs if not programs or name in programs]


def current(name: str) -> Group | None:
    """The running group ``name`` (a start under way waited for), or None."""
    try:
        group = attach(name)
    except NotRunning:
        return None
    return group if group.wait_start().running else None


def up(config: Config, programs: Sequence[str] = ()) -> Outcome:
    """Start the file's group with ``programs`` (default: all of the file's); if it runs,
    start those of them it does not run, from the file, and leave the others as they are
    (``reload`` applies the file's changes to them)."""
    from .groupstart import launch_group
    from .programs import build_group

    names = chosen(config, programs)
    kwargs = config.programs_kwargs()
    group = current(config.name.value)
    if group is None:
        spec = build_group(config.name.value, {p: kwargs[p] for p in names},
                           config.strategy.value, config.start_timeout.value,
                           str(home() / check_name(config.name.value)))
        try:
            group = launch_group(with_variables(spec, config))
        except AlreadyRunning:  # another start won the race: add to the group it started
            group = current(config.name.value)
            if group is None:
                raise
        else:
            return Outcome(group, {p: "started" for p in names}, _group_notes(config, spec))
    with group.changing():  # no other change between this read and the apply
        spec = group.running_spec()
        _same_environment(config, spec)
        live = {p.name: p for p in spec.programs if p.workers}
        missing = [p for p in names if p not in live]
        if missing:
            group.apply_built([*live.values(), *built(config, missing, spec)], spec=spec)
    # A job that did its work (a final exit code) is not running: a restart runs it again.
    done = {program for program, entries in group.status().programs().items()
            if entries and all(entry.finished for entry in entries)}
    return Outcome(group, {p: "started" if p in missing else "finished" if p in done
                           else "running" for p in names}, _group_notes(config, spec))


def with_variables(spec: Spec, config: Config) -> Spec:
    """``spec`` (a group of the file's programs) with the names each program's environment
    has from the file (``Program.variables``) and the file's environment they were made
    in, for a later ``reload``."""
    return replace(spec, programs=tuple(
        replace(p, variables=tuple(config.programs[p.name].variables),
                environment=config.environment.value) for p in spec.programs))


def running_environment(spec: Spec) -> str | None:
    """The file's environment the running group ``spec`` was made in (None: none), which
    ``up`` and ``reload`` apply when neither -E nor $IMMORTAL_ENV names one; InvalidSpec
    if its programs were made in different ones."""
    made = {p.name: p.environment for p in spec.programs if p.workers}
    if len(set(made.values())) > 1:
        listed = ", ".join(f"{name} in {'none' if env is None else repr(env)}"
                           for name, env in made.items())
        raise InvalidSpec(f"group {spec.name!r} runs programs made in different "
                          f"environments ({listed}); name the one to apply with -E NAME")
    return next(iter(made.values()), None)


def _same_environment(config: Config, spec: Spec) -> None:
    """``up`` adds programs to a running group in the environment the group runs in."""
    running = running_environment(spec)
    wanted = config.environment.value
    if wanted != running:
        raise InvalidSpec(
            f"group {spec.name!r} runs in {_environment(running)}, not "
            f"{_environment(wanted)} ({config.environment.source}): 'up' adds programs "
            f"in the group's environment; 'immortal reload"
            f"{'' if wanted is None else ' -E ' + wanted}' changes it")


def _environment(name: str | None) -> str:
    return "no environment" if name is None else f"environment {name!r}"


def in_foreground(config: Config, programs: Sequence[str] = (),
                  console: bool | None = None) -> NoReturn:
    """``up --foreground``: the file's group (or ``programs`` of it) run in this process,
    which becomes its daemon until the group ends (``foreground.run``); never returns.
    As the ``daemon`` strategy, whatever the file says."""
    from .foreground import run
    from .groupstart import plan_group

    names = chosen(config, programs)
    if current(config.name.value) is not None:
        raise AlreadyRunning(f"group {config.name.value!r} is already running (detached); "
                             "--foreground runs a group in this process: stop it first")
    kwargs = config.programs_kwargs()
    spec = plan_group(config.name.value, {p: kwargs[p] for p in names}, "daemon",
                      config.start_timeout.value)
    run(with_variables(spec, config), console=console)


def built(config: Config, names: Sequence[str], spec: Spec) -> list[Program]:
    """The ``Program`` records of the file's ``names``, for the running group ``spec``.

    What the file does not say is what the group runs with: a program the group runs
    keeps the environment its group was started in (the file's own variables taken anew:
    those it set before and no longer sets go), and its interpreter and its umask if the
    file names none. A reload from another shell, with another environment or umask (a
    unit's ExecReload, cron), changes nothing else.
    """
    from .programs import build_programs

    kwargs = config.programs_kwargs()
    running = {p.name: p for p in spec.programs}
    made = []
    for program in build_programs(spec.name, {p: kwargs[p] for p in names}, spec.strategy,
                                  spec.directory):
        variables = config.programs[program.name].variables
        program = replace(program, variables=tuple(variables),
                          environment=config.environment.value)
        old = running.get(program.name)
        if old is not None:
            kept = {k: v for k, v in old.env.items() if k not in old.variables}
            settings = config.programs[program.name].settings

            def given(key: str) -> bool:
                return key in settings and settings[key].source.kind != DEFAULT

            program = replace(program, env={**kept, **variables},
                              exec=program.exec if given("exec") else old.exec,
                              umask=program.umask if given("umask") else old.umask)
        made.append(program)
    return made


def down(config: Config, programs: Sequence[str] = (), timeout: float | None = None
         ) -> Outcome:
    """Stop the file's group (``timeout``: its grace period; the processes its dead
    supervisors left are ended too), or ``programs`` of it alone (each with its own
    ``stop_timeout``); NotRunning if it does not run."""
    name = config.name.value
    if programs:
        chosen(config, programs)
        group = current(name)
        if group is None:
            raise NotRunning(f"group {name!r} (of {config.path}) is not running")
        return Outcome(group, without(group, programs, timeout))
    try:
        group = attach(name)
    except NotRunning:
        raise NotRunning(f"group {name!r} (of {config.path}) is not running") from None
    if not group.wait_start().running and not group.left_behind():
        raise NotRunning(f"group {name!r} (of {config.path}) is not running")
    every = list(group.programs) or [name]
    group.stop(timeout)
    return Outcome(group, {p: "stopped" for p in every})


def without(group: Group, programs: Sequence[str], timeout: float | None = None) -> Actions:
    """Stop ``programs`` of the running ``group`` (an apply without them); the whole
    group if none of its programs would be left."""
    with group.changing():  # no other change between this read and the apply
        spec = group.running_spec()
        live = [p for p in spec.programs if p.workers]
        names = {p.name for p in live}
        for program in programs:
            if program not in names:
                raise NotRunning(f"program {program!r} of {group.name!r} is not running"
                                 + did_you_mean(program, names))
        left = [p for p in live if p.name not in programs]
        if left:
            applied = group.apply_built(left, timeout=timeout, spec=spec)
            return {p: "stopped" for p in applied.removed}
    group.stop(timeout)
    return {p.name: "stopped" for p in live}


def reload(config: Config, timeout: float | None = None) -> Outcome:
    """Make the running file's group match the file: ``Group.apply`` of its programs.
    The group's ``spec.json`` is read once: the programs are built from it, compared with
    it, and the notes say how the file's group settings differ from it."""
    group = current(config.name.value)
    if group is None:
        raise NotRunning(f"group {config.name.value!r} (of {config.path}) is not running; "
                         "'immortal up' starts it")
    with group.changing():  # no other change between this read and the apply
        spec = group.running_spec()
        running = running_environment(spec)
        applied: Applied = group.apply_built(built(config, list(config.programs), spec),
                                             timeout=timeout, spec=spec)
    actions = applied.actions()
    order = [*config.programs, *applied.removed]  # the file's order, then the removed
    wanted = config.environment.value
    said = f"{_environment(wanted)} ({config.environment.source})" + (
        "" if wanted == running else f"; the group ran in {_environment(running)}")
    return Outcome(group, {p: actions[p] for p in order if p in actions},
                   _group_notes(config, spec),
                   f"applied {said}" if wanted is not None or running is not None else "")


def _group_notes(config: Config, spec: Spec) -> tuple[str, ...]:
    """The group's own settings of the file that differ from those it runs with (``spec``,
    its running one: an apply changes its programs, never these): they take effect at the
    next start ('down', then 'up')."""
    notes = []
    for key, running in (("strategy", spec.strategy.value),
                         ("start_timeout", spec.start_timeout)):
        wanted = getattr(config, key).value
        if wanted != running:
            notes.append(f"{key} {wanted!r} ({getattr(config, key).source}) applies at the "
                         f"group's next start: it runs with {running!r}")
    return tuple(notes)


def describe(outcome: Outcome) -> list[str]:
    """One line per program: what became of it, with its instances' pids."""
    name = outcome.group.name
    try:
        status = outcome.group.status()
    except ImmortalError:
        status = None
    lines = []
    for program, action in outcome.actions.items():
        pids = [] if status is None else [
            f"{name}/{program}:{entry.instance} {entry.pid}" for entry in status.instances
            if entry.program == program and entry.pid]
        lines.append(f"{action} {name}/{program}"
                     + (f": {', '.join(pids)}" if pids and action != "stopped" else "")
                     + (f" (a final exit code: its job is done; 'immortal restart "
                        f"{name}/{program}' runs it again)" if action == "finished" else ""))
    return ([outcome.applied] if outcome.applied else []) + lines + [
        f"note: {note}" for note in outcome.notes]
