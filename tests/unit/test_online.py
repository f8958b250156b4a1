"""The online stage with a fake model, metric source and trigger: queue, errors, signals."""

import dataclasses
import io
import json
import os
import signal
import threading
import time

import pandas as pd
import pytest

from ciml import online
from ciml.base import FetchedMetrics, MetricSource, ResultSource, Trigger
from ciml.errors import MetricsUnavailable, NotFoundError, SourceError
from ciml.online import Predictor, Watcher
from ciml.records import Event, RunRecord


class FakeModel:
    classes = ["passed", "failed"]

    def __init__(self, delay=0.0):
        self.delay = delay
        self.calls = 0

    def predict_frame(self, frame):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        p = float(frame["cpu_usr"].mean()) / 100.0
        return {"predicted": "failed" if p > 0.5 else "passed",
                "probabilities": {"passed": 1 - p, "failed": p}}


class FakeMetrics(MetricSource):
    """Serves frames; ``failures[run_id]`` is a list of exceptions raised first."""

    name = "fake-metrics"

    def __init__(self):
        super().__init__()
        self.failures = {}
        self.calls = {}
        self.delay = 0.0
        self.lock = threading.Lock()

    def fetch(self, run):
        with self.lock:
            self.calls[run.id] = self.calls.get(run.id, 0) + 1
            pending = self.failures.get(run.id) or []
            exc = pending.pop(0) if pending else None
        if self.delay:
            time.sleep(self.delay)
        if exc is not None:
            raise exc
        return FetchedMetrics("dstat.csv", b"90" if "fail" in run.id else b"10", run.artifacts_url)

    def parse(self, data, run):
        value = float(data.decode())
        index = pd.date_range("2026-11-27", periods=3, freq="s", tz="UTC")
        return pd.DataFrame({"cpu_usr": [value] * 3}, index=index)


class ListTrigger(Trigger):
    """Hands a fixed list of events to the watcher, then waits to be stopped."""

    name = "list"

    def __init__(self, events, wait=False):
        super().__init__()
        self.events = list(events)
        self.wait = wait
        self.stopped = False
        self.closed = False
        self.refused = []
        self.acknowledged = []
        self.output = None  # an io.StringIO: what was printed when each ack came

    def acknowledge(self, event):
        assert not self.closed, "acknowledged after close()"
        printed = self.output.getvalue() if self.output is not None else ""
        self.acknowledged.append((event.run_id, f'"run_id": "{event.run_id}"' in printed))

    def close(self):
        self.closed = True

    def run(self, on_event):
        for event in self.events:
            if on_event(event) is False:
                self.refused.append(event)
        while self.wait and not self.stopped:
            time.sleep(0.01)

    def stop(self):
        self.stopped = True


class FakeSource(ResultSource):
    name = "fake"

    def __init__(self, runs=None, failures=None):
        super().__init__()
        self.runs = {r.id: r for r in runs or []}
        self.failures = failures or {}

    def list_runs(self, build_name, **kwargs):
        return iter(self.runs.values())

    def get_run(self, run_id):
        pending = self.failures.get(run_id) or []
        if pending:
            raise pending.pop(0)
        for run in self.runs.values():
            if run_id in (run.id, run.build_uuid):
                return run
        raise NotFoundError(f"no run {run_id}")


def _event(run_id, build_name="tempest-full", status="passed", url=True):
    return Event(build_name=build_name, run_id=run_id, build_uuid=run_id, status=status,
                 artifacts_url=f"http://logs/{run_id}/" if url else None, trigger="test")


def _predictor(model=None, metrics=None, label_of=None):
    predictor = Predictor(model or FakeModel(), dataset_name="ds", experiment_name="exp",
                          build_name="tempest-full", metric_source=metrics or FakeMetrics())
    return predictor


def _watch(events, predictor=None, trigger=None, **kwargs):
    out = io.StringIO()
    err = io.StringIO()
    kwargs.setdefault("fetch_delay", 0.0)
    kwargs.setdefault("status_interval", 0)
    kwargs.setdefault("call_hook", False)
    kwargs.setdefault("handle_signals", False)
    trigger = trigger or ListTrigger(events)
    if isinstance(trigger, ListTrigger):
        trigger.output = out
    watcher = Watcher(predictor or _predictor(), trigger, stdout=out, stderr=err, **kwargs)
    stats = watcher.run()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return watcher, stats, records, err.getvalue()


def test_predicts_each_event_and_prints_json_lines():
    _, stats, records, _ = _watch([_event("run-pass"), _event("run-fail", status="failed")])
    by_id = {r["run_id"]: r for r in records}
    assert set(by_id) == {"run-pass", "run-fail"}
    assert by_id["run-pass"]["predicted"] == "passed"
    assert by_id["run-fail"]["predicted"] == "failed"
    assert by_id["run-fail"]["probabilities"]["failed"] == pytest.approx(0.9)
    assert by_id["run-fail"]["model"] == "ds/exp"
    assert by_id["run-fail"]["status"] == "failed"
    assert by_id["run-fail"]["artifacts_url"] == "http://logs/run-fail/"
    assert stats["predicted"] == 2 and stats.get("failed", 0) == 0


def test_other_build_names_ignored_and_counted():
    _, stats, records, _ = _watch([_event("a", build_name="grenade"), _event("b")])
    assert [r["run_id"] for r in records] == ["b"]
    assert stats["ignored"] == 1 and stats["seen"] == 2


def test_duplicate_reports_predicted_once():
    _, stats, records, _ = _watch([_event("a"), _event("a"), _event("b")])
    assert sorted(r["run_id"] for r in records) == ["a", "b"]
    assert stats["duplicate"] == 1


def test_unknown_job_without_source_skipped():
    event = _event("x")
    event.build_name = None
    _, stats, records, _ = _watch([event])
    assert records == [] and stats["skipped"] == 1


def test_metrics_retried_until_uploaded():
    metrics = FakeMetrics()
    metrics.failures["late"] = [MetricsUnavailable("missing", "not there yet")] * 2
    _, stats, records, _ = _watch([_event("late")], predictor=_predictor(metrics=metrics),
                                  fetch_attempts=3)
    assert records[0]["predicted"] == "passed"
    assert metrics.calls["late"] == 3
    assert stats["retries"] == 2


def test_error_after_retries_is_reported_with_reason():
    metrics = FakeMetrics()
    metrics.failures["gone"] = [MetricsUnavailable("missing", "no dstat file found")] * 5
    hooked = []
    _, stats, records, _ = _watch([_event("gone"), _event("ok")],
                                  predictor=_predictor(metrics=metrics), fetch_attempts=3)
    by_id = {r["run_id"]: r for r in records}
    assert by_id["gone"]["error"] == "no dstat file found"
    assert by_id["gone"]["reason"] == "missing"
    assert by_id["gone"]["predicted"] is None
    assert by_id["ok"]["predicted"] == "passed"
    assert metrics.calls["gone"] == 3
    assert stats["failed"] == 1 and stats["predicted"] == 1
    del hooked


def test_non_retryable_metric_error_not_retried():
    metrics = FakeMetrics()
    metrics.failures["bad"] = [MetricsUnavailable("html", "got an HTML page")]
    _, stats, records, _ = _watch([_event("bad")], predictor=_predictor(metrics=metrics),
                                  fetch_attempts=5)
    assert metrics.calls["bad"] == 1
    assert records[0]["reason"] == "html"


def test_model_exception_is_an_error_record(caplog):
    class Broken(FakeModel):
        def predict_frame(self, frame):
            raise RuntimeError("boom")

    _, stats, records, _ = _watch([_event("a")], predictor=_predictor(model=Broken()))
    assert records[0]["error"] == "boom" and records[0]["reason"] == "RuntimeError"
    assert stats["failed"] == 1
    assert "boom" in caplog.text


def test_resolves_through_result_source_with_retries():
    run = RunRecord(id="run-1", build_name="tempest-full", status="failed",
                    build_uuid="uuid-1", artifacts_url="http://logs/run-1/")
    source = FakeSource([run], failures={"uuid-1": [NotFoundError("not yet"),
                                                    SourceError("db restarting", True)]})
    event = Event(build_name=None, build_uuid="uuid-1", trigger="mqtt")
    _, stats, records, _ = _watch([event], source=source, fetch_attempts=3)
    assert records[0]["run_id"] == "run-1"
    assert records[0]["build_uuid"] == "uuid-1"
    assert records[0]["status"] == "failed"
    assert stats["retries"] == 2


def test_the_source_completes_the_run_it_resolved():
    class Completing(FakeSource):
        def complete(self, run):
            if run.id == "run-2":
                raise OSError("inventory gone")
            return dataclasses.replace(run, metadata={"node_provider": "rax-dfw"})

    runs = [RunRecord(id=f"run-{i}", build_name="tempest-full", status="failed",
                      build_uuid=f"uuid-{i}", artifacts_url=f"http://logs/run-{i}/")
            for i in (1, 2)]
    events = [Event(build_name=None, build_uuid=f"uuid-{i}", trigger="mqtt") for i in (1, 2)]
    # A Zuul report carries its record: the source completes it all the same.
    zuul_run = RunRecord(id="run-3", build_name="tempest-full", status="passed",
                         artifacts_url="http://logs/run-3/")
    events.append(Event(build_name="tempest-full", build_uuid="run-3", trigger="mqtt",
                        payload=zuul_run))
    _, stats, records, _ = _watch(events, source=Completing(runs))
    by_id = {r["run_id"]: r for r in records}
    assert by_id["run-1"]["metadata"]["node_provider"] == "rax-dfw"
    assert by_id["run-3"]["metadata"]["node_provider"] == "rax-dfw"
    assert "node_provider" not in by_id["run-2"]["metadata"]
    assert by_id["run-2"]["predicted"] is not None and stats["predicted"] == 3


def test_source_resolves_to_other_job_is_ignored():
    run = RunRecord(id="r", build_name="grenade", status="passed", artifacts_url="http://l/")
    event = Event(build_name=None, build_uuid="r", trigger="mqtt")
    _, stats, records, _ = _watch([event], source=FakeSource([run]))
    assert records == [] and stats["ignored"] == 1


def test_no_source_and_no_url_is_an_error_record():
    _, stats, records, _ = _watch([_event("a", url=False)])
    assert "no artifacts URL" in records[0]["error"]


def test_max_events_stops_and_finishes_queued_work():
    events = [_event(f"r{i}") for i in range(10)]
    trigger = ListTrigger(events, wait=True)
    _, stats, records, _ = _watch(events, trigger=trigger, max_events=4)
    assert len(records) == 4
    assert stats["queued"] == 4 and stats.get("dropped", 0) == 0
    assert trigger.stopped
    assert len(trigger.refused) == 6  # refused ones stay unacknowledged


def test_queue_is_bounded_and_trigger_waits():
    model = FakeModel(delay=0.05)
    events = [_event(f"r{i}") for i in range(12)]
    high = []

    class Watching(ListTrigger):
        def run(self, on_event):
            for event in self.events:
                on_event(event)
                high.append(watcher.queue.qsize())

    trigger = Watching(events)
    out = io.StringIO()
    watcher = Watcher(_predictor(model=model), trigger, workers=1, queue_size=2,
                      fetch_delay=0, status_interval=0, stdout=out, stderr=io.StringIO(),
                      call_hook=False, handle_signals=False)
    watcher.run()
    assert max(high) <= 2
    assert len(out.getvalue().splitlines()) == 12  # nothing lost


def _stuck_watcher(n=6, workers=2):
    """A watcher whose runs all wait between fetch tries for ever, on its own thread."""
    metrics = FakeMetrics()
    metrics.failures.update({f"r{i}": [MetricsUnavailable("missing", "later")] * 1000
                             for i in range(n)})
    events = [_event(f"r{i}") for i in range(n)]
    trigger = ListTrigger(events, wait=True)
    out = io.StringIO()
    trigger.output = out
    watcher = Watcher(_predictor(metrics=metrics), trigger, workers=workers, queue_size=10,
                      fetch_attempts=1000, fetch_delay=0.2, status_interval=0, stdout=out,
                      stderr=io.StringIO(), call_hook=False, handle_signals=False)
    # A daemon: a watcher that fails to stop fails its test, not the whole run.
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return watcher, trigger, metrics, out, thread


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_stop_leaves_runs_in_hand_unacknowledged():
    """Stopping drops nothing for good: what was not reported is not acknowledged."""
    watcher, trigger, metrics, out, thread = _stuck_watcher()
    _wait_until(lambda: len(metrics.calls) == 2)  # both workers are waiting to retry
    watcher.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert watcher.stats["dropped"] == 6
    assert out.getvalue() == ""  # nothing half-predicted is reported
    assert trigger.acknowledged == []  # so the broker or the cursor delivers them again
    assert trigger.closed


def test_drain_finishes_the_runs_in_hand_and_acknowledges_them():
    watcher, trigger, metrics, out, thread = _stuck_watcher()
    _wait_until(lambda: len(metrics.calls) == 2)
    with metrics.lock:  # the logs arrive: every run can now be fetched
        metrics.failures.clear()
    watcher.stop(drain=True, timeout=60)
    thread.join(30)
    assert not thread.is_alive()
    assert watcher.stats["predicted"] == 6 and not watcher.stats.get("dropped")
    assert sorted(r for r, _ in trigger.acknowledged) == [f"r{i}" for i in range(6)]
    # Each acknowledgement came after the run's record was printed.
    assert all(printed for _, printed in trigger.acknowledged)


def test_drain_timeout_leaves_the_rest_for_redelivery():
    watcher, trigger, metrics, out, thread = _stuck_watcher()
    _wait_until(lambda: len(metrics.calls) == 2)
    watcher.stop(drain=True, timeout=0.3)
    thread.join(30)
    assert not thread.is_alive()
    assert watcher.stats["dropped"] == 6
    assert trigger.acknowledged == [] and out.getvalue() == ""


def test_acknowledged_only_once_the_record_is_out():
    events = [_event("a"), _event("b", build_name="grenade"), _event("c", status="failed")]
    metrics = FakeMetrics()
    metrics.failures["c"] = [MetricsUnavailable("html", "an HTML page")]
    trigger = ListTrigger(events)
    _, stats, records, _ = _watch(events, predictor=_predictor(metrics=metrics),
                                  trigger=trigger)
    acks = dict(trigger.acknowledged)
    # A prediction and an error record are both "done"; another job is not ours.
    assert acks == {"a": True, "b": False, "c": True}
    assert {r["run_id"] for r in records} == {"a", "c"}


def test_a_repeat_is_acknowledged_with_the_first_not_before():
    metrics = FakeMetrics()
    metrics.delay = 0.2
    events = [_event("a"), _event("a")]
    trigger = ListTrigger(events)
    _, stats, records, _ = _watch(events, predictor=_predictor(metrics=metrics),
                                  trigger=trigger)
    assert len(records) == 1 and stats["duplicate"] == 1
    # Both copies acknowledged, both after the one record was printed.
    assert trigger.acknowledged == [("a", True), ("a", True)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(sig):
    events = [_event("a")]
    trigger = ListTrigger(events, wait=True)
    out = io.StringIO()
    watcher = Watcher(_predictor(), trigger, fetch_delay=0, status_interval=0, stdout=out,
                      stderr=io.StringIO(), call_hook=False, handle_signals=True)
    before = signal.getsignal(sig)
    trigger.output = out
    timer = threading.Timer(0.3, os.kill, (os.getpid(), sig))
    timer.start()
    stats = watcher.run()  # returns instead of raising KeyboardInterrupt
    timer.join()
    assert trigger.stopped
    assert stats["predicted"] == 1
    assert trigger.acknowledged == [("a", True)]
    assert signal.getsignal(sig) is before


def test_signal_drains_then_a_second_signal_stops_at_once(caplog):
    metrics = FakeMetrics()
    metrics.failures.update({f"r{i}": [MetricsUnavailable("missing", "later")] * 1000
                             for i in range(3)})
    trigger = ListTrigger([_event(f"r{i}") for i in range(3)], wait=True)
    out = io.StringIO()
    trigger.output = out
    watcher = Watcher(_predictor(metrics=metrics), trigger, workers=1, fetch_attempts=1000,
                      fetch_delay=0.05, status_interval=0, stdout=out, stderr=io.StringIO(),
                      call_hook=False, handle_signals=True, drain_timeout=600)

    def signals():
        _wait_until(lambda: metrics.calls.get("r0", 0) >= 2)
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_until(lambda: "finishing the runs in hand" in caplog.text)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=signals)
    sender.start()
    stats = watcher.run()
    sender.join()
    assert stats["dropped"] == 3 and trigger.acknowledged == []
    assert "stopping now" in caplog.text


def test_status_line_on_stderr():
    events = [_event("a"), _event("b", build_name="other")]
    _, _, _, err = _watch(events, status_interval=0.05)
    line = err.strip().splitlines()[-1]
    assert line.startswith("ciml watch: seen 2, predicted 1, failed 0, skipped 1")
    assert "queue 0/100" in line


def test_unusual_runs_are_counted_in_the_status_line():
    class Profiled(FakeModel):
        def predict_frame(self, frame):
            result = super().predict_frame(frame)
            odd = float(frame["cpu_usr"].mean()) > 50
            result["unusual"] = {"score": 9.0 if odd else 1.0,
                                 "percentile": 100.0 if odd else 40.0,
                                 "unusual": odd, "features": []}
            return result

    # FakeMetrics gives runs named *fail* 90% CPU, the others 10%.
    events = [_event("calm"), _event("busy-fail"), _event("calm2")]
    watcher, stats, records, err = _watch(events, predictor=_predictor(model=Profiled()),
                                          status_interval=0.05)
    by_id = {r["run_id"]: r for r in records}
    assert by_id["busy-fail"]["unusual"]["unusual"] is True
    assert by_id["calm"]["unusual"]["percentile"] == 40.0
    assert stats["unusual"] == 1
    assert "unusual 1" in err.strip().splitlines()[-1]


def test_hook_gets_every_record():
    from ciml.hookspecs import hookimpl
    from ciml.plugins import get_manager

    got = []

    class Reporter:
        @hookimpl
        def ciml_prediction_made(self, prediction):
            got.append(prediction)

    get_manager().add_plugin(Reporter(), "test-reporter")
    metrics = FakeMetrics()
    metrics.failures["b"] = [MetricsUnavailable("html", "an HTML page")]
    _, _, records, _ = _watch([_event("a"), _event("b")], predictor=_predictor(metrics=metrics),
                              call_hook=True, workers=1)
    assert got == records and len(got) == 2


def test_learn_adds_labelled_runs_to_the_real_cache(data_path):
    from ciml.cache import RawCache
    from ciml.hookspecs import hookimpl
    from ciml.plugins import get_manager

    already = RunRecord(id="already", build_name="tempest-full", status="passed",
                        artifacts_url="http://logs/already/")
    metrics = FakeMetrics()
    with RawCache(data_path) as cache:
        fetched, frame = metrics.load(already)
        cache.store(already, fetched, frame)
    hooked = []

    class Auditor:
        @hookimpl
        def ciml_run_cached(self, run, data_path):
            hooked.append((run.id, data_path))

    get_manager().add_plugin(Auditor(), "test-auditor")
    metrics.failures["broken"] = [MetricsUnavailable("html", "an HTML page")]
    events = [_event("new-fail", status="failed"), _event("already"),
              _event("unfinished", status=None), _event("broken")]
    _, stats, records, _ = _watch(events, predictor=_predictor(metrics=metrics),
                                  data_path=data_path, learn=True, workers=1)
    assert stats["learned"] == 1 and len(records) == 4
    assert hooked == [("new-fail", data_path)]
    with RawCache(data_path) as cache:
        assert cache.state("new-fail") == "cached"
        assert cache.record("new-fail").status == "failed"
        assert float(cache.frame("new-fail")["cpu_usr"].iloc[0]) == 90.0
        # The cache says which metric source read it, for the dataset and prediction.
        assert cache.info("new-fail")["metric_source"] == {"name": "fake-metrics",
                                                           "params": {}}
        assert cache.state("unfinished") is None
        assert cache.state("broken") == "unavailable"


# -- ciml predict ------------------------------------------------------------------


def test_predict_runs_local_file_and_errors(tmp_path, monkeypatch):
    path = tmp_path / "dstat.csv"
    path.write_bytes(b"90")
    predictor = _predictor()
    records = online.predict_runs(None, "ds", "exp", [str(path), "nope"],
                                  predictor=predictor, call_hook=False)
    assert records[0]["predicted"] == "failed"
    assert records[0]["run_id"] == str(path)
    assert records[1]["run_id"] == "nope" and "--source" in records[1]["error"]
    columns, rows = online.prediction_table(records, predictor.classes)
    assert columns == ["run", "predicted", "p_passed", "p_failed", "model", "error"]
    assert rows[0][:4] == [str(path), "failed", pytest.approx(0.1), pytest.approx(0.9)]


def test_predict_runs_through_source():
    run = RunRecord(id="r1", build_name="tempest-full", status="passed", build_uuid="u1",
                    artifacts_url="http://l/")
    records = online.predict_runs(None, "ds", "exp", ["u1"], source=FakeSource([run]),
                                  predictor=_predictor(), call_hook=False)
    assert records[0]["run_id"] == "r1" and records[0]["predicted"] == "passed"
    assert records[0]["actual"] == "passed"


def test_default_experiment(data_path):
    from ciml.errors import CimlError

    with pytest.raises(NotFoundError):
        online.default_experiment(data_path, "ds")
    (data_path.models / "ds" / "exp1").mkdir(parents=True)
    assert online.default_experiment(data_path, "ds") == "exp1"
    (data_path.models / "ds" / "exp2").mkdir(parents=True)
    with pytest.raises(CimlError, match="exp1, exp2"):
        online.default_experiment(data_path, "ds")


def test_predict_refuses_a_broken_file_before_loading_the_model(tmp_path):
    loads = []

    def load_model():
        loads.append(1)
        return FakeModel()

    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"not a number")
    predictor = Predictor(load_model, dataset_name="ds", experiment_name="exp",
                          build_name="tempest-full", metric_source=FakeMetrics())

    class Broken(FakeMetrics):
        def parse(self, data, run):
            try:
                return super().parse(data, run)
            except ValueError:
                raise MetricsUnavailable("non-numeric", "not a dstat file") from None

    predictor.metric_source = Broken()
    [record] = online.predict_runs(None, "ds", "exp", [str(broken)], predictor=predictor,
                                   call_hook=False)
    assert record["reason"] == "non-numeric" and loads == []
    good = tmp_path / "good.csv"
    good.write_bytes(b"90")
    records = online.predict_runs(None, "ds", "exp", [str(broken), str(good)],
                                  predictor=predictor, call_hook=False)
    assert [r["predicted"] for r in records] == [None, "failed"] and loads == [1]


def test_warm_up_loads_the_model_and_predicts_a_made_up_run_in_the_datasets_columns():
    loads, frames = [], []

    class Recording(FakeModel):
        def predict_frame(self, frame):
            frames.append(frame)
            return super().predict_frame(frame)

    def load_model():
        loads.append(1)
        return Recording()

    dataset = type("DS", (), {"features": ["cpu_usr", "mem_used"], "classes": None})()
    predictor = Predictor(load_model, dataset_name="ds", experiment_name="exp",
                          build_name="tempest-full", metric_source=FakeMetrics(),
                          dataset=dataset)
    assert predictor.warm_up() >= 0
    assert loads == [1]
    [frame] = frames
    assert list(frame.columns) == ["cpu_usr", "mem_used"] and len(frame) == 120
    assert str(frame.index.tz) == "UTC"
    # The model is not loaded again for the first real run.
    predictor.predict_frame(frame)
    assert loads == [1] and len(frames) == 2


def test_a_chain_that_refuses_the_made_up_run_warms_on_the_first_event(caplog):
    class Picky(FakeModel):
        def predict_frame(self, frame):
            raise MetricsUnavailable("missing-columns", "wants a column made up runs lack")

    dataset = type("DS", (), {"features": ["cpu_usr"], "classes": None})()
    predictor = Predictor(Picky(), dataset_name="ds", experiment_name="exp",
                          build_name="tempest-full", dataset=dataset)
    assert predictor.warm_up() is None
    # Without features to make a run from, only the model is loaded.
    predictor = Predictor(FakeModel(), dataset_name="ds", experiment_name="exp",
                          build_name="tempest-full")
    assert predictor.warm_up() is None


# -- untrusted URLs -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/", "/etc/", "ftp://logs.example.org/x/",
                                 "gopher://127.0.0.1:11211/"])
def test_event_urls_other_than_http_are_refused(url):
    metrics = FakeMetrics()
    event = _event("evil")
    event.artifacts_url = url
    trigger = ListTrigger([event])
    _, stats, records, _ = _watch([event], predictor=_predictor(metrics=metrics),
                                  trigger=trigger)
    assert records[0]["reason"] == "url-refused"
    assert "refusing the artifacts URL" in records[0]["error"]
    assert metrics.calls == {}  # nothing was fetched
    assert trigger.acknowledged == [("evil", True)]  # an error record is a record


def test_allowed_scheme_and_host_list():
    from ciml.urlpolicy import UrlPolicy, UrlRefused

    events = [_event("a"), _event("b")]
    events[0].artifacts_url = "file:///srv/logs/a/"
    events[1].artifacts_url = "http://user:SEKRIT@internal.corp/b/"
    policy = UrlPolicy(schemes=["file"], hosts=["logs.example.org", ".ci.example.org",
                                                  "*.other.example.org"])
    _, _, records, _ = _watch(events, url_policy=policy)
    by_id = {r["run_id"]: r for r in records}
    assert by_id["a"]["predicted"] == "passed"  # a file URL has no host to check
    assert by_id["b"]["reason"] == "url-refused"
    assert "internal.corp" in by_id["b"]["error"] and "SEKRIT" not in by_id["b"]["error"]
    assert policy.check("https://x.ci.example.org/l/") and policy.check("http://logs.example.org")
    assert policy.check("http://a.b.other.example.org/")
    with pytest.raises(UrlRefused):
        policy.check("http://ci.example.org/")  # .domain is the names under it only
    with pytest.raises(UrlRefused):
        policy.check("http://logs.example.org.evil.net/")


def test_predict_refuses_a_source_url_it_may_not_fetch():
    run = RunRecord(id="r1", build_name="tempest-full", status="passed", build_uuid="u1",
                    artifacts_url="file:///var/lib/secret/")
    metrics = FakeMetrics()
    [record] = online.predict_runs(None, "ds", "exp", ["u1"], source=FakeSource([run]),
                                   predictor=_predictor(metrics=metrics), call_hook=False)
    assert record["reason"] == "url-refused" and metrics.calls == {}


# -- the metric source a dataset was built with ------------------------------------------


def test_metric_source_recorded_by_the_dataset_is_used(monkeypatch):
    import types

    dataset = types.SimpleNamespace(config={
        "metric_source": "dstat",
        "metric_source_options": {"paths": ["custom/dstat.csv"], "retries": 7}})
    source = online.metric_source_for(dataset)
    assert source.name == "dstat" and source.paths == ["custom/dstat.csv"]
    assert source.retries == 7
    # Options given at prediction override the recorded ones.
    assert online.metric_source_for(dataset, options={"retries": 1}).retries == 1
    # A dataset from before ciml recorded it: the default dstat source.
    assert online.metric_source_for(types.SimpleNamespace(config={})).name == "dstat"
