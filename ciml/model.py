"""Training an experiment on a dataset, and loading the trained model to predict.

A model directory, ``<data>/models/<dataset>/<experiment>/``, is written
complete into a temporary folder and moved into place at the end, so it is
either the old model or the whole new one:

``estimator/``      the estimator's own files (``model.keras`` + ``params.json``
                    for the built-ins), loaded without running code
``metadata.json``   what produced it: estimator plugin, distribution and
                    version, hyper-parameters, dataset name and fingerprint,
                    ciml version, seed, training time
``metrics.json``    test-split metrics beside a majority-class baseline (the
                    top level), plus ``dev`` and ``eval_datasets``
``predictions.csv`` dataset, split, run id, true class, the verdict at the
                    operating point (``predicted``: a class or
                    ``uncertain``), the arg-max class (``most_likely``),
                    one calibrated probability column per class
``history.json``    the training curves (loss, val_loss per epoch)
``operating_point.json``  the calibration and decision threshold chosen on
                    dev (:mod:`ciml.operating_point`)
``reference.npz``   the typical passed training run and the
``importance.json`` global importance, for explanations (:mod:`ciml.explain`)
``logs/``           TensorBoard event files (``tensorboard --logdir``)
"""

import csv
import datetime as dt
import logging
import pathlib
import random
import shutil
import tempfile
import time

import numpy as np

import ciml
from ciml import fileutil, storage
from ciml import metrics as metrics_mod
from ciml import operating_point as _operating_point
from ciml.errors import CimlError, ConfigError, NotFoundError, UnknownPluginError
from ciml.paths import DataPath, check_name

LOG = logging.getLogger(__name__)

ESTIMATOR_DIR = "estimator"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.json"
LOGS_DIR = "logs"


def _data_path(data_path):
    return data_path if isinstance(data_path, DataPath) else DataPath(data_path)


def _with_device(estimator, exp, gpu):
    """``train-model --gpu/--no-gpu``: the estimator's ``gpu`` parameter, for this training.

    The device is the estimator's business (only it knows its library).  An
    estimator that declares no ``gpu`` parameter uses no GPU as far as ciml
    knows: ``--no-gpu`` is then already true, ``--gpu`` cannot be honoured.
    """
    if gpu is None:
        return estimator
    if "gpu" not in {p.name for p in estimator.parameters}:
        if not gpu:
            LOG.debug("estimator %r has no gpu parameter: --no-gpu changes nothing",
                      exp.estimator)
            return estimator
        raise ConfigError(f"estimator {exp.estimator!r} has no device choice: "
                          "--gpu does not apply to it")
    params = {k: v for k, v in estimator.get_params(include_secrets=True).items()
              if v is not None}
    params["gpu"] = gpu
    return type(estimator).from_options(params)


def _class_map(model_classes, other):
    """Codes of ``other``'s classes in the model's class list (eval datasets)."""
    index = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in other.classes if c not in index]
    if unknown:
        raise ConfigError(
            f"dataset {other.name!r} has classes the model does not know: "
            + ", ".join(unknown) + f" (the model's: {', '.join(model_classes)})")
    return np.array([index[c] for c in other.classes], dtype=np.int64)


def check_compatible(dataset, other):
    """An eval dataset must have the same feature labels and example shape."""
    if list(other.features) != list(dataset.features):
        ours, theirs = set(dataset.features), set(other.features)
        detail = []
        if theirs - ours:
            detail.append("extra: " + ", ".join(sorted(theirs - ours)[:5]))
        if ours - theirs:
            detail.append("missing: " + ", ".join(sorted(ours - theirs)[:5]))
        if not detail:
            detail.append("same labels in another order")
        raise ConfigError(
            f"eval dataset {other.name!r} has other features than {dataset.name!r} "
            f"({'; '.join(detail)}); build it with the same --features-regex")
    if tuple(other.example_shape) != tuple(dataset.example_shape):
        raise ConfigError(
            f"eval dataset {other.name!r} has examples shaped {tuple(other.example_shape)}, "
            f"{dataset.name!r} {tuple(dataset.example_shape)}; build it with the same "
            "sample interval and length")
    if "test" not in other.splits:
        raise ConfigError(f"eval dataset {other.name!r} has no test split")
    _class_map(dataset.classes, other)


def _prediction_rows(dataset_name, split_name, ids, y_true, proba, classes, decision):
    """``predictions.csv`` rows: ``predicted`` is the verdict at the operating point.

    That is what predict and watch would have said (the stored threshold,
    or ``uncertain``); ``most_likely`` keeps the arg-max beside it.
    """
    if not len(proba):
        return
    decided = _operating_point.decide(decision, proba)
    top = proba.argmax(axis=1)
    for run_id, t, d, m, row in zip(ids, y_true, decided, top, proba):
        verdict = classes[int(d)] if d >= 0 else _operating_point.UNCERTAIN
        yield [dataset_name, split_name, run_id, classes[int(t)], verdict, classes[int(m)],
               *(f"{v:.6g}" for v in row)]


def estimator_distribution(name):
    """``(distribution, version, plugin)`` of the installed estimator ``name``."""
    from ciml.plugins import get_manager

    info = get_manager().info("estimator", name)
    return info.distribution, info.version, info.plugin


#: The seed train-model uses when neither the command nor the experiment gives
#: one: the same command trains the same model (``--seed random`` opts out).
DEFAULT_SEED = 0


def resolve_seed(seed, experiment_seed=None):
    """``--seed``: an int, ``"random"`` (drawn, recorded) or ``None`` (experiment's, else 0)."""
    if isinstance(seed, str):
        if seed.strip().lower() == "random":
            return random.SystemRandom().randrange(2**31)
        try:
            seed = int(seed)
        except ValueError:
            raise ConfigError(f"--seed takes an integer or 'random', not {seed!r}") from None
    if seed is None:
        seed = experiment_seed
    return DEFAULT_SEED if seed is None else int(seed)


def train_model(data_path, dataset, experiment, *, eval_datasets=(), seed=None,
                gpu=None, progress=None, keep_on_interrupt=False, calibration="auto",
                min_precision=None, max_false_alarm_rate=None):
    """Train ``experiment`` on ``dataset``, evaluate, save the model; returns the metrics.

    The training split streams from Zarr into the estimator; the dev split,
    when there is one, is the estimator's validation set (early stopping)
    and is predicted; the test split, and the test split of each eval
    dataset, are evaluated beside a majority-class baseline.

    ``gpu`` (``True``/``False``) overrides the estimator's ``gpu`` parameter.
    Ctrl-C during the fit raises :class:`ciml.errors.Interrupted` and saves
    nothing, unless ``keep_on_interrupt`` and the estimator can finish with
    the best model so far (``finish_interrupted``): that one is evaluated and
    saved, its metrics marked ``interrupted``.
    """
    from ciml.dataset import Dataset
    from ciml.experiment import Experiment
    from ciml.plugins import get_manager

    data_path = _data_path(data_path)
    ds = Dataset.open(data_path, dataset) if isinstance(dataset, str) else dataset
    exp = experiment if isinstance(experiment, Experiment) else Experiment.load(data_path,
                                                                                experiment)
    if "training" not in ds.splits:
        raise ConfigError(f"dataset {ds.name!r} has no training split")
    others = []
    for name in eval_datasets or ():
        other = Dataset.open(data_path, name)
        check_compatible(ds, other)
        others.append(other)
    distribution, version, plugin = estimator_distribution(exp.estimator)
    estimator = exp.build_estimator()
    # Recorded in the metadata, so even a random seed's model can be re-made.
    seed = resolve_seed(seed, exp.params.get("seed"))
    target = {"calibration": calibration, "min_precision": min_precision,
              "max_false_alarm_rate": max_false_alarm_rate}
    estimator = _with_device(estimator, exp, gpu)

    final = data_path.model(ds.name, exp.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    storage.remove_abandoned(final.parent, exp.name)  # of trainings that died
    # Estimators and TensorBoard write local files: on an object store the
    # model is trained into a local folder and uploaded when published.
    tmp = (storage.make_work_dir(final.parent, exp.name) if not storage.is_remote(final)
           else pathlib.Path(tempfile.mkdtemp(prefix="ciml-train-")))
    try:
        metrics = _train_into(tmp, ds, exp, estimator, others, seed, progress,
                              keep_on_interrupt, target)
        metadata = {
            "dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
            "dataset_classes": list(ds.classes), "features": list(ds.features),
            "example_shape": list(ds.example_shape),
            "experiment": exp.name, "estimator": exp.estimator,
            "estimator_distribution": distribution, "estimator_version": version,
            "estimator_plugin": plugin,
            "params": estimator.get_params(), "seed": seed,
            "eval_datasets": [o.name for o in others],
            "ciml_version": ciml.__version__,
            "training_time_s": metrics["training_time_s"],
            "trained": dt.datetime.now(dt.timezone.utc).isoformat(),
            "gpu": gpu,
            "operating_point": metrics.get("operating_point", {}).get("decision"),
        }
        if metrics.get("interrupted"):
            metadata["interrupted"] = metrics["interrupted"]
        # metadata.json is the model's completion marker: written last.
        fileutil.atomic_write_json(tmp / METADATA_FILE, metadata)
        storage.publish_dir(tmp, final, METADATA_FILE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    get_manager().call_lifecycle("ciml_model_trained", dataset=ds.name,
                                 experiment=exp.name, model_dir=final, metrics=metrics)
    return metrics


def _fit(estimator, train, classes, validation, log_dir, seed, keep_on_interrupt):
    """Fit; on Ctrl-C keep the best model so far if asked and possible, else say so."""
    from ciml.errors import Interrupted

    try:
        estimator.fit(train.X, train.y, classes=classes, validation=validation,
                      log_dir=log_dir, seed=seed)
        return None
    except KeyboardInterrupt:
        partial = getattr(estimator, "interrupted_", None)
        finish = getattr(estimator, "finish_interrupted", None)
        if not keep_on_interrupt or not partial or finish is None:
            hint = (" (train-model --keep-on-interrupt keeps the best model so far)"
                    if partial and finish is not None else "")
            raise Interrupted(f"training stopped, nothing was saved{hint}") from None
    LOG.warning("interrupted after %s epoch(s): keeping the model of epoch %s, the best "
                "so far", partial.get("epochs_run"), partial.get("best_epoch"))
    if not finish(train.X, train.y, validation):
        raise Interrupted("training stopped, nothing was saved")
    return dict(partial)


def _train_into(folder, ds, exp, estimator, others, seed, progress, keep_on_interrupt=False,
                target=None):
    classes = list(ds.classes)
    train = ds.split("training")
    dev = ds.split("dev") if "dev" in ds.splits else None
    validation = (dev.X, dev.y) if dev is not None and len(dev) else None

    started = time.monotonic()
    interrupted = _fit(estimator, train, classes, validation, folder / LOGS_DIR, seed,
                       keep_on_interrupt)
    training_time = time.monotonic() - started
    prior = metrics_mod.majority_baseline(train.y, len(classes))

    raw = {}
    for split_name in ("dev", "test"):
        if split_name in ds.splits:
            split = ds.split(split_name)
            raw[split_name] = np.asarray(estimator.predict_proba(split.X)) if len(split) \
                else np.zeros((0, len(classes)))
    decision = _operating_point.fit(ds.split("dev").y if "dev" in raw else [],
                                    raw.get("dev", np.zeros((0, len(classes)))), classes,
                                    seed=seed, **_decision_options(target))
    rows = []
    evaluated = {}
    for split_name in ("test", "dev"):
        if split_name not in raw:
            continue
        split = ds.split(split_name)
        proba = _operating_point.calibrate(decision, raw[split_name])
        evaluated[split_name] = metrics_mod.evaluate_with_baseline(split.y, proba, classes,
                                                                   prior)
        evaluated[split_name]["operating_point"] = _operating_point_metrics(
            decision, split.y, proba, raw[split_name], prior)
        rows.extend(_prediction_rows(ds.name, split_name, split.ids, split.y, proba, classes,
                                     decision))

    eval_metrics = {}
    for other in others:
        split = other.split("test")
        codes = _class_map(classes, other)[split.y]
        proba = _operating_point.calibrate(decision,
                                           np.asarray(estimator.predict_proba(split.X)))
        eval_metrics[other.name] = metrics_mod.evaluate_with_baseline(codes, proba, classes,
                                                                      prior)
        rows.extend(_prediction_rows(other.name, "test", split.ids, codes, proba, classes,
                                     decision))

    main_split = "test" if "test" in evaluated else ("dev" if "dev" in evaluated else None)
    metrics = dict(evaluated.get(main_split) or {"classes": classes})
    metrics.update({
        "dataset": ds.name, "experiment": exp.name, "estimator": exp.estimator,
        "split": main_split, "training_examples": len(train),
        "training_time_s": round(training_time, 3),
        "training_examples_per_s": round(len(train) * max(1, _epochs_run(estimator))
                                         / training_time, 1) if training_time else None,
        "seed": seed,
    })
    if "dev" in evaluated:
        metrics["dev"] = evaluated["dev"]
        metrics["dev"]["used_for_early_stopping"] = validation is not None
    if eval_metrics:
        metrics["eval_datasets"] = eval_metrics
    if interrupted:
        metrics["interrupted"] = interrupted
    metrics.setdefault("operating_point", {})["decision"] = decision
    fileutil.atomic_write_json(folder / _operating_point.FILE, decision)
    _save_explainer(folder, ds, estimator, metrics)

    (folder / ESTIMATOR_DIR).mkdir()
    estimator.save(folder / ESTIMATOR_DIR)
    history = getattr(estimator, "history_", None)
    if history:
        fileutil.atomic_write_json(folder / HISTORY_FILE, history)
    fileutil.atomic_write_json(folder / METRICS_FILE, metrics)
    with fileutil.atomic_open(folder / PREDICTIONS_FILE, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["dataset", "split", "run_id", "true", "predicted", "most_likely",
                         *(f"p_{c}" for c in classes)])
        writer.writerows(rows)
    return metrics


def _decision_options(target):
    target = dict(target or {})
    return {"calibration": target.get("calibration") or "auto",
            "min_precision": target.get("min_precision"),
            "max_false_alarm_rate": target.get("max_false_alarm_rate")}


def _operating_point_metrics(decision, y, proba, raw, prior):
    """Metrics at the chosen operating point, beside arg-max and the baseline's."""
    from ciml import calibration

    n = len(np.asarray(y))
    base = np.tile(np.asarray(prior, dtype=np.float64), (n, 1))
    out = {"chosen": _operating_point.evaluate(decision, y, proba),
           "calibration": dict(calibration.measures(y, proba),
                               method=decision["calibration"]["method"],
                               uncalibrated=calibration.measures(y, raw),
                               reliability=calibration.reliability(y, proba))}
    if decision.get("kind") == "threshold":
        at_half = dict(decision, threshold=0.5)
        out["at_0.5"] = _operating_point.evaluate(at_half, y, proba)
        out["baseline"] = _operating_point.evaluate(at_half, y, base)
    return out


def _save_explainer(folder, ds, estimator, metrics):
    """The reference (typical passed run) and the global importance, for explanations."""
    from ciml import explain

    try:
        reference = explain.fit_reference(ds)
        explain.save_reference(folder, reference)
        table = explain.importance_table(ds, explain.global_importance(estimator, ds,
                                                                       reference))
    except Exception as exc:  # a third-party explain may fail in its own ways
        # Explanations are a help, never a reason to lose a trained model.
        LOG.warning("no explanations for this model: %s", exc)
        LOG.debug("explanation setup failed", exc_info=True)
        return
    explain.save_importance(folder, table)
    metrics["feature_importance"] = table[:20]


def _epochs_run(estimator):
    history = getattr(estimator, "history_", None) or {}
    return int(history.get("epochs_run") or 1)


def _read_optional(path):
    return fileutil.read_json(path) if path.is_file() else None


def model_dir(data_path, dataset, experiment):
    """The folder of a trained model; :class:`NotFoundError` if there is none."""
    data_path = _data_path(data_path)
    path = data_path.model(dataset, experiment)
    if not (path / METADATA_FILE).is_file():
        # Name what is missing: a misspelt name must not read as "train it".
        missing = []
        if not data_path.dataset(dataset).is_dir():
            missing.append(f"dataset {dataset!r} does not exist (see ciml dataset list)")
        if not data_path.experiment(experiment).is_file():
            missing.append(f"experiment {experiment!r} does not exist "
                           "(see ciml experiment list)")
        trained = sorted(p.name for p in (data_path.models / dataset).glob("*")
                         if (p / METADATA_FILE).is_file()) \
            if (data_path.models / dataset).is_dir() else []
        if missing:
            detail = "; ".join(missing)
            if trained:
                detail += f"; models trained on {dataset!r}: {', '.join(trained)}"
            raise NotFoundError(f"no model {dataset}/{experiment}: {detail}")
        raise NotFoundError(f"no model trained for dataset {dataset!r} and experiment "
                            f"{experiment!r}; run ciml train-model --dataset {dataset} "
                            f"--experiment {experiment} first")
    return path


def read_metadata(data_path, dataset, experiment):
    return fileutil.read_json(model_dir(data_path, dataset, experiment) / METADATA_FILE)


def read_metrics(data_path, dataset, experiment):
    path = model_dir(data_path, dataset, experiment) / METRICS_FILE
    return fileutil.read_json(path)


def list_models(data_path):
    """One dict per trained model (metadata plus headline metrics), sorted."""
    root = _data_path(data_path).models
    out = []
    if not root.is_dir():
        return out
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for exp_dir in sorted(p for p in ds_dir.iterdir()
                              if p.is_dir() and not p.name.startswith(".")):
            try:
                meta = fileutil.read_json(exp_dir / METADATA_FILE)
                metrics = fileutil.read_json(exp_dir / METRICS_FILE)
            except (OSError, ValueError):
                continue
            out.append({"dataset": ds_dir.name, "experiment": exp_dir.name,
                        "path": exp_dir, "metadata": meta, "metrics": metrics})
    return out


def delete_model(data_path, dataset, experiment):
    """Remove a trained model; :class:`NotFoundError` if there is none."""
    return storage.remove_dir(model_dir(data_path, dataset, experiment), METADATA_FILE)


class TrainedModel:
    """A trained model, loaded once, with the dataset whose normalization it needs."""

    def __init__(self, path, metadata, dataset, experiment, estimator):
        self.path = path if storage.is_remote(path) else pathlib.Path(path)
        self.metadata = metadata
        self.dataset = dataset
        self.experiment = experiment
        self.estimator = estimator
        self.classes = list(metadata.get("dataset_classes") or dataset.classes)
        #: The operating point (calibration, threshold); ``None`` for older models.
        self.decision = _read_optional(self.path / _operating_point.FILE)
        self._explainer = None

    def __repr__(self):
        return f"TrainedModel({self.dataset.name!r}, {self.experiment.name!r})"

    @classmethod
    def load(cls, data_path, dataset, experiment):
        """Load the model of ``dataset`` x ``experiment`` (the estimator once).

        A model whose estimator plugin is not installed fails with the name
        of the distribution to install; a model whose dataset was rebuilt
        differently since training fails too (its normalization changed).
        """
        from ciml.dataset import Dataset
        from ciml.experiment import Experiment
        from ciml.plugins import get_manager

        data_path = _data_path(data_path)
        check_name(dataset, "dataset name")
        check_name(experiment, "experiment name")
        path = model_dir(data_path, dataset, experiment)
        metadata = fileutil.read_json(path / METADATA_FILE)
        name = metadata["estimator"]
        try:
            est_cls = get_manager().get("estimator", name)
        except UnknownPluginError:
            dist = metadata.get("estimator_distribution")
            version = metadata.get("estimator_version")
            if dist:
                hint = (f"install the distribution {dist!r}"
                        + (f" (it was trained with version {version})" if version else "")
                        + f": pip install {dist}")
            else:
                hint = "install the plugin that provides it"
            raise CimlError(f"model {dataset}/{experiment} needs the estimator {name!r}, "
                            f"which is not installed; {hint}") from None
        ds = Dataset.open(data_path, dataset)
        if metadata.get("dataset_fingerprint") not in (None, ds.fingerprint):
            raise CimlError(
                f"dataset {dataset!r} changed since model {dataset}/{experiment} was trained "
                f"(fingerprint {ds.fingerprint}, was {metadata['dataset_fingerprint']}); "
                "retrain it with ciml train-model")
        try:
            estimator = est_cls.load(storage.local_copy(path / ESTIMATOR_DIR))
        except OSError as exc:
            raise CimlError(f"model {dataset}/{experiment} cannot be loaded from "
                            f"{path / ESTIMATOR_DIR}: {exc}") from None
        exp = Experiment(experiment, name, metadata.get("params") or {})
        return cls(path, metadata, ds, exp, estimator)

    @property
    def metrics(self):
        return fileutil.read_json(self.path / METRICS_FILE)

    def predict_examples(self, X):
        """Class probabilities ``(n, n_classes)`` for examples shaped like the dataset's."""
        return _operating_point.calibrate(self.decision, self._estimator_proba(X))

    def _estimator_proba(self, X):
        """The estimator's own probabilities, before the operating point's calibration."""
        X = np.asarray(X, dtype=np.float32) if not hasattr(X, "chunks") else X
        if X.ndim == 2:
            X = X[None, ...]
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)

    @property
    def explainer(self):
        """Explains this model's predictions (``None`` for a model saved without a reference)."""
        if self._explainer is None:
            from ciml import explain

            reference = explain.load_reference(self.path)
            if reference is None:
                return None
            self._explainer = explain.Explainer(self.estimator, self.dataset, reference)
        return self._explainer

    def predict_frame(self, frame, unusual_percentile=None, explain=True):
        """One raw run's metrics frame -> ``{"predicted", "probabilities", "unusual", ...}``.

        ``predicted`` is the class at the model's operating point
        (:mod:`ciml.operating_point`): for two classes the stored threshold,
        for more ``uncertain`` (with ``candidates``, its two most likely
        classes) when the top probability is below the stored floor.
        ``unusual`` compares the run with the dataset's training runs
        (:meth:`ciml.dataset.Dataset.unusual`); ``None`` for a dataset built
        without a profile.  ``explanation`` says why
        (:func:`ciml.explain.explanation`).
        """
        example, length = self.dataset.example_from_frame(frame, with_length=True)
        raw = self._estimator_proba(example[None, ...])
        proba = _operating_point.calibrate(self.decision, raw)[0]
        predicted, extra = _operating_point.label(self.decision, proba, self.classes)
        out = {"predicted": predicted,
               "probabilities": {c: float(p) for c, p in zip(self.classes, proba)},
               "unusual": self.dataset.unusual(example, length, unusual_percentile),
               **extra}
        if explain:
            out["explanation"] = self.explain_example(example, length, proba, raw[0])
        return out

    def explain_example(self, example, length, proba, estimator_proba=None):
        """The explanation record of one example toward the class predicted for it.

        That is the class at the operating point (a run below the failed
        threshold is explained as passed even if failed is its most likely
        class), and the most likely one for an ``uncertain`` run.
        ``estimator_proba``: the estimator's own probabilities for the
        example, when known (the model is then not asked again).
        """
        explainer = self.explainer
        if explainer is None:
            return None
        top = int(_operating_point.decide(self.decision, np.asarray(proba)[None])[0])
        if top < 0:
            top = int(np.argmax(proba))
        try:
            return explainer(example, length, top, self.classes[top], proba=estimator_proba)
        except Exception as exc:  # a third-party explain may fail in its own ways
            # The verdict stands without its explanation.
            LOG.warning("cannot explain this prediction: %s", exc)
            LOG.debug("explanation failed", exc_info=True)
            return None
