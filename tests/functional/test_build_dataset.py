"""``ciml build-dataset`` and ``ciml dataset ...`` end to end, on a real raw cache.

The cache holds the real dstat samples (0.7.2, 0.7.3 and Debian 0.7.4
layouts, parsed by the dstat plugin) stored through :class:`RawCache`, so
the build reads ``series.bin`` files exactly as after ``cache-data``.
"""

import datetime as dt
import json
import re

import numpy as np
import pytest

from ciml.base import FetchedMetrics
from ciml.records import RunRecord

SAMPLES = ("dstat-csv_log.dstat-0.7.2.generated.txt",
           "dstat-csv_log.dstat-0.7.3.generated.txt",
           "dstat-csv_log.debian-0.7.4-devstack-top-opts.generated.txt")
PROVIDERS = ("rax-dfw", "rax-ord", "ovh-bhs1", "ovh-gra1", "vexxhost-ca-ymq-1",
             "inap-mtl01", "limestone-regionone", "citycloud-lon1")
REGEX = "^(cpu_usr|cpu_sys|cpu_idl|mem_|net_|load_1m)"


@pytest.fixture
def data_path(any_data_path):
    """Every test here runs against a local folder and against S3 (SeaweedFS)."""
    return any_data_path


@pytest.fixture
def cached(data_path, sample_data):
    """70 runs in a real raw cache: real dstat series, shifted, scaled and cut."""
    from ciml.cache import RawCache
    from ciml_plugins.metrics.dstat import parse_dstat

    parsed = [parse_dstat((sample_data / "dstat" / n).read_bytes()) for n in SAMPLES]
    raw = [(sample_data / "dstat" / n).read_bytes() for n in SAMPLES]
    cache = RawCache(data_path)
    rng = np.random.default_rng(0)
    t0 = dt.datetime(2025, 12, 31, 20, tzinfo=dt.timezone.utc)
    runs = []
    for i in range(70):
        k = i % 3
        failed = i % 4 == 0
        start = t0 + dt.timedelta(hours=2 * i)
        frame = parsed[k].iloc[:int(rng.integers(30, len(parsed[k])))].copy()
        frame.index = frame.index - frame.index[0] + start
        frame = frame * (1.5 if failed else 1.0)
        run = RunRecord(id=f"run-{i:03d}", build_name="tempest-full",
                        status="failed" if failed else "passed", start=start,
                        source="subunit2sql",
                        metadata={"node_provider": PROVIDERS[i % len(PROVIDERS)]})
        cache.store(run, FetchedMetrics("dstat-csv_log.txt", raw[k], "file:///x"), frame)
        runs.append(run)
    # One run whose parsed series got corrupted after caching.
    (cache.raw_file("run-007").parent / "series.bin").write_bytes(b"garbage")
    cache.close()
    return runs


def test_build_show_list_plot_delete(run_ciml, data_path, cached, tmp_path):
    root = str(data_path.root)
    rc, out, err = run_ciml(["--data-path", root, "build-dataset", "--dataset", "d10s",
                             "--build-name", "tempest-full", "--sample-interval", "10s",
                             "--features-regex", REGEX, "--seed", "3",
                             "--fixed-length", "550", "-f", "json"])
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["runs"] == 70 and summary["skipped"] == 1
    assert summary["skipped_by_reason"] == {"corrupt-cache": 1}
    # One line per reason at the default verbosity, naming the run.
    assert err.count("left out") == 1 and "1 run(s) left out, corrupt-cache: run-007" in err
    assert summary["example_shape"] == [550, 10]
    rc, out, err = run_ciml(["--data-path", root, "-v", "build-dataset", "--dataset", "v",
                             "--build-name", "tempest-full", "--features-regex", REGEX,
                             "--aggregation-functions", "mean"])
    assert rc == 0 and "v: left out run-007 (dev split): corrupt-cache" in err
    assert run_ciml(["--data-path", root, "dataset", "delete", "v"])[0] == 0

    from ciml.dataset import Dataset

    ds = Dataset.open(data_path, "d10s")
    assert ds.features[:3] == ["cpu_idl", "cpu_sys", "cpu_usr"]
    assert "mem_free" in ds.features and "cpu_wai" not in ds.features
    assert sum(len(ds.split(s)) for s in ds.splits) == 69
    assert ds.provenance["source"] == "subunit2sql"
    # The stored chain turns a raw run into the stored example (prediction time).
    from ciml.cache import RawCache

    tr = ds.split("training")
    frame = RawCache(data_path).frame(tr.ids[0])
    assert np.array_equal(ds.example_from_frame(frame), tr.X[0])

    rc, out, err = run_ciml(["--data-path", root, "dataset", "list", "-f", "json"])
    listed = json.loads(out)
    assert rc == 0 and [d["name"] for d in listed] == ["d10s"]
    assert listed[0]["steps"] == "550 x 10s" and listed[0]["features"] == 10
    assert listed[0]["skipped"] == 1 and listed[0]["classes"] == ["passed", "failed"]
    assert list(listed[0]["examples"]) == list(ds.splits)
    assert [type(n) for n in listed[0]["examples"].values()] == [int] * len(ds.splits)
    rc, out, err = run_ciml(["--data-path", root, "dataset", "show", "d10s", "-f", "json"])
    shown = json.loads(out)
    assert rc == 0 and shown["training_shape"][1:] == [550, 10]
    assert set(shown["training_classes"]) == {"passed", "failed"}
    assert shown["config_sample_interval"] == "10s" and shown["config_tdt_split"] == [6, 2, 2]
    assert shown["features"] == ds.features and shown["feature_count"] == 10
    assert shown["skipped_by_reason"] == {"corrupt-cache": 1}
    assert shown["chain"] == (f"filter({REGEX}, 10 columns) -> resample(10s) -> "
                              "fixed-length(550) -> scale(range, feature)")
    rc, out, err = run_ciml(["--data-path", root, "dataset", "show", "d10s"])
    assert rc == 0 and "corrupt-cache=1" in out and "cpu_idl, cpu_sys" in out
    assert re.search(r"unusual_profile +\| \d+ (passed )?training runs, 21 summary values; "
                     r"score median \d+\.\d\d, 99th percentile \d+\.\d\d", out), out

    plots = tmp_path / "plots"
    rc, out, err = run_ciml(["--data-path", root, "dataset", "plot", "d10s",
                             "--output-dir", str(plots), "-f", "value"])
    assert rc == 0, err
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["class_balance.png", "feature_distributions.png", "sizes_by_result.png",
                     "unusual_scores.png"]
    assert all((plots / n).read_bytes()[:4] == b"\x89PNG" for n in names)

    rc, out, err = run_ciml(["--data-path", root, "dataset", "delete", "d10s"])
    assert rc == 0 and "deleted" in out
    rc, out, err = run_ciml(["--data-path", root, "dataset", "show", "d10s"])
    assert rc != 0 and "no dataset named 'd10s'" in err


def test_aggregates_with_providers_and_visualize(run_ciml, data_path, cached, tmp_path):
    root = str(data_path.root)
    rc, out, err = run_ciml(["--data-path", root, "build-dataset", "--dataset", "agg",
                             "--build-name", "tempest-full", "--features-regex", REGEX,
                             "--aggregation-functions", "mean", "std", "max",
                             "--class-label", "node_provider", "--split", "time",
                             "--visualize", "--plot-dir", str(tmp_path / "p"), "-f", "json"])
    assert rc == 0, err
    from ciml.dataset import Dataset

    ds = Dataset.open(data_path, "agg")
    assert ds.classes == ["citycloud", "inap", "limestone", "ovh", "rax", "vexxhost"]
    assert ds.steps == ["mean", "std", "max"] and ds.axis == "aggregate"
    assert ds.split("test").X.shape[1:] == (3, 10)
    assert ds.split("training").ids[0] == "run-000"
    assert (tmp_path / "p" / "scatter_3d.png").is_file()


def test_all_columns_across_layouts_keeps_every_run(run_ciml, data_path, cached):
    # 0.7.2 has cpu_hiq/cpu_siq, 0.7.3 and 0.7.4 cpu_stl, only 0.7.4 swap_*:
    # the default features are the columns every run has; the odd ones are
    # dropped and reported once, and no run is left out for them.
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "build-dataset",
                             "--dataset", "all", "--aggregation-functions", "mean",
                             "--split", "time", "-f", "json"])
    assert rc == 0, err
    summary = json.loads(out)
    odd = ["cpu_hiq", "cpu_siq", "cpu_stl", "swap_free", "swap_used"]
    assert summary["dropped_features"] == odd
    assert summary["skipped_by_reason"] == {"corrupt-cache": 1}
    assert "missing-columns" not in err and err.count("not in every run") == 1
    assert "cpu_hiq (missing in 46 of 70 runs)" in err
    from ciml.dataset import Dataset

    ds = Dataset.open(data_path, "all")
    assert len(ds.features) == 29 and ds.features == sorted(ds.features)
    assert not set(odd) & set(ds.features)
    assert sum(len(ds.split(s)) for s in ds.splits) == 69
    assert ds.attrs["dropped_features"] == odd
    # At prediction time a run without a pinned column is a clear error.
    from ciml.cache import RawCache
    from ciml.errors import MetricsUnavailable

    frame = RawCache(data_path).frame(ds.split("test").ids[0])
    with pytest.raises(MetricsUnavailable, match="built with: mem_used"):
        ds.example_from_frame(frame.drop(columns=["mem_used"]))


def test_errors_are_one_line(run_ciml, data_path, cached):
    root = str(data_path.root)
    base = ["--data-path", root, "build-dataset", "--dataset", "e",
            "--aggregation-functions", "mean", "--features-regex", REGEX]
    rc, out, err = run_ciml(base + ["--tdt-split", "5", "2", "2"])
    assert rc != 0 and "sum to 10" in err and "Traceback" not in err
    rc, out, err = run_ciml(base)
    assert rc == 0, err
    rc, out, err = run_ciml(base)
    assert rc != 0 and "already exists" in err and "--force" in err
    rc, out, err = run_ciml(base + ["--force"])
    assert rc == 0, err
    rc, out, err = run_ciml(base + ["--build-name", "nosuch", "--force"])
    assert rc != 0 and "no cached runs" in err


def test_legacy_console_script(data_path, cached, capsys, monkeypatch):
    import os

    from ciml import legacy

    # With an s3:// data path the original's --s3-url is the endpoint; with a
    # local one it is ignored, as the original ignored it.
    endpoint = "https://s3.eu-geo.objectstorage.softlayer.net"
    if data_path.is_remote:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        monkeypatch.delenv("AWS_ENDPOINT_URL")
    rc = legacy.build_dataset(["--dataset", "old", "--build-name", "tempest-full",
                               "--data-path", str(data_path.root), "--no-force",
                               "--no-visualize", "--slicer", ":40", "--tdt-split", "7",
                               "2", "1", "--sample-interval", "1min",
                               "--features-regex", REGEX, "--s3-url", endpoint])
    assert rc == 0, capsys.readouterr().err
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    from ciml.dataset import Dataset

    ds = Dataset.open(data_path, "old")
    assert ds.config["slicer"] == ":40" and ds.config["tdt_split"] == [7, 2, 1]
    assert ds.split("training").X.shape[1] == 92
    assert legacy.build_dataset(["--dataset", "old", "--data-path", "ftp://host/x"]) == 2


def test_from_a_generated_history_through_cache_data(run_ciml, data_path, tmp_path):
    """generator -> cache-data (subunit2sql, file:// logs) -> build-dataset -> example."""
    from ciml.generator import generate_history

    history = generate_history(tmp_path / "hist", runs=30, seed=5, jobs=("tempest-full",),
                               duration=(60, 120), tests=False, bad_fraction=0.0)
    root = str(data_path.root)
    rc, out, err = run_ciml(["--data-path", root, "cache-data", "--db-uri", history.db_uri,
                             "--build-name", "tempest-full", "-f", "json"])
    assert rc == 0, err
    rc, out, err = run_ciml(["--data-path", root, "build-dataset", "--dataset", "gen",
                             "--build-name", "tempest-full", "--sample-interval", "10s",
                             "--features-regex", REGEX, "--class-label", "node_provider",
                             "--split", "time", "-f", "json"])
    assert rc == 0, err
    from ciml.cache import RawCache
    from ciml.dataset import Dataset

    ds = Dataset.open(data_path, "gen")
    families = {r["node_provider"].split("-")[0] for r in history.runs}
    assert set(ds.classes) <= families
    cache = RawCache(data_path)
    starts = {r.id: r.start for r in cache.runs("tempest-full")}
    train, test = ds.split("training"), ds.split("test")
    assert max(starts[i] for i in train.ids) < min(starts[i] for i in test.ids)
    run = cache.record(test.ids[-1])
    example = ds.example_from_frame(cache.frame(run.id))
    assert np.array_equal(example, test.X[len(test) - 1])
    assert ds.classes[test.y[-1]] == ds.label_of(run)
    cache.close()
