"""train-model's operating point, calibration and explanations, end to end (no TensorFlow)."""

import json

import numpy as np
import pytest

from ciml.experiment import Experiment
from ciml.model import TrainedModel, train_model
from ciml.testing import make_dataset
from ciml.testing.estimators import synthetic_runs

pytest.importorskip("lightgbm")

GBDT = {"trees": 40, "min_data_in_leaf": 3}


@pytest.fixture
def data_path(any_data_path):
    """Every test here runs against a local folder and against S3 (SeaweedFS)."""
    return any_data_path


@pytest.fixture
def trained(data_path):
    make_dataset(data_path, "ds", n=120)
    Experiment.create("gb", "gbdt", GBDT).save(data_path)
    metrics = train_model(data_path, "ds", "gb")
    return data_path, metrics


def test_default_seed_is_fixed_and_recorded(trained):
    dp, metrics = trained
    assert metrics["seed"] == 0
    meta = json.loads((dp.model("ds", "gb") / "metadata.json").read_text())
    assert meta["seed"] == 0
    again = train_model(dp, "ds", "gb")
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    drawn = train_model(dp, "ds", "gb", seed="random")
    assert isinstance(drawn["seed"], int)
    assert json.loads((dp.model("ds", "gb") / "metadata.json").read_text())["seed"] == \
        drawn["seed"]


def test_operating_point_is_stored_and_reported(trained):
    dp, metrics = trained
    op = metrics["operating_point"]
    decision = op["decision"]
    assert decision["kind"] == "threshold" and decision["positive_class"] == "failed"
    assert 0 < decision["threshold"] <= 1
    assert decision["calibration"]["method"] in ("none", "platt", "isotonic")
    for key in ("chosen", "at_0.5", "baseline", "calibration"):
        assert key in op, key
    assert op["calibration"]["brier"] is not None and op["calibration"]["ece"] is not None
    stored = json.loads((dp.model("ds", "gb") / "operating_point.json").read_text())
    assert stored == decision
    model = TrainedModel.load(dp, "ds", "gb")
    assert model.decision == decision


def test_min_precision_target_changes_the_threshold(data_path):
    make_dataset(data_path, "ds", n=120)
    Experiment.create("gb", "gbdt", GBDT).save(data_path)
    loose = train_model(data_path, "ds", "gb", max_false_alarm_rate=1.0)
    strict = train_model(data_path, "ds", "gb", min_precision=1.0)
    assert loose["operating_point"]["decision"]["target"] == {"max_false_alarm_rate": 1.0}
    assert strict["operating_point"]["decision"]["target"] == {"min_precision": 1.0,
                                                               "confidence": 0.95}
    assert loose["operating_point"]["decision"]["threshold"] <= \
        strict["operating_point"]["decision"]["threshold"]


def test_every_prediction_is_explained(trained, tmp_path):
    dp, _ = trained
    model = TrainedModel.load(dp, "ds", "gb")
    runs, frames = synthetic_runs(n=8, seed=11)
    failed = next(r for r in runs if r.status == "failed")
    result = model.predict_frame(frames[failed.id])
    why = result["explanation"]
    assert why["method"] == "tree-contributions"
    assert why["class"] == max(result["probabilities"], key=result["probabilities"].get)
    assert 1 <= len(why["features"]) <= 3
    top = why["features"][0]
    # Failed synthetic runs burn CPU: usr is what pushed toward "failed",
    # shown in its own units beside the passed runs' typical value.
    assert top["feature"].startswith("usr:")
    assert top["value"] > top["typical"] + 10
    from ciml.explain_plot import plot_run

    example, length = model.dataset.example_from_frame(frames[failed.id], with_length=True)
    path = plot_run(model, example, length, dict(result, run_id=failed.id), tmp_path)
    assert path.is_file() and path.stat().st_size > 1000


def test_model_show_and_plot_have_calibration_and_importance(run_ciml, trained, tmp_path):
    dp, _ = trained
    rc, out, err = run_ciml(["--data-path", dp.root, "model", "show", "--dataset", "ds",
                             "--experiment", "gb"])
    assert rc == 0, err
    for text in ("threshold (chosen on dev)", "failed precision at threshold",
                 "brier score", "expected calibration error", "importance usr:"):
        assert text in out, text
    rc, out, err = run_ciml(["--data-path", dp.root, "model", "plot", "--dataset", "ds",
                             "--experiment", "gb", "--output-dir", str(tmp_path),
                             "-f", "value"])
    assert rc == 0, err
    assert (tmp_path / "reliability.png").is_file()
    assert (tmp_path / "feature_importance.png").is_file()


def test_multiclass_below_the_floor_is_uncertain(data_path):
    from ciml import operating_point

    decision = {"kind": "uncertain-below", "threshold": 0.6, "classes": ["a", "b", "c"],
                "calibration": {"method": "none"}}
    predicted, extra = operating_point.label(decision, np.array([0.5, 0.3, 0.2]),
                                             ["a", "b", "c"])
    assert predicted == "uncertain"
    assert [c["class"] for c in extra["candidates"]] == ["a", "b"]
    assert operating_point.label(decision, np.array([0.7, 0.2, 0.1]), ["a", "b", "c"]) == \
        ("a", {})


def test_multiclass_model_stores_a_confidence_floor(data_path):
    make_dataset(data_path, "prov", n=120, class_label="node_provider_all")
    Experiment.create("gb", "gbdt", GBDT).save(data_path)
    metrics = train_model(data_path, "prov", "gb")
    decision = metrics["operating_point"]["decision"]
    assert decision["kind"] == "uncertain-below"
    assert 0 <= decision["threshold"] < 1
    assert "uncertain_rate" in metrics["operating_point"]["chosen"]


def test_predict_explains_time_series_runs_and_plots_them(tmp_path, data_path, run_ciml):
    from ciml.collect import cache_data
    from ciml.dataset import Dataset, build_dataset
    from ciml.generator import generate_history
    from ciml.hookspecs import hookimpl
    from ciml.plugins import get_manager
    from ciml.testing.estimators import NearestCentroidEstimator
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

    class Centroid:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(NearestCentroidEstimator)

    history = generate_history(tmp_path / "h", runs=60, seed=31, jobs=("tempest-full",),
                               bad_fraction=0.0, tests=False)
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(data_path, source, DstatMetricSource(), "tempest-full", progress=False)
    build_dataset(data_path, "ts", "tempest-full", sample_interval="1min",
                  class_label="status", progress=False, seed=0)
    get_manager().add_plugin(Centroid(), "centroid-explain")
    try:
        Experiment.create("c", "nearest-centroid").save(data_path)
        train_model(data_path, "ts", "c")
        ids = Dataset.open(data_path, "ts").split("test").ids[:2]
        plots = tmp_path / "plots"
        rc, out, err = run_ciml(["--data-path", str(data_path.root), "predict", "--dataset",
                                 "ts", "--experiment", "c", "--plot", str(plots), *ids,
                                 "-f", "json"])
        model = TrainedModel.load(data_path, "ts", "c")
    finally:
        get_manager().unregister("centroid-explain")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["run"] for r in rows] == ids
    assert all("(typ " in r["why"] for r in rows), rows
    assert sorted(p.name for p in plots.iterdir()) == sorted(f"{i}.png" for i in ids)
    from ciml.cache import RawCache

    result = model.predict_frame(RawCache(data_path).frame(ids[0]))
    why = result["explanation"]
    assert why["method"] == "occlusion"
    assert why["windows"] and all(w["end_s"] > w["start_s"] for w in why["windows"])


def test_a_failing_explain_never_costs_the_model_or_the_verdict(data_path, monkeypatch,
                                                                caplog):
    from ciml_plugins.estimators.gbdt import GBDTEstimator

    make_dataset(data_path, "ds", n=80)
    Experiment.create("gb", "gbdt", GBDT).save(data_path)

    def broken(self, *a, **kw):
        raise RuntimeError("explain is broken")

    monkeypatch.setattr(GBDTEstimator, "feature_importance", broken)
    metrics = train_model(data_path, "ds", "gb")
    assert "accuracy" in metrics and "no explanations for this model" in caplog.text
    monkeypatch.undo()
    train_model(data_path, "ds", "gb")
    monkeypatch.setattr(GBDTEstimator, "explain", broken)
    model = TrainedModel.load(data_path, "ds", "gb")
    runs, frames = synthetic_runs(n=2, seed=3)
    result = model.predict_frame(frames[runs[0].id])
    assert result["predicted"] in ("passed", "failed") and result["explanation"] is None
