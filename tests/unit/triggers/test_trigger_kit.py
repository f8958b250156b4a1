"""The trigger conformance kit: passes a correct trigger, names what a broken one breaks."""

import threading

import pytest

from ciml import base
from ciml.records import Event
from ciml.testing import TRIGGER_CHECKS, check_trigger


class ListTrigger(base.Trigger):
    """Announces a fixed list of run ids, then waits for stop()"""

    name = "list"
    parameters = (base.Parameter("ids", multiple=True, default=["a", "b"]),)

    def __init__(self, **params):
        super().__init__(**params)
        self._stopped = threading.Event()

    def run(self, on_event):
        for run_id in self.ids:
            on_event(Event(build_name="job", run_id=run_id, trigger=self.name))
        self._stopped.wait()

    def stop(self):
        self._stopped.set()


def test_a_correct_trigger_passes():
    check_trigger(ListTrigger, expected=2)
    assert [c.__name__ for c in TRIGGER_CHECKS] == [
        "check_trigger_declaration", "check_stop_before_run", "check_run_announces_events"]


def test_run_that_ignores_stop_fails_instead_of_hanging():
    never = threading.Event()

    class Stubborn(ListTrigger):
        """Ignores stop()"""

        def run(self, on_event):
            super().run(on_event)
            never.wait(5)

    try:
        with pytest.raises(AssertionError, match="did not return within 0.5 s of stop"):
            check_trigger(Stubborn, expected=2, timeout=0.5)
    finally:
        never.set()


def test_callback_with_something_else_than_an_event_fails():
    class Dicts(ListTrigger):
        """Calls back with dicts"""

        def run(self, on_event):
            on_event({"run_id": "a"})
            self._stopped.wait()

    with pytest.raises(AssertionError, match="called back with a dict, not a ciml.records.Event"):
        check_trigger(Dicts, expected=1)


def test_event_naming_no_run_fails():
    class Anonymous(ListTrigger):
        """Announces runs without saying which"""

        def run(self, on_event):
            on_event(Event(build_name="job"))
            self._stopped.wait()

    with pytest.raises(AssertionError, match="an event names no run"):
        check_trigger(Anonymous, expected=1)


def test_stop_before_run_must_be_safe():
    class Fragile(ListTrigger):
        """Breaks when stopped before it ran"""

        def stop(self):
            self._thread.join()

    with pytest.raises(AttributeError):
        check_trigger(Fragile, expected=1, checks=[TRIGGER_CHECKS[1]])


def test_too_few_events_fails():
    with pytest.raises(AssertionError, match="announced 2 events, expected at least 3"):
        check_trigger(ListTrigger, expected=3, timeout=0.5)
