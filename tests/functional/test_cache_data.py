"""``ciml cache-data`` end to end: real databases, a faulty log server, kill -9, two processes."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ciml.cache import RawCache
from ciml.generator import DEFECTS, generate_history
from ciml.testing.servers import CIServer

JOB = "tempest-full"


def make_history(root, base_url, runs=40, bad_fraction=0.0, db_uri=None, seed=11):
    return generate_history(root, runs=runs, seed=seed, jobs=(JOB,), duration=(60, 120),
                            base_url=base_url, db_uri=db_uri, bad_fraction=bad_fraction,
                            tests=False)


@pytest.fixture
def served(tmp_path):
    """A generated history served by the local log server (started before generating,
    so the artifacts URLs point at it)."""
    server = CIServer(root=tmp_path / "hist" / "logs").start()
    (tmp_path / "hist" / "logs").mkdir(parents=True)
    yield server, tmp_path / "hist"
    server.stop()


@pytest.fixture
def data_path(any_data_path):
    """Every test here runs against a local folder and against S3 (SeaweedFS)."""
    return any_data_path


def local_only(data_path, why):
    if data_path.is_remote:
        pytest.skip(f"local data path only: {why}")


def args(data_path, db_uri, *extra):
    return ["--data-path", str(data_path.root), "cache-data", "--db-uri", db_uri,
            "--build-name", JOB, "--backoff", "0.01", "-f", "json", *extra]


def summary_of(out):
    return json.loads(out)


def check_consistent(data_path):
    """Every indexed run reads back; nothing but complete run folders is on disk."""
    with RawCache(data_path) as cache:
        runs = cache.runs()
        for run in runs:
            assert len(cache.frame(run.id)) > 0
            assert len(cache.raw_file(run.id).read_bytes()) > 0
        folders = {p.name for p in cache.runs_dir.iterdir() if not p.name.startswith(".")}
        assert {cache.raw_file(r.id).parent.name for r in runs} <= folders
        return runs


@pytest.mark.parametrize("processes", ["0", "2"])
def test_every_rejection_reason_is_indexed(served, data_path, run_ciml, processes):
    server, root = served
    history = make_history(root, server.url, runs=60, bad_fraction=0.25)
    defects = {r["run_id"]: r["defect"] for r in history.runs if r["defect"]}
    assert set(defects.values()) == set(DEFECTS)
    rc, out, err = run_ciml(args(data_path, history.db_uri, "--workers", "4",
                                 "--processes", processes))
    assert rc == 0, err
    summary = summary_of(out)
    good = history.good_runs(JOB)
    assert summary["selected"] == len(history.runs)
    assert summary["cached"] == len(good)
    assert summary["unavailable"] == len(defects)
    assert summary["transient"] == 0
    with RawCache(data_path) as cache:
        recorded = {u["run_id"]: u["reason"] for u in cache.unavailable(JOB)}
        assert recorded == defects
        for run in good:
            assert cache.state(run["run_id"]) == "cached"
            rec = cache.record(run["run_id"])
            assert rec.status == run["status"]
            assert rec.metadata["node_provider"] == run["node_provider"]
            # Its content kept exactly as the server holds it (gunzipped), packed.
            served_file = history.logs_dir / rec.artifacts_url[len(server.url):] / run[
                "dstat_path"]
            served = served_file.read_bytes()
            if served[:2] == b"\x1f\x8b":
                served = gzip.decompress(served)
            assert cache.fetched_content(run["run_id"]) == served
            sizes = cache.sizes(run["run_id"])
            assert sizes["fetched"] == served_file.stat().st_size
            assert len(cache.frame(run["run_id"])) == run["rows"]
    # The second run skips everything it knows.
    rc, out, err = run_ciml(args(data_path, history.db_uri))
    summary = summary_of(out)
    assert summary["cached"] == 0
    assert summary["skipped_cached"] == len(good)
    assert summary["skipped_unavailable"] == len(defects)
    # run list / run list --unavailable show the same.
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list", "-f", "json"])
    listed = json.loads(out)
    assert len(listed) == len(good)
    assert set(listed[0]) == {"id", "build_name", "status", "provider", "start", "samples",
                              "incomplete"}
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list",
                             "--unavailable", "-f", "json"])
    assert {row["id"]: row["reason"] for row in json.loads(out)} == defects
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "show",
                             good[0]["run_id"], "-f", "json"])
    shown = json.loads(out)
    assert shown["state"] == "cached" and "cpu_usr" in shown["metric_columns"]


def test_too_large_and_retry_unavailable(served, data_path, run_ciml):
    server, root = served
    history = make_history(root, server.url, runs=6)
    rc, out, err = run_ciml(args(data_path, history.db_uri, "--max-bytes", "100"))
    summary = summary_of(out)
    assert summary["unavailable"] == 6
    assert json.loads(out)["reasons"] == {"too-large": 6}
    rc, out, err = run_ciml(args(data_path, history.db_uri))
    assert summary_of(out)["skipped_unavailable"] == 6
    rc, out, err = run_ciml(args(data_path, history.db_uri, "--retry-unavailable"))
    summary = summary_of(out)
    assert summary["cached"] == 6 and summary["total_unavailable"] == 0


def test_server_faults(served, data_path, run_ciml):
    server, root = served
    history = make_history(root, server.url, runs=12)
    server.latency = 0.02
    # Recoverable: a few 500s and dropped connections are retried.
    server.fault("*dstat-csv_log*", status=500, times=3)
    server.fault("*dstat-csv_log*", drop=True, times=3)
    # Persistent: one run's server keeps failing.
    victim = history.runs[0]
    prefix = "/" + victim["artifacts_url"][len(server.url):]
    server.fault(prefix + "*", status=500)
    rc, out, err = run_ciml(args(data_path, history.db_uri, "--retries", "3"))
    assert rc == 0, err
    summary = summary_of(out)
    assert summary["cached"] == 11
    assert summary["transient"] == 1
    assert summary["unavailable"] == 0
    with RawCache(data_path) as cache:
        # Transient failures are not recorded: the next run tries again.
        assert cache.state(victim["run_id"]) is None
    server.clear_faults()
    rc, out, err = run_ciml(args(data_path, history.db_uri))
    summary = summary_of(out)
    assert summary["cached"] == 1 and summary["skipped_cached"] == 11


def test_mariadb_source(tmp_path, data_path, run_ciml, mariadb_url):
    import sqlalchemy as sa

    base = sa.engine.make_url(mariadb_url)
    name = f"{base.database}_cd{os.getpid()}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    try:
        uri = base.set(database=name).render_as_string(hide_password=False)
        history = make_history(tmp_path / "hist", None, runs=15, db_uri=uri)
        rc, out, err = run_ciml(args(data_path, uri, "--limit", "10", "--balanced"))
        assert rc == 0, err
        summary = summary_of(out)
        assert summary["selected"] == 10 and summary["cached"] == 10
        cached = check_consistent(data_path)
        statuses = [r.status for r in cached]
        assert "failed" in statuses and "passed" in statuses
        rc, out, err = run_ciml(args(data_path, uri, "--filter", "build_queue=gate"))
        gate = [r for r in history.runs if r["pipeline"] == "gate"]
        assert summary_of(out)["selected"] == len(gate)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


def test_wrong_password_is_never_printed(mariadb_url, data_path, run_ciml_subprocess):
    import sqlalchemy as sa

    uri = sa.engine.make_url(mariadb_url).set(password="Hunter2-Secret").render_as_string(
        hide_password=False)
    for debug in ([], ["--debug"]):
        rc, out, err = run_ciml_subprocess(
            [*debug, "--data-path", str(data_path.root), "cache-data", "--db-uri", uri,
             "--build-name", JOB], timeout=120)
        assert rc != 0
        assert "Hunter2-Secret" not in out + err
        assert "***" in err
        if not debug:
            assert len(err.strip().splitlines()) == 1, err


def test_zuul_source(served, data_path, run_ciml):
    server, root = served
    history = make_history(root, server.url, runs=20, bad_fraction=0.1)
    builds = json.loads(history.zuul_builds.read_text())
    token = "zuul-token-s3cret"
    with CIServer(root=history.logs_dir, builds=builds, token=token) as zuul:
        rc, out, err = run_ciml([
            "--data-path", str(data_path.root), "cache-data", "--source", "zuul",
            "--zuul-url", zuul.zuul_url, "--tenant", "openstack", "--build-name", JOB,
            "--api-token", token, "--page-size", "7", "-f", "json"])
    assert rc == 0, err
    summary = summary_of(out)
    # The builds a Zuul source must skip (no logs, not final) are not listed.
    assert summary["selected"] == len(history.runs)
    assert summary["cached"] == len(history.good_runs(JOB))
    with RawCache(data_path) as cache:
        records = cache.runs()
    rec = records[0]
    assert rec.source == "zuul" and rec.result in ("SUCCESS", "FAILURE", "TIMED_OUT",
                                                   "POST_FAILURE")
    # The API does not say where a build ran: each build's inventory does.
    provider = {r["build_uuid"]: r["node_provider"] for r in history.runs}
    assert {r.id: r.metadata.get("node_provider") for r in records} == {
        r.id: provider[r.id] for r in records}
    assert all(r.metadata["node_cloud"] == provider[r.id].split("-")[0] for r in records)
    assert server.hits("*/zuul-info/inventory.yaml") == summary["selected"]
    # The token is for the API: the log server never sees it, nor does the output.
    assert server.authorized_files == []
    assert token not in out + err
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list",
                             "-f", "json", "-c", "id", "-c", "provider"])
    assert rc == 0, err
    assert {r["id"]: r["provider"] for r in json.loads(out)} == {
        r.id: provider[r.id] for r in records}


def test_zuul_inventory_outage_is_completed_by_the_next_run(served, data_path, run_ciml):
    """12.5: a build whose inventory failed transiently gets its provider next time."""
    server, root = served
    history = make_history(root, server.url, runs=8)
    builds = json.loads(history.zuul_builds.read_text())
    victim_run = history.good_runs(JOB)[0]
    victim = victim_run["build_uuid"]
    victim_logs = victim_run["artifacts_url"][len(server.url) - 1:]
    provider = {r["build_uuid"]: r["node_provider"] for r in history.runs}
    command = ["--data-path", str(data_path.root), "cache-data", "--source", "zuul",
               "--build-name", JOB, "--tenant", "openstack", "--retries", "0", "-f", "json"]
    with CIServer(root=history.logs_dir, builds=builds) as zuul:
        server.fault(f"{victim_logs}zuul-info/inventory.yaml", status=503)
        rc, out, err = run_ciml([*command, "--zuul-url", zuul.zuul_url])
        assert rc == 0, err
        assert summary_of(out)["incomplete"] == 1
        rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list",
                                 "-f", "json"])
        listed = {r["id"]: r for r in json.loads(out)}
        assert listed[victim]["provider"] == "" and "503" in listed[victim]["incomplete"]
        assert all(r["incomplete"] == "" for i, r in listed.items() if i != victim)
        server.clear_faults()
        rc, out, err = run_ciml([*command, "--zuul-url", zuul.zuul_url])
    assert rc == 0, err
    summary = summary_of(out)
    assert summary["completed"] == 1 and summary["incomplete"] == 0
    assert summary["cached"] == 0
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "run", "list", "-f", "json"])
    listed = {r["id"]: r for r in json.loads(out)}
    assert listed[victim]["provider"] == provider[victim]
    assert listed[victim]["incomplete"] == ""


def test_lifecycle_hook_and_path_traversal(served, data_path, run_ciml):
    import sqlalchemy as sa

    from ciml import hookspecs
    from ciml.plugins import get_manager
    from ciml_plugins.sources import subunit2sql_schema as schema

    server, root = served
    history = make_history(root, server.url, runs=5)
    good = history.good_runs(JOB)[0]
    engine = sa.create_engine(history.db_uri)
    with engine.begin() as conn:
        row = conn.execute(sa.select(schema.runs).where(schema.runs.c.uuid == good["run_id"])
                           ).one()
        pk = conn.execute(schema.runs.insert().values(
            uuid="../../../../escaped", passes=1, fails=0, run_time=1.0,
            artifacts=row.artifacts, run_at=row.run_at)).inserted_primary_key[0]
        conn.execute(schema.run_metadata.insert().values(run_id=pk, key="build_name",
                                                         value=JOB))
    engine.dispose()

    seen = []

    class Spy:
        @hookspecs.hookimpl
        def ciml_run_cached(self, run, data_path):
            seen.append((run.id, data_path.root))

    get_manager().add_plugin(Spy(), "spy")
    rc, out, err = run_ciml(args(data_path, history.db_uri))
    assert rc == 0, err
    assert sorted(i for i, _ in seen) == sorted([r["run_id"] for r in history.runs]
                                                + ["../../../../escaped"])
    assert {p for _, p in seen} == {data_path.root}
    check_consistent(data_path)
    for path in data_path.root.parent.rglob("escaped*"):
        assert data_path.raw / "runs" in path.parents


def test_legacy_console_script(served, data_path, run_ciml_subprocess):
    server, root = served
    history = make_history(root, server.url, runs=6)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from ciml.legacy import cache_data; "
         "sys.exit(cache_data())", "--build-name", JOB, "--db-uri", history.db_uri,
         "--limit", "4", "--data-path", str(data_path.root)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with RawCache(data_path) as cache:
        assert cache.counts(JOB)["cached"] == 4


def _cache_data_process(data_path, db_uri, workers=2):
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
         *args(data_path, db_uri, "--workers", str(workers))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cached_count(data_path):
    if not data_path.is_remote and not (data_path.raw / "index.sqlite").exists():
        return 0
    try:
        with RawCache(data_path) as cache:
            return cache.counts()["cached"]
    except Exception:  # noqa: BLE001 -- the writer is still creating the catalog
        return 0


def test_kill_9_then_resume(served, data_path):
    server, root = served
    history = make_history(root, server.url, runs=30)
    server.latency = 0.1
    proc = _cache_data_process(data_path, history.db_uri)
    deadline = time.monotonic() + 60
    while _cached_count(data_path) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    partial = check_consistent(data_path)
    assert 4 <= len(partial) < 30
    server.latency = 0.0
    proc = _cache_data_process(data_path, history.db_uri)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = summary_of(out)
    assert summary["skipped_cached"] == len(partial)
    assert summary["total_cached"] == 30
    assert len(check_consistent(data_path)) == 30
    leftovers = [p for p in (data_path.raw / "runs").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_ctrl_c_then_resume(served, data_path):
    server, root = served
    history = make_history(root, server.url, runs=20)
    server.latency = 0.1
    proc = _cache_data_process(data_path, history.db_uri)
    deadline = time.monotonic() + 60
    while _cached_count(data_path) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    partial = check_consistent(data_path)
    # It says what was kept, in one line, and no worker's traceback.
    assert err.strip().splitlines()[-1] == (
        f"interrupted: {len(partial)} runs cached ({len(partial)} of {JOB} in the cache), "
        "rerun to continue")
    assert "Traceback" not in err
    server.latency = 0.0
    proc = _cache_data_process(data_path, history.db_uri)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert summary_of(out)["skipped_cached"] == len(partial)
    assert len(check_consistent(data_path)) == 20


def test_two_processes_on_one_data_path(served, data_path):
    server, root = served
    history = make_history(root, server.url, runs=40, bad_fraction=0.1)
    server.latency = 0.01
    procs = [_cache_data_process(data_path, history.db_uri, workers=4) for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    summaries = [summary_of(out) for out, _ in results]
    good = len(history.good_runs(JOB))
    assert all(s["total_cached"] == good for s in summaries)
    # Each counts only the runs it stored itself (12.7).
    assert sum(s["cached"] for s in summaries) == good
    assert all(s["cached"] + s["skipped_cached"] == good for s in summaries)
    cached = check_consistent(data_path)
    assert len(cached) == good
    with RawCache(data_path) as cache:
        assert len(cache.unavailable()) == len(history.runs) - good


def test_automatic_parse_processes_start_for_big_jobs(served, data_path, run_ciml,
                                                      monkeypatch):
    from ciml import collect

    server, root = served
    history = make_history(root, server.url, runs=24, bad_fraction=0.2)
    monkeypatch.setattr(collect, "AUTO_PROCESSES_AFTER", 6)
    monkeypatch.setattr(collect, "auto_processes", lambda workers, source=None: 2)
    rc, out, err = run_ciml(args(data_path, history.db_uri, "--workers", "4"))
    assert rc == 0, err
    summary = summary_of(out)
    assert summary["processes"] == 2
    assert summary["cached"] == len(history.good_runs(JOB))
    with RawCache(data_path) as cache:
        assert {u["run_id"]: u["reason"] for u in cache.unavailable()} == {
            r["run_id"]: r["defect"] for r in history.runs if r["defect"]}
    check_consistent(data_path)
