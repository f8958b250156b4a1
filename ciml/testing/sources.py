"""Conformance kits for the two data-source kinds: result sources and metric sources.

``cache-data``, ``predict`` and ``watch`` rely on a few promises from every
source; these kits check them the way ciml relies on them.  Unlike an
estimator, a source only means something next to the CI system it reads,
so the kits take a configured *instance* (pointed at a test database, a
served log tree, a directory of files) and what it is known to hold:

.. code-block:: python

    from ciml.testing import check_metric_source, check_result_source

    def test_my_source_conforms(my_test_db):
        check_result_source(MySource(url=my_test_db), "tempest-full")

    def test_my_metrics_conform(my_run):
        check_metric_source(MyMetrics(), my_run)

Each check is a plain function; the ``check_*`` entry points run them all
and raise :class:`AssertionError` naming the first broken promise.

A **result source** (its history must hold at least two runs of the job):

* it is a documented :class:`ciml.base.ResultSource`, and its parameters
  survive ``get_params`` -> ``from_options``;
* :meth:`list_runs` returns a lazy iterator (``cache-data`` starts
  fetching before the listing ends, and memory must not grow with the
  history) of :class:`~ciml.records.RunRecord` of that job, with unique
  ids, a status of ``passed`` or ``failed``, a timezone-aware start (or
  none), string metadata keys, and a record that survives ``to_dict`` ->
  JSON -> ``from_dict``;
* ``limit`` gives at most that many runs, ``limit=0`` none;
* ``since`` and ``until`` keep exactly the listed runs that started in the
  window; ``filters`` keep only runs with that metadata value;
* ``balanced`` selects the same runs in another order, and a small
  balanced selection holds both statuses when the history has both;
* :meth:`get_run` finds a listed run by its id (and by its build uuid),
  and raises :class:`~ciml.errors.NotFoundError` for an unknown id;
* :meth:`complete` returns a record of the same run;
* :meth:`close` may be called twice, and the source is a context manager.

A **metric source** (given a run whose metrics it can fetch):

* it is a documented :class:`ciml.base.MetricSource`, and a worker process
  can rebuild it from its parameters (``cache-data`` parses there);
* :meth:`fetch` returns :class:`~ciml.base.FetchedMetrics` with bytes and a
  plain file name; a run with nothing to fetch is
  :class:`~ciml.errors.MetricsUnavailable`, never another error;
* :meth:`parse` returns a frame as the contract says (a UTC, strictly
  increasing ``DatetimeIndex``; float64 columns with unique names; at least
  one row), the same twice, and the same from a rebuilt source; ``load``
  agrees with ``fetch`` then ``parse``;
* empty bytes, an HTML error page and random bytes are
  :class:`~ciml.errors.MetricsUnavailable` with a reason; a file cut in
  half is that too, or still a valid frame, never another exception.
"""

import datetime as dt
import functools
import json
import pickle
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from ciml.base import MetricSource, ResultSource
from ciml.base.metric_source import FetchedMetrics
from ciml.errors import MetricsUnavailable, NotFoundError
from ciml.records import FAILED, PASSED, RunRecord
from ciml.testing.components import check_component_declaration

#: What a log server answers for a file it does not have, with status 200.
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
             b"<body><h1>Not Found</h1><p>The requested URL was not found.</p></body></html>\n")


def _run_checks(source, case, checks):
    """Run ``checks`` on ``case``; the first failure names the source and the check."""
    for check in checks:
        try:
            check(case)
        except AssertionError as exc:
            raise AssertionError(
                f"{type(source).__name__} fails {check.__name__}: {exc}") from None


# -- result sources ---------------------------------------------------------------


class _Listing:
    """What a result-source check gets: the source, the job and its full listing."""

    def __init__(self, source, build_name):
        self.source = source
        self.build_name = build_name

    @functools.cached_property
    def runs(self):
        runs = list(self.source.list_runs(self.build_name))
        assert len(runs) >= 2, (
            f"the kit needs a history with at least two runs of {self.build_name!r}; "
            f"list_runs gave {len(runs)}")
        return runs


def check_result_source_declaration(listing):
    source = listing.source
    cls = type(source)
    check_component_declaration(cls, ResultSource)
    params = source.get_params(include_secrets=True)
    rebuilt = cls.from_options(params)
    assert rebuilt.get_params(include_secrets=True) == params, \
        "get_params() -> from_options() changed the parameters"


def check_list_runs_streams(listing):
    result = listing.source.list_runs(listing.build_name)
    assert iter(result) is result, (
        f"list_runs() returned a {type(result).__name__}, not an iterator: a source must "
        "stream its history (a generator is simplest)")
    first = next(result, None)
    assert first is not None, "list_runs() yielded nothing"
    close = getattr(result, "close", None)
    if close is not None:
        close()


def check_run_records(listing):
    ids = [run.id for run in listing.runs]
    assert len(ids) == len(set(ids)), "list_runs() yielded a run twice"
    for run in listing.runs:
        assert isinstance(run, RunRecord), f"list_runs() yielded a {type(run).__name__}"
        assert run.id and isinstance(run.id, str), f"run id {run.id!r} is not a string"
        assert run.build_name == listing.build_name, (
            f"run {run.id} is of job {run.build_name!r}, not {listing.build_name!r}")
        assert run.status in (PASSED, FAILED), f"run {run.id} has status {run.status!r}"
        assert run.start is None or (isinstance(run.start, dt.datetime)
                                     and run.start.utcoffset() is not None), \
            f"run {run.id}'s start {run.start!r} is not a timezone-aware datetime"
        assert isinstance(run.metadata, dict) and all(
            isinstance(k, str) for k in run.metadata), f"run {run.id}'s metadata keys"
        again = RunRecord.from_dict(json.loads(json.dumps(run.to_dict(), default=str)))
        assert again.to_dict() == run.to_dict(), (
            f"run {run.id} does not survive to_dict() -> JSON -> from_dict() (the raw "
            "cache stores records that way)")


def check_limit(listing):
    total = len(listing.runs)
    for limit in (1, total - 1):
        got = list(listing.source.list_runs(listing.build_name, limit=limit))
        assert len(got) == limit, f"limit={limit} gave {len(got)} runs"
        assert {r.id for r in got} <= {r.id for r in listing.runs}, \
            f"limit={limit} gave runs the full listing does not have"
    assert list(listing.source.list_runs(listing.build_name, limit=0)) == [], \
        "limit=0 gave runs"


def check_time_window(listing):
    starts = sorted(r.start for r in listing.runs if r.start is not None)
    if len(starts) < 2:
        return
    since, until = starts[len(starts) // 3], starts[-1]
    want = {r.id for r in listing.runs if r.start is not None and since <= r.start < until}
    got = [r.id for r in listing.source.list_runs(listing.build_name, since=since,
                                                  until=until)]
    assert set(got) == want and len(got) == len(want), (
        f"since={since.isoformat()} until={until.isoformat()} gave {len(got)} runs, "
        f"not the {len(want)} listed runs that started in that window")


def check_filters(listing):
    counts: dict[tuple[str, str], set[str]] = {}
    for run in listing.runs:
        for key, value in run.metadata.items():
            if isinstance(value, str):
                counts.setdefault((key, value), set()).add(run.id)
    # A key whose value tells some runs from others is the useful test.
    some = [(k, v) for (k, v), ids in counts.items() if 0 < len(ids) < len(listing.runs)]
    if not some:
        return
    key, value = sorted(some)[0]
    got = list(listing.source.list_runs(listing.build_name, filters={key: value}))
    assert got, f"filters={{{key!r}: {value!r}}} gave no runs"
    assert {r.id for r in got} == counts[(key, value)], (
        f"filters={{{key!r}: {value!r}}} gave {len(got)} runs, not the "
        f"{len(counts[(key, value)])} listed runs with that value")
    nothing = list(listing.source.list_runs(
        listing.build_name, filters={key: "ciml-conformance-matches-nothing"}))
    assert nothing == [], "a filter value no run has still gave runs"


def check_balanced(listing):
    got = list(listing.source.list_runs(listing.build_name, balanced=True))
    assert sorted(r.id for r in got) == sorted(r.id for r in listing.runs), \
        "balanced=True did not select the same runs"
    if {r.status for r in listing.runs} == {PASSED, FAILED}:
        two = list(listing.source.list_runs(listing.build_name, balanced=True, limit=2))
        assert {r.status for r in two} == {PASSED, FAILED}, (
            "balanced=True, limit=2 did not give one failed and one passed run")


def check_get_run(listing):
    source = listing.source
    for run in (listing.runs[0], listing.runs[-1]):
        found = source.get_run(run.id)
        assert isinstance(found, RunRecord) and found.id == run.id, \
            f"get_run({run.id!r}) gave {found!r}"
        assert (found.status, found.build_name) == (run.status, run.build_name), \
            f"get_run({run.id!r}) disagrees with list_runs() on status or job"
        if run.build_uuid and run.build_uuid != run.id:
            by_uuid = source.get_run(run.build_uuid)
            assert by_uuid.id == run.id, \
                f"get_run({run.build_uuid!r}) (a build uuid) gave run {by_uuid.id!r}"
    try:
        source.get_run("ciml-conformance-no-such-run")
    except NotFoundError:
        pass
    else:
        raise AssertionError("get_run() of an unknown id must raise NotFoundError")


def check_complete(listing):
    run = listing.runs[0]
    done = listing.source.complete(run)
    assert isinstance(done, RunRecord) and done.id == run.id, \
        f"complete() must return a record of the same run, not {done!r}"


def check_close(listing):
    source = listing.source
    source.close()
    source.close()
    with source as entered:
        assert entered is source, "__enter__ must return the source"


RESULT_SOURCE_CHECKS = (
    check_result_source_declaration,
    check_list_runs_streams,
    check_run_records,
    check_limit,
    check_time_window,
    check_filters,
    check_balanced,
    check_get_run,
    check_complete,
    check_close,
)


def check_result_source(source: ResultSource, build_name: str,
                        checks: Sequence[Callable[..., None]] | None = None) -> None:
    """Run every result-source check on the configured ``source``.

    :param source: a :class:`ciml.base.ResultSource` instance whose history
        holds at least two runs of ``build_name``.
    :param checks: a subset of :data:`ciml.testing.RESULT_SOURCE_CHECKS` to run.
    :raises AssertionError: ``"<source> fails <check>: <what is wrong>"``.
    """
    _run_checks(source, _Listing(source, build_name), checks or RESULT_SOURCE_CHECKS)


# -- metric sources ---------------------------------------------------------------


def _check_frame(frame, what):
    import pandas as pd

    assert isinstance(frame, pd.DataFrame), f"{what} gave a {type(frame).__name__}"
    assert len(frame) > 0 and frame.shape[1] > 0, f"{what} gave an empty frame"
    index = frame.index
    assert isinstance(index, pd.DatetimeIndex), f"{what}: the index is not a DatetimeIndex"
    assert index.tz is not None and index.tz.utcoffset(None) == dt.timedelta(0), \
        f"{what}: the index is not in UTC ({index.tz})"
    assert index.is_monotonic_increasing and index.is_unique, \
        f"{what}: the index is not strictly increasing"
    names = [str(c) for c in frame.columns]
    assert len(names) == len(set(names)), f"{what}: column names are not unique"
    wrong = {str(c): str(t) for c, t in frame.dtypes.items() if t != np.float64}
    assert not wrong, f"{what}: columns that are not float64: {wrong}"


def _frames_equal(a, b):
    return (a.shape == b.shape and list(a.columns) == list(b.columns)
            and a.index.equals(b.index)
            and np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True))


def _unavailable(source, data, run, what):
    try:
        frame = source.parse(data, run)
    except MetricsUnavailable as exc:
        assert exc.reason, f"parse() of {what}: MetricsUnavailable without a reason"
        return None
    except Exception as exc:
        raise AssertionError(
            f"parse() of {what} raised {type(exc).__name__} ({exc}), not "
            "MetricsUnavailable") from None
    return frame


class _Fetched:
    """What a metric-source check gets: the source, the run and its fetched metrics."""

    def __init__(self, source, run):
        self.source = source
        self.run = run

    @functools.cached_property
    def fetched(self):
        return self.source.fetch(self.run)


def check_metric_source_declaration(case):
    source = case.source
    cls = type(source)
    check_component_declaration(cls, MetricSource)
    params = source.get_params(include_secrets=True)
    # cache-data's parse processes get the class and these parameters, pickled.
    pickle.loads(pickle.dumps((cls, params, case.run)))
    rebuilt = cls(**params)
    assert rebuilt.get_params(include_secrets=True) == params, \
        "a source rebuilt from get_params() has other parameters"


def check_fetch(case):
    fetched = case.fetched
    assert isinstance(fetched, FetchedMetrics), f"fetch() gave a {type(fetched).__name__}"
    assert isinstance(fetched.data, bytes) and fetched.data, "fetch() gave no bytes"
    assert fetched.name and "/" not in fetched.name and "\\" not in fetched.name \
        and fetched.name not in (".", ".."), \
        f"fetch() named the file {fetched.name!r}: a plain file name is kept in the cache"
    assert isinstance(fetched.url, str), "FetchedMetrics.url is not a string"
    pickle.loads(pickle.dumps(fetched))


def check_fetch_nothing_is_unavailable(case):
    with tempfile.TemporaryDirectory(prefix="ciml-conformance-") as empty:
        run = RunRecord(id="ciml-conformance-no-such-run", build_name=case.run.build_name,
                        status=case.run.status, artifacts_url=empty + "/",
                        start=case.run.start)
        try:
            case.source.fetch(run)
        except MetricsUnavailable as exc:
            assert exc.reason, "MetricsUnavailable without a reason"
            return
        except Exception as exc:
            raise AssertionError(
                f"fetch() of a run with nothing to fetch raised {type(exc).__name__} "
                f"({exc}), not MetricsUnavailable") from None
    raise AssertionError("fetch() of a run with nothing to fetch returned metrics")


def check_parse(case):
    data = case.fetched.data
    frame = case.source.parse(data, case.run)
    _check_frame(frame, "parse()")
    assert _frames_equal(frame, case.source.parse(data, case.run)), \
        "parse() of the same bytes gave another frame"
    params = case.source.get_params(include_secrets=True)
    rebuilt = type(case.source)(**params)
    assert _frames_equal(frame, rebuilt.parse(data, case.run)), \
        "a source rebuilt from its parameters parses the same bytes differently"
    fetched, loaded = case.source.load(case.run)
    assert _frames_equal(frame, loaded), "load() disagrees with fetch() then parse()"
    # What cache-data stores: the same data as the frame, whether the source
    # overrides parse_series or not.
    stamps, values, columns = case.source.parse_series(data, case.run)
    assert [str(c) for c in columns] == [str(c) for c in frame.columns], \
        "parse_series() names other columns than parse()"
    assert np.array_equal(np.asarray(stamps, dtype=np.int64),
                          frame.index.as_unit("ns").asi8), \
        "parse_series() gives other time stamps than parse()"
    assert np.array_equal(np.asarray(values, dtype=np.float64),
                          frame.to_numpy(dtype=np.float64), equal_nan=True), \
        "parse_series() gives other values than parse()"


def check_parse_rejects_garbage(case):
    rng = np.random.default_rng(0)
    for what, data in (("empty bytes", b""), ("an HTML page", HTML_PAGE),
                       ("random bytes", rng.bytes(4096))):
        frame = _unavailable(case.source, data, case.run, what)
        assert frame is None, f"parse() of {what} gave a frame instead of MetricsUnavailable"
    data = case.fetched.data
    half = _unavailable(case.source, data[:len(data) // 2], case.run, "a file cut in half")
    if half is not None:
        _check_frame(half, "parse() of a file cut in half")


METRIC_SOURCE_CHECKS = (
    check_metric_source_declaration,
    check_fetch,
    check_fetch_nothing_is_unavailable,
    check_parse,
    check_parse_rejects_garbage,
)


def check_metric_source(source: MetricSource, run: RunRecord,
                        checks: Sequence[Callable[..., None]] | None = None) -> None:
    """Run every metric-source check on the configured ``source``.

    :param source: a :class:`ciml.base.MetricSource` instance.
    :param run: a :class:`~ciml.records.RunRecord` whose metrics ``source``
        can fetch and parse.
    :param checks: a subset of :data:`ciml.testing.METRIC_SOURCE_CHECKS` to run.
    :raises AssertionError: ``"<source> fails <check>: <what is wrong>"``.
    """
    _run_checks(source, _Fetched(source, run), checks or METRIC_SOURCE_CHECKS)
