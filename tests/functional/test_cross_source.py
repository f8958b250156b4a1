"""A model trained on dstat-cached runs predicts pcp and Prometheus runs (the common columns).

dstat, pcp and prometheus name and scale the quantities of
:mod:`ciml.columns` alike, so a dataset built from those columns of dstat
runs feeds a model that can be asked about a run whose metrics another
source reads: ``ciml predict --metric-source pcp FILE`` for a real
pcp-dstat file, and a Prometheus node's window for a run naming its node.
"""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ciml.columns import COMMON_COLUMNS, COMMON_FEATURES_REGEX
from ciml.generator import PROVIDERS, _signals, generate_history
from ciml.records import RunRecord
from ciml.testing.prometheus import PrometheusServer
from ciml_plugins.metrics.prometheus import PrometheusMetricSource

JOB = "tempest-full"
UTC = dt.timezone.utc

# Every test starts with a fresh plugin manager (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("centroid")


_TRAINED = {}


@pytest.fixture
def trained(tmp_path_factory, run_ciml):
    """A nearest-centroid model on the common columns of 40 generated dstat runs.

    Built once for the module (the CLI runner is a per-test fixture, hence
    the module-level memo rather than a module-scoped fixture).
    """
    if "model" in _TRAINED:
        return _TRAINED["model"]
    from ciml.paths import DataPath

    root = tmp_path_factory.mktemp("cross")
    history = generate_history(root / "hist", runs=40, seed=4, jobs=(JOB,),
                               duration=(120, 240), bad_fraction=0, tests=False,
                               new_year=False)
    data_path = DataPath(root / "data")
    dp = ["--data-path", str(data_path.root)]
    for argv in (
            ["cache-data", "--source", "subunit2sql", "--db-uri", history.db_uri,
             "--build-name", JOB],
            ["build-dataset", "--dataset", "common", "--build-name", JOB,
             "--features-regex", COMMON_FEATURES_REGEX,
             "--aggregation-functions", "mean", "max", "--class-label", "status"],
            ["setup-experiment", "--experiment", "cent", "--estimator", "nearest-centroid"],
            ["train-model", "--dataset", "common", "--experiment", "cent"]):
        rc, out, err = run_ciml(dp + argv)
        assert rc == 0, err
    _TRAINED["model"] = data_path, dp
    return _TRAINED["model"]


def test_dataset_holds_only_the_common_columns(trained):
    from ciml.dataset import Dataset

    data_path, _ = trained
    assert sorted(Dataset.open(data_path, "common").features) == sorted(COMMON_COLUMNS)


def test_dstat_model_predicts_a_real_pcp_file(trained, run_ciml, sample_data):
    _, dp = trained
    pcp_file = str(sample_data / "pcp" / "pcp-dstat-devstack.csv")
    predict = dp + ["predict", "--dataset", "common", "--experiment", "cent", "-f", "json"]
    rc, out, err = run_ciml(predict + ["--metric-source", "pcp", pcp_file])
    assert rc == 0, err
    [row] = json.loads(out)
    assert row["predicted"] in ("passed", "failed")
    # Read as dstat (the dataset's own source) the same file is refused:
    # pcp-dstat's first row is short and its names are not dstat's.
    rc, out, err = run_ciml(predict + [pcp_file])
    assert rc != 0 and "cannot predict" in err


def test_dstat_model_predicts_a_prometheus_run(trained):
    from ciml import online

    data_path, _ = trained
    start = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    cols = _signals(np.random.default_rng(3), 400, JOB, PROVIDERS["rax-dfw"], "passed", 1)
    index = pd.date_range(start, periods=400, freq="1s", tz="UTC")
    frame = pd.DataFrame({name: np.asarray(cols[name], dtype=np.float64)
                          for name in COMMON_COLUMNS}, index=index)
    with PrometheusServer({"gha-runner-3": frame}) as prom:
        source = PrometheusMetricSource(prometheus_url=prom.url, step=5, retries=0)
        predictor = online.Predictor.load(data_path, "common", "cent", metric_source=source)
        run = RunRecord(id="gha-1", build_name=JOB, status="passed", start=start,
                        duration=380, metadata={"runner_name": "gha-runner-3"})
        fetched, metrics = predictor.metric_source.load(run)
        record = predictor.record(run, metrics)
    assert set(COMMON_COLUMNS) <= set(metrics.columns)
    assert record["predicted"] in ("passed", "failed") and "error" not in record


def test_dstat_and_pcp_runs_share_one_dataset(data_path, run_ciml, sample_data):
    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.dataset import Dataset
    from ciml_plugins.metrics.dstat import parse_dstat
    from ciml_plugins.metrics.pcp import parse_pcp

    dstat_raw = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes()
    pcp_raw = (sample_data / "pcp" / "pcp-dstat-devstack.csv").read_bytes()
    frames = {"dstat": parse_dstat(dstat_raw), "pcp": parse_pcp(pcp_raw)}
    raws = {"dstat": dstat_raw, "pcp": pcp_raw}
    t0 = dt.datetime(2026, 2, 1, tzinfo=UTC)
    with RawCache(data_path) as cache:
        for i in range(24):
            kind = ("dstat", "pcp")[i % 2]
            start = t0 + dt.timedelta(hours=i)
            frame = frames[kind].iloc[:25].copy()
            frame.index = frame.index - frame.index[0] + start
            failed = i % 3 == 0
            run = RunRecord(id=f"{kind}-{i:02d}", build_name=JOB, start=start,
                            status="failed" if failed else "passed", source="test",
                            metadata={"metrics": kind})
            cache.store(run, FetchedMetrics("dstat-csv_log.txt", raws[kind], "file:///x"),
                        frame * (1.3 if failed else 1.0))
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "build-dataset",
                             "--dataset", "mixed", "--build-name", JOB,
                             "--aggregation-functions", "mean", "max", "-f", "json"])
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["runs"] == 24 and summary["skipped"] == 0
    features = set(Dataset.open(data_path, "mixed").features)
    # Every column both tools write (devstack's options) is kept, by name.
    assert set(COMMON_COLUMNS) <= features and {"tcp_act", "paging_in"} <= features
