"""Unusual runs on a generated CI history: resource trouble stands out, test failures do not."""

import json

import numpy as np
import pytest

from ciml.collect import cache_data
from ciml.dataset import Dataset, build_dataset
from ciml.experiment import Experiment
from ciml.hookspecs import hookimpl
from ciml.model import train_model
from ciml.plugins import get_manager
from ciml.testing.estimators import NearestCentroidEstimator
from ciml_plugins.metrics.dstat import DstatMetricSource
from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

JOB = "tempest-full"


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("unusual") / "h", runs=220, seed=21,
                            jobs=(JOB,), bad_fraction=0.0, tests=False)


def test_resource_trouble_scores_above_ordinary_runs(history, data_path):
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(data_path, source, DstatMetricSource(), JOB, progress=False)
    build_dataset(data_path, "agg", JOB, aggregation_functions=["mean", "std", "max"],
                  class_label="status", progress=False, seed=0)
    ds = Dataset.open(data_path, "agg")
    cause = {r["run_id"]: r["cause"] for r in history.runs}
    from ciml.cache import RawCache

    cache = RawCache(data_path)
    assert ds.profile["reference"] == "passed training runs"
    flagged = {}
    for split in ("dev", "test"):
        for run_id in ds.split(split).ids:
            example, length = ds.example_from_frame(cache.frame(run_id), with_length=True)
            flagged.setdefault(cause[run_id], []).append(ds.unusual(example, length)["unusual"])
    ordinary = flagged["passed"] + flagged.get("test-failure", [])
    trouble = flagged.get("oom", []) + flagged.get("timeout", []) + flagged.get("network", [])
    assert len(ordinary) >= 20 and len(trouble) >= 5, {k: len(v) for k, v in flagged.items()}
    # Out of memory, timeouts and network trouble leave a resource signature;
    # a failed test does not, and looks like a passed run.
    assert np.mean(trouble) >= 0.8, flagged
    assert np.mean(ordinary) <= 0.15, flagged


class _Centroid:
    @hookimpl
    def ciml_register_estimators(self, register):
        register(NearestCentroidEstimator)


def test_predict_reports_how_unusual_each_run_is(history, data_path, run_ciml):
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(data_path, source, DstatMetricSource(), JOB, progress=False, limit=80)
    build_dataset(data_path, "ts", JOB, sample_interval="1min", class_label="status",
                  progress=False, seed=0)
    get_manager().add_plugin(_Centroid(), "centroid-unusual")
    Experiment.create("c", "nearest-centroid").save(data_path)
    train_model(data_path, "ts", "c", seed=0)
    ids = Dataset.open(data_path, "ts").split("test").ids[:3]
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "predict", "--dataset", "ts",
                             "--experiment", "c", *ids, "-f", "json"])
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["run"] for r in rows] == ids
    for row in rows:
        assert 0 <= row["percentile"] <= 100
        assert row["unusual"] == (row["percentile"] >= 99)
        assert row["unusual_features"].count("(") == 3
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "predict", "--dataset", "ts",
                             "--experiment", "c", "--unusual-percentile", "0", ids[0],
                             "-f", "json"])
    assert rc == 0 and json.loads(out)[0]["unusual"] is True, err
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "predict", "--dataset", "ts",
                             "--experiment", "c", "--unusual-percentile", "101", ids[0]])
    assert rc != 0 and "a percentile is between 0 and 100" in err
