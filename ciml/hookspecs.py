"""The plugin contract: every hook a ciml plugin may implement, on one screen.

A plugin is a module (or object) named by an entry point in the
``ciml.plugins`` group.  It implements any of the hooks below, decorated
with ``hookimpl`` from this module (``from ciml.hookspecs import
hookimpl``).  There are two families:

* **registration hooks**, one per plugin kind.  ciml calls each once, when
  plugins are loaded, with a ``register`` callable.  The plugin calls
  ``register(cls)`` for every implementation it provides (optionally
  ``register(cls, name="other-name")``).  The class must derive from the
  kind's base class in :mod:`ciml.base`.  Names are what users type
  (``--estimator dnn``), so they are public API; two implementations of the
  same kind and name are an error that names both distributions.

* **lifecycle hooks**, called by the pipeline after something happened, for
  every installed plugin that implements them (reporters, notifiers, audit
  logs...).  Their return values are ignored; an exception raised by one is
  logged with the plugin's name and does not stop the pipeline.

Hook names all start with ``ciml_`` so that they are greppable and never
collide with another framework's.  A misspelled hook (``ciml_prediction_mad``)
or one taking arguments ciml does not pass is reported when the plugin is
loaded, with the closest valid name and the list of hooks, and left out:
the plugin's other hooks keep working.  ``ciml plugin check`` reports it
and exits non-zero.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pluggy

# Imported for the annotations, which the docs resolve: both are small modules.
from ciml.paths import DataPath
from ciml.records import RunRecord

#: ``register(cls, name=None)``: what a registration hook receives.
Register = Callable[..., type]

PROJECT = "ciml"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration hooks ------------------------------------------------------


@hookspec
def ciml_register_result_sources(register: Register) -> None:
    """Register result sources: where runs and their results come from.

    Called once when plugins are loaded.

    :param register: ``register(cls, name=None)``; ``cls`` derives from
        :class:`ciml.base.ResultSource`; ``name`` defaults to ``cls.name``.
    :return: ignored.
    """


@hookspec
def ciml_register_metric_sources(register: Register) -> None:
    """Register metric sources: where a run's resource time series comes from.

    Called once when plugins are loaded.

    :param register: ``register(cls, name=None)``; ``cls`` derives from
        :class:`ciml.base.MetricSource`.
    :return: ignored.
    """


@hookspec
def ciml_register_normalizers(register: Register) -> None:
    """Register normalizers: steps that turn a raw series into an example.

    Called once when plugins are loaded.

    :param register: ``register(cls, name=None)``; ``cls`` derives from
        :class:`ciml.base.Normalizer`.
    :return: ignored.
    """


@hookspec
def ciml_register_estimators(register: Register) -> None:
    """Register estimators: models that learn from a dataset.

    Called once when plugins are loaded.  Registration must not import
    heavy libraries (TensorFlow): import them inside ``fit``/``load``.

    :param register: ``register(cls, name=None)``; ``cls`` derives from
        :class:`ciml.base.Estimator`.
    :return: ignored.
    """


@hookspec
def ciml_register_triggers(register: Register) -> None:
    """Register triggers: sources of "a run just finished" events.

    Called once when plugins are loaded.

    :param register: ``register(cls, name=None)``; ``cls`` derives from
        :class:`ciml.base.Trigger`.
    :return: ignored.
    """


# -- lifecycle hooks ---------------------------------------------------------


@hookspec
def ciml_run_cached(run: RunRecord, data_path: DataPath) -> None:
    """A run's record and metrics were stored in the raw cache.

    Called by ``cache-data`` (and ``watch --learn``) once per newly cached
    run, after the cache index records it; ``cache-data`` calls it from its
    main thread, one run at a time, whichever thread or process stored it.

    :param run: the :class:`ciml.records.RunRecord` that was cached.
    :param data_path: the :class:`ciml.paths.DataPath` it was cached under.
    :return: ignored.
    """


@hookspec
def ciml_dataset_built(name: str, path: pathlib.Path, summary: dict[str, Any]) -> None:
    """A dataset was built and moved into place.

    Called by ``build-dataset`` once, after the dataset is complete on disk.

    :param name: the dataset's name.
    :param path: the :class:`pathlib.Path` of its Zarr group.
    :param summary: a dict: splits with their example counts, the class
        names, the feature labels and the build configuration.
    :return: ignored.
    """


@hookspec
def ciml_model_trained(dataset: str, experiment: str, model_dir: pathlib.Path,
                       metrics: dict[str, Any]) -> None:
    """A model was trained, evaluated and saved.

    Called by ``train-model`` once, after the model directory is complete.

    :param dataset: the dataset name.
    :param experiment: the experiment name.
    :param model_dir: the :class:`pathlib.Path` of the model directory.
    :param metrics: a dict of evaluation metrics, as ``ciml model show
        -f json`` prints them (``accuracy``, ``macro_f1``, ...).
    :return: ignored.
    """


@hookspec
def ciml_prediction_made(prediction: dict[str, Any]) -> None:
    """A prediction was made for one run.

    Called by ``predict`` and ``watch`` once per run, after the prediction is
    printed (``--publish-topic``'s MQTT publisher is one of these).  This is where
    a reporter plugin acts: comment on a review, notify, store.  It is called
    from a worker thread; keep it quick or hand the work off.

    :param prediction: a dict with at least ``run_id``, ``build_name``,
        ``predicted`` (class name), ``probabilities`` (class name to
        probability), ``unusual`` (how the run compares with the dataset's
        passed training runs: ``score``, ``percentile``, ``unusual``,
        ``features``; ``None`` for a dataset without a profile),
        ``dataset``, ``experiment``; ``error`` is set instead of
        ``predicted`` when the run could not be predicted.
    :return: ignored.
    """


@hookspec
def ciml_watch_reporters(options: dict[str, Any]) -> object | None:
    """Offer reporters for one ``ciml watch``: objects implementing ``ciml_prediction_made``.

    Called once by ``watch`` after its options are parsed, before the first
    event.  Each object returned is registered as a plugin for the rest of
    the command, so its ``ciml_prediction_made`` is called for every
    prediction of this watch only, and its ``close()``, if it has one, when
    the watch ends.  The built-in MQTT publisher (``--publish-topic``) is
    such a reporter.

    :param options: a dict of the command's parsed options (``publish_topic``,
        the trigger's options...), plus ``data_path`` (the
        :class:`ciml.paths.DataPath`) and ``prediction_store`` (the
        :class:`ciml.prediction_store.PredictionStore` this watch stores its
        predictions in, or ``None`` with ``--no-store``; a reporter may keep
        what it did there, see :meth:`~ciml.prediction_store.PredictionStore.claim_report`).
    :return: a reporter, or ``None`` when the options do not ask for one.
    """
