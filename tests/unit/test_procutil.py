"""Worker processes end with the command that started them (kill -9 included)."""

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from ciml import procutil

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds worker processes through /proc")

# A result and a metric source for the cache-data child: the parse blocks in
# worker processes until the test opens the gate, so the child can be killed
# while every worker is in the middle of a run.
PLUGIN = textwrap.dedent('''
    import datetime as dt
    import multiprocessing
    import os
    import pathlib
    import time

    import numpy as np
    import pandas as pd

    from ciml.base import FetchedMetrics, MetricSource, Parameter, ResultSource
    from ciml.hookspecs import hookimpl
    from ciml.records import RunRecord


    class Runs(ResultSource):
        name = "runs"

        def list_runs(self, build_name, **kw):
            for i in range(8):
                yield RunRecord(id=f"r{i}", build_name=build_name, status="passed",
                                start=dt.datetime(2024, 1, 1, i, tzinfo=dt.timezone.utc))

        def get_run(self, run_id):
            raise NotImplementedError


    class GatedParse(MetricSource):
        name = "gated-parse"
        parameters = (Parameter("gate", str, help="parse waits for this file"),
                      Parameter("marks", str, help="a file per parse started here"))

        def fetch(self, run):
            return FetchedMetrics(name="m.txt", data=run.id.encode(), url="mem")

        def parse(self, data, run):
            if multiprocessing.parent_process() is not None:
                pathlib.Path(self.marks, f"{os.getpid()}-{run.id}").touch()
                deadline = time.monotonic() + 120
                while not os.path.exists(self.gate) and time.monotonic() < deadline:
                    time.sleep(0.05)
            index = pd.date_range(run.start, periods=4, freq="s").as_unit("ns")
            return pd.DataFrame({"cpu_usr": np.arange(4.0)}, index=index)


    class Plugin:
        @hookimpl
        def ciml_register_metric_sources(self, register):
            register(GatedParse)
''')

CACHE_DATA = textwrap.dedent('''
    import sys
    from ciml import collect
    from ciml.paths import DataPath
    from ciml.plugins import get_manager
    import gated

    ready = collect._ParsePool.get
    def wait_for_processes(self):
        # Every run goes to the worker processes, none is parsed here.
        self._ready.wait(120)
        return ready(self)
    collect._ParsePool.get = wait_for_processes
    get_manager().add_plugin(gated.Plugin(), "gated")
    metrics = get_manager().get("metric_source", "gated-parse")(gate=sys.argv[2],
                                                               marks=sys.argv[3])
    collect.cache_data(DataPath(sys.argv[1]), gated.Runs(), metrics, "job", workers=2,
                       processes=2, progress=False)
''')

BUILD = textwrap.dedent('''
    import os, sys, time
    from ciml.dataset import build
    def hang_once_workers_run(self, run_ids):
        list(self.pool.map(abs, range(8)))  # every worker has started
        print("ready", flush=True)
        time.sleep(600)
        yield from ()
    build._Loader.map = hang_once_workers_run
    build.build_dataset(sys.argv[1], "ds", "job", executor="process", workers=2,
                        progress=False)
''')


def _descendants(pid):
    """Every process below ``pid`` now (children, their children...)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _wait_gone(pids, limit_s=60):
    """The pids still running after up to ``limit_s`` seconds (a liveness bound)."""
    deadline = time.monotonic() + limit_s
    running = set(pids)
    while running and time.monotonic() < deadline:
        running = {p for p in running if procutil._running(p)}
        time.sleep(0.1)
    return running


def _env(path):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(path), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_kill_9_of_cache_data_ends_its_workers_and_they_store_nothing(tmp_path, data_path):
    """12.4: the fork server, the resource tracker and the parse workers go with
    the command, and a worker caught mid-run does not index it."""
    (tmp_path / "gated.py").write_text(PLUGIN)
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", CACHE_DATA, str(data_path.root), str(gate),
                             str(marks)], env=_env(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(marks.iterdir())) == 2, "the workers never started parsing"
        helpers = _descendants(proc.pid)
        workers = {int(m.name.split("-")[0]) for m in marks.iterdir()}
        assert workers <= helpers
    finally:
        proc.kill()
        proc.wait()
    gate.touch()
    assert _wait_gone(helpers) == set()
    with sqlite3.connect(data_path.raw / "index.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_kill_9_of_build_dataset_ends_its_workers(tmp_path, data_path):
    import numpy as np
    import pandas as pd

    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.records import RunRecord

    with RawCache(data_path) as cache:
        for i in range(6):
            start = dt.datetime(2024, 1, 1, i, tzinfo=dt.timezone.utc)
            index = pd.date_range(start, periods=30, freq="s").as_unit("ns")
            frame = pd.DataFrame({"cpu_usr": np.arange(30.0) * i}, index=index)
            cache.store(RunRecord(id=f"r{i}", build_name="job", start=start,
                                  status="failed" if i % 2 else "passed"),
                        FetchedMetrics(name="m.txt", data=b"x", url="mem"), frame)
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(data_path.root)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        helpers = _descendants(proc.pid)
        assert len(helpers) >= 2
    finally:
        proc.kill()
        proc.wait()
    assert _wait_gone(helpers) == set()


def test_owner_alive_outside_workers_and_for_a_dead_owner(monkeypatch):
    assert procutil.owner_alive()
    monkeypatch.setitem(procutil._OWNER, "pid", 999999999)
    monkeypatch.setitem(procutil._OWNER, "ppid", os.getppid())
    assert not procutil.owner_alive()
    monkeypatch.setitem(procutil._OWNER, "pid", os.getpid())
    assert procutil.owner_alive()
    monkeypatch.setitem(procutil._OWNER, "ppid", -1)  # re-parented: the fork server died
    assert not procutil.owner_alive()
    # A zombie (dead, not yet reaped) is not running.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while procutil._running(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procutil._running(child.pid) and procutil.fileutil.pid_alive(child.pid)
    child.wait()
