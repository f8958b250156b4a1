"""A result source reading a JSON-Lines file and a metric source reading plain CSV files."""

import datetime as dt
import io
import json
import pathlib

from ciml.base import FetchedMetrics, MetricSource, Parameter, ResultSource
from ciml.errors import MetricsUnavailable, NotFoundError, SourceError
from ciml.fileutil import safe_filename
from ciml.records import FAILED, PASSED, RunRecord


def _aware(value):
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


class JsonlResultSource(ResultSource):
    """Runs listed in a local JSON-Lines file, one run per line

    Each line is a JSON object with the fields of
    :class:`ciml.records.RunRecord`: ``id``, ``build_name``, ``status``
    (``passed`` or ``failed``) and optionally ``artifacts_url``,
    ``build_uuid``, ``start`` (ISO 8601), ``duration``, ``result`` and
    ``metadata`` (an object).  Blank lines and lines starting with ``#``
    are skipped.  The file is read as a stream, never all at once.
    """

    name = "jsonl"
    parameters = (
        Parameter("path", required=True, help="The JSON-Lines file listing the runs"),
    )

    def all_runs(self):
        """Yield every run in the file, of every job, in file order."""
        return self._records()

    def _records(self):
        path = pathlib.Path(self.path).expanduser()
        try:
            handle = path.open(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"cannot read runs from {path}: {exc.strerror}") from None
        with handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    data = json.loads(line)
                    data.setdefault("source", self.name)
                    run = RunRecord.from_dict(data)
                except (ValueError, TypeError) as exc:
                    raise SourceError(f"{path}:{number}: not a run record: {exc}") from None
                if run.status not in (PASSED, FAILED):
                    raise SourceError(
                        f"{path}:{number}: status must be passed or failed, "
                        f"not {run.status!r}")
                run.start = _aware(run.start)
                yield run

    def _selected(self, build_name, since, until, filters, status=None):
        for run in self._records():
            if run.build_name != build_name:
                continue
            if status is not None and run.status != status:
                continue
            if since is not None and (run.start is None or run.start < since):
                continue
            if until is not None and (run.start is None or run.start >= until):
                continue
            if any(str(run.metadata.get(k)) != str(v) for k, v in (filters or {}).items()):
                continue
            yield run

    def list_runs(self, build_name, *, since=None, until=None, filters=None,
                  limit=None, balanced=False):
        """Yield the runs of ``build_name`` in file order (see the base class)."""
        if balanced:
            # Two streams over the same file, taken in turn: memory stays flat.
            streams = [self._selected(build_name, since, until, filters, FAILED),
                       self._selected(build_name, since, until, filters, PASSED)]
            runs = _interleave(streams)
        else:
            runs = self._selected(build_name, since, until, filters)
        for count, run in enumerate(runs):
            if limit is not None and count >= limit:
                return
            yield run

    def get_run(self, run_id):
        """The run whose ``id`` or ``build_uuid`` is ``run_id``."""
        for run in self._records():
            if run_id in (run.id, run.build_uuid):
                return run
        raise NotFoundError(f"no run {run_id!r} in {self.path}")


def _interleave(iterators):
    iterators = list(iterators)
    while iterators:
        for it in list(iterators):
            try:
                yield next(it)
            except StopIteration:
                iterators.remove(it)


class CsvMetricSource(MetricSource):
    """Metrics from plain CSV files, one per run, named after the run id

    The file for a run is ``<directory>/<run id>.csv``.  Its first column
    is the sample time: ISO 8601 (UTC unless it says otherwise) or seconds
    since the epoch.  Every other column is a metric and must be numeric;
    the header gives the feature names.
    """

    name = "csv"
    parameters = (
        Parameter("directory", required=True, help="Folder holding <run id>.csv files"),
        Parameter("max_bytes", int, default=64 * 1024 * 1024,
                  help="Refuse files larger than this"),
    )

    def _file(self, run):
        return pathlib.Path(self.directory).expanduser() / (safe_filename(run.id) + ".csv")

    def fetch(self, run):
        path = self._file(run)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise MetricsUnavailable("missing", f"no metrics file {path}") from None
        except OSError as exc:
            raise MetricsUnavailable("missing", f"cannot read {path}: {exc.strerror}",
                                     transient=True) from None
        if size > self.max_bytes:
            raise MetricsUnavailable(
                "too-large", f"{path} is {size} bytes, over the limit of {self.max_bytes}")
        return FetchedMetrics(name=path.name, data=path.read_bytes(), url=path.resolve().as_uri())

    def parse(self, data, run):
        import numpy as np
        import pandas as pd

        if not data.strip():
            raise MetricsUnavailable("empty", f"metrics of run {run.id} are empty")
        try:
            frame = pd.read_csv(io.BytesIO(data))
        except (ValueError, pd.errors.ParserError) as exc:
            raise MetricsUnavailable("non-numeric", f"run {run.id}: bad CSV: {exc}") from None
        if frame.empty:
            raise MetricsUnavailable("header-only", f"metrics of run {run.id} have no rows")
        if frame.shape[1] < 2:
            raise MetricsUnavailable("non-numeric",
                                     f"run {run.id}: need a time column and a metric")
        times = frame.pop(frame.columns[0])
        try:
            if pd.api.types.is_numeric_dtype(times):
                index = pd.to_datetime(times, unit="s", utc=True)
            else:
                index = pd.to_datetime(times, utc=True, format="ISO8601")
            values = frame.apply(pd.to_numeric, errors="raise").astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise MetricsUnavailable("non-numeric", f"run {run.id}: {exc}") from None
        values.index = pd.DatetimeIndex(index, name="time")
        values.columns = [str(c).strip() for c in values.columns]
        if values.columns.duplicated().any():
            raise MetricsUnavailable("non-numeric", f"run {run.id}: duplicate column names")
        # The contract wants a strictly increasing index: keep the first of
        # any repeated time stamp.
        values = values.sort_index(kind="stable")
        return values[~values.index.duplicated(keep="first")]
