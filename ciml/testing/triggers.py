"""The trigger conformance kit: run ``check_trigger(make_trigger, expected)`` in a plugin's tests.

``ciml watch`` builds a trigger, calls ``setup`` and then ``run`` on its
main thread, and calls ``stop`` from a signal handler or another thread,
maybe more than once.  A trigger only means something next to what it
listens to, so the kit takes a factory that returns a configured trigger
(pointed at a file, a test broker...) and how many events it will
announce.  The checks:

* it is a documented :class:`ciml.base.Trigger`, and its parameters survive
  ``get_params`` -> ``from_options``;
* :meth:`~ciml.base.Trigger.stop` may be called before :meth:`run`, and
  twice;
* :meth:`run` calls back with :class:`ciml.records.Event` objects, each
  naming a run (``run_id``, ``build_uuid`` or ``artifacts_url``), at least
  ``expected`` of them;
* :meth:`run` returns once :meth:`stop` has been called from another
  thread (the kit waits ``timeout`` seconds at most, so that a trigger
  that never returns fails instead of hanging the test run).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable

from ciml.base import Trigger
from ciml.records import Event
from ciml.testing.components import check_component_declaration


def _fresh(make_trigger: Callable[[], Trigger]) -> Trigger:
    trigger = make_trigger()
    assert isinstance(trigger, Trigger), \
        f"make_trigger() gave a {type(trigger).__name__}, not a ciml.base.Trigger"
    return trigger


def check_trigger_declaration(make_trigger: Callable[[], Trigger], expected: int,
                              timeout: float) -> None:
    trigger = _fresh(make_trigger)
    cls = type(trigger)
    check_component_declaration(cls, Trigger)
    params = trigger.get_params(include_secrets=True)
    rebuilt = cls.from_options(params)
    assert rebuilt.get_params(include_secrets=True) == params, \
        "get_params() -> from_options() changed the parameters"


def check_stop_before_run(make_trigger: Callable[[], Trigger], expected: int,
                          timeout: float) -> None:
    trigger = _fresh(make_trigger)
    trigger.stop()
    trigger.stop()


def check_run_announces_events(make_trigger: Callable[[], Trigger], expected: int,
                               timeout: float) -> None:
    from ciml.paths import DataPath

    trigger = _fresh(make_trigger)
    events: list[object] = []
    enough = threading.Event()
    errors: list[BaseException] = []

    def on_event(event: object) -> None:
        events.append(event)
        if len(events) >= expected:
            enough.set()

    def run() -> None:
        try:
            trigger.run(on_event)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)
        finally:
            enough.set()

    with tempfile.TemporaryDirectory(prefix="ciml-conformance-") as tmp:
        trigger.setup(data_path=DataPath(tmp), build_name=None, result_source=None)
        thread = threading.Thread(target=run, name="ciml-trigger-kit", daemon=True)
        thread.start()
        enough.wait(timeout)
        trigger.stop()
        trigger.stop()
        thread.join(timeout)
    assert not thread.is_alive(), f"run() did not return within {timeout} s of stop()"
    assert not errors, f"run() raised {type(errors[0]).__name__}: {errors[0]}"
    assert len(events) >= expected, \
        f"run() announced {len(events)} events, expected at least {expected}"
    for event in events:
        assert isinstance(event, Event), \
            f"run() called back with a {type(event).__name__}, not a ciml.records.Event"
        assert event.run_id or event.build_uuid or event.artifacts_url, \
            f"an event names no run (run_id, build_uuid or artifacts_url): {event!r}"


TRIGGER_CHECKS = (
    check_trigger_declaration,
    check_stop_before_run,
    check_run_announces_events,
)


def check_trigger(make_trigger: Callable[[], Trigger], expected: int = 1,
                  checks: tuple[Callable[..., None], ...] | None = None,
                  timeout: float = 60.0) -> None:
    """Run every trigger check; raise :class:`AssertionError` on the first failure.

    :param make_trigger: returns a new, configured trigger each call.
    :param expected: how many events a trigger from it announces (at least).
    :param checks: a subset of :data:`ciml.testing.TRIGGER_CHECKS` to run.
    :param timeout: the most seconds to wait for events, and for ``run()``
        to return after ``stop()``.
    :raises AssertionError: ``"<trigger> fails <check>: <what is wrong>"``.
    """
    for check in checks or TRIGGER_CHECKS:
        try:
            check(make_trigger, expected, timeout)
        except AssertionError as exc:
            raise AssertionError(f"trigger fails {check.__name__}: {exc}") from None


__all__ = ["TRIGGER_CHECKS", "check_trigger"] + [c.__name__ for c in TRIGGER_CHECKS]
