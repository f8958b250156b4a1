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
    each; the callback returns quickly (work is queued), so a trigger need
    not be thread-safe.  Bad input (a payload that is not JSON, a missing
    field) is the trigger's to log and skip: it must never end :meth:`run`.

    :meth:`stop` may be called from a signal handler or another thread, any
    number of times; :meth:`run` then returns soon after.
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
