"""The CI-history generator: determinism, real layouts, cause signatures, database rows."""

import collections
import datetime as dt
import gzip
import hashlib
import json
import pathlib
import urllib.parse
import urllib.request

import numpy as np
import pytest
import sqlalchemy as sa

from ciml import generator
from ciml.errors import MetricsUnavailable
from ciml.records import RunRecord
from ciml_plugins.metrics.dstat import DstatMetricSource, parse_dstat
from ciml_plugins.sources import subunit2sql_schema as schema

KW = dict(runs=40, seed=7, duration=(240, 480), bad_fraction=0.2)


def _digest(history):
    files = sorted(p for p in history.out_dir.rglob("*") if p.is_file() and p.suffix != ".db")
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(history.out_dir)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _db_rows(uri):
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(t.c.id))]
                    for t in (schema.runs, schema.run_metadata, schema.tests, schema.test_runs)}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return generator.generate_history(tmp_path_factory.mktemp("history"), **KW)


@pytest.fixture(scope="module")
def frames(history):
    source = DstatMetricSource()
    out = {}
    for run in history.good_runs():
        record = RunRecord(id=run["run_id"], build_name=run["build_name"],
                           status=run["status"], artifacts_url=run["artifacts_url"],
                           start=run["start"])
        out[run["run_id"]] = source.load(record)[1]
    return out


def test_deterministic(tmp_path):
    # A base URL keeps the output folder's path out of the files.
    kw = {**KW, "runs": 12, "base_url": "http://logs.example.org/"}
    one = generator.generate_history(tmp_path / "one", **kw)
    two = generator.generate_history(tmp_path / "two", **kw)
    assert _digest(one) == _digest(two)
    assert _db_rows(one.db_uri) == _db_rows(two.db_uri)
    assert one.runs == two.runs
    other = generator.generate_history(tmp_path / "other", **{**kw, "seed": 8})
    assert _digest(other) != _digest(one)


def test_runs_cover_everything(history):
    runs = history.runs
    assert len(runs) == 40
    for run in runs:
        assert set(generator.RUN_KEYS) <= set(run)
    assert {r["variant"] for r in runs} == set(generator.VARIANTS)
    assert {r["cause"] for r in runs} == set(generator.CAUSES)
    assert {r["build_name"] for r in runs} == set(generator.DEFAULT_JOBS)
    paths = {r["dstat_path"] for r in runs if r["defect"] is None}
    assert set(generator.DSTAT_PATHS) <= paths
    assert {r["defect"] for r in runs} - {None} == set(generator.DEFECTS)
    assert len({r["node_provider"] for r in runs}) >= 8
    assert [r["start"] for r in runs] == sorted(r["start"] for r in runs)
    assert all(r["status"] == ("passed" if r["cause"] == "passed" else "failed")
               for r in runs)


def test_every_good_file_parses_with_its_rows(history, frames):
    for run in history.good_runs():
        frame = frames[run["run_id"]]
        assert len(frame) == run["rows"]
        expected = {"0.7.2": 31, "0.7.3": 30, "0.7.4": 32}[run["variant"]]
        assert frame.shape[1] == expected
        # dstat starts a few seconds before the run's recorded start.
        assert abs((frame.index[0] - run["start"]).total_seconds()) < 30


def _dstat_bytes(run):
    path = pathlib.Path(urllib.request.url2pathname(
        urllib.parse.urlparse(run["artifacts_url"]).path)) / run["dstat_path"]
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_layouts_are_the_real_ones(history, sample_data):
    real = {
        "0.7.2": "dstat-csv_log.dstat-0.7.2.generated.txt",
        "0.7.3": "dstat-csv_log.dstat-0.7.3.generated.txt",
        "0.7.4": "dstat-csv_log.debian-0.7.4-devstack-top-opts.generated.txt",
    }
    for variant, name in real.items():
        real_bytes = (sample_data / "dstat" / name).read_bytes()
        real_lines = real_bytes.decode().split("\n")
        data = _dstat_bytes(next(r for r in history.good_runs() if r["variant"] == variant))
        ours = data.decode().split("\n")
        n_head = next(i for i, line in enumerate(real_lines) if line.startswith('"time"')) + 1
        # Same preamble shape (0.7.2's blank line included), same two header lines.
        assert ours[0] == real_lines[0]
        assert [line.split(",")[0] for line in ours[:n_head - 2]] == \
            [line.split(",")[0] for line in real_lines[:n_head - 2]]
        assert ours[n_head - 2:n_head] == real_lines[n_head - 2:n_head]
        assert ours[n_head + 1].count(",") == real_lines[n_head + 1].count(",")
        assert parse_dstat(data).columns.tolist() == parse_dstat(real_bytes).columns.tolist()
        cells = ours[n_head + 1].split(",")
        if variant == "0.7.2":
            # 0.7.2 writes whole numbers as "123.0", later versions as "123".
            assert all("." in c for c in cells[1:])
        else:
            assert any(c.isdigit() for c in cells[1:])
        if variant == "0.7.4":
            assert "\t" in cells[26] and cells[26].startswith("Top: ")


def test_defects_are_rejected_with_their_reason(history):
    source = DstatMetricSource()
    bad = [r for r in history.runs if r["defect"]]
    assert len(bad) == 8
    for run in bad:
        record = RunRecord(id=run["run_id"], build_name=run["build_name"],
                           status=run["status"], artifacts_url=run["artifacts_url"],
                           start=run["start"])
        with pytest.raises(MetricsUnavailable) as info:
            source.load(record)
        assert info.value.reason == run["defect"]


def _hw(run):
    return generator.PROVIDERS[run["node_provider"]]


def test_cause_signatures(history, frames):
    good = [r for r in history.good_runs()]
    by_cause = collections.defaultdict(list)
    for run in good:
        by_cause[run["cause"]].append(run)
    lo, hi = KW["duration"]

    for run in by_cause["oom"]:
        frame = frames[run["run_id"]]
        total = _hw(run)[2] * 1024 ** 3
        assert frame["mem_used"].max() > 0.9 * total
        assert frame["paging_out"].iloc[-20:].mean() > 100 * max(
            frame["paging_out"].iloc[:20].mean(), 1)
        assert run["duration"] < hi
    for run in by_cause["timeout"]:
        frame = frames[run["run_id"]]
        assert run["duration"] == hi
        tail = frame["cpu_usr"].iloc[-len(frame) // 4:]
        assert tail.mean() < 5
    for run in by_cause["network"]:
        frame = frames[run["run_id"]]
        assert run["duration"] <= 0.35 * hi + 1 or run["duration"] == 60
        assert frame["net_recv"].iloc[-10:].mean() < 1000
        assert frame["tcp_syn"].iloc[-10:].sum() > 0
    for run in by_cause["passed"] + by_cause["test-failure"]:
        frame = frames[run["run_id"]]
        total = _hw(run)[2] * 1024 ** 3
        assert frame["mem_used"].max() < 0.85 * total
        assert frame["net_recv"].mean() > 10_000


def test_providers_have_different_signatures(tmp_path):
    hist = generator.generate_history(
        tmp_path, runs=24, seed=3, duration=(300, 300), jobs=["tempest-full"],
        providers=["vexxhost-sjc1", "citycloud-kna1"], bad_fraction=0, new_year=False)
    source = DstatMetricSource()
    usr = collections.defaultdict(list)
    free = collections.defaultdict(list)
    for run in hist.runs:
        if run["cause"] != "passed":
            continue
        frame = source.parse(source.fetch(RunRecord(
            id=run["run_id"], build_name="tempest-full", status="passed",
            artifacts_url=run["artifacts_url"], start=run["start"])).data, None)
        usr[run["node_provider"]].append(frame["cpu_usr"].mean())
        free[run["node_provider"]].append(frame["mem_free"].mean())
    assert np.mean(usr["citycloud-kna1"]) > 1.5 * np.mean(usr["vexxhost-sjc1"])
    assert np.mean(free["vexxhost-sjc1"]) > 2 * np.mean(free["citycloud-kna1"])


def test_new_year_run(history, frames):
    run = history.runs[len(history.runs) // 2]
    assert [r for r in history.runs if r["new_year"]] == [run]
    assert run["start"] == dt.datetime(2025, 12, 31, 23, 55, tzinfo=dt.timezone.utc)
    assert run["defect"] is None and run["cause"] == "passed"
    frame = frames[run["run_id"]]
    assert frame.index[0].year == 2025 and frame.index[-1].year == 2026
    assert (frame.index[-1] - frame.index[0]).total_seconds() == run["rows"] - 1


def test_database_contents(history):
    engine = sa.create_engine(history.db_uri)
    with engine.connect() as conn:
        runs = conn.execute(sa.select(schema.runs)).mappings().all()
        meta = collections.defaultdict(dict)
        for row in conn.execute(sa.select(schema.run_metadata)):
            meta[row.run_id][row.key] = row.value
        test_runs = conn.execute(sa.select(schema.test_runs)).mappings().all()
        tests = conn.execute(sa.select(schema.tests)).mappings().all()
        version = conn.execute(sa.select(schema.alembic_version)).scalar()
    engine.dispose()
    assert version == schema.ALEMBIC_HEAD
    assert len(runs) == len(history.runs)
    by_uuid = {r["run_id"]: r for r in history.runs}
    for row in runs:
        run = by_uuid[row["uuid"]]
        md = meta[row["id"]]
        assert md["build_name"] == run["build_name"]
        assert md["build_uuid"] == run["build_uuid"]
        assert md["node_provider"] == run["node_provider"]
        assert md["build_queue"] == run["pipeline"]
        assert md["project"] == run["project"]
        assert row["artifacts"] + "/" == run["artifacts_url"]
        assert row["run_at"] == run["start"].replace(tzinfo=None)
        # subunit2sql's rule: failed when fails > 0 or passes == 0.
        failed = row["fails"] > 0 or row["passes"] == 0
        assert failed == (run["status"] == "failed")
        assert (row["passes"] + row["fails"] + row["skips"]
                == sum(1 for t in test_runs if t["run_id"] == row["id"]))
    keys = set(json.loads((history.out_dir / "history.json").read_text())[0])
    assert {"run_id", "start", "defect"} <= keys
    assert {t["test_id"] for t in test_runs} <= {t["id"] for t in tests}
    assert all(0 <= t["start_time_microsecond"] < 10 ** 6 for t in test_runs)


def test_zuul_builds_and_mqtt_events(history):
    builds = json.loads(history.zuul_builds.read_text())
    flat = json.loads(history.zuul_builds_flat.read_text())
    assert len(builds) == len(flat)
    ids = [b["_id"] for b in builds]
    assert ids == sorted(ids, reverse=True)
    final = {b["uuid"]: b for b in builds if b["final"] and b["log_url"]}
    for run in history.runs:
        build = final[run["build_uuid"]]
        assert build["job_name"] == run["build_name"]
        assert build["log_url"] == run["artifacts_url"]
        assert build["result"] == run["result"]
        assert build["ref"]["project"] == run["project"]
    assert len(final) == len(history.runs)
    assert any(b["log_url"] is None for b in builds)
    assert any(not b["final"] for b in builds)
    assert all("ref" not in b or isinstance(b["ref"], str) for b in flat)
    assert {b["uuid"] for b in flat} == {b["uuid"] for b in builds}
    assert all(b["project"] for b in flat)

    events = json.loads(history.mqtt_events.read_text())
    firehose = [e for e in events if e["topic"].startswith("gearman-subunit/")]
    zuul = [e for e in events if e["topic"].startswith("zuul/")]
    assert len(firehose) == len(zuul) == len(history.runs)
    statuses = {e["payload"]["build_uuid"]: e["payload"]["status"] for e in firehose}
    for run in history.runs:
        assert statuses[run["build_uuid"]] == ("success" if run["status"] == "passed"
                                               else "failed")
    build = zuul[0]["payload"]["buildset"]["builds"][0]
    assert set(build) >= {"job_name", "uuid", "log_url", "result", "start_time", "end_time"}


def test_new_year_with_an_explicit_start(tmp_path):
    utc = dt.timezone.utc
    kw = dict(runs=12, seed=2, duration=(60, 90), bad_fraction=0)
    spring = generator.generate_history(tmp_path / "a", start=dt.datetime(2026, 3, 1, tzinfo=utc),
                                        **kw)
    assert not any(r["new_year"] for r in spring.runs)
    winter = generator.generate_history(tmp_path / "b", start=dt.datetime(2026, 12, 31, 10,
                                                                          tzinfo=utc), **kw)
    crossing = [r for r in winter.runs if r["new_year"]]
    assert len(crossing) == 1
    assert crossing[0]["start"] == dt.datetime(2026, 12, 31, 23, 55, tzinfo=utc)
    assert [r["start"] for r in winter.runs] == sorted(r["start"] for r in winter.runs)


def test_cause_key(tmp_path):
    hist = generator.generate_history(tmp_path, runs=5, seed=1, duration=(60, 90),
                                      bad_fraction=0, new_year=False, cause_key="cause")
    engine = sa.create_engine(hist.db_uri)
    with engine.connect() as conn:
        causes = conn.execute(sa.select(schema.runs.c.uuid, schema.run_metadata.c.value).join(
            schema.run_metadata, schema.run_metadata.c.run_id == schema.runs.c.id).where(
            schema.run_metadata.c.key == "cause")).all()
    engine.dispose()
    assert dict(causes) == {r["run_id"]: r["cause"] for r in hist.runs}


def test_base_url_and_file_urls(tmp_path):
    served = generator.generate_history(tmp_path / "a", runs=3, seed=1, duration=(60, 90),
                                        base_url="http://127.0.0.1:9/", bad_fraction=0)
    assert all(r["artifacts_url"].startswith("http://127.0.0.1:9/") for r in served.runs)
    local = generator.generate_history(tmp_path / "b", runs=3, seed=1, bad_fraction=0,
                                       duration=(60, 90))
    assert all(r["artifacts_url"].startswith("file://") for r in local.runs)


def test_into_mariadb(mariadb_url, tmp_path):
    hist = generator.generate_history(tmp_path, runs=6, seed=2, duration=(120, 180),
                                      db_uri=mariadb_url)
    assert hist.db_uri == mariadb_url
    engine = sa.create_engine(mariadb_url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar()
        names = set(conn.execute(sa.select(schema.run_metadata.c.value).where(
            schema.run_metadata.c.key == "build_name")).scalars())
    engine.dispose()
    assert n >= 6
    assert names <= set(generator.DEFAULT_JOBS)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generator.generate_history(tmp_path, runs=2, providers=["nowhere"])
    with pytest.raises(ValueError):
        generator.generate_history(tmp_path, runs=2, duration=(100, 50))


def test_prometheus_series_are_the_dstat_files_signals(tmp_path):
    history = generator.generate_history(tmp_path / "h", runs=20, seed=2, tests=False,
                                         bad_fraction=0.35, prometheus=True)
    nodes = generator.read_node_series(history.prometheus_dir)
    for run in history.runs:
        if run["defect"] == "missing":
            # Prometheus never knew that node: the source must say "unknown-node".
            assert run["node"] not in nodes
            continue
        seconds, columns = nodes[run["node"]]
        assert set(columns) == set(generator.NODE_SERIES)
        if run["defect"] is not None:
            continue
        frame = parse_dstat((history.logs_dir / run["artifacts_url"].split("/logs/", 1)[1]
                             / run["dstat_path"]).read_bytes(), start=run["start"])
        # The same node, the same seconds: the same values as dstat wrote them.
        stamps = frame.index.as_unit("s").asi8
        assert stamps[0] == seconds[0] and len(stamps) == len(seconds)
        for name in ("mem_used", "net_recv", "load_1m"):
            assert np.allclose(frame[name].to_numpy()[1:], columns[name][1:], rtol=1e-6)
        mem_avail = columns["mem_avail"].astype(np.float64)
        assert np.allclose(mem_avail, columns["mem_free"].astype(np.float64)
                           + columns["mem_buff"] + columns["mem_cach"], rtol=1e-5)
