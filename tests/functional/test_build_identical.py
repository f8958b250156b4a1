"""The array path of build-dataset gives the very bits of the DataFrame path.

The built-in normalizers transform arrays (``transform_block``) and the raw
cache keeps series compressed (``series.bin``); before, every step got a
DataFrame and the series were ``series.npz``.  Both paths are kept (the
DataFrame one serves third-party normalizers), so the dataset built the old
way, from a cache converted back to ``series.npz``, must equal the one built
the new way array for array and attribute for attribute.
"""

import datetime as dt

import numpy as np
import pytest

from ciml.base import FetchedMetrics
from ciml.records import RunRecord

SAMPLES = ("dstat-csv_log.dstat-0.7.2.generated.txt",
           "dstat-csv_log.dstat-0.7.3.generated.txt")


@pytest.fixture
def cached(data_path, sample_data):
    """36 runs of real dstat series (shifted, scaled, cut; one with holes)."""
    from ciml.cache import RawCache
    from ciml_plugins.metrics.dstat import parse_dstat

    raw = [(sample_data / "dstat" / n).read_bytes() for n in SAMPLES]
    parsed = [parse_dstat(r) for r in raw]
    rng = np.random.default_rng(7)
    t0 = dt.datetime(2026, 2, 1, 9, 0, 0, 250000, tzinfo=dt.timezone.utc)
    with RawCache(data_path) as cache:
        for i in range(36):
            k = i % 2
            failed = i % 3 == 0
            start = t0 + dt.timedelta(hours=i, seconds=int(rng.integers(0, 59)))
            frame = parsed[k].iloc[:int(rng.integers(40, len(parsed[k])))].copy()
            frame.index = frame.index - frame.index[0] + start
            frame = frame * rng.choice([1.0, 1.5, 0.1])
            if i == 5:
                frame.iloc[3:9, 2] = np.nan
            run = RunRecord(id=f"run-{i:03d}", build_name="b",
                            status="failed" if failed else "passed", start=start,
                            source="subunit2sql", metadata={"node_provider": "rax"})
            cache.store(run, FetchedMetrics("dstat-csv_log.txt", raw[k], "file:///x"), frame)
    return data_path


def _to_legacy_npz(data_path):
    """Rewrite every cached series as the uncompressed series.npz older ciml wrote."""
    from ciml.cache import RawCache

    with RawCache(data_path) as cache:
        for run in cache.runs():
            series = cache.series(run.id)
            folder = cache.raw_file(run.id).parent
            np.savez(folder / "series.npz", timestamps=series.timestamps,
                     values=np.ascontiguousarray(series.values),
                     columns=np.array(series.columns))
            (folder / "series.bin").unlink()


@pytest.mark.parametrize("options", [
    {},
    {"sample_interval": "10s", "scale": "zscore"},
    {"aggregation_functions": ["mean", "std", "min", "max", "median", "p95"]},
    {"aggregation_functions": ["mean", "std"], "sample_interval": "5s", "scale_per": "feature"},
], ids=["full-length", "10s-zscore", "aggregate", "5s-aggregate"])
def test_array_path_equals_dataframe_path(cached, monkeypatch, options):
    from ciml.dataset import build as build_mod
    from ciml.dataset import build_dataset, store

    new = build_dataset(cached, "new", "b", progress=False, executor="serial", **options)
    _to_legacy_npz(cached)
    monkeypatch.setattr(build_mod, "REFERENCE_FRAMES", True)
    old = build_dataset(cached, "old", "b", progress=False, executor="serial", **options)
    assert new["splits"] == old["splits"] and sum(new["splits"].values()) == 36
    assert new["fingerprint"] == old["fingerprint"]
    assert store.differences(cached.dataset("new"), cached.dataset("old")) == []


def test_differences_finds_one_changed_value(cached):
    import zarr

    from ciml.dataset import build_dataset, store

    build_dataset(cached, "a", "b", progress=False, aggregation_functions=["mean"])
    build_dataset(cached, "c", "b", progress=False, aggregation_functions=["mean"])
    assert store.differences(cached.dataset("a"), cached.dataset("c")) == []
    X = zarr.open_group(str(cached.dataset("c")), mode="r+")["training"]["X"]
    X[0, 0, 0] = -X[0, 0, 0] if X[0, 0, 0] else 1.0
    assert store.differences(cached.dataset("a"), cached.dataset("c")) == [
        "training/X: 1 element(s) differ"]
