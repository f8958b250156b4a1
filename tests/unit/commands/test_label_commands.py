"""``ciml run label``, ``run list --labelled``, ``run show``; build-dataset with human labels."""

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from ciml import human_labels
from ciml.base import FetchedMetrics
from ciml.cache import RawCache
from ciml.commands.labels import RunLabel
from ciml.commands.run import RunList, RunShow
from ciml.errors import ConfigError, NotFoundError
from ciml.records import RunRecord
from ciml.shell import CimlApp

UTC = dt.timezone.utc


@pytest.fixture
def app(data_path):
    app = CimlApp()
    app.stdout, app.stderr = io.StringIO(), io.StringIO()
    app.options = app.parser.parse_args(["--data-path", str(data_path.root)])
    return app


def _fill(data_path, n=3):
    with RawCache(data_path) as cache:
        for i in range(n):
            run = RunRecord(id=f"run-{i}", build_name="job", status="failed",
                            start=dt.datetime(2024, 1, 1 + i, tzinfo=UTC), result="FAILURE",
                            metadata={"node_provider": "rax-dfw"})
            index = pd.date_range(run.start, periods=5, freq="s").as_unit("ns")
            frame = pd.DataFrame({"usr": np.full(5, float(i)), "used": np.ones(5)},
                                 index=index)
            cache.store(run, FetchedMetrics("dstat.csv", b"x", "http://l/x"), frame)


def _run(cmd_cls, app, *argv):
    cmd = cmd_cls(app, None)
    return cmd.take_action(cmd.get_parser("x").parse_args(list(argv)))


def test_label_show_and_list(app, data_path, monkeypatch):
    _fill(data_path)
    monkeypatch.setenv("CIML_USER", "alice")
    columns, rows = _run(RunLabel, app, "run-1", "cause=oom", "status=passed")
    assert columns == ("run", "key", "value", "who", "time")
    assert [(r[1], r[2], r[3]) for r in rows] == [("cause", "oom", "alice"),
                                                  ("status", "passed", "alice")]
    columns, values = _run(RunShow, app, "run-1")
    shown = dict(zip(columns, values))
    assert {k: (v["value"], v["who"]) for k, v in shown["human_labels"].items()} == {
        "cause": ("oom", "alice"), "status": ("passed", "alice")}
    columns, rows = _run(RunList, app, "--labelled")
    assert columns[-1] == "human_labels"
    assert [r[0] for r in rows] == ["run-1"]
    # Labelling again replaces the value and who gave it.
    _run(RunLabel, app, "run-1", "cause=timeout", "--who", "bob")
    labels = human_labels.labels_of(RawCache(data_path))["run-1"]
    assert labels["cause"]["value"] == "timeout" and labels["cause"]["who"] == "bob"
    assert labels["status"]["who"] == "alice"


@pytest.mark.parametrize("argv, error, match", [
    (["run-1", "cause"], ConfigError, "key=value"),
    (["run-1", "status=broken"], ConfigError, "passed or failed"),
    (["run-1", "bad key=x"], ConfigError, "bad label key"),
    (["run-1"], ConfigError, "at least one label"),
    (["nope", "cause=oom"], NotFoundError, "not in the raw cache"),
    ([], ConfigError, "RUN_ID"),
])
def test_bad_labels_are_refused(app, data_path, argv, error, match):
    _fill(data_path)
    with pytest.raises(error, match=match):
        _run(RunLabel, app, *argv)
    assert human_labels.labels_of(RawCache(data_path)) == {}


def test_import_labels_csv_all_or_nothing(app, data_path, tmp_path):
    _fill(data_path)
    good = tmp_path / "labels.csv"
    good.write_text("run_id,cause,status\nrun-0,oom,\nrun-2,,passed\n")
    _run(RunLabel, app, "--import-labels", str(good))
    assert "2 label(s) imported" in app.stderr.getvalue()
    labels = human_labels.labels_of(RawCache(data_path))
    assert labels["run-0"] == {"cause": labels["run-0"]["cause"]}
    assert labels["run-2"]["status"]["value"] == "passed"
    bad = tmp_path / "bad.csv"
    bad.write_text("run_id,cause\nrun-1,oom\nrun-404,timeout\n")
    with pytest.raises(NotFoundError, match="bad.csv:3"):
        _run(RunLabel, app, "--import-labels", str(bad))
    assert "run-1" not in human_labels.labels_of(RawCache(data_path))
    html = tmp_path / "page.csv"
    html.write_text("<html><body>login</body></html>\n")
    with pytest.raises(ConfigError, match="no run_id column"):
        _run(RunLabel, app, "--import-labels", str(html))


def test_build_dataset_prefers_human_labels_and_counts_them(data_path):
    from ciml.dataset import Dataset, build_dataset

    _fill(data_path, n=12)
    with RawCache(data_path) as cache:
        human_labels.set_labels(cache, "run-3", {"status": "passed"}, who="alice")
        human_labels.set_labels(cache, "run-4", {"status": "passed", "cause": "flaky"},
                                who="alice")
    build_dataset(data_path, "ds", "job", aggregation_functions=["mean"], progress=False,
                  executor="serial", tdt_split=(10, 0, 0))
    ds = Dataset.open(data_path, "ds")
    train = ds.split("training")
    status = dict(zip(train.ids, (ds.classes[c] for c in train.y)))
    assert status["run-3"] == status["run-4"] == "passed"
    assert status["run-5"] == "failed"
    assert ds.provenance["human_labels"] == 2
    build_dataset(data_path, "cause", "job", aggregation_functions=["mean"],
                  progress=False, executor="serial", class_label="cause",
                  tdt_split=(10, 0, 0))
    cause = Dataset.open(data_path, "cause")
    assert cause.split("training").ids == ["run-4"]
    assert cause.provenance["human_labels"] == 1


def test_zuul_result_is_a_class_label(data_path):
    from ciml.dataset import Dataset, build_dataset

    _fill(data_path, n=6)
    with RawCache(data_path) as cache:
        human_labels.set_labels(cache, "run-2", {"result": "TIMED_OUT"}, who="zuul-fix")
    build_dataset(data_path, "res", "job", aggregation_functions=["mean"], progress=False,
                  executor="serial", class_label="result", tdt_split=(10, 0, 0))
    assert Dataset.open(data_path, "res").classes == ["FAILURE", "TIMED_OUT"]


def test_predict_reports_the_human_label_as_actual(data_path):
    from ciml import online

    _fill(data_path, n=2)
    with RawCache(data_path) as cache:
        human_labels.set_labels(cache, "run-1", {"status": "passed"}, who="alice")

    class _Predictor:
        metric_source = None

    run, _, series = online.load_run("run-1", predictor=_Predictor(), data_path=data_path)
    assert run.status == "passed" and len(series.values) == 5
    run, _, _ = online.load_run("run-0", predictor=_Predictor(), data_path=data_path)
    assert run.status == "failed"
