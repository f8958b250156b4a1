"""A data path on S3 (SeaweedFS on loopback): sharing, markers, cleanup, credentials.

The stage tests (cache-data, build-dataset, train-model, predict) run against
S3 too, through their modules' ``data_path`` fixture; this module checks what
only a shared object store has.
"""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from ciml import storage
from ciml.cache import RawCache
from ciml.generator import generate_history
from ciml.paths import DataPath
from ciml.testing.servers import CIServer

JOB = "tempest-full"


@pytest.fixture
def fresh_mariadb(mariadb_url):
    """A database of this test's own on the shared MariaDB, dropped afterwards."""
    import pymysql

    name = f"ciml_s3_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def served(tmp_path):
    server = CIServer(root=tmp_path / "hist" / "logs").start()
    (tmp_path / "hist" / "logs").mkdir(parents=True)
    yield server, tmp_path / "hist"
    server.stop()


def _ciml(argv, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
         *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})


def test_two_machines_cache_into_one_store_with_a_shared_catalog(
        served, s3_data_path, fresh_mariadb, seaweedfs):
    """Two cache-data processes, one S3 prefix, one MariaDB catalog: every good run
    cached once, none lost, and no copy of a run left behind by the loser of a race."""
    server, root = served
    history = generate_history(root, runs=40, seed=5, jobs=(JOB,), duration=(60, 120),
                               base_url=server.url, bad_fraction=0.1, tests=False)
    server.latency = 0.01
    url = str(s3_data_path.root)
    argv = ["--data-path", url, "--catalog-uri", fresh_mariadb, "cache-data",
            "--db-uri", history.db_uri, "--build-name", JOB, "--backoff", "0.01",
            "--workers", "4", "-f", "json"]
    procs = [_ciml(argv) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    summaries = [json.loads(out) for out, _ in results]
    good = {r["run_id"] for r in history.good_runs(JOB)}
    # Each counts only the runs it stored itself: together exactly the good runs.
    assert sum(s["cached"] for s in summaries) == len(good)
    assert all(s["total_cached"] == len(good) for s in summaries)

    data_path = DataPath(url, catalog_uri=fresh_mariadb)
    with RawCache(data_path) as cache:
        assert {r.id for r in cache.runs(JOB)} == good
        assert len(cache.unavailable(JOB)) == len(history.runs) - len(good)
        named = cache.catalog.dirs()
        for run_id in good:
            assert len(cache.frame(run_id)) > 0
            assert cache.raw_file(run_id).read_bytes()[:2] == b"\x1f\x8b" or \
                len(cache.raw_file(run_id).read_bytes()) > 0
        on_store = {p.name for p in cache.runs_dir.iterdir()}
        # The loser of each race removed its copy: only claimed folders remain.
        assert on_store == named
        assert len(named) == len(good)


def test_an_object_store_needs_a_catalog(s3_data_path, monkeypatch, run_ciml):
    monkeypatch.delenv("CIML_CATALOG_URI")
    rc, out, err = run_ciml(["--data-path", str(s3_data_path.root), "run", "list"])
    assert rc != 0
    assert "needs a catalog" in err and "--catalog-uri" in err
    assert len(err.strip().splitlines()) == 1


def test_credentials_never_appear_in_output(seaweedfs, s3_data_path, monkeypatch, tmp_path,
                                            served):
    """Right or wrong, a secret given as a storage option or in a catalog URI is never
    shown, not even with --debug; errors still say what is wrong."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    url = str(s3_data_path.root)
    wrong = "wrong-" + uuid.uuid4().hex
    base = ["--data-path", url, "--storage-option", f"key={seaweedfs.key}"]

    proc = _ciml(["--debug", *base, "--storage-option", f"secret={wrong}", "run", "list"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "access denied" in err
    assert wrong not in out + err and seaweedfs.secret not in out + err

    # The right secret, a whole cache-data with --debug: the secret never shows.
    server, root = served
    history = generate_history(root, runs=3, seed=2, jobs=(JOB,), duration=(60, 90),
                               base_url=server.url, tests=False)
    proc = _ciml(["--debug", *base, "--storage-option", f"secret={seaweedfs.secret}",
                  "cache-data", "--db-uri", history.db_uri, "--build-name", JOB])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert seaweedfs.secret not in out + err

    # A catalog URI's password is masked in its error.
    proc = _ciml([*base, "--storage-option", f"secret={seaweedfs.secret}",
                  "--catalog-uri", "mysql+pymysql://ciml:hunter2-pass@127.0.0.1:1/ciml",
                  "run", "list"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "catalog mysql+pymysql://ciml:***@127.0.0.1:1/ciml" in err
    assert "hunter2-pass" not in out + err and seaweedfs.secret not in out + err


def test_a_dataset_is_published_with_its_marker_last(s3_data_path, monkeypatch):
    import zarr

    from ciml.dataset import list_datasets, store

    datasets = s3_data_path.datasets
    work = datasets / ".tmp@1@abc@d"
    group = zarr.open_group(storage.zarr_store(work), mode="w", zarr_format=3)
    group.create_array("X", shape=(4,), dtype="float32", chunks=(2,))[...] = 1.0
    group.update_attributes({"complete": True})
    # Incomplete: a folder of objects without its marker is no dataset.
    (datasets / "half" / "X" / "zarr.json").write_bytes(b"{}")
    assert list_datasets(s3_data_path) == []

    copied = []
    real_copy = work.fs.copy

    def copy(src, dst, **kwargs):
        copied.append(dst.rsplit("/d/", 1)[1])
        return real_copy(src, dst, **kwargs)

    # fsspec makes an async file system's blocking methods per instance.
    monkeypatch.setattr(work.fs, "copy", copy)
    storage.publish_dir(work, datasets / "d", store.MARKER)
    assert copied[-1] == "zarr.json" and "zarr.json" not in copied[:-1]
    assert list_datasets(s3_data_path) == ["d"]
    assert not work.exists()

    # Deleting removes the marker first: no reader sees a half-removed dataset.
    deleted = []
    real_rm = work.fs.rm_file

    def rm_file(path, **kwargs):
        deleted.append(path)
        return real_rm(path, **kwargs)

    monkeypatch.setattr(work.fs, "rm_file", rm_file)
    storage.remove_dir(datasets / "d", store.MARKER)
    assert deleted[0].endswith("/d/zarr.json")
    assert list_datasets(s3_data_path) == []


_WRITER = """
import sys, time
from ciml import storage
from ciml.paths import DataPath
folder = DataPath(sys.argv[1]).models / "ds"
work = storage.make_work_dir(folder, "live")
print(work.name, flush=True)
for i in range(600):
    (work / f"part-{i}").write_bytes(b"x")
    if sys.stdin.readline().strip() == "publish":
        (work / "metadata.json").write_bytes(b"{}")
        storage.publish_dir(work, folder / "live", "metadata.json")
        print("published", flush=True)
        break
"""


def test_cleanup_of_abandoned_work_is_safe_with_concurrent_writers(s3_data_path, tmp_path):
    folder = s3_data_path.models / "ds"
    # A writer that is alive (another process, writing as we clean up).
    live = subprocess.Popen([sys.executable, "-c", _WRITER, str(s3_data_path.root)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    live_name = live.stdout.readline().strip()
    live.stdin.write("go on\n")
    live.stdin.flush()
    # A writer of this host that died.
    dead_proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                               capture_output=True, text=True)
    dead = folder / f".tmp@{dead_proc.stdout.strip()}@dead0@old"
    (dead / storage.OWNER_FILE).write_bytes(json.dumps(
        {"host": __import__("socket").gethostname(), "pid": int(dead_proc.stdout)}).encode())
    (dead / "estimator" / "w").write_bytes(b"x")
    # A writer on another machine, busy a moment ago.
    other = folder / ".tmp@4242@other0@elsewhere"
    (other / storage.OWNER_FILE).write_bytes(b'{"host": "another-host", "pid": 4242}')
    (other / "w").write_bytes(b"x")
    try:
        assert storage.remove_abandoned(folder) == 1
        names = {p.name for p in folder.iterdir()}
        assert dead.name not in names and {live_name, other.name} <= names
        # Nothing changed in the other machine's folder for longer than the grace
        # period: now it is abandoned; the live writer's keeps changing.
        time.sleep(2.5)
        live.stdin.write("go on\n")
        live.stdin.flush()
        time.sleep(1.0)
        assert storage.remove_abandoned(folder, grace_s=2.0) == 1
        names = {p.name for p in folder.iterdir()}
        assert other.name not in names and live_name in names
        # The live writer publishes unharmed.
        live.stdin.write("publish\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "published"
    finally:
        live.stdin.close()
        live.wait(60)
    assert (folder / "live" / "metadata.json").is_file()
    assert len([p for p in (folder / "live").iterdir() if p.name.startswith("part-")]) >= 2


def test_raw_cache_cleanup_keeps_claimed_and_fresh_run_folders(s3_data_path):
    import datetime as dt

    import numpy as np
    import pandas as pd

    from ciml.base import FetchedMetrics
    from ciml.records import RunRecord

    index = pd.date_range("2026-01-01", periods=5, freq="1s", tz="UTC")
    frame = pd.DataFrame({"a": np.arange(5.0)}, index=index)
    with RawCache(s3_data_path) as cache:
        run = RunRecord(id="r1", build_name=JOB, status="passed",
                        start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
        assert cache.store(run, FetchedMetrics("dstat.csv", b"a\n1\n", "file:///x"), frame)
        # A second writer of the same run loses and leaves nothing behind.
        assert not cache.store(run, FetchedMetrics("dstat.csv", b"a\n1\n", "file:///x"), frame)
        assert [p.name for p in cache.runs_dir.iterdir()] == [cache.raw_file("r1").parent.name]
        # A writer still filling its folder (unclaimed, fresh), one that died long ago.
        busy = cache.runs_dir / "r2@0123456789ab"
        (busy / "record.json").write_bytes(b"{}")
        assert cache.cleanup() == 0
        time.sleep(1.5)
        assert cache.cleanup(grace_s=1.0) == 1
        assert [p.name for p in cache.runs_dir.iterdir()] == [cache.raw_file("r1").parent.name]
        assert len(cache.frame("r1")) == 5


@pytest.mark.tensorflow
@pytest.mark.slow
def test_demo_on_an_object_store_keeps_its_history_local(s3_data_path, tmp_path,
                                                          run_ciml_subprocess):
    """The demo's raw cache, datasets and models go to S3; the generated history
    (a SQLite database and log files the sources read) and plots to a local folder."""
    work = tmp_path / "work"
    rc, out, err = run_ciml_subprocess(
        ["--data-path", str(s3_data_path), "demo", "--runs", "60", "--epochs", "2",
         "--work-dir", str(work)], timeout=900)
    assert rc == 0, err[-3000:]
    assert f"Generating a CI history of 60 runs in {work / 'demo-history'}" in out
    assert (work / "demo-history" / "subunit2sql.db").is_file()
    assert list((work / "demo-plots").rglob("*.png"))
    for name, exp in (("demo-status", "demo-dnn"), ("demo-cause", "demo-gbdt")):
        assert (s3_data_path.dataset(name) / "zarr.json").exists(), name
        assert (s3_data_path.model(name, exp) / "metadata.json").exists(), name
    assert not (s3_data_path.root / "demo-history").exists()
    # The suggested commands name the catalog too: without it they could not
    # find the raw cache (the test's catalog comes from $CIML_CATALOG_URI).
    explore = out.split("Keep exploring:", 1)[1]
    run_list = next(line.split() for line in explore.splitlines() if " run list " in line)
    assert "--catalog-uri" in run_list
    rc, listed, err = run_ciml_subprocess(run_list[1:])
    assert rc == 0 and "tempest-full" in listed, err[-2000:]
    # No SQLite prediction store on S3: the last lines say what to give instead.
    assert "--store-uri" in out.split("Keep exploring:", 1)[1]


def test_serve_on_an_object_store_wants_a_token_it_does_not_keep(s3_data_path, monkeypatch,
                                                                  run_ciml):
    monkeypatch.delenv("CIML_SERVE_TOKEN", raising=False)
    rc, out, err = run_ciml(["--data-path", str(s3_data_path), "serve", "--port", "0"])
    assert rc == 1
    assert "CIML_SERVE_TOKEN" in err and "--token-file" in err
    assert "Traceback" not in err
