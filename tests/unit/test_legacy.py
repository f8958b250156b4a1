"""The original's console scripts: what each one makes of the original's options."""

import pytest

from ciml import legacy
from ciml.experiment import Experiment


@pytest.fixture
def ran(monkeypatch):
    """The ``ciml`` argv each script ends up running (nothing runs)."""
    calls = []

    def fake_main(argv):
        calls.append(list(argv))
        return 0

    monkeypatch.setattr(legacy, "main", fake_main)
    return calls


def test_cache_data_fills_in_the_original_defaults(ran, data_path):
    root = str(data_path.root)
    assert legacy.cache_data(["--db-uri", "sqlite:///x.db", "--limit", "0",
                              "--data-path", root, "--no-debug"]) == 0
    assert ran[-1] == ["--data-path", root, "cache-data", "--source", "subunit2sql",
                       "--build-name", "tempest-full", "--db-uri", "sqlite:///x.db"]
    legacy.cache_data(["--build-name", "nova-tox", "--limit=5", "--source", "zuul",
                       "--data-path", root, "--debug"])
    assert ran[-1] == ["--debug", "--data-path", root, "cache-data", "--build-name",
                       "nova-tox", "--source", "zuul", "--limit", "5"]


def test_build_dataset_reads_click_spellings(ran, data_path):
    root = str(data_path.root)
    legacy.build_dataset(["--dataset", "agg", "--target-data-path", root,
                          "--aggregation-functions", "mean", "--aggregation-functions=max",
                          "--tdt-split", "7", "2", "1", "--force", "--no-force",
                          "--no-visualize", "--data-plots-folder", "/tmp/plots",
                          "--s3-url", "https://s3.eu-geo.objectstorage.softlayer.net"])
    assert ran[-1] == ["--data-path", root, "build-dataset", "--dataset", "agg",
                       "--tdt-split", "7", "2", "1", "--aggregation-functions", "mean",
                       "max", "--plot-dir", "/tmp/plots"]
    # ciml's own spelling of the list, and --visualize for a dataset still to build.
    legacy.build_dataset(["--data-path", root, "--aggregation-functions", "mean", "std",
                          "--visualize", "--build-name", "tempest-full"])
    assert ran[-1] == ["--data-path", root, "build-dataset", "--dataset", "dataset",
                       "--build-name", "tempest-full", "--aggregation-functions", "mean",
                       "std", "--visualize"]


def test_build_dataset_keeps_the_original_example_shape(ran, data_path):
    root = str(data_path.root)
    legacy.build_dataset(["--data-path", root, "--sample-interval", "1min"])
    assert ran[-1][-4:] == ["--scale-per", "cell", "--fixed-length", "92"]
    legacy.build_dataset(["--data-path", root, "--fixed-length", "10"])
    assert ran[-1][-2:] == ["--scale-per", "cell"] and ran[-1].count("--fixed-length") == 1


def test_visualize_on_an_existing_dataset_plots_it(ran, data_path, capsys):
    from ciml.testing import make_dataset

    make_dataset(data_path, "old", n=12)
    root = str(data_path.root)
    legacy.build_dataset(["--data-path", root, "--dataset", "old", "--visualize",
                          "--data-plots-folder", "/tmp/p"])
    assert ran[-1] == ["--data-path", root, "dataset", "plot", "old", "--output-dir", "/tmp/p"]
    assert "dataset 'old' exists: drawing its plots without rebuilding" in \
        capsys.readouterr().err
    # --force still rebuilds it.
    legacy.build_dataset(["--data-path", root, "--dataset", "old", "--visualize", "--force"])
    assert ran[-1][2] == "build-dataset" and "--force" in ran[-1]


def test_different_data_paths_are_refused(ran, capsys):
    assert legacy.build_dataset(["--data-path", "/a", "--target-data-path", "/b"]) == 2
    assert "must be the same folder" in capsys.readouterr().err
    assert ran == []


SCRIPTS = [legacy.cache_data, legacy.build_dataset, legacy.setup_experiment,
           legacy.train_model, legacy.plot_data, legacy.db_predict, legacy.mqtt_predict,
           legacy.mqtt_trainer]


@pytest.mark.parametrize("script", SCRIPTS)
def test_object_storage_options_map_onto_the_data_path(ran, script):
    """The original's --s3-profile / --s3-url become storage options of an s3:// path."""
    assert script(["--data-path", "s3://ci-bucket/ciml", "--s3-profile", "ibmcloud",
                   "--s3-url=https://minio.local:9000",
                   "--catalog-uri", "mysql+pymysql://ciml@db/ciml", "--dataset", "d"]) == 0
    front = ran[-1][:ran[-1].index("--catalog-uri") + 2]
    assert front == ["--data-path", "s3://ci-bucket/ciml",
                     "--storage-option", "profile=ibmcloud",
                     "--storage-option", "endpoint_url=https://minio.local:9000",
                     "--catalog-uri", "mysql+pymysql://ciml@db/ciml"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_s3_options_are_ignored_with_a_local_data_path(ran, script, data_path):
    # As in the original, whose defaults named a profile and an endpoint always.
    root = str(data_path.root)
    assert script(["--data-path", root, "--s3-profile", "ibmcloud",
                   "--s3-url", "https://s3.eu-geo.objectstorage.softlayer.net"]) == 0
    assert ran[-1][:2] == ["--data-path", root]
    assert "--storage-option" not in ran[-1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_other_url_schemes_are_refused(ran, capsys, script):
    assert script(["--data-path", "ftp://host/data"]) == 2
    err = capsys.readouterr().err
    assert "--data-path ftp://host/data is not supported" in err and err.startswith("ciml-")
    assert ran == []


@pytest.mark.parametrize("name,expected", [
    ("tf.estimator.DNNClassifier", "dnn"), ("tf.contrib.learn.SVM", "linear-svm"),
    ("tf.estimator.LinearClassifier", "linear-svm"), ("dnn", "dnn"),
])
def test_setup_experiment_estimator_names(ran, data_path, name, expected):
    root = str(data_path.root)
    legacy.setup_experiment(["--data-path", root, "--dataset", "d", "--experiment", "e",
                             "--estimator", name, "--no-force"])
    assert ran[-1] == ["--data-path", root, "setup-experiment", "--dataset", "d",
                       "--experiment", "e", "--estimator", expected]


def test_train_model_follows_the_experiments_dataset(ran, data_path, capsys):
    root = str(data_path.root)
    Experiment.create("meant", "linear-svm", dataset="tempest").save(data_path)
    Experiment.create("free", "linear-svm").save(data_path)
    legacy.train_model(["--data-path", root, "--experiment", "meant"])
    assert ran[-1] == ["--data-path", root, "train-model", "--dataset", "tempest",
                       "--experiment", "meant"]
    legacy.train_model(["--data-path", root, "--experiment", "meant", "--dataset", "tempest",
                        "--gpu"])
    assert ran[-1][-1] == "--gpu"
    # An experiment without a dataset trains on any, the original's "dataset" by default.
    legacy.train_model(["--data-path", root, "--experiment", "free"])
    assert ran[-1][3:5] == ["--dataset", "dataset"]
    calls = len(ran)
    assert legacy.train_model(["--data-path", root, "--experiment", "meant",
                               "--dataset", "other"]) == 2
    assert len(ran) == calls
    err = capsys.readouterr().err
    assert "experiment 'meant' was set up for dataset 'tempest', not 'other'" in err


def _trained(data_path, dataset, experiment):
    (data_path.model(dataset, experiment)).mkdir(parents=True)


def test_online_scripts_choose_the_trained_dataset(ran, data_path, capsys):
    root = str(data_path.root)
    legacy.mqtt_trainer(["--data-path", root])
    assert ran[-1] == ["--data-path", root, "watch", "--trigger", "mqtt", "--learn",
                       "--dataset", "dataset"]
    _trained(data_path, "tempest", "dnn")
    legacy.mqtt_trainer(["--data-path", root, "--db-uri", "sqlite:///x.db",
                         "--mqtt-hostname", "broker"])
    assert ran[-1] == ["--data-path", root, "watch", "--trigger", "mqtt", "--learn",
                       "--dataset", "tempest", "--source", "subunit2sql", "--db-uri",
                       "sqlite:///x.db", "--mqtt-host", "broker"]
    legacy.db_predict(["--data-path", root, "1234abcd"])
    assert ran[-1] == ["--data-path", root, "predict", "--dataset", "tempest", "1234abcd"]
    _trained(data_path, "other", "svm")
    calls = len(ran)
    assert legacy.mqtt_predict(["--data-path", root]) == 2
    assert "several datasets have a trained model; choose one with --dataset: other, " \
        "tempest" in capsys.readouterr().err
    assert len(ran) == calls
    legacy.mqtt_predict(["--data-path", root, "--dataset", "other"])
    assert ran[-1][-2:] == ["--dataset", "other"]


def test_the_data_path_is_named_when_a_script_creates_it(monkeypatch, data_path, capsys):
    def creating_main(argv):
        data_path.root.mkdir(parents=True, exist_ok=True)
        return 0

    monkeypatch.setattr(legacy, "main", creating_main)
    monkeypatch.setenv("CIML_DATA_PATH", str(data_path.root))
    legacy.setup_experiment(["--experiment", "e"])
    assert f"ciml keeps its data in {data_path.root} (created now" in capsys.readouterr().err
    legacy.setup_experiment(["--experiment", "e"])
    assert capsys.readouterr().err == ""


def test_help_is_the_scripts_own(capsys, data_path, monkeypatch):
    monkeypatch.setenv("CIML_DATA_PATH", str(data_path.root))
    assert legacy.mqtt_predict(["--dataset", "d", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ciml-mqtt-predict")
    assert "--mqtt-hostname HOST" in out and "--trigger" not in out
    assert not data_path.root.exists()


def test_tensorboard_line_only_for_a_model_with_event_files(run_ciml, data_path):
    """train-model names a --logdir only where TensorBoard finds curves.

    (The Keras estimators' logs are read with TensorBoard's own reader in
    tests/functional/test_original_readme.py.)
    """
    from ciml.hookspecs import hookimpl
    from ciml.plugins import get_manager
    from ciml.testing import make_dataset
    from ciml.testing.estimators import NearestCentroidEstimator

    class Plugin:
        @hookimpl
        def ciml_register_estimators(self, register):
            register(NearestCentroidEstimator)

    get_manager().add_plugin(Plugin(), "centroid-legacy-test")
    make_dataset(data_path, "ds", n=24)
    Experiment.create("cent", "nearest-centroid").save(data_path)
    rc, out, err = run_ciml(["--data-path", data_path.root, "train-model", "--dataset", "ds",
                             "--experiment", "cent"])
    assert rc == 0, err
    assert f"model saved in {data_path.model('ds', 'cent')}\n" in err
    assert "--logdir" not in err
