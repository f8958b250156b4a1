"""Experiments: parameters checked against the estimator, saved resolved, loaded back."""

import json

import pytest

from ciml.errors import AlreadyExistsError, ConfigError, NotFoundError, UnknownPluginError
from ciml.experiment import Experiment, check_params, list_experiments


def test_create_resolves_every_declared_parameter(data_path):
    exp = Experiment.create("e1", "dnn", {"hidden-layers": "20/10", "epochs": "3"})
    assert exp.params["hidden_layers"] == "20/10"
    assert exp.params["epochs"] == 3
    assert exp.params["optimizer"] == "Adam"  # the default, stored resolved
    path = exp.save(data_path)
    assert path == data_path.root / "experiments" / "e1.json"
    data = json.loads(path.read_text())
    assert data["estimator"] == "dnn" and data["params"]["epochs"] == 3
    loaded = Experiment.load(data_path, "e1")
    assert loaded.params == exp.params
    assert [e.name for e in list_experiments(data_path)] == ["e1"]
    assert loaded.build_estimator().hidden_layers == "20/10"


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError) as info:
        check_params("linear-svm", {"hidden_layers": "10"})
    message = str(info.value)
    assert "'hidden_layers'" in message
    assert "l2" in message and "learning_rate" in message


@pytest.mark.parametrize("key,value", [
    ("optimizer", "Adamax"), ("learning_rate", "fast"), ("hidden_layers", "10/x"),
    ("dropout", "1.5"), ("epochs", "0"), ("class_weight", "maybe"),
])
def test_bad_values_are_refused(key, value):
    with pytest.raises(ConfigError) as info:
        check_params("dnn", {key: value})
    assert key in str(info.value)
    assert "takes:" in str(info.value)


def test_unknown_estimator():
    with pytest.raises(UnknownPluginError, match="valid names"):
        Experiment.create("e", "no-such-estimator")


def test_save_refuses_to_overwrite_without_force(data_path):
    Experiment.create("e", "linear-svm").save(data_path)
    with pytest.raises(AlreadyExistsError, match="--force"):
        Experiment.create("e", "dnn").save(data_path)
    Experiment.create("e", "dnn").save(data_path, force=True)
    assert Experiment.load(data_path, "e").estimator == "dnn"


def test_missing_and_bad_names(data_path):
    with pytest.raises(NotFoundError, match="setup-experiment"):
        Experiment.load(data_path, "nope")
    with pytest.raises(ConfigError):
        Experiment("../escape", "dnn")


def test_setup_experiment_command(run_ciml, data_path):
    rc, out, err = run_ciml(["--data-path", data_path.root, "setup-experiment",
                             "--experiment", "cmd", "--estimator", "dnn",
                             "--hidden-layers", "8/8", "--epochs", "2", "--optimizer", "SGD",
                             "--learning-rate", "0.1", "-o", "dropout=0.5", "-f", "json"])
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["name"] == "cmd" and "dropout=0.5" in shown["params"]
    rc, out, err = run_ciml(["--data-path", data_path.root, "experiment", "show", "cmd",
                             "-f", "json"])
    assert rc == 0, err
    assert json.loads(out)["params"]["optimizer"] == "SGD"
    rc, out, err = run_ciml(["--data-path", data_path.root, "experiment", "list",
                             "-f", "value", "-c", "name"])
    assert out.split() == ["cmd"]
    rc, out, err = run_ciml(["--data-path", data_path.root, "setup-experiment",
                             "--experiment", "bad", "--estimator", "linear-svm",
                             "--hidden-layers", "10"])
    assert rc != 0
    assert "has no parameter 'hidden_layers'" in err


def test_legacy_setup_experiment_translates_seed_options(data_path, monkeypatch):
    from ciml import legacy

    rc = legacy.setup_experiment(["--data-path", str(data_path.root), "--experiment", "old",
                                  "--estimator", "tf.estimator.DNNClassifier",
                                  "--hidden-layers", "10/10/10", "--steps", "30",
                                  "--batch-size", "1", "--epochs", "1", "--optimizer",
                                  "Adagrad", "--learning-rate", "0.05", "--no-force"])
    assert rc == 0
    exp = Experiment.load(data_path, "old")
    assert exp.estimator == "dnn"
    assert exp.params["steps"] == 30 and exp.params["optimizer"] == "Adagrad"


def test_dataset_association(data_path, run_ciml):
    """--dataset is recorded and shown; an experiment without one looks as before."""
    root = data_path.root
    rc, out, err = run_ciml(["--data-path", root, "setup-experiment", "--experiment", "meant",
                             "--estimator", "linear-svm", "--dataset", "tempest", "-f", "json"])
    assert rc == 0, err
    assert json.loads(out)["dataset"] == "tempest"
    assert "dataset 'tempest' does not exist yet" in err
    assert Experiment.load(data_path, "meant").dataset == "tempest"
    rc, out, err = run_ciml(["--data-path", root, "experiment", "show", "meant", "-f", "json"])
    assert json.loads(out)["dataset"] == "tempest"
    rc, out, err = run_ciml(["--data-path", root, "setup-experiment", "--experiment", "free",
                             "--estimator", "linear-svm", "-f", "json"])
    assert "dataset" not in json.loads(out) and err == ""
    assert "dataset" not in json.loads((root / "experiments" / "free.json").read_text())
    rc, out, err = run_ciml(["--data-path", root, "setup-experiment", "--experiment", "bad",
                             "--dataset", "../up"])
    assert rc != 0 and "bad dataset name '../up'" in err
    (root / "experiments" / "broken.json").write_text(json.dumps(
        {"name": "broken", "estimator": "dnn", "dataset": "../up"}))
    with pytest.raises(ConfigError, match="broken.json is not valid: bad dataset name"):
        Experiment.load(data_path, "broken")
