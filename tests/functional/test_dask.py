"""``--scheduler``: cache-data, build-dataset and predict on a real Dask cluster.

The cluster is a ``dask scheduler`` and two ``dask worker`` processes on
loopback (the session's ``dask_cluster`` fixture).  Every stage is run
twice on the same input, locally and on the cluster, and the results must
be the same: the same runs cached (byte for byte), the same arrays, the
same fingerprint.  A worker killed mid-stage loses nothing.
"""

import json
import pathlib
import threading
import time

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
                record["cache"].pop("writer", None)  # which command, not what
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
    # Runs went out in batches, not one task a run.
    from ciml.dask_cache import expected_tasks

    assert there["batches"] == expected_tasks(there["selected"], 2) < there["selected"] / 2
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
            try:
                now = ready()
            except Exception:  # the command is still creating what ready() reads
                now = False
            if now:
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


def test_a_worker_killed_mid_batch_counts_its_stored_runs_once(history, tmp_path, run_ciml,
                                                               dask_cluster, monkeypatch):
    """Two batches of 30, one per worker; one worker dies after both stored some runs.

    Its batch runs again on the other worker: the runs it had stored are
    this command's (cached, not skipped_cached) and are not fetched again.
    """
    from ciml import dask_cache

    monkeypatch.setattr(dask_cache, "batch_size", lambda handed_out, threads, left=None: 30)
    local, remote = tmp_path / "local", tmp_path / "remote"
    rc, out, err = run_ciml(cache_args(local, history.db_uri))
    assert rc == 0, err
    here = json.loads(out)
    thread, killed = _kill_when(dask_cluster, lambda: _cached_count(remote) >= 12)
    rc, out, err = run_ciml(cache_args(remote, history.db_uri, "--scheduler",
                                       dask_cluster.address))
    thread.join()
    dask_cluster.wait_for_workers()
    assert rc == 0, err + dask_cluster.logs()
    assert killed, "the cache finished before a worker could be killed"
    there = json.loads(out)
    assert there["batches"] == 2
    assert there["skipped_cached"] == 0 and there["transient"] == 0
    for key in ("selected", "cached", "unavailable", "reasons", "total_cached"):
        assert here[key] == there[key], key
    assert cache_contents(local) == cache_contents(remote)


def test_a_retried_batch_skips_what_its_command_stored(history, tmp_path, monkeypatch):
    """The worker's side of a retry, in this process: runs the first try stored
    are counted stored for the same writer, already cached for another, and
    not fetched again in either case."""
    from ciml.collect import ALREADY_CACHED
    from ciml.dask_cache import fetch_store_batch
    from ciml.plugins import get_manager

    source = get_manager().get("result_source", "subunit2sql").from_options(
        {"db_uri": history.db_uri})
    runs = list(source.list_runs(JOB, limit=12))
    source.close()
    cls = type(get_manager().get("metric_source", "dstat").from_options({}))
    fetched = []
    real_fetch = cls.fetch
    monkeypatch.setattr(cls, "fetch", lambda self, run: fetched.append(run.id) or
                        real_fetch(self, run))
    data_path = DataPath(tmp_path / "data")
    first = fetch_store_batch(runs[:5], cls, {}, data_path, "cache-data@one")
    stored = [run.id for run, verdict in zip(runs[:5], first) if verdict is None]
    assert stored, first  # the dead worker's first try stored some runs
    fetched.clear()
    again = fetch_store_batch(runs, cls, {}, data_path, "cache-data@one")
    assert [v for run, v in zip(runs, again) if run.id in stored] == [None] * len(stored)
    assert not set(fetched) & set(stored)
    assert sorted(fetched) == sorted(r.id for r in runs[5:])
    other = fetch_store_batch(runs[:5], cls, {}, data_path, "cache-data@two")
    assert [v for run, v in zip(runs, other) if run.id in stored] == \
        [ALREADY_CACHED] * len(stored)
    with RawCache(data_path) as cache:
        assert {cache.info(run_id)["writer"] for run_id in stored} == {"cache-data@one"}


def test_batch_sizes_grow_with_the_runs_and_shrink_with_the_threads():
    from ciml.dask_cache import MAX_BATCH, batch_size, expected_tasks

    assert [batch_size(n, 2) for n in (0, 7, 8, 16, 64, 511, 512, 10**6)] == \
        [1, 1, 1, 2, 8, 63, 64, MAX_BATCH]
    assert batch_size(64, 8) == 2 < batch_size(64, 2)
    # 20,000 runs on 2 threads: a few hundred tasks, not 20,000.
    assert 20_000 / MAX_BATCH < expected_tasks(20_000, 2) < 20_000 / MAX_BATCH + 100
    assert expected_tasks(3, 2) == 3
    # With --limit known, batches shrink towards the end: no full last batch
    # for one worker while the other idles.
    assert batch_size(512, 2, left=1000) == 64
    assert [batch_size(512, 2, left=n) for n in (200, 40, 3)] == [50, 10, 1]
    assert expected_tasks(1000, 2, limit=1000) > expected_tasks(1000, 2)


def test_progress_counts_each_run_once(history, tmp_path, dask_cluster, capsys):
    """The bar moves per run (workers' events) and ends at the runs listed, not past."""
    from ciml.collect import cache_data
    from ciml.executor import Cluster
    from ciml.plugins import get_manager

    manager = get_manager()
    source = manager.get("result_source", "subunit2sql").from_options(
        {"db_uri": history.db_uri})
    metrics = manager.get("metric_source", "dstat").from_options({})
    with Cluster(dask_cluster.address) as cluster:
        summary = cache_data(DataPath(tmp_path / "d"), source, metrics, JOB, progress=True,
                             cluster=cluster)
        # The client keeps few of its sent messages (each task carries a batch of runs).
        from ciml.executor import CLIENT_LOG_MESSAGES

        kept = cluster.client.scheduler_comm.recent_message_log
        assert kept.maxlen == CLIENT_LOG_MESSAGES and len(kept) <= CLIENT_LOG_MESSAGES
    import re

    err = capsys.readouterr().err
    n = summary["selected"]
    shown = [int(count) for count in re.findall(r"tempest-full: (\d+)run", err)]
    assert shown[-1] == n and max(shown) == n, shown
    assert summary["cached"] + summary["unavailable"] == n


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


# -- build-dataset ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cached(history, tmp_path_factory):
    """A raw cache of the history, made locally once for the build tests."""
    from ciml.collect import cache_data
    from ciml.plugins import get_manager

    root = tmp_path_factory.mktemp("cached")
    manager = get_manager()
    source = manager.get("result_source", "subunit2sql").from_options(
        {"db_uri": history.db_uri})
    metrics = manager.get("metric_source", "dstat").from_options({})
    summary = cache_data(DataPath(root), source, metrics, JOB, progress=False)
    assert summary["cached"] > 40
    return root


BUILDS = {
    "series": ["--sample-interval", "10s"],
    "aggregates-zscore": ["--aggregation-functions", "mean", "max", "p95",
                          "--scale", "zscore", "--class-label", "node_provider"],
}


def build_args(root, name, *extra):
    return ["--data-path", str(root), "build-dataset", "--dataset", name, "--build-name", JOB,
            "--features-regex", "^(cpu|mem|load)", "--seed", "4", "-f", "json", *extra]


@pytest.fixture
def small_chunks(monkeypatch):
    """Four examples a chunk: many tasks, many regions, a fit folded over many states."""
    from ciml.dataset import store

    monkeypatch.setattr(store, "MAX_CHUNK_EXAMPLES", 4)


@pytest.mark.parametrize("kind", sorted(BUILDS))
def test_build_on_the_cluster_equals_local(kind, cached, run_ciml, dask_cluster, small_chunks):
    from ciml.dataset import store

    rc, out, err = run_ciml(build_args(cached, f"local-{kind}", *BUILDS[kind], "--force"))
    assert rc == 0, err
    rc, out2, err = run_ciml(build_args(cached, f"dask-{kind}", *BUILDS[kind], "--force",
                                        "--scheduler", dask_cluster.address))
    assert rc == 0, err + dask_cluster.logs()
    assert "dashboard: http://127.0.0.1:" in err
    here, there = json.loads(out), json.loads(out2)
    assert here["fingerprint"] == there["fingerprint"]
    assert here["examples"] == there["examples"] and here["skipped"] == there["skipped"]
    assert sum(here["examples"].values()) > 30
    path = DataPath(cached)
    assert store.differences(path.dataset(f"local-{kind}"), path.dataset(f"dask-{kind}")) == []
    # Nothing of the staging arrays is left in the dataset.
    assert not (path.dataset(f"dask-{kind}") / "staging").exists()


def test_a_worker_killed_mid_build_loses_nothing(cached, run_ciml, dask_cluster, small_chunks):
    from ciml.dataset import store

    path = DataPath(cached)
    assert run_ciml(build_args(cached, "ref", "--force"))[0] == 0

    def staging_started():
        return any(path.datasets.glob(".tmp@*@killed/staging/training/c/*"))

    thread, killed = _kill_when(dask_cluster, staging_started)
    rc, out, err = run_ciml(build_args(cached, "killed", "--force", "--scheduler",
                                       dask_cluster.address))
    thread.join()
    dask_cluster.wait_for_workers()
    assert rc == 0, err + dask_cluster.logs()
    assert killed, "the build finished before a worker could be killed"
    assert store.differences(path.dataset("ref"), path.dataset("killed")) == []
    assert not list(path.datasets.glob(".tmp@*"))


# -- predict ------------------------------------------------------------------------


def test_batch_predict_on_the_cluster_equals_local(cached, run_ciml, dask_cluster, history):
    pytest.importorskip("lightgbm")
    root = str(cached)
    assert run_ciml(build_args(cached, "agg", *BUILDS["aggregates-zscore"], "--force",
                               "--class-label", "status"))[0] == 0
    assert run_ciml(["--data-path", root, "setup-experiment", "--experiment", "gb",
                     "--estimator", "gbdt", "--trees", "20",
                     "--min-data-in-leaf", "3"])[0] == 0
    rc, out, err = run_ciml(["--data-path", root, "train-model", "--dataset", "agg",
                             "--experiment", "gb", "-f", "json"])
    assert rc == 0, err
    with RawCache(DataPath(cached)) as cache:
        ids = [r.id for r in cache.runs(JOB)]
    # A dstat file given by path is read here and sent to a worker.
    folder = pathlib.Path(history.good_runs()[0]["artifacts_url"].removeprefix("file://"))
    good_file = next(folder.rglob("dstat-csv_log.txt*"))
    refs = [*ids, str(good_file), "no-such-run"]
    command = ["--data-path", root, "predict", "--dataset", "agg", "--experiment", "gb",
               "-f", "json", *refs]
    rc, out, err = run_ciml(command)
    assert rc == 1 and "cannot predict no-such-run" in err
    rc, out2, err2 = run_ciml([*command, "--scheduler", dask_cluster.address])
    assert rc == 1 and "cannot predict no-such-run" in err2, err2 + dask_cluster.logs()
    assert "dashboard: http://127.0.0.1:" in err2
    here, there = json.loads(out), json.loads(out2)
    assert len(here) == len(refs) > 40
    for record in here + there:
        record.pop("time", None)
    assert here == there


# -- over object storage --------------------------------------------------------------


def test_cache_and_build_on_the_cluster_into_s3_equal_local(history, tmp_path, run_ciml,
                                                             dask_cluster, s3_data_path,
                                                             seaweedfs, monkeypatch):
    """The workers store runs and write dataset chunks into S3 themselves.

    The workers were started without the store's credentials: they travel
    with the data path (``--storage-option``), as the catalog's URL does.
    """
    from ciml.dataset import store

    local = tmp_path / "local"
    remote = str(s3_data_path.root)
    options = [arg for key, value in seaweedfs.storage_options.items()
               for arg in ("--storage-option", f"{key}={value}")]
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    # The local cache keeps its own index, beside it.
    monkeypatch.delenv("CIML_CATALOG_URI")
    rc, out, err = run_ciml(cache_args(local, history.db_uri))
    assert rc == 0, err
    rc, out_build, err = run_ciml(build_args(local, "ds", "--sample-interval", "10s"))
    assert rc == 0, err
    options.extend(["--catalog-uri", catalog])
    rc, out2, err = run_ciml([*options, *cache_args(remote, history.db_uri, "--scheduler",
                                                    dask_cluster.address)])
    assert rc == 0, err + dask_cluster.logs()
    here, there = json.loads(out), json.loads(out2)
    for key in ("selected", "cached", "unavailable", "reasons", "total_cached"):
        assert here[key] == there[key], key
    rc, out2, err = run_ciml([*options, *build_args(remote, "ds", "--sample-interval", "10s",
                                                    "--scheduler", dask_cluster.address)])
    assert rc == 0, err + dask_cluster.logs()
    assert json.loads(out_build)["fingerprint"] == json.loads(out2)["fingerprint"]
    remote_path = DataPath(remote, storage_options=seaweedfs.storage_options,
                           catalog_uri=catalog)
    assert store.differences(DataPath(local).dataset("ds"), remote_path.dataset("ds")) == []
