"""The result source contract: which runs exist for a job, and how they ended."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ciml.base.component import Component
from ciml.records import RunRecord, TestResult

if TYPE_CHECKING:
    from typing import Self


class ResultSource(Component, abc.ABC):
    """Base class of result sources (subunit2sql, Zuul, ...).

    A result source answers questions about a CI system's history: the runs
    of a job (a *build name*), each with its status, its artifacts URL and
    whatever metadata the system keeps (node provider, queue, project).  It
    never writes the raw cache: it yields records and the pipeline decides
    what to store, so that every source gets atomic writes, resumability
    and the index for free.

    Sources may hold connections: the pipeline uses them as context managers
    (or calls :meth:`close`).  It calls :meth:`list_runs` and :meth:`get_run`
    on one thread at a time, and only :meth:`complete` from several threads
    at once.
    """

    kind = "result_source"

    @staticmethod
    def matches(run: RunRecord, *, status: str | None = None,
                since: dt.datetime | None = None, until: dt.datetime | None = None,
                filters: Mapping[str, str] | None = None) -> bool:
        """Whether ``run`` passes :meth:`list_runs`' selection, checked locally.

        Servers ignore query parameters they do not know and lists cross
        page boundaries, so a source checks each record itself; this is the
        one definition of that check.  A run without a start time matches
        no ``since``/``until`` window; ``filters`` compare metadata values
        exactly, as given.
        """
        if status is not None and run.status != status:
            return False
        if since is not None and (run.start is None or run.start < since):
            return False
        if until is not None and (run.start is None or run.start >= until):
            return False
        return all(run.metadata.get(k) == v for k, v in (filters or {}).items())

    @abc.abstractmethod
    def list_runs(self, build_name: str, *, since: dt.datetime | None = None,
                  until: dt.datetime | None = None, filters: Mapping[str, str] | None = None,
                  limit: int | None = None, balanced: bool = False) -> Iterator[RunRecord]:
        """Yield :class:`ciml.records.RunRecord` for the runs of a build name.

        :param build_name: the job name.
        :param since: only runs that started at or after this aware datetime.
        :param until: only runs that started before this aware datetime.
        :param filters: a dict of metadata key to required value.
        :param limit: at most this many runs.
        :param balanced: interleave failed and passed runs, so that a
            limited selection is not all passes (the original ciml did).
        :return: an iterator, oldest run first where the system can list
            that way (Zuul's API lists newest first, and so does the
            ``zuul`` source); ``limit`` keeps the first runs of that order.
            It must stream: memory may not grow with the size of the
            history.
        :raises ciml.errors.SourceError: the source cannot be queried.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """Return the :class:`~ciml.records.RunRecord` for one run.

        :param run_id: the run's id, or its build uuid; both are accepted
            so that a user can paste either.
        :raises ciml.errors.NotFoundError: no such run.
        """

    def complete(self, run: RunRecord) -> RunRecord:
        """Return ``run`` with what the listing could not cheaply say.

        Optional.  The pipeline calls it on its fetch threads, several at
        once (so it must be thread-safe), for each run it is about to cache;
        it may fetch a file (the ``zuul`` source reads the
        node provider from the build's Ansible inventory).  What it adds is
        extra metadata: when it cannot be had, return ``run`` as it is
        rather than raise, so that the run's metrics are still cached.

        When it cannot be had *for now* (a timeout, a server error), return
        the run with :attr:`~ciml.records.RunRecord.incomplete` set to the
        reason: the run is cached, shown as incomplete by ``ciml run
        list``, and completed again by the next ``cache-data``.  An
        exception counts the same way.
        """
        return run

    def test_results(self, run: RunRecord) -> Iterator[TestResult]:
        """Yield :class:`ciml.records.TestResult` for a run's tests.

        Optional: sources that do not know individual tests yield nothing.
        """
        return iter(())

    def close(self) -> None:
        """Release connections.  Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
