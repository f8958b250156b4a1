"""The cache-data stage with fake sources: outcomes, bounded in-flight work, hooks, Ctrl-C."""

import datetime as dt
import os
import pathlib
import threading
import time

import numpy as np
import pandas as pd
import pytest

from ciml import hookspecs
from ciml.base import FetchedMetrics, MetricSource, Parameter, ResultSource
from ciml.cache import RawCache
from ciml.collect import cache_data
from ciml.errors import MetricsUnavailable, SourceError
from ciml.plugins import get_manager
from ciml.records import RunRecord
from ciml_plugins.metrics.dstat import DstatMetricSource

UTC = dt.timezone.utc


class FakeSource(ResultSource):
    """Lists ``n`` runs lazily and remembers how far it was read."""

    name = "fake"

    def __init__(self, n=20, fail_after=None):
        super().__init__()
        self.n = n
        self.listed = 0
        self.fail_after = fail_after
        self.closed = False

    def list_runs(self, build_name, *, since=None, until=None, filters=None, limit=None,
                  balanced=False):
        for i in range(self.n if limit is None else min(limit, self.n)):
            if self.fail_after is not None and i == self.fail_after:
                raise SourceError("database went away", transient=True)
            self.listed += 1
            yield RunRecord(id=f"r{i:04d}", build_name=build_name, status="passed",
                            artifacts_url=f"mem://{i}",
                            start=dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i))

    def get_run(self, run_id):
        raise NotImplementedError

    def close(self):
        self.closed = True


class FakeMetrics(MetricSource):
    """Fetches instantly (or slowly); a few runs misbehave by design."""

    name = "fake-metrics"

    def __init__(self, delay=0.0, bad=None):
        super().__init__()
        self.delay = delay
        self.bad = bad or {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.fetched = []

    def fetch(self, run):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.fetched.append(run.id)
        try:
            if self.delay:
                time.sleep(self.delay)
            kind = self.bad.get(run.id)
            if kind == "missing":
                raise MetricsUnavailable("missing", f"{run.id}: no file")
            if kind == "500":
                raise MetricsUnavailable("http-error", f"{run.id}: HTTP 500", transient=True)
            return FetchedMetrics(name="dstat-csv_log.txt", data=run.id.encode(), url="mem")
        finally:
            with self.lock:
                self.in_flight -= 1

    def parse(self, data, run):
        kind = self.bad.get(run.id)
        if kind == "garbage":
            raise MetricsUnavailable("non-numeric", f"{run.id}: garbage")
        if kind == "bug":
            raise ZeroDivisionError("plugin bug")
        index = pd.date_range(run.start, periods=4, freq="s").as_unit("ns")
        return pd.DataFrame({"cpu_usr": np.arange(4.0)}, index=index)


def test_outcomes_are_counted_and_recorded(data_path):
    bad = {"r0001": "missing", "r0002": "500", "r0003": "garbage", "r0004": "bug"}
    source, metrics = FakeSource(10), FakeMetrics(bad=bad)
    summary = cache_data(data_path, source, metrics, "job", workers=3, progress=False)
    assert summary["selected"] == 10
    assert summary["cached"] == 6
    assert summary["unavailable"] == 2
    assert summary["transient"] == 2
    assert summary["reasons"] == {"error": 1, "http-error": 1, "missing": 1,
                                  "non-numeric": 1}
    assert source.closed
    with RawCache(data_path) as cache:
        assert {u["run_id"]: u["reason"] for u in cache.unavailable()} == {
            "r0001": "missing", "r0003": "non-numeric"}
        # Transient failures and plugin bugs are tried again next time.
        assert cache.state("r0002") is None and cache.state("r0004") is None
    again = cache_data(data_path, FakeSource(10), FakeMetrics(), "job", progress=False)
    assert again["cached"] == 2
    assert again["skipped_cached"] == 6 and again["skipped_unavailable"] == 2
    retry = cache_data(data_path, FakeSource(10), FakeMetrics(), "job", progress=False,
                       retry_unavailable=True)
    assert retry["cached"] == 2 and retry["total_unavailable"] == 0


class CompletingSource(FakeSource):
    """Adds a provider on the fetch threads; fails for some runs."""

    def __init__(self, n, broken):
        super().__init__(n)
        self.broken = broken
        self.threads = set()

    def complete(self, run):
        import dataclasses
        import threading

        self.threads.add(threading.current_thread().name)
        if run.id in self.broken:
            raise RuntimeError("inventory server on fire")
        return dataclasses.replace(run, metadata={**run.metadata, "node_provider": "p-" + run.id})


def test_complete_adds_metadata_and_its_failure_costs_only_the_metadata(data_path, caplog):
    import logging

    source = CompletingSource(6, broken={"r0002"})
    with caplog.at_level(logging.WARNING, logger="ciml.collect"):
        summary = cache_data(data_path, source, FakeMetrics(), "job", workers=2,
                             progress=False)
    assert summary["cached"] == 6
    assert all(name.startswith("ciml-fetch") for name in source.threads)
    with RawCache(data_path) as cache:
        providers = {r.id: r.metadata.get("node_provider") for r in cache.runs()}
    assert providers == {f"r{i:04d}": None if i == 2 else f"p-r{i:04d}" for i in range(6)}
    with RawCache(data_path) as cache:
        # Worth another try next time (12.5).
        assert cache.incomplete_ids() == {"r0002"}
        assert cache.record("r0002").incomplete == "RuntimeError: inventory server on fire"
    assert ["could not complete run r0002: inventory server on fire" in r.getMessage()
            for r in caplog.records] == [True]


def test_in_flight_work_is_bounded(data_path):
    """Listing stays a bounded window ahead of the workers: memory stays flat."""
    source, metrics = FakeSource(200), FakeMetrics(delay=0.002)
    seen = []
    real_fetch = metrics.fetch

    def fetch(run):
        # Listed runs whose fetch has not started, not counting this one (it is
        # started, though not yet in ``fetched``): at most the window's other
        # slots plus the one run the lister holds while it waits for room.
        seen.append(source.listed - len(metrics.fetched) - 1)
        return real_fetch(run)

    metrics.fetch = fetch
    summary = cache_data(data_path, source, metrics, "job", workers=4, progress=False)
    assert summary["cached"] == 200
    assert metrics.max_in_flight <= 4
    # Runs listed but not yet started never exceed the window (2 per worker).
    assert max(seen) <= 2 * 4


def test_workers_fetch_concurrently(data_path):
    """16 workers have 16 fetches in flight at once: each of the first 16 waits for
    all the others (a barrier breaks, and the fetch fails, if they are fewer)."""
    barrier = threading.Barrier(16, timeout=60)

    class Meeting(FakeMetrics):
        def fetch(self, run):
            if int(run.id[1:]) < 16:
                barrier.wait()
            return super().fetch(run)

    metrics = Meeting()
    summary = cache_data(data_path, FakeSource(32), metrics, "job", workers=16,
                         progress=False)
    assert summary["cached"] == 32 and not barrier.broken


def test_lifecycle_hook_runs_once_per_new_run(data_path):
    seen = []

    class Spy:
        @hookspecs.hookimpl
        def ciml_run_cached(self, run, data_path):
            seen.append(run.id)

    class Broken:
        @hookspecs.hookimpl
        def ciml_run_cached(self, run, data_path):
            raise RuntimeError("a reporter's bug must not stop caching")

    get_manager().add_plugin(Spy(), "spy")
    get_manager().add_plugin(Broken(), "broken")
    summary = cache_data(data_path, FakeSource(5), FakeMetrics(bad={"r0001": "missing"}),
                         "job", progress=False)
    assert summary["cached"] == 4
    assert sorted(seen) == ["r0000", "r0002", "r0003", "r0004"]


def test_source_error_keeps_what_was_cached(data_path):
    """20.2: giving up says what is stored and that a rerun resumes."""
    from ciml.collect import CacheDataStopped

    source = FakeSource(20, fail_after=10)
    with pytest.raises(SourceError) as info:
        cache_data(data_path, source, FakeMetrics(), "job", workers=2, progress=False)
    assert isinstance(info.value, CacheDataStopped) and info.value.transient
    assert info.value.summary["cached"] == 10 and info.value.summary["selected"] == 10
    assert str(info.value) == (
        "database went away; before that: 10 run(s) cached, 0 recorded unavailable, "
        "0 already cached, of 10 listed; rerun cache-data to continue (cached runs are "
        "skipped)")
    assert source.closed
    with RawCache(data_path) as cache:
        assert len(cache.runs()) == 10


def test_keyboard_interrupt_stops_cleanly(data_path):
    metrics = FakeMetrics(delay=0.01)

    class Interrupting(FakeSource):
        def list_runs(self, *a, **kw):
            for i, run in enumerate(super().list_runs(*a, **kw)):
                if i == 30:
                    raise KeyboardInterrupt
                yield run

    with pytest.raises(KeyboardInterrupt):
        cache_data(data_path, Interrupting(100), metrics, "job", workers=4, progress=False)
    with RawCache(data_path) as cache:
        runs = cache.runs()
        assert 0 < len(runs) <= 30
        for run in runs:
            assert len(cache.frame(run.id)) == 4
    summary = cache_data(data_path, FakeSource(100), FakeMetrics(), "job", progress=False)
    assert summary["skipped_cached"] == len(runs)
    assert summary["total_cached"] == 100


def test_bad_worker_count(data_path):
    from ciml.errors import CimlError

    with pytest.raises(CimlError):
        cache_data(data_path, FakeSource(1), FakeMetrics(), "job", workers=-1)


def test_automatic_processes(data_path):
    from ciml.collect import auto_processes

    assert auto_processes(1) == 0
    assert auto_processes(3) == 0
    # One core parses in the threads; more leave one core to the fetching threads.
    for cores, workers, expected in ((1, 8, 0), (2, 8, 1), (2, 16, 1), (3, 8, 2), (4, 8, 3),
                                     (16, 8, 8), (16, 4, 4), (64, 16, 8)):
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)),
                            raising=False)
            assert auto_processes(workers) == expected, (cores, workers)
    # A metric source a worker process could not rebuild by name stays in threads.
    assert auto_processes(16, FakeMetrics()) == 0
    summary = cache_data(data_path, FakeSource(100), FakeMetrics(), "job", workers=8,
                         progress=False)
    assert summary["processes"] == 0 and summary["cached"] == 100


def test_explicit_processes_with_an_unregistered_source_parse_in_threads(data_path, caplog):
    summary = cache_data(data_path, FakeSource(30), FakeMetrics(), "job", workers=4,
                         processes=2, progress=False)
    assert summary["processes"] == 0 and summary["cached"] == 30
    assert "parsing in threads" in caplog.text


# A registered metric source whose parse kills the worker process it runs in:
# importable by module name, so that a worker can rebuild it.
class DyingInWorkers(DstatMetricSource):
    name = "dying-in-workers"
    parameters = (*DstatMetricSource.parameters,
                  Parameter("marker", str, default=None, help="touched by a worker's copy"))

    def __init__(self, **params):
        import multiprocessing

        super().__init__(**params)
        if self.marker and multiprocessing.parent_process() is not None:
            pathlib.Path(self.marker).touch()

    def parse(self, data, run):
        import multiprocessing
        import os

        if multiprocessing.parent_process() is not None:
            os._exit(3)
        return super().parse(data, run)


class _DyingPlugin:
    @hookspecs.hookimpl
    def ciml_register_metric_sources(self, register):
        register(DyingInWorkers)


def test_dead_parse_processes_fall_back_to_threads(data_path, tmp_path, sample_data, caplog,
                                                   monkeypatch):
    from ciml import collect

    sample = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes()

    marker = tmp_path / "worker-started"

    class LocalRuns(FakeSource):
        def list_runs(self, build_name, **kw):
            for run in super().list_runs(build_name, **kw):
                folder = tmp_path / "logs" / run.id
                (folder / "logs").mkdir(parents=True)
                (folder / "logs" / "dstat-csv_log.txt").write_bytes(sample)
                run.artifacts_url = str(folder)
                yield run

    # Local files fetch at once: a busy machine would cache every run in
    # threads before the processes answer, and none would die.  So the
    # fetching threads wait for the processes the first time they ask.
    ready = collect._ParsePool.get
    waited = []

    def get_once_ready(self):
        if not waited:
            waited.append(self._ready.wait(60))
        return ready(self)

    monkeypatch.setattr(collect._ParsePool, "get", get_once_ready)
    get_manager().add_plugin(_DyingPlugin(), "dying")
    metrics = get_manager().get("metric_source", "dying-in-workers")(marker=str(marker))
    summary = cache_data(data_path, LocalRuns(40), metrics, "job", workers=4, processes=2,
                         progress=False)
    assert marker.exists() and waited and all(waited)
    assert summary["cached"] == 40 and summary["transient"] == 0
    assert "parse processes failed; parsing in threads" in caplog.text
    with RawCache(data_path) as cache:
        assert len(cache.runs()) == 40
        assert len(cache.frame("r0039")) == 150


def test_runs_another_process_stored_meanwhile_are_not_counted_as_ours(data_path):
    """12.7: two cache-data on one data path each count only what they stored."""
    other = RawCache(data_path)

    class Racing(FakeMetrics):
        def fetch(self, run):
            fetched = super().fetch(run)
            if int(run.id[1:]) % 2 == 0:
                # The other cache-data wins the race for the even runs.
                other.store(run, fetched, self.parse(fetched.data, run))
            return fetched

    seen = []

    class Spy:
        @hookspecs.hookimpl
        def ciml_run_cached(self, run, data_path):
            seen.append(run.id)

    get_manager().add_plugin(Spy(), "spy")
    summary = cache_data(data_path, FakeSource(10), Racing(), "job", workers=3, progress=False)
    other.close()
    assert summary["cached"] == 5 and summary["skipped_cached"] == 5
    assert summary["total_cached"] == 10
    assert sorted(seen) == [f"r{i:04d}" for i in range(1, 10, 2)]


class FlakyInventory(FakeSource):
    """Completes runs with a provider, except while ``down`` names them."""

    def __init__(self, n, down=()):
        super().__init__(n)
        self.down = set(down)
        self.completed = []

    def complete(self, run):
        import dataclasses

        self.completed.append(run.id)
        if run.id in self.down:
            return dataclasses.replace(run, incomplete="node provider: HTTP 503")
        return dataclasses.replace(run, metadata={**run.metadata, "node_provider": "p"})


def test_a_run_cached_with_incomplete_metadata_is_completed_next_time(data_path):
    """12.5: a transient inventory failure no longer loses the provider for good."""
    first = cache_data(data_path, FlakyInventory(6, down={"r0001", "r0004"}), FakeMetrics(),
                       "job", workers=2, progress=False)
    assert first["cached"] == 6 and first["incomplete"] == 2 and first["completed"] == 0
    with RawCache(data_path) as cache:
        assert cache.incomplete_ids("job") == {"r0001", "r0004"}
        assert cache.record("r0001").incomplete == "node provider: HTTP 503"
        assert "node_provider" not in cache.record("r0001").metadata
    # Still down for one of them: that one stays incomplete.
    metrics = FakeMetrics()
    source = FlakyInventory(6, down={"r0004"})
    second = cache_data(data_path, source, metrics, "job", workers=2, progress=False)
    assert metrics.fetched == []  # the metrics are not fetched again
    assert sorted(source.completed) == ["r0001", "r0004"]
    assert second["completed"] == 1 and second["incomplete"] == 1
    assert second["skipped_cached"] == 4 and second["cached"] == 0
    with RawCache(data_path) as cache:
        assert cache.incomplete_ids("job") == {"r0004"}
        run = cache.record("r0001")
        assert run.incomplete is None and run.metadata["node_provider"] == "p"
        # The record on disk and the index agree; the files are untouched.
        assert cache.info("r0001")["samples"] == 4 and len(cache.frame("r0001")) == 4
        on_disk = RunRecord.from_dict(__import__("json").loads(
            (cache.run_dir("r0001") / "record.json").read_text()))
        assert on_disk.metadata["node_provider"] == "p"
    third = cache_data(data_path, FlakyInventory(6), FakeMetrics(), "job", progress=False)
    assert third["completed"] == 1 and third["incomplete"] == 0
    with RawCache(data_path) as cache:
        assert cache.incomplete_ids() == set()


def test_retry_incomplete_completes_runs_not_listed_this_time(data_path):
    cache_data(data_path, FlakyInventory(6, down={"r0004"}), FakeMetrics(), "job",
               progress=False)
    listed_two = cache_data(data_path, FlakyInventory(6), FakeMetrics(), "job", limit=2,
                            progress=False)
    assert listed_two["completed"] == 0
    retried = cache_data(data_path, FlakyInventory(6), FakeMetrics(), "job", limit=2,
                         retry_incomplete=True, progress=False)
    assert retried["completed"] == 1
    with RawCache(data_path) as cache:
        assert cache.record("r0004").metadata["node_provider"] == "p"


def test_an_error_before_any_run_is_not_dressed_as_a_resumable_stop(data_path):
    from ciml.collect import CacheDataStopped

    class Denied(FakeSource):
        def list_runs(self, *a, **kw):
            raise SourceError("access denied")
            yield

    with pytest.raises(SourceError) as info:
        cache_data(data_path, Denied(), FakeMetrics(), "job", progress=False)
    assert not isinstance(info.value, CacheDataStopped)
    assert str(info.value) == "access denied"
