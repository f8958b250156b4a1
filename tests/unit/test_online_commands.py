"""``ciml predict`` and ``ciml watch`` on the command line: early checks, the metric source."""

import pytest

from ciml.errors import CimlError


class FakeModel:
    classes = ["passed", "failed"]

    def predict_frame(self, frame, unusual_percentile=None):
        return {"predicted": "passed", "probabilities": {"passed": 0.8, "failed": 0.2}}


@pytest.fixture
def dataset(data_path):
    from ciml.testing.estimators import make_dataset

    make_dataset(data_path, "ds", n=30)
    (data_path.models / "ds" / "exp").mkdir(parents=True)
    return data_path


@pytest.fixture
def no_model(monkeypatch):
    """Loading the estimator fails the test: it must not be needed."""
    from ciml.model import TrainedModel

    def load(*args, **kwargs):
        pytest.fail("the model was loaded")

    monkeypatch.setattr(TrainedModel, "load", classmethod(load))


def test_a_misspelled_trigger_is_reported_before_anything_loads(run_ciml, data_path):
    # No dataset at all: the trigger's name is checked before the model is looked for.
    rc, out, err = run_ciml(["--data-path", data_path.root, "watch", "--trigger", "mqt",
                             "--dataset", "nosuch"])
    assert rc != 0
    assert "mqt" in err and "mqtt" in err and "nosuch" not in err


def test_a_misspelled_metric_source_is_reported_before_anything_loads(run_ciml, data_path):
    rc, out, err = run_ciml(["--data-path", data_path.root, "predict", "--dataset", "nosuch",
                             "--metric-source", "dstatt", "x"])
    assert rc != 0 and "dstatt" in err and "nosuch" not in err


def test_a_broken_local_file_is_refused_before_the_model_loads(run_ciml, dataset, no_model,
                                                              tmp_path):
    broken = tmp_path / "dstat.csv"
    broken.write_text("<html><body>Not Found</body></html>\n")
    rc, out, err = run_ciml(["--data-path", dataset.root, "predict", "--dataset", "ds",
                             "--experiment", "exp", str(broken)])
    assert rc == 1
    assert f"cannot predict {broken}" in err


def test_watch_gives_up_on_a_broker_never_reached_with_the_cause(run_ciml, dataset,
                                                                monkeypatch):
    from ciml.model import TrainedModel

    monkeypatch.setattr(TrainedModel, "load",
                        classmethod(lambda cls, *a, **k: FakeModel()))
    rc, out, err = run_ciml(["--data-path", dataset.root, "watch", "--dataset", "ds",
                             "--experiment", "exp", "--mqtt-host", "nohost.invalid",
                             "--connect-timeout", "1", "--status-interval", "0"])
    assert rc == 1
    assert "cannot reach the MQTT broker nohost.invalid:1883 after" in err
    assert "host name not found" in err


# -- the metric source a dataset was built with (issue 12.8) ------------------------------


def test_the_dataset_records_the_metric_source_its_runs_were_cached_with(data_path,
                                                                         sample_data):
    from ciml import online
    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.dataset import Dataset, build_dataset
    from ciml.plugins import get_manager
    from ciml.records import RunRecord

    sample = sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt"
    metrics = get_manager().get("metric_source", "dstat")(paths=["custom/dstat.csv"],
                                                          retries=1)
    with RawCache(data_path) as cache:
        for i in range(20):
            run = RunRecord(id=f"r{i:02d}", build_name="tempest-full",
                            status="failed" if i % 2 else "passed",
                            artifacts_url=f"http://logs/r{i}/")
            frame = metrics.parse(sample.read_bytes(), run)
            fetched = metrics.stamp(FetchedMetrics("dstat.csv", sample.read_bytes(),
                                                   run.artifacts_url))
            cache.store(run, fetched, frame)
        assert cache.info("r00")["metric_source"]["params"]["paths"] == ["custom/dstat.csv"]
    build_dataset(data_path, "ds", "tempest-full", aggregation_functions=["mean"],
                  executor="serial", progress=False)
    ds = Dataset.open(data_path, "ds")
    assert ds.config["metric_source"] == "dstat"
    assert ds.config["metric_source_options"]["paths"] == ["custom/dstat.csv"]
    source = online.metric_source_for(ds)
    assert source.paths == ["custom/dstat.csv"] and source.retries == 1
    predictor = online.Predictor.load(data_path, "ds", "exp", lazy=True)
    assert predictor.metric_source.paths == ["custom/dstat.csv"]
    # --metric-source options override: --paths on the command line.
    predictor = online.Predictor.load(data_path, "ds", "exp", lazy=True,
                                      metric_options={"paths": ["other.csv"]})
    assert predictor.metric_source.paths == ["other.csv"]


def test_cache_data_records_the_metric_source(tmp_path, data_path):
    from ciml import collect
    from ciml.cache import RawCache
    from ciml.generator import generate_history
    from ciml.plugins import get_manager

    history = generate_history(tmp_path / "h", runs=4, seed=3, jobs=["tempest-full"],
                               duration=(60, 120), tests=False)
    manager = get_manager()
    source = manager.get("result_source", "subunit2sql")(db_uri=history.db_uri)
    metrics = manager.get("metric_source", "dstat")(retries=2)
    collect.cache_data(data_path, source, metrics, "tempest-full", progress=False)
    with RawCache(data_path) as cache:
        [run, *_] = cache.runs("tempest-full")
        recorded = cache.info(run.id)["metric_source"]
    assert recorded["name"] == "dstat" and recorded["params"]["retries"] == 2


def test_no_secret_is_recorded():
    from ciml.base import MetricSource, Parameter

    class Secretive(MetricSource):
        name = "secretive"
        parameters = (Parameter("token", secret=True), Parameter("region", default="eu"))

        def fetch(self, run):
            raise NotImplementedError

        def parse(self, data, run):
            raise NotImplementedError

    assert Secretive(token="SEKRIT").provenance() == {"name": "secretive",
                                                      "params": {"region": "eu"}}


def test_metric_source_options_must_be_known(data_path):
    from ciml import online

    with pytest.raises(CimlError):
        online.metric_source_for(None, "dstat", {"no_such_option": 1})
