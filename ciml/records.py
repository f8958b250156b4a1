"""The small value types that flow between plugins and the pipeline."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

PASSED = "passed"
FAILED = "failed"


def _to_datetime(value: dt.datetime | str | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


@dataclasses.dataclass
class RunRecord:
    """One CI run (one job's build) as a result source reports it.

    ``id`` is the source's identifier for the run (subunit2sql ``runs.uuid``,
    Zuul build uuid).  ``status`` is ``"passed"`` or ``"failed"``; the
    source's own result string is kept in ``result``.  ``start`` is a
    timezone-aware datetime (UTC where the source gives none); dstat rows
    carry no year, so the metric source needs it.  ``metadata`` holds every
    other key the source knows (node provider, queue, project...), as
    strings.  ``incomplete`` says why optional metadata that the source
    adds in :meth:`~ciml.base.ResultSource.complete` is missing for now (a
    log server that did not answer); ``None`` when nothing is missing.
    ``cache-data`` tries such runs again.
    """

    id: str
    build_name: str
    status: str
    artifacts_url: str | None = None
    build_uuid: str | None = None
    start: dt.datetime | None = None
    duration: float | None = None
    result: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Why optional metadata is missing for now (``None``: nothing is missing).
    incomplete: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.start is not None:
            data["start"] = self.start.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["start"] = _to_datetime(values.get("start"))
        values.setdefault("metadata", {})
        return cls(**values)


@dataclasses.dataclass
class TestResult:
    """One test's outcome within a run (subunit2sql ``tests``/``test_runs``)."""

    __test__ = False  # not a pytest test class

    test_id: str
    status: str
    start: dt.datetime | None = None
    stop: dt.datetime | None = None


@dataclasses.dataclass
class Event:
    """A trigger's notice that a run finished.

    Any of ``run_id`` and ``build_uuid`` identifies the run to the result
    source; ``artifacts_url`` lets a run be handled with no result source
    at all (a Zuul MQTT report carries its log URL).  ``payload`` is the raw
    message, kept for reporters and logs.
    """

    build_name: str | None
    run_id: str | None = None
    build_uuid: str | None = None
    status: str | None = None
    artifacts_url: str | None = None
    start: dt.datetime | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    payload: Any = None
    trigger: str | None = None
