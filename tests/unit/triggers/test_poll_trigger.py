"""The poll trigger: cursor persistence across restarts, equal timestamps, late runs."""

import datetime as dt

import pytest

from ciml.base import ResultSource
from ciml.errors import CimlError, ConfigError, SourceError
from ciml.records import RunRecord
from ciml_plugins.triggers.poll import PollTrigger

# Relative to now: a first poll looks back from the real clock.
T0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)


class FakeSource(ResultSource):
    """An in-memory result source."""

    name = "fake"

    def __init__(self):
        super().__init__()
        self.runs = []
        self.queries = []
        self.fail = False

    def add(self, run_id, minutes, build_name="tempest-full"):
        self.runs.append(RunRecord(id=run_id, build_name=build_name, status="passed",
                                   start=T0 + dt.timedelta(minutes=minutes),
                                   artifacts_url=f"http://logs/{run_id}/"))

    def list_runs(self, build_name, *, since=None, until=None, filters=None, limit=None,
                  balanced=False):
        self.queries.append(since)
        if self.fail:
            raise SourceError("database gone", transient=True)
        runs = sorted((r for r in self.runs if r.build_name == build_name
                       and (since is None or r.start >= since)), key=lambda r: (r.start, r.id))
        yield from runs

    def get_run(self, run_id):
        raise NotImplementedError


def _trigger(data_path, source, **params):
    params.setdefault("once", True)
    trigger = PollTrigger(**params)
    trigger.setup(data_path=data_path, build_name="tempest-full", result_source=source)
    return trigger


def _collect(trigger):
    """Run one poll, settling each event as the watcher does once its record is out."""
    events = []

    def on_event(event):
        events.append(event)
        trigger.acknowledge(event)

    trigger.run(on_event)
    return [e.run_id for e in events]


def test_first_poll_records_history_without_announcing(data_path):
    source = FakeSource()
    source.add("old1", -30)
    source.add("old2", -10)
    assert _collect(_trigger(data_path, source)) == []
    source.add("new1", 5)
    assert _collect(_trigger(data_path, source)) == ["new1"]


def test_history_older_than_the_first_window_is_never_announced(data_path):
    source = FakeSource()
    source.add("ancient", -330)   # 6.5 h ago: before the first poll's window (6 h)
    source.add("recent", -30)
    assert _collect(_trigger(data_path, source)) == []
    source.add("new1", 5)
    assert _collect(_trigger(data_path, source)) == ["new1"]
    assert _collect(_trigger(data_path, source)) == []


def test_since_announces_history(data_path):
    source = FakeSource()
    source.add("a", 1)
    source.add("b", 2)
    trigger = _trigger(data_path, source, since=(T0 + dt.timedelta(minutes=2)).isoformat())
    assert _collect(trigger) == ["b"]


def test_restart_neither_repeats_nor_misses(data_path):
    source = FakeSource()
    assert _collect(_trigger(data_path, source, since=T0.isoformat())) == []
    for i in range(3):
        source.add(f"r{i}", i)
    assert _collect(_trigger(data_path, source)) == ["r0", "r1", "r2"]
    # A "restart": a brand new trigger object reading the persisted cursor.
    assert _collect(_trigger(data_path, source)) == []
    source.add("r3", 3)
    assert _collect(_trigger(data_path, source)) == ["r3"]
    state = (data_path.state / "poll-fake-tempest-full.json")
    assert state.is_file()


def test_equal_timestamps_at_the_boundary(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("a", 5)
    assert _collect(_trigger(data_path, source)) == ["a"]
    # Another run with the very same start appears later: not lost, "a" not repeated.
    source.add("b", 5)
    assert _collect(_trigger(data_path, source)) == ["b"]


def test_late_finishing_run_inside_lookback(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("late-starter", 10)
    source.add("early-starter-finished", 20)
    assert _collect(_trigger(data_path, source)) == ["late-starter", "early-starter-finished"]
    # A run that started before the cursor but only finished now.
    source.add("long-run", 1)
    assert _collect(_trigger(data_path, source)) == ["long-run"]


def test_refused_event_is_announced_again(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("a", 1)
    source.add("b", 2)
    trigger = _trigger(data_path, source)
    taken = []

    def on_event(event):
        if taken:
            return False  # the watcher is stopping
        taken.append(event.run_id)
        trigger.acknowledge(event)
        return True

    trigger.run(on_event)
    assert taken == ["a"]
    assert _collect(_trigger(data_path, source)) == ["b"]


def test_other_build_names_not_announced(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("x", 1, build_name="grenade")
    source.add("y", 2)
    assert _collect(_trigger(data_path, source)) == ["y"]


def test_source_errors_do_not_end_the_loop(data_path, caplog):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.fail = True
    trigger = _trigger(data_path, source, once=False, interval=0.01)
    calls = []

    def stop_after_three():
        calls.append(1)
        if len(calls) >= 3:
            trigger.stop()

    original = source.list_runs

    def list_runs(*args, **kwargs):
        stop_after_three()
        return original(*args, **kwargs)

    source.list_runs = list_runs
    trigger.run(lambda e: True)
    assert trigger.stats["errors"] >= 3
    assert "database gone" in caplog.text


def test_once_raises_source_errors(data_path):
    source = FakeSource()
    source.fail = True
    with pytest.raises(CimlError, match="database gone"):
        _trigger(data_path, source, since=T0.isoformat()).run(lambda e: True)


def test_corrupt_state_is_a_clear_error(data_path):
    source = FakeSource()
    data_path.state.mkdir(parents=True)
    (data_path.state / "poll-fake-tempest-full.json").write_text("{nope")
    with pytest.raises(CimlError, match="unreadable"):
        _trigger(data_path, source)


def test_needs_a_source(data_path):
    with pytest.raises(ConfigError, match="result source"):
        PollTrigger().setup(data_path=data_path, build_name="x", result_source=None)


def test_seen_ids_are_pruned(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat(), lookback=600))
    for i in range(5):
        source.add(f"r{i}", i * 60)  # one an hour
    _collect(_trigger(data_path, source, lookback=600))
    trigger = _trigger(data_path, source, lookback=600)
    assert set(trigger.cursor.seen) == {"r4"}
    assert _collect(trigger) == []


def test_event_carries_the_record(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("a", 1)
    events = []
    _trigger(data_path, source).run(events.append)
    [event] = events
    assert event.trigger == "poll"
    assert isinstance(event.payload, RunRecord)
    assert event.artifacts_url == "http://logs/a/"
    assert event.build_name == "tempest-full"


def test_a_run_announced_but_not_settled_is_announced_again_after_a_restart(data_path):
    """The cursor records a run when its record is out, not when it is queued."""
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    for i in range(4):
        source.add(f"r{i}", i)
    trigger = _trigger(data_path, source)
    taken = []
    trigger.run(taken.append)
    for event in taken[:2]:
        trigger.acknowledge(event)  # r2 and r3 were queued when the watcher stopped
    assert _collect(_trigger(data_path, source)) == ["r2", "r3"]
    assert _collect(_trigger(data_path, source)) == []


def test_the_cursor_never_passes_a_run_in_hand(data_path):
    """Runs settled out of order: an early run still in hand stays inside the window."""
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("early", 1)
    source.add("late", 600)   # ten hours later: beyond the look-back of the early one
    trigger = _trigger(data_path, source, lookback=60)
    taken = []
    trigger.run(taken.append)
    early, late = taken
    trigger.acknowledge(late)
    assert trigger.cursor.cursor == early.start
    # A restart now still finds "early" (and not "late").
    assert _collect(_trigger(data_path, source, lookback=60)) == ["early"]
    trigger.acknowledge(early)  # the first watcher's copy is done too: nothing moves back
    assert trigger.cursor.cursor == late.start


def test_a_run_in_hand_is_not_announced_by_the_next_poll(data_path):
    source = FakeSource()
    _collect(_trigger(data_path, source, since=T0.isoformat()))
    source.add("slow", 1)
    trigger = _trigger(data_path, source)
    taken = []
    trigger.poll(taken.append)
    trigger.poll(taken.append)
    assert [e.run_id for e in taken] == ["slow"]
    trigger.acknowledge(taken[0])
    trigger.poll(taken.append)
    assert len(taken) == 1
