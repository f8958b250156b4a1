"""The pictures ``ciml serve`` pages show, as SVG documents.

The drawing itself is the CLI's (:mod:`ciml.model_plot` and
:mod:`ciml.explain_plot` build the figures ``model plot`` and ``predict
--plot`` write as PNG); this module renders those figures as SVG for a
browser: small, sharp at any zoom, text kept as text, no script.

Rendering costs tens to hundreds of milliseconds of CPU, so each image is
kept in a bounded in-process cache keyed by what it is drawn from (a
model's files and their modification times, a prediction's time), and a
retrained model or a new prediction draws afresh.  Matplotlib's pyplot is
not thread-safe, and a web server's worker threads call these functions
concurrently: drawing is serialized by one lock.
"""

import collections
import io
import os
import threading

from ciml.errors import NotFoundError

#: The media type of everything this module returns.
MEDIA_TYPE = "image/svg+xml"

#: The plots a model page can show, in page order.
MODEL_PLOTS = ("confusion", "pr", "reliability", "importance")

#: Features the importance plot shows (the page's table lists them all).
IMPORTANCE_TOP = 12

#: Rendered images kept (an SVG here is 20-150 kB).
CACHE_SIZE = 128

_draw_lock = threading.Lock()


class _LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size):
        self.size = size
        self._items = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self):
        with self._lock:
            self._items.clear()


_cache = _LRU(CACHE_SIZE)


def clear_cache():
    """Forget every rendered image (tests; a server never needs to)."""
    _cache.clear()


def _svg(build):
    """Call ``build()`` (which returns a figure) and render it as SVG bytes."""
    from ciml.model_plot import _pyplot

    plt = _pyplot()
    style = {
        # Text stays text: a third of the size, selectable, crisp.
        "svg.fonttype": "none",
        # Element ids that do not change between renders of the same data.
        "svg.hashsalt": "ciml",
        "font.family": ["DejaVu Sans", "sans-serif"],
    }
    buf = io.BytesIO()
    with _draw_lock, plt.rc_context(style):
        fig = build()
        try:
            # Tight: legends placed beside the axes stay in the picture.
            fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        finally:
            plt.close(fig)
    return buf.getvalue()


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _cached(key, build):
    image = _cache.get(key)
    if image is None:
        image = _svg(build)
        _cache.put(key, image)
    return image


# -- models --------------------------------------------------------------------


def _model_inputs(data_path, dataset, experiment):
    from ciml import explain
    from ciml.model import METRICS_FILE, PREDICTIONS_FILE, model_dir

    folder = model_dir(data_path, dataset, experiment)
    return folder, {
        "metrics": folder / METRICS_FILE,
        "predictions": folder / PREDICTIONS_FILE,
        "importance": folder / explain.IMPORTANCE_FILE,
    }


def _model_builders(data_path, dataset, experiment):
    """``{kind: (input files, build)}`` for the plots this model can draw."""
    from ciml import explain, explain_plot, model_plot
    from ciml.model import read_metrics

    folder, files = _model_inputs(data_path, dataset, experiment)
    metrics = read_metrics(data_path, dataset, experiment)
    name = f"{dataset}/{experiment}"
    split = metrics.get("split") or "test"
    builders = {}
    if metrics.get("confusion_matrix") is not None:
        baseline = (metrics.get("baseline") or {}).get("accuracy")
        title = f"{name}: {split} split"
        if metrics.get("accuracy") is not None and baseline is not None:
            title += f"\naccuracy {metrics['accuracy']:.3f}, baseline {baseline:.3f}"
        builders["confusion"] = (("metrics",),
                                 lambda: model_plot.confusion_figure(metrics, title))
    if files["predictions"].is_file():
        rows = model_plot.read_predictions(files["predictions"], dataset, split)
        if rows and metrics.get("classes"):
            builders["pr"] = (("metrics", "predictions"), lambda: model_plot.pr_figure(
                rows, metrics["classes"], f"{name}: precision-recall ({split} split)",
                legend="below"))
    calibration = (metrics.get("operating_point") or {}).get("calibration")
    if calibration:
        builders["reliability"] = (("metrics",), lambda: explain_plot.reliability_figure(
            calibration, f"{name}: reliability ({split} split)"))
    table = explain.load_importance(folder)
    if table:
        builders["importance"] = (("importance",), lambda: explain_plot.importance_figure(
            table, f"{name}: global feature importance", top=IMPORTANCE_TOP, width=5.5))
    return files, builders


def available_model_plots(data_path, dataset, experiment):
    """The kinds of :data:`MODEL_PLOTS` this model has the data to draw, in page order.

    :raises ciml.errors.NotFoundError: no such model.
    """
    _, builders = _model_builders(data_path, dataset, experiment)
    return [kind for kind in MODEL_PLOTS if kind in builders]


def model_plot(data_path, dataset, experiment, kind):
    """One plot of a trained model as SVG, or ``None`` when it has no data for it.

    :param kind: one of :data:`MODEL_PLOTS`: ``confusion`` (the evaluation
        split's confusion matrix), ``pr`` (precision-recall), ``reliability``
        (calibration) or ``importance`` (global feature importance).
    :raises ciml.errors.NotFoundError: no such model, or an unknown kind.
    """
    if kind not in MODEL_PLOTS:
        raise NotFoundError(f"no model plot {kind!r}; there are: {', '.join(MODEL_PLOTS)}")
    _, files = _model_inputs(data_path, dataset, experiment)
    if not files["metrics"].is_file():
        # read_metrics says which model is missing and which ones exist.
        from ciml.model import read_metrics

        read_metrics(data_path, dataset, experiment)
    key = ("model", str(files["metrics"]), kind,
           *(_mtime(path) for path in files.values()))
    image = _cache.get(key)
    if image is not None:
        return image
    files, builders = _model_builders(data_path, dataset, experiment)
    if kind not in builders:
        return None
    image = _svg(builders[kind][1])
    _cache.put(key, image)
    return image


# -- runs ----------------------------------------------------------------------


def _run_series(data_path, ds, record, url_policy):
    """The run's parsed series: from the raw cache, else fetched again from its URL."""
    from ciml.cache import RawCache
    from ciml.records import RunRecord

    run_id = str(record.get("run_id"))
    cache = RawCache(data_path)
    if cache.state(run_id) == "cached":
        return cache.frame(run_id)
    url = record.get("artifacts_url")
    if not url:
        raise NotFoundError(f"run {run_id!r} is not in the raw cache and its prediction "
                            "has no artifacts URL to read its metrics from")
    from ciml import online
    from ciml.urlpolicy import DEFAULT_POLICY

    (url_policy or DEFAULT_POLICY).check(url, "artifacts URL")
    run = RunRecord(id=run_id, build_name=record.get("build_name") or
                    online._dataset_build_name(ds) or "",
                    status=record.get("status") or "unknown", artifacts_url=url,
                    build_uuid=record.get("build_uuid"),
                    metadata=dict(record.get("metadata") or {}))
    _fetched, frame = online.metric_source_for(ds).load(run)
    return frame


class _ModelFiles:
    """What :func:`ciml.explain_plot.run_figure` reads of a model, without its estimator.

    Loading the estimator (TensorFlow for a ``dnn``) only to draw a picture
    would cost seconds and memory; the figure needs the dataset and the
    reference stored beside the model.
    """

    def __init__(self, path, dataset):
        self.path = path
        self.dataset = dataset


def run_plot(data_path, record, *, url_policy=None):
    """A predicted run's key series against the passed runs' typical band, as SVG.

    The series are the explanation's top features, drawn over the run's time
    with the 10th-90th percentile band and median of the model's passed
    training runs and the windows that mattered shaded
    (:func:`ciml.explain_plot.run_figure`); an aggregate dataset shows each
    top feature's value against its typical range.

    :param record: a prediction record (``run_id``, ``dataset``,
        ``experiment``, ``explanation``, ``artifacts_url``...), or a row of
        the prediction store read with its record (``full=True``).
    :param url_policy: a :class:`ciml.urlpolicy.UrlPolicy` for runs not in
        the raw cache, whose metrics are fetched again from their artifacts
        URL (http and https only by default).
    :return: ``None`` when the record has no explanation (an error record).
    :raises ciml.errors.CimlError: the model, the dataset or the run's
        metrics cannot be read, or the URL is refused.
    """
    if isinstance(record.get("record"), dict):
        # A prediction store row (its "explanation" is the one-line summary):
        # the record it keeps has the explanation's features and windows.
        record = record["record"]
    if not isinstance(record.get("explanation"), dict) or record.get("predicted") is None:
        return None
    from ciml.dataset import Dataset
    from ciml.model import METRICS_FILE, model_dir

    dataset, experiment = record.get("dataset"), record.get("experiment")
    folder = model_dir(data_path, dataset, experiment)
    if not (folder / METRICS_FILE).is_file():
        raise NotFoundError(f"no trained model {dataset}/{experiment} under "
                            f"{data_path.root}: it was removed or never trained here")
    key = ("run", str(folder), str(record.get("run_id")), str(record.get("time")),
           _mtime(folder / METRICS_FILE))
    image = _cache.get(key)
    if image is not None:
        return image
    ds = Dataset.open(data_path, dataset)
    frame = _run_series(data_path, ds, record, url_policy)
    example, length = ds.example_from_frame(frame, with_length=True)

    def build():
        from ciml.explain_plot import run_figure

        # The page says which run it is: the picture need not, and stays narrow.
        why = record.get("explanation") or {}
        title = f"predicted {record.get('predicted')} ({why.get('method', '')})"
        return run_figure(_ModelFiles(folder, ds), example, length, record, title=title)

    return _cached(key, build)
