"""The dashboard's pictures (:mod:`ciml.serve.plots`) on a real watched history."""

import os

import pytest
from serve_helpers import DATASET, EXPERIMENT

from ciml.errors import CimlError, NotFoundError
from ciml.serve import plots

pytestmark = pytest.mark.slow


def _is_svg(image):
    text = image.decode("utf-8")
    return text.lstrip().startswith("<?xml") and "<svg" in text and "<script" not in text


@pytest.fixture(autouse=True)
def _fresh_cache():
    plots.clear_cache()
    yield
    plots.clear_cache()


def _explained(watched):
    records = [r for r in watched.records if r.get("explanation")]
    assert records, watched.watch_stderr
    return records


def test_every_model_plot_is_an_svg_with_its_text_as_text(watched):
    dp = watched.data_path
    kinds = plots.available_model_plots(dp, DATASET, EXPERIMENT)
    assert kinds == list(plots.MODEL_PLOTS)
    for kind in kinds:
        image = plots.model_plot(dp, DATASET, EXPERIMENT, kind)
        assert _is_svg(image), kind
        # Text kept as text: the title is readable (and searchable) in the page.
        assert f"{DATASET}/{EXPERIMENT}" in image.decode(), kind
    importance = plots.model_plot(dp, DATASET, EXPERIMENT, "importance").decode()
    confusion = plots.model_plot(dp, DATASET, EXPERIMENT, "confusion").decode()
    assert "share of importance" in importance
    assert "predicted class" in confusion and "passed" in confusion and "failed" in confusion


def test_a_model_plot_is_drawn_once_until_the_model_changes(watched):
    dp = watched.data_path
    first = plots.model_plot(dp, DATASET, EXPERIMENT, "confusion")
    assert plots.model_plot(dp, DATASET, EXPERIMENT, "confusion") is first
    metrics = dp.model(DATASET, EXPERIMENT) / "metrics.json"
    stat = metrics.stat()
    os.utime(metrics, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = plots.model_plot(dp, DATASET, EXPERIMENT, "confusion")
    assert again is not first
    # The same data draws the same picture, byte for byte.
    assert again == first


def test_unknown_plots_and_models_are_not_found(watched):
    dp = watched.data_path
    with pytest.raises(NotFoundError, match="no model plot 'roc'"):
        plots.model_plot(dp, DATASET, EXPERIMENT, "roc")
    with pytest.raises(NotFoundError):
        plots.model_plot(dp, DATASET, "no-such-experiment", "confusion")
    with pytest.raises(NotFoundError):
        plots.available_model_plots(dp, "no-such-dataset", EXPERIMENT)


def test_a_run_plot_draws_the_explained_features_and_windows(watched):
    record = _explained(watched)[0]
    image = plots.run_plot(watched.data_path, record)
    assert _is_svg(image)
    text = image.decode()
    why = record["explanation"]
    for item in why["features"][:3]:
        assert item["feature"] in text
    assert "passed runs (p10-p90)" in text and "this run" in text
    assert f"predicted {record['predicted']}" in text
    assert plots.run_plot(watched.data_path, record) is image


def test_a_store_row_draws_the_same_run_plot(watched):
    from ciml.prediction_store import PredictionStore

    record = _explained(watched)[0]
    with PredictionStore.open(watched.data_path, create=False) as store:
        rows = store.for_run(record["run_id"])
    assert rows and isinstance(rows[0]["explanation"], str)
    assert plots.run_plot(watched.data_path, rows[0]) == plots.run_plot(watched.data_path, record)


def test_a_record_without_explanation_has_no_plot(watched):
    record = dict(_explained(watched)[0], predicted=None, explanation=None,
                  error="broken dstat file")
    assert plots.run_plot(watched.data_path, record) is None


def test_a_run_not_in_the_cache_is_fetched_only_where_the_policy_allows(watched):
    from ciml.urlpolicy import UrlPolicy, UrlRefused

    record = dict(_explained(watched)[0])
    record["run_id"] = "not-cached-" + record["run_id"]
    # Its metrics are where the watcher found them: a file URL.
    assert record["artifacts_url"].startswith("file:")
    with pytest.raises(UrlRefused, match="scheme 'file' is not allowed"):
        plots.run_plot(watched.data_path, record)
    image = plots.run_plot(watched.data_path, record, url_policy=UrlPolicy(schemes=["file"]))
    assert _is_svg(image)
    gone = dict(record, artifacts_url=None)
    plots.clear_cache()
    with pytest.raises(NotFoundError, match="not in the raw cache"):
        plots.run_plot(watched.data_path, gone)


def test_a_run_plot_of_a_removed_model_says_so(watched):
    record = dict(_explained(watched)[0], experiment="retired")
    with pytest.raises(CimlError, match=f"no model {DATASET}/retired"):
        plots.run_plot(watched.data_path, record)


def test_the_watcher_predicted_every_watched_run(watched):
    # The fixture the dashboard tests browse: one record per watched run,
    # all real predictions (the generator broke no file: bad_fraction=0).
    from serve_helpers import WATCHED

    assert len(watched.records) == WATCHED
    assert all(r.get("predicted") for r in watched.records), watched.records


def test_an_aggregate_model_draws_each_top_feature_against_its_typical_range(watched,
                                                                             tmp_path):
    # The demo's cause model is of this kind: aggregates per feature, no time axis.
    import shutil

    from ciml import online
    from ciml.dataset import build_dataset
    from ciml.experiment import Experiment
    from ciml.model import train_model
    from ciml.paths import DataPath

    dp = DataPath(tmp_path / "agg")
    shutil.copytree(watched.data_path.root / "raw", dp.root / "raw")
    build_dataset(dp, "agg", "tempest-full", aggregation_functions=["mean", "max", "p95"],
                  class_label="status", seed=0, progress=False)
    Experiment.create("gb", "gbdt", {"trees": 30, "min_data_in_leaf": 3}).save(dp)
    train_model(dp, "agg", "gb", progress=False)
    run_id = watched.records[0]["run_id"]  # cached by the watcher's --learn
    record, = online.predict_runs(dp, "agg", "gb", [run_id], call_hook=False)
    assert record["explanation"]["features"], record
    text = plots.run_plot(dp, record).decode()
    assert "passed runs (p10-p90)" in text and "this run" in text
    assert record["explanation"]["features"][0]["feature"] in text
    assert plots.available_model_plots(dp, "agg", "gb") == list(plots.MODEL_PLOTS)


def test_plots_drawn_from_many_threads_at_once_are_the_serial_ones(watched):
    # A web server's worker threads draw concurrently; pyplot is not thread-safe.
    from concurrent.futures import ThreadPoolExecutor

    dp = watched.data_path
    records = _explained(watched)[:3]
    jobs = [("model", kind) for kind in plots.MODEL_PLOTS] + [("run", r) for r in records]

    def draw(job):
        kind, what = job
        if kind == "model":
            return plots.model_plot(dp, DATASET, EXPERIMENT, what)
        return plots.run_plot(dp, what)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(draw, jobs * 2))
    plots.clear_cache()
    alone = [draw(job) for job in jobs]
    assert together == alone * 2


def test_the_cache_keeps_at_most_its_size():
    cache = plots._LRU(3)
    for k in range(5):
        cache.put(k, bytes([k]))
    assert [cache.get(k) for k in range(5)] == [None, None, b"\x02", b"\x03", b"\x04"]
    cache.get(2)  # used: the next put evicts 3, the least recently used
    cache.put(5, b"\x05")
    assert cache.get(3) is None and cache.get(2) == b"\x02"
