"""The trigger contract: announce runs that just finished."""

from __future__ import annotations

import abc
from collections.abc import Callable

from ciml.base.component import Component
from ciml.base.result_source import ResultSource
from ciml.paths import DataPath
from ciml.records import Event


class Trigger(Component, abc.ABC):
    """Base class of triggers (mqtt, poll, ...).

    ``ciml watch`` builds a trigger from its options, calls :meth:`setup`
    with what the trigger may need from the pipeline, then :meth:`run` with a
    callback, on the main thread.  The trigger turns whatever it listens to
    into :class:`ciml.records.Event` objects and calls the callback with
    each, from the thread that runs :meth:`run`: the callback may wait while
    the watcher's queue is full (that is the back-pressure), so a trigger
    whose input arrives on a library's network thread hands it to its own
    thread first and never calls the callback from there.  The callback
    returns ``False`` when the watcher is stopping and did not take the
    event: leave it to be delivered again.  Bad input (a payload that is not
    JSON, a missing field) is the trigger's to log and skip: it must never
    end :meth:`run`.

    Nothing is lost across a stop or a crash if the trigger lets go of an
    event only in :meth:`acknowledge`: the watcher calls it, from a worker
    thread, once the event's record (a prediction or an error) was emitted,
    or once the event was found not to be its business (another job, a
    repeat).  Events still queued when the watcher stops are never
    acknowledged; a trigger that can deliver them again (an MQTT persistent
    session, a cursor) should.

    :meth:`stop` may be called from a signal handler or another thread, any
    number of times; :meth:`run` then returns soon after, but the trigger
    keeps what it needs to acknowledge the runs being finished until
    :meth:`close`.
    """

    kind = "trigger"

    def setup(self, *, data_path: DataPath, build_name: str | None = None,
              result_source: ResultSource | None = None) -> None:
        """Receive the pipeline's context before :meth:`run`.

        :param data_path: the :class:`ciml.paths.DataPath` (a trigger that
            keeps a cursor stores it there).
        :param build_name: the job the watcher cares about (a trigger may
            use it to filter early; the watcher filters again).
        :param result_source: the configured result source, or ``None``.
        """
        self.data_path = data_path
        self.build_name = build_name
        self.result_source = result_source

    @abc.abstractmethod
    def run(self, on_event: Callable[[Event], object]) -> None:
        """Block, calling ``on_event(event)`` for each finished run.

        Returns when :meth:`stop` is called, or when the trigger has nothing
        more to say (a file trigger at end of input).
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Make :meth:`run` return.  Idempotent; safe from signal handlers."""

    def acknowledge(self, event: Event) -> None:
        """The watcher is done with ``event``: let go of it for good.

        Called from worker threads, possibly after :meth:`stop`, never
        after :meth:`close`.  The default does nothing (a trigger that
        cannot deliver an event again has nothing to do).
        """

    def close(self) -> None:
        """Release connections and files; called once, after the last :meth:`acknowledge`."""
