"""train-model end to end: real datasets, the CLI, model directories, safe loading."""

import csv
import json
import re

import numpy as np
import pytest

from ciml.errors import CimlError, ConfigError
from ciml.experiment import Experiment
from ciml.hookspecs import hookimpl
from ciml.model import TrainedModel, train_model
from ciml.plugins import get_manager
from ciml.testing import make_dataset
from ciml.testing.estimators import NearestCentroidEstimator, synthetic_runs

TF_PARAMS = ["--hidden-layers", "16/8", "--epochs", "2", "--batch-size", "16"]


@pytest.fixture
def data_path(any_data_path):
    """Every test here runs against a local folder and against S3 (SeaweedFS)."""
    return any_data_path


@pytest.fixture
def datasets(data_path):
    make_dataset(data_path, "ds", n=60)
    make_dataset(data_path, "ds2", n=30, seed=5)
    make_dataset(data_path, "prov", n=60, class_label="node_provider_all")
    return data_path


class CentroidPlugin:
    """A throwaway third-party plugin: an estimator and a model-trained hook."""

    def __init__(self):
        self.trained = []

    @hookimpl
    def ciml_register_estimators(self, register):
        register(NearestCentroidEstimator)

    @hookimpl
    def ciml_model_trained(self, dataset, experiment, model_dir, metrics):
        self.trained.append((dataset, experiment, model_dir, metrics["accuracy"]))


@pytest.fixture
def centroid_plugin():
    plugin = CentroidPlugin()
    manager = get_manager()
    manager.add_plugin(plugin, "centroid-test", distribution="ciml-centroid", version="9.9")
    try:
        yield plugin
    finally:
        manager.unregister("centroid-test")


def _ciml(run_ciml, data_path, *args):
    rc, out, err = run_ciml(["--data-path", data_path.root, *args])
    assert rc == 0, err
    return out


@pytest.mark.tensorflow
def test_train_binary_dnn_end_to_end(run_ciml, datasets, tmp_path, sample_data):
    dp = datasets
    _ciml(run_ciml, dp, "setup-experiment", "--experiment", "dnn", "--estimator", "dnn",
          *TF_PARAMS)
    out = _ciml(run_ciml, dp, "train-model", "--dataset", "ds", "--experiment", "dnn",
                "--eval-dataset", "ds2", "--seed", "7", "--no-gpu", "-f", "json")
    metrics = json.loads(out)
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "baseline",
                "roc_auc", "pr_auc"):
        assert key in metrics, key
    assert set(metrics["per_class"]) == {"passed", "failed"}
    assert metrics["baseline"]["per_class"]["failed"]["recall"] == 0.0
    assert "ds2" in metrics["eval_datasets"]
    assert "baseline" in metrics["eval_datasets"]["ds2"]

    folder = dp.model("ds", "dnn")
    assert (folder / "estimator" / "model.keras").is_file()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["estimator"] == "dnn" and meta["estimator_distribution"] == "ciml"
    assert meta["estimator_version"] and meta["ciml_version"]
    assert meta["seed"] == 7 and meta["params"]["hidden_layers"] == "16/8"
    assert meta["dataset_fingerprint"] and meta["training_time_s"] > 0
    with (folder / "predictions.csv").open("r", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"dataset", "split", "run_id", "true", "predicted", "most_likely",
                            "p_passed", "p_failed"}
    # The verdict is the one at the stored threshold, not the arg-max.
    decision = json.loads((folder / "operating_point.json").read_text())
    for row in rows:
        p = float(row[f"p_{decision['positive_class']}"])
        if abs(p - decision["threshold"]) < 1e-5:
            continue  # the CSV keeps 6 digits: a run at the threshold may read just below
        assert (row["predicted"] == decision["positive_class"]) == (p >= decision["threshold"])
        assert row["most_likely"] == max(("passed", "failed"),
                                         key=lambda c: float(row[f"p_{c}"]))
    assert {(r["dataset"], r["split"]) for r in rows} == {("ds", "test"), ("ds", "dev"),
                                                          ("ds2", "test")}
    assert list((folder / "logs" / "train").glob("events.out.tfevents.*"))

    shown = json.loads(_ciml(run_ciml, dp, "model", "show", "--dataset", "ds",
                             "--experiment", "dnn", "-f", "json"))
    assert shown["accuracy"] == metrics["accuracy"]
    assert shown["model"]["estimator"] == "dnn"
    table = _ciml(run_ciml, dp, "model", "show", "--dataset", "ds", "--experiment", "dnn")
    assert "baseline" in table and "roc_auc (failed)" in table
    listed = _ciml(run_ciml, dp, "model", "list", "-f", "value", "-c", "experiment")
    assert listed.split() == ["dnn"]
    plots = _ciml(run_ciml, dp, "model", "plot", "--dataset", "ds", "--experiment", "dnn",
                  "--output-dir", tmp_path / "plots", "-f", "value", "-c", "plot")
    drawn = {"confusion_matrix", "training_curves", "pr_curve", "reliability",
             "feature_importance"}
    assert set(plots.split()) == drawn
    for name in drawn:
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000

    model = TrainedModel.load(dp, "ds", "dnn")
    runs, frames = synthetic_runs(n=4, seed=9)
    result = model.predict_frame(frames[runs[3].id])
    assert result["predicted"] in ("passed", "failed")
    assert sum(result["probabilities"].values()) == pytest.approx(1.0)
    # A Keras model gets the core's model-agnostic explanation.
    assert result["explanation"]["method"] == "occlusion"

    # A model file that would run code when loaded is refused.
    import keras

    inputs = keras.Input(shape=tuple(meta["example_shape"]))
    x = keras.layers.Lambda(lambda t: t + 1.0)(keras.layers.Flatten()(inputs))
    # Keras writes local files only: saved here, put where the model lives.
    bad = tmp_path / "bad.keras"
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(bad)
    (folder / "estimator" / "model.keras").write_bytes(bad.read_bytes())
    with pytest.raises(CimlError, match="safe mode") as info:
        TrainedModel.load(dp, "ds", "dnn")
    # One line in ciml's words; Keras' page-long message is for the debug log.
    message = str(info.value)
    assert message.startswith("refusing to load ") and "Lambda" in message
    assert "\n" not in message and len(message) < 400 and "Traceback" not in message
    run_file = sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt"
    rc, out, err = run_ciml(["--data-path", dp.root, "predict", "--dataset", "ds",
                             "--experiment", "dnn", str(run_file)])
    assert rc != 0 and "refusing to load" in err and "Traceback" not in err


@pytest.mark.tensorflow
def test_train_model_shows_epochs_and_no_native_chatter(run_ciml_subprocess, datasets):
    dp = datasets
    rc, out, err = run_ciml_subprocess(["--data-path", str(dp.root), "setup-experiment",
                                        "--experiment", "e", *TF_PARAMS, "--epochs", "3",
                                        "--patience", "0", "--dropout", "0.3"])
    assert rc == 0, err
    rc, out, err = run_ciml_subprocess(["--data-path", str(dp.root), "train-model",
                                        "--dataset", "ds", "--experiment", "e", "--seed",
                                        "1", "-c", "accuracy"], timeout=600)
    assert rc == 0, err
    # stderr is a pipe here: one line per epoch, with the losses.
    for epoch in (1, 2, 3):
        assert re.search(rf"^training: epoch {epoch}/3: loss \d+\.\d{{4}}, val_loss "
                         r"\d+\.\d{4}$", err, re.M), err
    # TensorFlow's C++ log lines (I0000 oneDNN, E0000 use_unbounded_threadpool) are not
    # ciml's output.
    assert not re.search(r"^[IWE]\d{4} ", err, re.M), err
    assert "absl::InitializeLog" not in err
    assert [line.split("|")[1].strip() for line in out.splitlines()
            if line.startswith("| ")][1:] == ["accuracy"]
    rc, out, err = run_ciml_subprocess(["-q", "--data-path", str(dp.root), "train-model",
                                        "--dataset", "ds", "--experiment", "e", "--seed",
                                        "1", "-f", "value", "-c", "accuracy"], timeout=600)
    assert rc == 0 and "training: epoch" not in err, err


@pytest.mark.tensorflow
def test_interrupted_keras_fit_keeps_the_best_epoch_when_asked(datasets, monkeypatch):
    from ciml import progress
    from ciml.errors import Interrupted

    dp = datasets
    Experiment.create("k", "dnn", {"hidden_layers": "8", "epochs": 20, "patience": 0,
                                   "batch_size": 16}).save(dp)
    real_update = progress.EpochProgress.update

    def ctrl_c_at_epoch_3(self, epoch, logs):
        real_update(self, epoch, logs)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.EpochProgress, "update", ctrl_c_at_epoch_3)
    with pytest.raises(Interrupted, match="--keep-on-interrupt keeps the best model"):
        train_model(dp, "ds", "k", seed=1)
    assert not dp.model("ds", "k").exists()
    metrics = train_model(dp, "ds", "k", seed=1, keep_on_interrupt=True)
    assert metrics["interrupted"]["epochs_run"] == 3
    assert 1 <= metrics["interrupted"]["best_epoch"] <= 3
    model = TrainedModel.load(dp, "ds", "k")
    assert model.metadata["interrupted"] == metrics["interrupted"]
    assert len(model.estimator.history_["loss"]) == 3


@pytest.mark.tensorflow
def test_train_multiclass_linear_svm(run_ciml, datasets):
    dp = datasets
    _ciml(run_ciml, dp, "setup-experiment", "--experiment", "svm", "--estimator",
          "linear-svm", "--epochs", "3")
    metrics = json.loads(_ciml(run_ciml, dp, "train-model", "--dataset", "prov",
                               "--experiment", "svm", "--seed", "1", "-f", "json"))
    assert len(metrics["per_class"]) == 5
    assert "roc_auc" not in metrics
    assert len(metrics["confusion_matrix"]) == 5
    assert metrics["baseline"]["accuracy"] is not None


@pytest.mark.tensorflow
def test_same_seed_same_metrics(datasets):
    dp = datasets
    Experiment.create("rep", "dnn", {"hidden_layers": "8", "epochs": 2}).save(dp)
    first = train_model(dp, "ds", "rep", seed=3)
    preds = (dp.model("ds", "rep") / "predictions.csv").read_text()
    second = train_model(dp, "ds", "rep", seed=3)
    for key in ("accuracy", "macro_f1", "roc_auc", "pr_auc", "confusion_matrix"):
        assert first[key] == second[key], key
    assert (dp.model("ds", "rep") / "predictions.csv").read_text() == preds


def test_plugin_estimator_trains_and_missing_plugin_names_the_distribution(
        datasets, centroid_plugin):
    dp = datasets
    Experiment.create("cent", "nearest-centroid").save(dp)
    metrics = train_model(dp, "ds", "cent", seed=0)
    assert metrics["accuracy"] >= metrics["baseline"]["accuracy"]
    assert centroid_plugin.trained == [("ds", "cent", dp.model("ds", "cent"),
                                        metrics["accuracy"])]
    meta = json.loads((dp.model("ds", "cent") / "metadata.json").read_text())
    assert (meta["estimator_distribution"], meta["estimator_version"]) == ("ciml-centroid",
                                                                           "9.9")
    model = TrainedModel.load(dp, "ds", "cent")
    proba = model.predict_examples(np.zeros(tuple(meta["example_shape"]), np.float32))
    assert proba.shape == (1, 2)

    get_manager().unregister("centroid-test")
    with pytest.raises(CimlError) as info:
        TrainedModel.load(dp, "ds", "cent")
    assert "pip install ciml-centroid" in str(info.value)
    assert "'nearest-centroid'" in str(info.value)


def test_eval_dataset_must_have_the_same_features(datasets, centroid_plugin):
    dp = datasets
    make_dataset(dp, "cpu-only", n=30, features_regex="usr|sys")
    Experiment.create("cent", "nearest-centroid").save(dp)
    with pytest.raises(ConfigError, match="other features.*missing: free, used"):
        train_model(dp, "ds", "cent", eval_datasets=["cpu-only"])
    with pytest.raises(ConfigError, match="classes the model does not know"):
        train_model(dp, "ds", "cent", eval_datasets=["prov"])
    assert not dp.model("ds", "cent").exists()


def test_model_compare_chart(run_ciml, datasets, centroid_plugin, tmp_path):
    dp = datasets
    Experiment.create("c1", "nearest-centroid").save(dp)
    Experiment.create("c2", "nearest-centroid", {"temperature": 5.0}).save(dp)
    train_model(dp, "ds", "c1", seed=0)
    train_model(dp, "ds", "c2", seed=0)
    out = _ciml(run_ciml, dp, "model", "compare",
                "--dataset-experiment-label", "ds", "c1", "t=1",
                "--dataset-experiment-label", "ds", "c2", "t=5",
                "-k", "macro_f1", "--output", tmp_path / "cmp.png", "-f", "json")
    rows = json.loads(out)
    assert [r["label"] for r in rows] == ["t=1", "t=5"]
    assert all(r["baseline"] != "-" for r in rows)
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    rc, out, err = run_ciml(["--data-path", dp.root, "model", "compare", "-k", "nonsense",
                             "--dataset-experiment-label", "ds", "c1", "x"])
    assert rc != 0 and "cannot compare 'nonsense'" in err


def test_delete_experiment_model_and_dataset(run_ciml, datasets, centroid_plugin):
    dp = datasets
    root = str(dp.root)
    Experiment.create("c1", "nearest-centroid").save(dp)
    train_model(dp, "ds", "c1", seed=0)
    rc, out, err = run_ciml(["--data-path", root, "experiment", "delete", "c1"])
    assert rc == 0 and "deleted experiment c1" in out, err
    assert _ciml(run_ciml, dp, "experiment", "list", "-f", "value").strip() == ""
    # The model keeps its own copy of the experiment: it still loads.
    assert TrainedModel.load(dp, "ds", "c1").classes
    rc, out, err = run_ciml(["--data-path", root, "experiment", "delete", "c1"])
    assert rc != 0 and "no experiment named 'c1'" in err

    rc, out, err = run_ciml(["--data-path", root, "dataset", "delete", "ds"])
    assert rc == 0, err
    assert "1 model(s) trained on ds can no longer predict: c1" in err
    rc, out, err = run_ciml(["--data-path", root, "model", "delete", "--dataset", "ds",
                             "--experiment", "c1"])
    assert rc == 0 and "deleted model ds/c1" in out, err
    assert _ciml(run_ciml, dp, "model", "list", "-f", "value").strip() == ""
    assert not [p for p in (dp.models / "ds").iterdir()]
    rc, out, err = run_ciml(["--data-path", root, "model", "delete", "--dataset", "ds",
                             "--experiment", "c1"])
    assert rc != 0 and "no model ds/c1: dataset 'ds' does not exist" in err


def test_example_plugin_estimator_conforms_and_trains_with_the_cli(run_ciml, datasets,
                                                                   monkeypatch):
    import pathlib

    from ciml.testing import check_estimator

    example = pathlib.Path(__file__).resolve().parent.parent / "example_plugin"
    monkeypatch.syspath_prepend(str(example))
    from ciml_example.estimator import MajorityEstimator

    check_estimator(MajorityEstimator)

    class Plugin:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(MajorityEstimator)

    manager = get_manager()
    manager.add_plugin(Plugin(), "majority-test", distribution="ciml-example", version="1.0")
    try:
        dp = datasets
        _ciml(run_ciml, dp, "setup-experiment", "--experiment", "maj", "--estimator",
              "majority")
        metrics = json.loads(_ciml(run_ciml, dp, "train-model", "--dataset", "ds",
                                   "--experiment", "maj", "-f", "json"))
        # A model that predicts the training frequencies is the baseline itself.
        assert metrics["accuracy"] == metrics["baseline"]["accuracy"]
        assert metrics["macro_f1"] == metrics["baseline"]["macro_f1"]
        shown = _ciml(run_ciml, dp, "model", "list", "-f", "value", "-c", "estimator")
        assert shown.split() == ["majority"]
    finally:
        manager.unregister("majority-test")


class LoggingCentroidEstimator(NearestCentroidEstimator):
    """Nearest centroid that writes an event file, as a TensorBoard-aware estimator does"""

    name = "logging-centroid"

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / "events.out.tfevents.0").write_bytes(b"\0")
        return super().fit(X, y, classes=classes, validation=validation, seed=seed)


def test_tensorboard_hint_only_when_the_estimator_wrote_logs(run_ciml, datasets,
                                                             centroid_plugin):
    class LoggingPlugin:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(LoggingCentroidEstimator)

    get_manager().add_plugin(LoggingPlugin(), "logging-centroid-test")
    dp = datasets
    for name in ("nearest-centroid", "logging-centroid"):
        _ciml(run_ciml, dp, "setup-experiment", "--experiment", name, "--estimator", name)

    rc, out, err = run_ciml(["--data-path", dp.root, "train-model", "--dataset", "ds",
                             "--experiment", "nearest-centroid", "--seed", "1"])
    assert rc == 0, err
    assert f"model saved in {dp.model('ds', 'nearest-centroid')}\n" in err
    assert "tensorboard --logdir" not in err

    rc, out, err = run_ciml(["--data-path", dp.root, "train-model", "--dataset", "ds",
                             "--experiment", "logging-centroid", "--seed", "1"])
    assert rc == 0, err
    logs = dp.model("ds", "logging-centroid") / "logs"
    assert f"(tensorboard --logdir {logs})" in err


def test_a_model_is_on_disk_before_it_is_moved_into_place(datasets, centroid_plugin,
                                                          monkeypatch):
    """12.6 and 12.1 for models: every file fsynced before the rename; only the
    leftovers of dead trainings of this very experiment are removed."""
    import os

    from ciml import fileutil

    dp = datasets
    if dp.is_remote:
        pytest.skip("local data path only: fsync and rename (test_object_storage checks "
                    "the marker order on S3)")
    Experiment.create("cent", "nearest-centroid").save(dp)
    folder = dp.model("ds", "cent").parent
    dead, other = folder / ".tmp@999999999@aa@cent", folder / ".tmp@999999999@bb@cent-2"
    for leftover in (dead, other):
        (leftover / "estimator").mkdir(parents=True)
    synced, unsynced = set(), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        if os.path.isdir(src) and str(dst) == str(dp.model("ds", "cent")):
            files = {os.path.realpath(os.path.join(r, f))
                     for r, _, fs in os.walk(src) for f in fs}
            unsynced.append(sorted(files - synced))
        return real_replace(src, dst)

    monkeypatch.setattr(fileutil.os, "fsync", fsync)
    monkeypatch.setattr(fileutil.os, "replace", replace)
    train_model(dp, "ds", "cent", seed=0)
    assert unsynced == [[]]
    assert not dead.exists() and other.exists()
