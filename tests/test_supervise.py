"""Cell-by-cell tests of the restart state machine in ``immortal.supervise``.

The machine is pure, so everything runs on a fake clock: ``now`` is a plain float, ``rand`` a
constant, and there are no processes and no sleeps. Starting states are reached by driving the
machine from ``initial()`` through real events, never by building a ``State`` by hand.
"""

from __future__ import annotations

import copy
import itertools
import pickle
import signal

import pytest

from immortal.daemon import PUMP_ALONE, PUMP_LAST, PUMP_WITH_TARGET
from immortal.events import ExitStatus
from immortal.spec import RestartPolicy
from immortal.supervise import (
    BACKOFF, FATAL, FINAL, PHASES, RESTARTING, RUNNING, SPAWNING, STOPPED, STOPPING,
    EVENTS as EVENT_TYPES, TABLE as MACHINE, Exited, Finish, Hook, Kill, Phase, Restart, Spawn,
    SpawnFailed, Spawned, State, Stop, Tick, Wake, QUICK_FLOOR, backoff_delay, carried_over,
    ending, finished, initial, refusal, replace, rerun, rerunnable, step,
)

ACTION_TYPES = (Spawn, Hook, Kill, Wake, Finish)
TERM, KILL = Kill(signal.SIGTERM), Kill(signal.SIGKILL)
CANCEL = Wake(None)
STOP_DONE = Finish(STOPPED, "stop")
CODE1 = ExitStatus(code=1)

# jitter 0.2 with rand 0.5 spreads by exactly 1.0, so the first delay is exactly 0.5 s.
P = RestartPolicy(min_uptime=1.0, backoff_initial=0.5, backoff_factor=2.0, backoff_max=30.0,
                  jitter=0.2, max_restarts=3, window=60.0)
R = 0.5


def drive(policy, script, rand=R, start=None):
    """Feed ``(now, event)`` pairs from ``start`` (default ``initial()``); return state, actions."""
    state, actions = start or initial()
    log = list(actions)
    for now, event in script:
        state, actions = step(policy, state, event, now, rand)
        log.extend(actions)
    return state, log


# Every starting phase is reached by real steps; the last one always happens at t=10.0.
BUILD = {
    SPAWNING: [],
    RUNNING: [(10.0, Spawned(100))],
    BACKOFF: [(9.8, Spawned(100)), (10.0, Exited(CODE1))],  # quick death: wake at 10.5
    RESTARTING: [(9.0, Spawned(100)), (10.0, Restart(5.0))],  # SIGKILL due at 15.0
    STOPPING: [(9.0, Spawned(100)), (10.0, Stop(5.0))],  # SIGKILL due at 15.0
    STOPPED: [(9.0, Spawned(100)), (9.5, Stop(5.0)), (10.0, Exited(CODE1))],
    FATAL: [(0.0, Spawned(100)), (2.0, Exited(CODE1)), (2.0, Spawned(101)),
            (4.0, Exited(CODE1)), (4.0, Spawned(102)), (6.0, Exited(CODE1)),
            (6.0, Spawned(103)), (10.0, Exited(CODE1))],  # 4th death within 60 s
}


def build(phase, policy=P, rand=R):
    return drive(policy, BUILD[phase], rand)[0]


E, LATE = 10.25, 100.0  # before every deadline of the built states / after all of them
EVENTS = {
    "Spawned": (E, Spawned(200)),
    "SpawnFailed": (E, SpawnFailed("ENOENT")),
    "Exited quick": (E, Exited(CODE1)),
    "Exited stable": (LATE, Exited(CODE1)),
    "Tick early": (E, Tick()),
    "Tick due": (LATE, Tick()),
    "Stop": (E, Stop(5.0)),
    "Stop grace=0": (E, Stop(0.0)),
    "Restart": (E, Restart(5.0)),
}

TABLE = [
    # phase      event            -> phase       actions
    (SPAWNING, "Spawned", RUNNING, (Hook("spawn", "start"),)),
    (SPAWNING, "SpawnFailed", BACKOFF, (Wake(E + 0.5),)),
    (SPAWNING, "Exited quick", SPAWNING, ()),
    (SPAWNING, "Exited stable", SPAWNING, ()),
    (SPAWNING, "Tick early", SPAWNING, ()),
    (SPAWNING, "Tick due", SPAWNING, ()),
    (SPAWNING, "Stop", STOPPED, (CANCEL, STOP_DONE)),
    (SPAWNING, "Stop grace=0", STOPPED, (CANCEL, STOP_DONE)),
    (SPAWNING, "Restart", SPAWNING, ()),

    (RUNNING, "Spawned", RUNNING, ()),
    (RUNNING, "SpawnFailed", RUNNING, ()),  # not about our live target: ignored
    (RUNNING, "Exited quick", BACKOFF, (Wake(E + 0.5),)),
    (RUNNING, "Exited stable", SPAWNING, (CANCEL, Spawn("exit"))),
    (RUNNING, "Tick early", RUNNING, ()),
    (RUNNING, "Tick due", RUNNING, ()),
    (RUNNING, "Stop", STOPPING, (TERM, Wake(E + 5.0))),
    (RUNNING, "Stop grace=0", STOPPING, (TERM, Wake(E))),
    (RUNNING, "Restart", RESTARTING, (TERM, Wake(E + 5.0))),

    (BACKOFF, "Spawned", BACKOFF, ()),
    (BACKOFF, "SpawnFailed", BACKOFF, ()),  # nothing is being spawned: ignored
    (BACKOFF, "Exited quick", BACKOFF, ()),
    (BACKOFF, "Exited stable", BACKOFF, ()),
    (BACKOFF, "Tick early", BACKOFF, ()),
    (BACKOFF, "Tick due", SPAWNING, (CANCEL, Spawn("exit"))),
    (BACKOFF, "Stop", STOPPED, (CANCEL, STOP_DONE)),
    (BACKOFF, "Stop grace=0", STOPPED, (CANCEL, STOP_DONE)),
    (BACKOFF, "Restart", SPAWNING, (CANCEL, Spawn("manual"))),

    (RESTARTING, "Spawned", RESTARTING, ()),
    (RESTARTING, "SpawnFailed", RESTARTING, ()),  # the old target still runs: ignored
    (RESTARTING, "Exited quick", SPAWNING, (CANCEL, Spawn("manual"))),
    (RESTARTING, "Exited stable", SPAWNING, (CANCEL, Spawn("manual"))),
    (RESTARTING, "Tick early", RESTARTING, ()),
    (RESTARTING, "Tick due", RESTARTING, (KILL, CANCEL)),
    (RESTARTING, "Stop", STOPPING, (Wake(15.0),)),  # SIGTERM already sent; keep the deadline
    (RESTARTING, "Stop grace=0", STOPPING, (Wake(E),)),
    (RESTARTING, "Restart", RESTARTING, ()),

    (STOPPING, "Spawned", STOPPING, (Hook("respawn", "start"), TERM)),
    (STOPPING, "SpawnFailed", STOPPING, ()),  # the target still runs: wait for its death
    (STOPPING, "Exited quick", STOPPED, (CANCEL, STOP_DONE)),
    (STOPPING, "Exited stable", STOPPED, (CANCEL, STOP_DONE)),
    (STOPPING, "Tick early", STOPPING, ()),
    (STOPPING, "Tick due", STOPPING, (KILL, CANCEL)),
    (STOPPING, "Stop", STOPPING, ()),
    (STOPPING, "Stop grace=0", STOPPING, (KILL, CANCEL)),
    (STOPPING, "Restart", STOPPING, ()),
] + [(phase, name, phase, ()) for phase in FINAL for name in EVENTS]


def test_builders_reach_their_phase():
    for phase in PHASES:
        assert build(phase).phase == phase
    assert {row[0] for row in TABLE} == set(PHASES)
    assert len(TABLE) == len(PHASES) * len(EVENTS)


@pytest.mark.parametrize("phase, event, want_phase, want_actions", TABLE,
                         ids=[f"{row[0]}-{row[1]}" for row in TABLE])
def test_cell(phase, event, want_phase, want_actions):
    now, ev = EVENTS[event]
    state, actions = step(P, build(phase), ev, now, R)
    assert (state.phase, actions) == (want_phase, want_actions)


def test_initial_spawns_the_first_target():
    state, actions = initial()
    assert state.phase == SPAWNING and actions == (Spawn("start"),)
    assert (state.restarts, state.spawned, state.attempts) == (0, 0, 0)


# Restart timing -------------------------------------------------------------------------------

def crash_loop(policy, deaths, rand=R, t=0.0, uptime=0.1, start=None):
    """Let the target die ``deaths`` times after ``uptime`` s, restarting when it is due."""
    state, _ = start or initial()
    delays = []
    for _ in range(deaths):
        state, _ = step(policy, state, Spawned(100), t, rand)
        t += uptime
        state, actions = step(policy, state, Exited(CODE1), t, rand)
        delays.append(state.delay)
        if state.phase == BACKOFF:
            assert actions == (Wake(t + state.delay),)
            t = state.deadline
            state, actions = step(policy, state, Tick(), t, rand)
        assert actions[-1] == Spawn("exit") and state.phase == SPAWNING
    return state, delays, t


def test_stable_run_restarts_at_once_and_resets_attempts():
    policy = RestartPolicy(jitter=0.0)
    state, delays, t = crash_loop(policy, 3)
    assert state.attempts == 3 and delays == [0.5, 1.0, 2.0]
    state, _ = step(policy, state, Spawned(100), t, R)
    state, actions = step(policy, state, Exited(CODE1), t + 1.0, R)
    assert actions == (CANCEL, Spawn("exit"))  # uptime == min_uptime counts as stable
    assert (state.phase, state.attempts, state.delay) == (SPAWNING, 0, 0.0)


def test_crash_loop_forgiven_after_stable_run():
    policy = RestartPolicy(jitter=0.0)
    state, delays, t = crash_loop(policy, 4)
    assert delays == [0.5, 1.0, 2.0, 4.0]
    state, _, t = crash_loop(policy, 1, t=t, uptime=5.0, start=(state, ()))
    assert state.attempts == 0
    _, delays, _ = crash_loop(policy, 2, t=t, start=(state, ()))
    assert delays == [0.5, 1.0]  # the backoff starts over


def test_backoff_delay_is_exponential_and_capped():
    policy = RestartPolicy(backoff_initial=0.5, backoff_factor=2.0, backoff_max=30.0, jitter=0)
    got = [backoff_delay(policy, n, 0.5) for n in range(1, 10)]
    assert got == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(policy, 10**6, 0.999) == 30.0
    steep = RestartPolicy(backoff_factor=100.0, backoff_max=86400.0, jitter=1.0)
    assert backoff_delay(steep, 10**6, 0.999) == 86400.0


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_jitter_bounds(rand):
    policy = RestartPolicy(backoff_initial=0.5, backoff_factor=2.0, backoff_max=30.0, jitter=0.2)
    for n in range(1, 12):
        base = min(30.0, 0.5 * 2.0 ** (n - 1))
        got = backoff_delay(policy, n, rand)
        assert base * 0.8 - 1e-9 <= got <= min(30.0, base * 1.2) + 1e-9
        want = {0.0: base * 0.8, 0.5: base, 0.999: min(30.0, base * (1 + 0.2 * 0.998))}[rand]
        assert got == pytest.approx(want)


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_machine_waits_the_backoff_delay(rand):
    _, delays, _ = crash_loop(RestartPolicy(), 9, rand=rand)
    want = [backoff_delay(RestartPolicy(), n, rand) for n in range(1, 10)]
    assert delays == pytest.approx(want)


def test_backoff_off_still_waits_the_floor_after_a_quick_death():
    """backoff_initial=0 switches the exponential backoff off, not the floor: a target that
    dies at once is restarted at most once per QUICK_FLOOR, not hundreds of times a second."""
    policy = RestartPolicy(backoff_initial=0.0)
    state, delays, t = crash_loop(policy, 5)
    assert delays == [QUICK_FLOOR] * 5 and state.restarts == 5
    state, actions = step(policy, state, SpawnFailed("ENOENT"), t, R)  # the spawn due now
    assert (state.phase, actions) == (BACKOFF, (Wake(t + QUICK_FLOOR),))


def test_a_tiny_backoff_is_raised_to_the_floor():
    policy = RestartPolicy(backoff_initial=0.001, backoff_max=0.002, jitter=0.0)
    _, delays, _ = crash_loop(policy, 4)
    assert delays == [QUICK_FLOOR] * 4


@pytest.mark.parametrize("min_uptime", [0.0, 1.0])
def test_a_stable_run_restarts_at_once_without_backoff(min_uptime):
    """The floor is for quick deaths only: a run of min_uptime or more restarts at once
    (with min_uptime=0 every run is stable: the caller asked for no delay at all)."""
    policy = RestartPolicy(min_uptime=min_uptime, backoff_initial=0.0)
    state, delays, _ = crash_loop(policy, 5, uptime=min_uptime)
    assert delays == [0.0] * 5 and state.restarts == 5


def test_spawn_failure_is_a_quick_death_even_with_min_uptime_zero():
    """Module docstring: SpawnFailed ──► backoff (counted as a quick death)."""
    policy = RestartPolicy(min_uptime=0.0, jitter=0.0)
    state, actions = step(policy, initial()[0], SpawnFailed("ENOENT"), 5.0, R)
    assert (state.phase, state.attempts, actions) == (BACKOFF, 1, (Wake(5.5),))


# Giving up -----------------------------------------------------------------------------------

def test_max_restarts_within_window_is_fatal():
    policy = RestartPolicy(max_restarts=3, window=60.0)
    state, _, t = crash_loop(policy, 3)  # three restarts are allowed
    state, _ = step(policy, state, Spawned(100), t, R)
    state, actions = step(policy, state, Exited(ExitStatus(signal=9)), t + 0.1, R)
    assert state.phase == FATAL and state.restarts == 3
    assert actions[0] == CANCEL and actions[1].phase == FATAL and len(actions) == 2
    assert "max_restarts=3" in actions[1].reason and "SIGKILL" in actions[1].reason
    assert state.reason == actions[1].reason


def test_restarts_outside_the_window_do_not_count():
    policy = RestartPolicy(max_restarts=2, window=10.0)
    state, _, t = crash_loop(policy, 30, uptime=6.0)  # never two restarts in 10 s
    assert state.phase == SPAWNING and state.restarts == 30 and len(state.recent) <= 2
    state, _, t = crash_loop(policy, 2, t=t + 20.0, uptime=1.5, start=(state, ()))
    state, _ = step(policy, state, Spawned(100), t, R)
    state, actions = step(policy, state, Exited(CODE1), t + 1.5, R)
    assert state.phase == FATAL and actions[-1].phase == FATAL


def test_max_restarts_above_a_thousand_still_gives_up():
    """RestartPolicy: more than max_restarts restarts within window gives up (max 10**6)."""
    policy = RestartPolicy(min_uptime=0.0, max_restarts=1200, window=86400.0)
    state, _ = initial()
    for i in range(1300):
        state, _ = step(policy, state, Spawned(100), i * 0.01, R)
        state, actions = step(policy, state, Exited(CODE1), i * 0.01 + 0.005, R)
        if state.phase == FATAL:
            break
    assert state.phase == FATAL and state.restarts == 1200


@pytest.mark.parametrize("phase", FINAL)
def test_final_phases_ignore_everything(phase):
    state = build(phase)
    for rand, (name, (now, event)) in itertools.product((0.0, 0.999), EVENTS.items()):
        for when in (now, LATE * 10):
            assert step(P, state, event, when, rand) == (state, ()), name


def test_final_exit_code_stops_the_group():
    policy = RestartPolicy(final_exit_codes={0, 78}, max_restarts=1)
    state, _ = drive(policy, [(0.0, Spawned(100))])
    state, actions = step(policy, state, Exited(ExitStatus(code=78)), 0.1, R)
    assert state.phase == STOPPED and actions[0] == CANCEL and len(actions) == 2
    assert actions[1].phase == STOPPED and "78" in actions[1].reason
    assert state.reason == actions[1].reason and state.last_exit.code == 78
    assert drive(policy, [(LATE, Tick()), (LATE, Restart(1.0))], start=(state, ()))[1] == []
    # a code not in the set, or a death by signal, restarts as usual
    _, actions = step(policy, build(RUNNING, policy), Exited(ExitStatus(signal=78)), 20.0, R)
    assert actions == (CANCEL, Spawn("exit"))


def test_a_finished_or_given_up_machine_is_run_again_by_a_rerun_and_a_stopped_one_is_not():
    """``rerunnable``: a target that finished (a final exit code) or whose restarts were
    given up; not one stopped by a stop. ``rerun`` spawns it again, its counters kept."""
    policy = RestartPolicy(final_exit_codes={0}, max_restarts=1)
    state, _ = drive(policy, [(0.0, Spawned(100))])
    done, _ = step(policy, state, Exited(ExitStatus(code=0)), 5.0, R)
    assert finished(done.phase, done.reason, 0) and rerunnable(done)
    failing, _ = drive(policy, [(0.0, Spawned(100)), (0.1, Exited(CODE1)), (LATE, Tick()),
                                (LATE, Spawned(101)), (LATE + 0.1, Exited(CODE1))])
    assert failing.phase == FATAL and rerunnable(failing)
    stopped, _ = drive(policy, [(0.0, Spawned(100)), (0.1, Stop(1.0, "stop")),
                                (0.2, Exited(ExitStatus(code=0)))])
    assert stopped.phase == STOPPED and not rerunnable(stopped)
    for ended in (done, failing):
        again, actions = rerun(ended, "manual")
        assert (again.phase, actions) == (SPAWNING, (CANCEL, Spawn("manual")))
        assert (again.restarts, again.attempts, again.recent) == (ended.restarts + 1, 0, ())
        assert again.reason is None and again.spawned == ended.spawned


# Stop and restart ----------------------------------------------------------------------------

def test_a_kill_stop_sends_kill_at_once():
    state, actions = step(P, build(RUNNING), Stop(0.0, "killed", kill=True), E, R)
    assert state.phase == STOPPING and actions == (KILL, Wake(E))


def test_stop_during_backoff_is_never_followed_by_a_spawn():
    state = build(BACKOFF)
    state, actions = step(P, state, Stop(5.0, reason="shutdown"), E, R)
    assert (state.phase, actions) == (STOPPED, (CANCEL, Finish(STOPPED, "shutdown")))
    later = [(LATE, Tick()), (LATE, Restart(1.0)), (LATE, SpawnFailed("x")),
             (LATE, Exited(CODE1)), (LATE, Tick())]
    state, log = drive(P, later, start=(state, ()))
    assert log == [] and state.phase == STOPPED


def test_stop_while_running_escalates_then_finishes():
    state, _ = drive(P, [(0.0, Spawned(100))])
    state, actions = step(P, state, Stop(3.0, reason="bye"), 5.0, R)
    assert (state.phase, actions) == (STOPPING, (TERM, Wake(8.0)))
    assert step(P, state, Tick(), 7.9, R) == (state, ())
    state, actions = step(P, state, Tick(), 8.0, R)
    assert (state.phase, actions) == (STOPPING, (KILL, CANCEL))
    assert step(P, state, Tick(), 9.0, R)[1] == ()  # escalates only once
    state, actions = step(P, state, Exited(ExitStatus(signal=9)), 8.1, R)
    assert (state.phase, actions) == (STOPPED, (CANCEL, Finish(STOPPED, "bye")))
    assert state.pid is None and state.restarts == 0


def test_restart_while_running_respawns_manually():
    state, _ = drive(P, [(0.0, Spawned(100))])
    state, actions = step(P, state, Restart(2.0), 5.0, R)
    assert (state.phase, actions) == (RESTARTING, (TERM, Wake(7.0)))
    state, actions = step(P, state, Exited(ExitStatus(signal=15)), 5.5, R)
    assert (state.phase, actions) == (SPAWNING, (CANCEL, Spawn("manual")))
    assert (state.restarts, state.attempts, state.pid) == (1, 0, None)
    state, actions = step(P, state, Spawned(101), 5.6, R)
    assert (state.phase, state.pid, state.spawned) == (RUNNING, 101, 2)
    assert actions == (Hook("respawn", "manual"),)


# Counters ------------------------------------------------------------------------------------

def test_counters():
    policy = RestartPolicy(jitter=0.0)
    state, delays, t = crash_loop(policy, 3)
    assert (state.restarts, state.spawned) == (3, 3)
    state, _ = drive(policy, [(t, Spawned(7)), (t + 1, Restart(1.0)), (t + 2, Exited(CODE1)),
                              (t + 2, Spawned(8))], start=(state, ()))
    assert (state.phase, state.restarts, state.spawned, state.pid) == (RUNNING, 4, 5, 8)
    state, _ = drive(policy, [(t + 3, Stop(1.0)),
                              (t + 4, Exited(CODE1))], start=(state, ()))
    assert (state.phase, state.restarts, state.spawned) == (STOPPED, 4, 5)


@pytest.mark.parametrize("window", [1.0, 86400.0 * 365])
def test_recent_stays_bounded(window):
    policy = RestartPolicy(min_uptime=0.0, window=window)
    state, _, _ = crash_loop(policy, 2500, uptime=0.01)
    assert state.restarts == 2500
    assert len(state.recent) <= (1000 if window > 100 else 102)
    assert all(a <= b for a, b in zip(state.recent, state.recent[1:]))


# Totality ------------------------------------------------------------------------------------

POLICIES = [
    P,
    RestartPolicy(),
    RestartPolicy(min_uptime=0.0, backoff_initial=0.0, jitter=0.0),
    RestartPolicy(max_restarts=1, window=0.001, final_exit_codes={1}),
    RestartPolicy(backoff_factor=100.0, backoff_max=86400.0, jitter=1.0, max_restarts=10**6),
    PUMP_ALONE, PUMP_WITH_TARGET, PUMP_LAST,
]
ALL_EVENTS = list(EVENTS.values()) + [
    (E, Exited(ExitStatus(signal=9))), (E, Exited(ExitStatus(code=0))),
    (E, Stop(0.0, reason="")), (E, Stop(None)), (E, Restart(0.0)), (-1.0, Tick()),
    (1e12, Tick()),
]


def check(result):
    state, actions = result
    assert isinstance(state, State) and state.phase in PHASES
    assert isinstance(actions, tuple) and all(isinstance(a, ACTION_TYPES) for a in actions)
    if any(isinstance(a, Finish) for a in actions):
        assert state.phase in FINAL
    return state


def test_machine_is_total():
    """Every event in every phase, then every second event after it: no exception."""
    for policy, rand, phase in itertools.product(POLICIES, (0.0, 0.5, 0.999), PHASES):
        start = build(phase, policy if phase != FATAL else P, rand)
        for (t1, first), (t2, second) in itertools.product(ALL_EVENTS, repeat=2):
            state = check(step(policy, start, first, t1, rand))
            check(step(policy, state, second, max(t1, t2), rand))


def test_table_is_total():
    """s6's actions[state][event]: one cell for every phase and every event, each a function."""
    assert set(MACHINE) == set(Phase) and len(PHASES) == 7
    for phase, cells in MACHINE.items():
        assert len(cells) == len(EVENT_TYPES), phase
        assert all(callable(cell) for cell in cells), phase
    assert set(EVENT_TYPES) == {Spawned, SpawnFailed, Exited, Tick, Stop, Restart}
    with pytest.raises(TypeError, match="not an event"):
        step(P, State(), Spawn("start"), 0.0, R)


def test_phases_are_the_strings_of_status_json():
    """status.json, Status.state and the CLI compare phases with plain strings."""
    import json

    for phase in Phase:
        assert phase == phase.value and hash(phase) == hash(phase.value)
        assert f"{phase}" == str(phase) == phase.value
        assert json.loads(json.dumps({"state": phase}, indent=1)) == {"state": phase.value}
    assert (SPAWNING, RUNNING, BACKOFF, STOPPED, FATAL) == (
        "spawning", "running", "backoff", "stopped", "fatal")
    # a state whose phase came back as a plain string steps as the enum does
    assert step(P, State("running", 7), Stop(1.0), 2.0, R) == step(
        P, State(RUNNING, 7), Stop(1.0), 2.0, R)


# Histories: (time, event, phase after, actions) replayed on a fake clock ---------------------

HISTORIES = {
    "crash loop, then stable runs restart at once": [
        (0.0, Spawned(1), RUNNING, (Hook("spawn", "start"),)),
        (0.2, Exited(CODE1), BACKOFF, (Wake(0.7),)),
        (0.5, Tick(), BACKOFF, ()),  # early
        (0.7, Tick(), SPAWNING, (CANCEL, Spawn("exit"))),
        (0.7, Spawned(2), RUNNING, (Hook("respawn", "exit"),)),
        (0.8, Exited(CODE1), BACKOFF, (Wake(1.8),)),  # second quick death: 1.0 s
        (1.8, Tick(), SPAWNING, (CANCEL, Spawn("exit"))),
        (1.8, Spawned(3), RUNNING, (Hook("respawn", "exit"),)),
        (9.0, Exited(CODE1), SPAWNING, (CANCEL, Spawn("exit"))),
        (9.0, Spawned(4), RUNNING, (Hook("respawn", "exit"),)),
        (70.0, Exited(CODE1), SPAWNING, (CANCEL, Spawn("exit"))),  # 3 restarts, not in 60 s
    ],
    "a stop during the backoff ends it; nothing is spawned after": [
        (0.0, Spawned(1), RUNNING, (Hook("spawn", "start"),)),
        (0.1, Exited(CODE1), BACKOFF, (Wake(0.6),)),
        (0.3, Stop(5.0, "bye"), STOPPED, (CANCEL, Finish(STOPPED, "bye"))),
        (0.6, Tick(), STOPPED, ()),
        (0.7, Restart(1.0), STOPPED, ()),
    ],
    "a restart, then a stop with no grace": [
        (0.0, Spawned(1), RUNNING, (Hook("spawn", "start"),)),
        (2.0, Restart(3.0), RESTARTING, (TERM, Wake(5.0))),
        (5.0, Tick(), RESTARTING, (KILL, CANCEL)),
        (5.1, Exited(ExitStatus(signal=9)), SPAWNING, (CANCEL, Spawn("manual"))),
        (5.1, Spawned(2), RUNNING, (Hook("respawn", "manual"),)),
        (6.0, Stop(0.0), STOPPING, (TERM, Wake(6.0))),
        (6.0, Tick(), STOPPING, (KILL, CANCEL)),
        (6.1, Exited(ExitStatus(signal=9)), STOPPED, (CANCEL, STOP_DONE)),
    ],
    "a spawn that fails backs off as a quick death": [
        (0.0, SpawnFailed("EAGAIN"), BACKOFF, (Wake(0.5),)),
        (0.5, Tick(), SPAWNING, (CANCEL, Spawn("exit"))),
        (0.5, Spawned(1), RUNNING, (Hook("respawn", "exit"),)),
    ],
}


@pytest.mark.parametrize("name", HISTORIES)
def test_history(name):
    state, _ = initial()
    for i, (now, event, phase, actions) in enumerate(HISTORIES[name]):
        state, got = step(P, state, event, now, R)
        assert (state.phase, got) == (phase, actions), f"step {i}: {event}"


def test_a_successors_targets_are_never_the_groups_first():
    """pump.py: a successor pump that spawns anew (its target died meanwhile) calls the
    monitors' respawn hook, whatever its predecessor had counted."""
    for spawned in (0, 3):
        state = carried_over(restarts=2, spawned=spawned, last_exit=CODE1)
        state, actions = step(P, state, Spawned(5), 1.0, R)
        assert actions == (Hook("respawn", "exit"),) and state.spawned == spawned + 1
        assert (state.restarts, state.last_exit) == (2, CODE1)


@pytest.mark.parametrize("phase", PHASES)
def test_a_restart_is_refused_once_the_group_ends(phase):
    """The pump answers a restart request with NotRunning where the machine refuses it."""
    state = build(phase)
    assert ending(state) == (phase in (STOPPING, STOPPED, FATAL))
    assert (refusal(state, Restart(1.0)) is not None) == ending(state)
    for _, event in EVENTS.values():
        if not isinstance(event, Restart):
            assert refusal(state, event) is None
    if ending(state):  # what the pump would do if asked anyway: nothing
        assert step(P, state, Restart(1.0), E, R)[1] == ()


# The daemon's pump: the same machine, the daemon's policies (immortal/daemon.py) ----------

ALONE, ALIVE, LAST = PUMP_ALONE, PUMP_WITH_TARGET, PUMP_LAST
PUMP_KILLED = ExitStatus(signal=signal.SIGKILL)
PASS_STOP = TERM  # to the daemon, Kill(SIGTERM) is: pass the stop on to the pump


def rounded(actions):
    """Wake times rounded: 0.22 + 0.1 is not 0.32 in floats."""
    return tuple(Wake(round(a.at, 9)) if isinstance(a, Wake) and a.at else a for a in actions)


def pump_running(t=0.0):
    """The daemon's machine with its first pump forked at ``t``."""
    return step(ALONE, initial()[0], Spawned(10), t, R)[0]


def pump_deaths(policy, statuses, uptime=0.2):
    """The delays the daemon waits after each quick death of a pump."""
    state, t, delays = pump_running(), 0.0, []
    for status in statuses:
        t += uptime
        state, actions = step(policy, state, Exited(status), t, R)
        if state.phase == BACKOFF:
            delays.append(round(state.deadline - t, 6))
            t = state.deadline
            state, actions = step(policy, state, Tick(), t, R)
        else:
            delays.append(0.0)
        assert actions[-1] == Spawn("exit")
        state, _ = step(policy, state, Spawned(10), t, R)
    return state, delays


def test_a_pump_that_lived_a_second_restarts_at_once():
    for policy in (ALONE, ALIVE):
        state, actions = step(policy, pump_running(), Exited(CODE1), 1.0, R)
        assert (state.phase, actions, state.attempts) == (SPAWNING, (CANCEL, Spawn("exit")), 0)


def test_quick_pump_deaths_back_off_from_a_twentieth_doubling_to_five_seconds():
    _, delays = pump_deaths(ALONE, [CODE1] * 10)
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_while_a_target_lives_the_pump_backoff_is_capped_at_half_a_second():
    _, delays = pump_deaths(ALIVE, [CODE1] * 6)
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_a_pump_killed_from_outside_while_a_target_lives_is_replaced_at_once():
    state, delays = pump_deaths(ALIVE, [PUMP_KILLED] * 3 + [CODE1])
    assert delays == [0.0, 0.0, 0.0, 0.4]  # counted all the same: the fourth quick death
    _, delays = pump_deaths(ALONE, [PUMP_KILLED] * 3)
    assert delays == [0.05, 0.1, 0.2]  # with no target, a killed pump is one more death


def test_a_failed_fork_backs_off_and_a_first_start_that_fails_ends_the_group():
    state, actions = step(ALIVE, initial()[0], SpawnFailed("EAGAIN"), 0.0, R)
    assert (state.phase, actions) == (BACKOFF, (Wake(0.05),))
    state, actions = step(ALIVE, state, Tick(), 0.05, R)
    state, actions = step(ALIVE, state, SpawnFailed("EAGAIN"), 0.05, R)
    assert rounded(actions) == (Wake(0.15),)
    state, actions = step(LAST, initial()[0], SpawnFailed("EAGAIN"), 0.0, R)
    assert state.phase == STOPPED and actions[0] == CANCEL and actions[1].phase == STOPPED


def test_a_pump_that_finished_ends_the_group():
    for first in (pump_running(), step(ALONE, pump_running(), Stop(None), 0.5, R)[0]):
        state, actions = step(LAST, first, Exited(CODE1), 5.0, R)
        assert state.phase == STOPPED and actions[0] == CANCEL and len(actions) == 2


PUMP_HISTORIES = {
    "a pump that dies during the stop is replaced once, while a target lives": [
        (1.0, Stop(None), ALONE, STOPPING, (PASS_STOP, CANCEL)),  # no deadline of ours
        (1.5, Stop(None), ALONE, STOPPING, (PASS_STOP,)),  # every stop is passed on
        (2.0, Exited(CODE1), ALIVE, STOPPING, (CANCEL, Spawn("stop"))),
        (2.0, Spawned(11), ALIVE, STOPPING, (Hook("respawn", "start"), PASS_STOP)),
        (3.0, Exited(CODE1), ALIVE, STOPPED, (CANCEL, STOP_DONE)),  # once only
    ],
    "a pump that dies during the stop, with no target, ends the group": [
        (1.0, Stop(None), ALONE, STOPPING, (PASS_STOP, CANCEL)),
        (2.0, Exited(CODE1), ALONE, STOPPED, (CANCEL, STOP_DONE)),
    ],
    "a stop during the backoff, with a target: a pump at once to carry it out": [
        (0.2, Exited(CODE1), ALIVE, BACKOFF, (Wake(0.25),)),
        (0.21, Stop(None), ALIVE, STOPPING, (CANCEL, Spawn("stop"))),
        (0.21, Stop(None), ALIVE, STOPPING, ()),  # none runs yet: it is passed on later
        (0.22, SpawnFailed("EAGAIN"), ALIVE, STOPPING, (Wake(0.32),)),  # the fork failed
        (0.32, Tick(), ALIVE, STOPPING, (CANCEL, Spawn("stop"))),
        (0.32, Spawned(11), ALIVE, STOPPING, (Hook("respawn", "exit"), PASS_STOP)),
        (9.0, Exited(CODE1), ALIVE, STOPPED, (CANCEL, STOP_DONE)),
    ],
    "a stop during the backoff, with no target, ends the group": [
        (0.2, Exited(CODE1), ALONE, BACKOFF, (Wake(0.25),)),
        (0.21, Stop(None), ALONE, STOPPED, (CANCEL, STOP_DONE)),
        (0.25, Tick(), ALONE, STOPPED, ()),
    ],
    "a stop while a restart is due: that pump carries it out": [
        (1.2, Exited(CODE1), ALIVE, SPAWNING, (CANCEL, Spawn("exit"))),
        (1.2, Stop(None), ALIVE, STOPPING, ()),
        (1.2, Spawned(11), ALIVE, STOPPING, (Hook("respawn", "exit"), PASS_STOP)),
    ],
}


@pytest.mark.parametrize("name", PUMP_HISTORIES)
def test_pump_history(name):
    state = pump_running()
    for i, (now, event, policy, phase, actions) in enumerate(PUMP_HISTORIES[name]):
        state, got = step(policy, state, event, now, R)
        assert (state.phase, rounded(got)) == (phase, actions), f"step {i}: {event}"


def test_the_targets_policy_never_spawns_to_stop_nor_passes_a_stop_on():
    """The PumpPolicy cells are the daemon's alone: with a RestartPolicy a stop between
    targets is immediate, as the table above says."""
    for phase in (SPAWNING, BACKOFF):
        assert step(P, build(phase), Stop(5.0), E, R)[0].phase == STOPPED
    assert step(P, build(STOPPING), Exited(CODE1), E, R)[0].phase == STOPPED


# Records: plain classes that behave as the frozen dataclasses they replace -----------------

RECORDS = [State(), Spawned(1), SpawnFailed("ENOENT"), Exited(CODE1), Tick(), Stop(1.0),
           Restart(1.0), Spawn("start"), Kill(1), Wake(1.0), Finish(STOPPED, "stop"), CODE1]


def test_records_are_equal_by_class_and_values():
    again = [type(r)(*(getattr(r, f) for f in r.__match_args__)) for r in RECORDS]
    assert again == RECORDS and [hash(r) for r in again] == [hash(r) for r in RECORDS]
    assert len(set(RECORDS + again)) == len(RECORDS)
    # The same values in another class are not equal: Spawned(1) is not Kill(1).
    for a, b in itertools.permutations(RECORDS, 2):
        assert a != b and not a == b
    assert Spawn("a") != ("a",) and Stop(1.0) != Stop(1.0, "other")


def test_records_take_their_fields_by_position_or_name():
    assert Stop(2.0) == Stop(grace=2.0) == Stop(2.0, "stop") == Stop(reason="stop", grace=2.0)
    state = State("running", 7, restarts=2)
    assert (state.phase, state.pid, state.restarts, state.spawned, state.recent, state.why) == (
        RUNNING, 7, 2, 0, (), "start")
    assert Finish.__match_args__ == ("phase", "reason")
    for make in (lambda: Spawn(), lambda: Spawn("a", "b"), lambda: Spawn("a", why="b"),
                 lambda: Spawn(what="a"), lambda: Tick(1), lambda: Finish(STOPPED)):
        with pytest.raises(TypeError):
            make()


def test_records_are_immutable():
    for record in RECORDS:
        for name in record.__match_args__ + ("other",):
            with pytest.raises(AttributeError):
                setattr(record, name, None)
        for name in record.__match_args__:
            with pytest.raises(AttributeError):
                delattr(record, name)
        assert not hasattr(record, "__dict__")
        assert pickle.loads(pickle.dumps(record)) == record == copy.deepcopy(record)


def test_record_repr_reads_like_a_dataclass():
    assert repr(Spawn("start")) == "Spawn(why='start')"
    assert repr(Tick()) == "Tick()"
    assert repr(Stop(1.0)) == "Stop(grace=1.0, reason='stop', kill=False)"
    assert repr(Exited(CODE1)).startswith("Exited(status=ExitStatus(code=1, signal=None")
    assert repr(State()) == (
        "State(phase=<Phase.SPAWNING: 'spawning'>, pid=None, started_at=None, attempts=0, "
        "restarts=0, spawned=0, recent=(), stop_spawns=0, deadline=None, grace=0.0, "
        "last_exit=None, delay=None, reason=None, why='start')")


def test_replace_makes_a_changed_copy():
    state = State()
    running = replace(state, phase=RUNNING, pid=5)
    assert (running.phase, running.pid, running.why) == (RUNNING, 5, "start")
    assert state == State() and running == State(RUNNING, 5) and replace(Tick()) == Tick()
    assert replace(Stop(1.0), reason="bye") == Stop(1.0, "bye")
    # ExitStatus is a record too (immortal/records.py); pump.py and record() replace on it.
    assert replace(CODE1, attempt=2, decision="backoff") == ExitStatus(
        code=1, attempt=2, decision="backoff")
    for record in (state, Tick(), Spawn("start"), CODE1):
        with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
            replace(record, nope=1)
    with pytest.raises(TypeError):
        replace(object(), phase=RUNNING)
