"""The raw cache: atomic stores, exact raw bytes, series.bin, the index, threads and processes."""

import datetime as dt
import multiprocessing
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from ciml import fileutil
from ciml.base import FetchedMetrics
from ciml.cache import RawCache
from ciml.errors import MetricsUnavailable, NotFoundError
from ciml.records import RunRecord

UTC = dt.timezone.utc


def run(i, build="tempest-full", **kw):
    kw.setdefault("start", dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i))
    return RunRecord(id=f"run-{i:03d}", build_name=build, status="passed",
                     metadata={"node_provider": "rax-dfw"}, **kw)


def frame(n=5, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC", name="time").as_unit("ns")
    return pd.DataFrame(rng.random((n, 3)).astype(dtype), index=index,
                        columns=["cpu_usr", "mem_used", "net_recv"])


def fetched(data=b"\x1f\x8b raw bytes \x00\xff"):
    return FetchedMetrics(name="dstat-csv_log.txt.gz", data=data,
                          url="http://logs/x/controller/logs/dstat-csv_log.txt.gz")


@pytest.fixture
def cache(data_path):
    with RawCache(data_path) as c:
        yield c


def test_store_keeps_raw_bytes_record_and_series(cache):
    r, f = run(1), frame()
    payload = bytes(range(256)) * 3
    cache.store(r, fetched(payload), f)
    assert cache.state(r.id) == "cached"
    # Packed (one frame: no table in it) and given back byte for byte.
    assert cache.fetched_content(r.id) == payload
    assert cache.raw_file(r.id).name == "dstat-csv_log.txt.gz.cimlraw"
    assert cache.info(r.id)["raw_packed"] == "zstd"
    assert cache.info(r.id)["fetched_name"] == "dstat-csv_log.txt.gz"
    assert cache.record(r.id) == r
    got = cache.frame(r.id)
    pd.testing.assert_frame_equal(got, f, check_freq=False)
    assert str(got.index.tz) == "UTC"
    info = cache.info(r.id)
    assert info["samples"] == 5 and info["columns"] == list(f.columns)
    assert info["url"].endswith("dstat-csv_log.txt.gz")


def test_series_is_compressed_and_exact(cache):
    f = np.round(frame(n=600) * 100, 3)  # dstat-like: 3 decimals
    f["net_recv"] = frame(n=600, seed=1)["net_recv"]  # and one column that is not
    cache.store(run(1), fetched(), f)
    folder = cache.raw_file("run-001").parent
    assert (folder / "series.bin").is_file() and not (folder / "series.npz").exists()
    got = cache.series("run-001")
    assert got.values.dtype == np.float64 and got.columns == list(f.columns)
    assert got.values.tobytes() == f.to_numpy().tobytes()  # every bit
    # Two decimal columns of 17 bits of noise, one of 64: under 0.6 of float64.
    assert (folder / "series.bin").stat().st_size < 0.6 * 600 * 4 * 8
    sizes = cache.sizes("run-001")
    assert sizes["series"] == (folder / "series.bin").stat().st_size
    assert sizes["series"] == cache.info("run-001")["series_bytes"]
    assert sizes["total"] == sizes["raw"] + sizes["series"] + sizes["record"]
    assert sizes["fetched"] == len(fetched().data)


def _legacy(cache, i, f):
    """A run as an older ciml cached it: series.npz, uncompressed."""
    cache.store(run(i), fetched(), f)
    folder = cache.raw_file(f"run-{i:03d}").parent
    (folder / "series.bin").unlink()
    np.savez(folder / "series.npz", timestamps=f.index.asi8,
             values=f.to_numpy(), columns=np.array(list(f.columns)))
    return folder


def test_legacy_npz_series_reads_and_upgrades_in_place(cache):
    f = frame(n=50)
    folder = _legacy(cache, 1, f)
    pd.testing.assert_frame_equal(cache.frame("run-001"), f, check_freq=False)
    before = cache.sizes("run-001")["series"]
    saved = cache.upgrade_series("run-001")
    assert saved == before - (folder / "series.bin").stat().st_size
    assert not (folder / "series.npz").exists()
    assert cache.series("run-001").values.tobytes() == f.to_numpy().tobytes()
    assert cache.upgrade_series("run-001") is None  # nothing left to do


def test_upgrade_interrupted_after_the_new_file_keeps_both_readable(cache, monkeypatch):
    f = frame(n=20)
    folder = _legacy(cache, 1, f)
    monkeypatch.setattr(type(folder), "unlink", _fail)
    with pytest.raises(OSError):
        cache.upgrade_series("run-001")
    monkeypatch.undo()
    assert (folder / "series.npz").exists() and (folder / "series.bin").exists()
    assert cache.series("run-001").values.tobytes() == f.to_numpy().tobytes()
    assert cache.upgrade_series("run-001") > 0 and not (folder / "series.npz").exists()


def _fail(*args, **kwargs):
    raise OSError("disk gone")


def test_float32_series_stay_float32(cache):
    cache.store(run(1), fetched(), frame(dtype="float32"))
    assert (cache.frame("run-001").dtypes == np.float32).all()


def test_frame_never_reparses_the_raw_file(cache):
    cache.store(run(1), fetched(b"not even csv"), frame())
    assert len(cache.frame("run-001")) == 5


def test_runs_sorted_by_start_then_id_and_by_build(cache):
    cache.store(run(3), fetched(), frame())
    cache.store(run(1), fetched(), frame())
    cache.store(run(2, start=dt.datetime(2024, 1, 1, 1, tzinfo=UTC)), fetched(), frame())
    cache.store(run(9, build="grenade"), fetched(), frame())
    assert [r.id for r in cache.runs("tempest-full")] == ["run-001", "run-002", "run-003"]
    assert [r.id for r in cache.runs()] == ["run-001", "run-002", "run-003", "run-009"]
    assert [r.id for r in cache.runs("grenade")] == ["run-009"]
    assert cache.counts("tempest-full") == {"cached": 3, "unavailable": 0}


def test_unavailable_with_reason(cache):
    cache.mark_unavailable(run(1), "truncated-gzip", "run-001: truncated gzip")
    assert cache.state("run-001") == "unavailable"
    [entry] = cache.unavailable("tempest-full")
    assert entry["run_id"] == "run-001"
    assert entry["reason"] == "truncated-gzip"
    assert entry["message"] == "run-001: truncated gzip"
    assert entry["time"]
    assert cache.runs() == []
    with pytest.raises(NotFoundError):
        cache.record("run-001")
    # A retry that works replaces the unavailable entry.
    cache.store(run(1), fetched(), frame())
    assert cache.state("run-001") == "cached"
    assert cache.unavailable() == []


def test_marking_unavailable_never_uncaches(cache):
    cache.store(run(1), fetched(), frame())
    cache.mark_unavailable(run(1), "http-error", "late failure of another process")
    assert cache.state("run-001") == "cached"


def test_unknown_run(cache):
    assert cache.state("nope") is None
    for call in (cache.record, cache.frame, cache.raw_file):
        with pytest.raises(NotFoundError):
            call("nope")


@pytest.mark.parametrize("run_id", ["../../../etc/passwd", "/abs/path", "..", ".hidden",
                                    "a/b\\c", "x" * 300, "nul\x00byte", "ünïcødé"])
def test_run_ids_never_escape_the_cache(cache, data_path, run_id):
    r = RunRecord(id=run_id, build_name="b", status="passed")
    cache.store(r, FetchedMetrics(name="../../evil.gz", data=b"x", url="u"), frame())
    folder = cache.run_dir(run_id)
    assert folder.parent == cache.runs_dir
    assert not folder.name.startswith(".")
    assert cache.raw_file(run_id).parent == folder
    assert cache.record(run_id).id == run_id
    for path in data_path.root.rglob("*"):
        assert data_path.root in path.resolve().parents


def test_distinct_ids_stay_distinct(cache):
    cache.store(RunRecord(id="a/b", build_name="b", status="passed"), fetched(b"1"), frame())
    cache.store(RunRecord(id="a_b", build_name="b", status="passed"), fetched(b"2"), frame())
    assert cache.fetched_content("a/b") == b"1"
    assert cache.fetched_content("a_b") == b"2"


def test_corrupt_series_is_reported_not_crashing(cache):
    cache.store(run(1), fetched(), frame())
    (cache.raw_file("run-001").parent / "series.bin").write_bytes(b"garbage")
    with pytest.raises(MetricsUnavailable) as info:
        cache.frame("run-001")
    assert info.value.reason == "corrupt-cache"


def test_failure_while_storing_leaves_nothing(cache, monkeypatch):
    from ciml import cache as cache_module

    calls = []
    real = cache_module._write_synced

    def boom(path, data):
        calls.append(path.name)
        if path.name == "record.json":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(cache_module, "_write_synced", boom)
    with pytest.raises(OSError):
        cache.store(run(1), fetched(), frame())
    monkeypatch.setattr(cache_module, "_write_synced", real)
    assert calls[-1] == "record.json"
    assert cache.state("run-001") is None
    assert list(cache.runs_dir.iterdir()) == []


def test_folder_without_index_entry_is_not_data(cache):
    """A kill -9 between moving the folder and indexing leaves an unindexed folder."""
    cache.store(run(1), fetched(), frame())
    with sqlite3.connect(cache.index_path) as conn:
        conn.execute("DELETE FROM runs")
    assert cache.state("run-001") is None
    assert cache.runs() == []
    # The next store replaces it cleanly.
    cache.store(run(1), fetched(b"new"), frame())
    assert cache.fetched_content("run-001") == b"new"


def test_cleanup_removes_dead_processes_leftovers(cache):
    cache.runs_dir.mkdir(parents=True, exist_ok=True)
    dead = cache.runs_dir / ".tmp@999999999@abc@"
    dead.mkdir()
    (dead / "dstat-csv_log.txt.gz").write_bytes(b"half")
    mine = cache.runs_dir / fileutil.work_name("tmp")
    mine.mkdir()
    assert cache.cleanup() == 1
    assert not dead.exists() and mine.exists()


def test_index_is_wal(cache):
    cache.store(run(1), fetched(), frame())
    with sqlite3.connect(cache.index_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_store_concurrently(cache):
    errors = []

    def work(k):
        try:
            for i in range(k * 10, k * 10 + 10):
                cache.store(run(i), fetched(), frame(seed=i))
                cache.store(run(i % 7), fetched(), frame())  # same runs from every thread
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache.runs()) == 80
    for r in cache.runs():
        assert len(cache.frame(r.id)) == 5


def _store_many(root, offset, barrier):
    from ciml.paths import DataPath

    c = RawCache(DataPath(root))
    barrier.wait()
    for i in range(40):
        c.store(run(offset + i), fetched(), frame(seed=i))
        c.store(run(i), fetched(), frame())            # both processes store these
        c.mark_unavailable(run(1000 + i), "missing", "m")
    c.close()


def test_processes_share_a_cache(data_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_store_many, args=(str(data_path.root), off, barrier))
             for off in (100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with RawCache(data_path) as c:
        assert len(c.runs()) == 120
        assert len(c.unavailable()) == 40
        for r in c.runs():
            c.frame(r.id)
        leftovers = [p.name for p in c.runs_dir.iterdir() if p.name.startswith(".")]
        assert leftovers == []


def test_an_index_from_before_incomplete_metadata_is_upgraded(data_path):
    """Caches made by an older ciml keep working; their runs count as complete."""
    from ciml.cache import RawCache

    data_path.raw.mkdir(parents=True)
    with sqlite3.connect(data_path.raw / "index.sqlite") as conn:
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, build_name TEXT,"
                     " state TEXT NOT NULL, reason TEXT, message TEXT, dir TEXT, start TEXT,"
                     " samples INTEGER, record TEXT, time REAL NOT NULL)")
        conn.execute("INSERT INTO runs VALUES ('old', 'job', 'unavailable', 'missing', 'm',"
                     " NULL, '', NULL, '{}', 0)")
    with RawCache(data_path) as cache:
        assert cache.incomplete_ids() == set()
        assert cache.state("old") == "unavailable"
        cache.store(run(1), fetched(), frame())
        assert cache.state("run-001") == "cached"


def test_fetched_files_are_packed_and_come_back(cache, sample_data, monkeypatch):
    """A gzipped dstat file is kept as its content packed by column: smaller than
    the gzip, its content byte for byte; without packing, or in a cache from
    before, the file is as fetched and reads the same."""
    import gzip

    plain = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.2.generated.txt").read_bytes()
    zipped = gzip.compress(plain, 6)
    cache.store(run(1), fetched(zipped), frame())
    cache.store(run(2), fetched(plain), frame())
    for run_id, data in (("run-001", zipped), ("run-002", plain)):
        assert cache.fetched_content(run_id) == plain
        assert cache.raw_file(run_id).name.endswith(".cimlraw")
        sizes = cache.sizes(run_id)
        assert sizes["fetched"] == len(data)
        assert sizes["raw"] == cache.raw_file(run_id).stat().st_size < 0.8 * len(zipped)
    monkeypatch.setattr(RawCache, "pack_raw", False)
    cache.store(run(3), fetched(zipped), frame())
    assert cache.raw_file("run-003").read_bytes() == zipped
    assert cache.raw_file("run-003").name == "dstat-csv_log.txt.gz"
    assert cache.fetched_content("run-003") == plain
    assert cache.sizes("run-003")["raw"] == cache.sizes("run-003")["fetched"] == len(zipped)
    # A packed file damaged on disk is a clear error, not wrong bytes.
    path = cache.raw_file("run-001")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(MetricsUnavailable, match="unreadable"):
        cache.fetched_content("run-001")


def test_an_older_cache_s_fetched_files_are_packed_in_place(cache, sample_data, monkeypatch):
    """pack_fetched turns a file kept as fetched into the packed one, the record
    last but one, the old file last; a crash between those two leaves a file that
    the next call removes; nothing is done twice."""
    import gzip

    plain = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.2.generated.txt").read_bytes()
    zipped = gzip.compress(plain, 6)
    monkeypatch.setattr(RawCache, "pack_raw", False)
    cache.store(run(1), fetched(zipped), frame())
    cache.store(run(2), fetched(b"tiny"), frame())
    folder = cache.raw_file("run-001").parent
    assert cache.raw_file("run-001").name == "dstat-csv_log.txt.gz"
    saved = cache.pack_fetched("run-001")
    assert saved == len(zipped) - cache.raw_file("run-001").stat().st_size > 0
    assert cache.raw_file("run-001").name == "dstat-csv_log.txt.gz.cimlraw"
    assert not (folder / "dstat-csv_log.txt.gz").exists()
    assert cache.fetched_content("run-001") == plain
    assert cache.info("run-001")["raw_packed"] == "table"
    assert RawCache(cache.data_path).info("run-001")["raw_packed"] == "table"  # the catalog too
    assert cache.sizes("run-001")["fetched"] == len(zipped)
    assert cache.record("run-001") == run(1)
    assert cache.pack_fetched("run-001") is None
    assert cache.pack_fetched("run-002") is None  # would not shrink: kept as fetched
    assert cache.fetched_content("run-002") == b"tiny"
    # A crash after the record named the packed file, before the old one went.
    (folder / "dstat-csv_log.txt.gz").write_bytes(zipped)
    assert cache.fetched_content("run-001") == plain
    assert cache.pack_fetched("run-001") is None
    assert not (folder / "dstat-csv_log.txt.gz").exists()


def test_scan_streams_what_runs_lists_with_each_runs_cache_info(cache):
    for i in range(3):
        cache.store(run(i), fetched(), frame(seed=i))
    scanned = list(cache.scan("tempest-full"))
    assert [r.id for r, _, _ in scanned] == [r.id for r in cache.runs("tempest-full")]
    for record, info, folder in scanned:
        assert info == cache.info(record.id)
        assert record == cache.record(record.id)
        assert cache.run_dir(record.id).name == folder


def test_series_in_a_folder_the_scan_named_does_not_ask_the_catalog(cache, monkeypatch):
    for i in range(3):
        cache.store(run(i), fetched(), frame(seed=i))
    expected = {r.id: cache.series(r.id) for r in cache.runs()}
    folders = {r.id: folder for r, _, folder in cache.scan()}
    asked = []
    real = cache.catalog.cached_row
    monkeypatch.setattr(cache.catalog, "cached_row",
                        lambda run_id: asked.append(run_id) or real(run_id))
    for run_id, series in expected.items():
        got = cache.series(run_id, folders[run_id])
        assert (got.values == series.values).all() and got.columns == series.columns
    assert asked == []
    cache.series("run-001")
    assert asked == ["run-001"]
