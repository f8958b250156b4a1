"""Built-in gradient-boosted trees estimator on LightGBM: ``gbdt``.

LightGBM is imported inside methods only (when a model is fitted or
loaded): registering the plugin, and every command that merely lists it,
stays fast.

Trees need no scaling and shrug off features that never vary (zero
padding), so each ``(time, feature)`` example is simply flattened: an
aggregate dataset gives a few hundred columns, a time-series dataset one
column per (time step, feature).  A Zarr split is read chunk by chunk into
one float32 matrix, which is what LightGBM bins anyway.

The model is saved in LightGBM's own text format (``model.txt``) beside a
JSON file of ciml's settings: loading reads text, never runs code.
"""

import json
import pathlib

import numpy as np

from ciml.base import (
    Estimator,
    Parameter,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from ciml.errors import CimlError, ConfigError, NotFoundError
from ciml.hookspecs import hookimpl

MODEL_FILE = "model.txt"
PARAMS_FILE = "params.json"


def _fraction(value):
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError("expected a number in (0, 1]")
    return value


_fraction.type_name = "float in (0, 1]"  # type: ignore[attr-defined]  # plugin show


def _lgb():
    import lightgbm

    return lightgbm


def _flat(X):
    """``X`` (numpy or Zarr, ``(n, t, f)``) as one float32 ``(n, t*f)`` matrix."""
    n = int(X.shape[0])
    width = int(np.prod(X.shape[1:])) if len(X.shape) > 1 else 1
    if isinstance(X, np.ndarray):
        return np.ascontiguousarray(X.reshape(n, width), dtype=np.float32)
    out = np.empty((n, width), dtype=np.float32)
    chunks = getattr(X, "chunks", None)
    size = max(1, int(chunks[0])) if chunks else 1024
    for start in range(0, n, size):
        stop = min(n, start + size)
        out[start:stop] = np.asarray(X[start:stop], dtype=np.float32).reshape(stop - start,
                                                                              width)
    return out


def _labels(y):
    return np.asarray(y[...] if not isinstance(y, np.ndarray) else y, np.int64).reshape(-1)


class GBDTEstimator(Estimator):
    """Gradient-boosted decision trees (LightGBM) on the flattened examples

    A strong default for aggregate datasets: no scaling needed, robust to
    features that never vary, exact per-prediction feature contributions
    (used by ``explain``).  Binary labels use LightGBM's ``binary``
    objective, more classes ``multiclass``.  With a validation set (ciml
    passes the dev split), boosting stops when its log loss has not
    improved for ``early_stopping`` rounds and the best round is kept.
    The same seed gives the same model: LightGBM runs in its deterministic
    mode with a fixed thread count.
    """

    name = "gbdt"
    #: How ``explain`` works, as prediction records name it.
    explain_method = "tree-contributions"
    parameters = (
        Parameter("trees", positive_int, 400, "most boosting rounds (trees per class)"),
        Parameter("leaves", positive_int, 15, "most leaves per tree"),
        Parameter("learning_rate", positive_float, 0.05, "shrinkage of each tree"),
        Parameter("min_data_in_leaf", positive_int, 10,
                  "fewest training examples in a leaf (larger: smoother, fewer "
                  "one-run rules); at most half of an average class's examples"),
        Parameter("feature_fraction", _fraction, 0.5,
                  "share of the columns each tree may use"),
        Parameter("bagging_fraction", _fraction, 0.8,
                  "share of the training examples each tree sees"),
        Parameter("l2", non_negative_float, 1.0, "L2 regularisation of leaf values"),
        Parameter("early_stopping", non_negative_int, 30,
                  "rounds without improvement of the validation log loss before "
                  "stopping (the best round is kept); 0 disables it"),
        Parameter("class_weight", str, "none",
                  "weigh classes inversely to their frequency; 'none' keeps the "
                  "probabilities honest (the operating point is chosen on dev instead)",
                  choices=("balanced", "none")),
        Parameter("threads", positive_int, 2,
                  "LightGBM threads (fixed, so that a seed gives the same model)"),
        Parameter("seed", int, None, "random seed (train-model --seed overrides it)"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        self.booster_ = None
        self.classes_ = None
        self.input_shape_ = None
        self.history_ = {}
        self.prior_ = None

    # -- fit ----------------------------------------------------------------

    def _lgb_params(self, n_classes, seed):
        params = {
            "objective": "binary" if n_classes == 2 else "multiclass",
            "metric": "binary_logloss" if n_classes == 2 else "multi_logloss",
            "num_leaves": int(self.leaves),
            "learning_rate": float(self.learning_rate),
            "min_data_in_leaf": int(self.min_data_in_leaf),
            "feature_fraction": float(self.feature_fraction),
            "bagging_fraction": float(self.bagging_fraction),
            "bagging_freq": 1 if self.bagging_fraction < 1.0 else 0,
            "lambda_l2": float(self.l2),
            "num_threads": int(self.threads),
            "seed": int(seed),
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            # Small datasets: let a bin hold few examples, so a rare
            # failure's extreme value still gets its own split point.
            "min_data_in_bin": 1,
            "feature_pre_filter": False,
        }
        if n_classes > 2:
            params["num_class"] = n_classes
        return params

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        lgb = _lgb()
        classes = [str(c) for c in classes]
        k = len(classes)
        if k < 2:
            raise ConfigError("an estimator needs at least two classes")
        y = _labels(y)
        n = int(X.shape[0])
        if len(y) != n:
            raise ConfigError(f"{n} examples but {len(y)} labels")
        if n == 0:
            raise ConfigError("no training examples")
        if y.min() < 0 or y.max() >= k:
            raise ConfigError(f"labels must be class indices in [0, {k})")
        seed = self.seed if seed is None else seed
        seed = 0 if seed is None else int(seed)
        data = _flat(X)
        counts = np.bincount(y, minlength=k).astype(np.float64)
        self.prior_ = (counts / counts.sum()).tolist()
        self.classes_ = classes
        self.input_shape_ = [int(d) for d in X.shape[1:]]
        present = np.flatnonzero(counts)
        if len(present) < 2:
            # Nothing to separate: the training prior is the honest answer.
            self.booster_ = None
            self.history_ = {"trees": 0}
            return self
        weight = None
        if self.class_weight == "balanced":
            w = np.ones(k)
            w[present] = n / (len(present) * counts[present])
            weight = w[y]
        params = self._lgb_params(k, seed)
        # A small history (a new job, the demo) must still grow trees: a leaf
        # never needs more than half of an average class's examples.
        params["min_data_in_leaf"] = max(1, min(int(self.min_data_in_leaf),
                                                n // (2 * len(present))))
        train_set = lgb.Dataset(data, label=y, weight=weight, params={"verbosity": -1},
                                free_raw_data=True)
        valid_sets, callbacks, record = [], [], {}
        if validation is not None and int(validation[0].shape[0]) > 0:
            vy = _labels(validation[1])
            valid_sets = [lgb.Dataset(_flat(validation[0]), label=vy, reference=train_set)]
            callbacks.append(lgb.record_evaluation(record))
            if self.early_stopping:
                callbacks.append(lgb.early_stopping(int(self.early_stopping), verbose=False))
        try:
            booster = lgb.train(params, train_set, num_boost_round=int(self.trees),
                                valid_sets=valid_sets, valid_names=["validation"][:len(
                                    valid_sets)], callbacks=callbacks)
        except lgb.basic.LightGBMError as exc:
            raise CimlError(f"LightGBM could not train: {exc}") from None
        if booster.best_iteration and booster.best_iteration > 0:
            # Keep only the best round's trees: predictions and the saved
            # text model then agree without remembering an iteration.
            booster = lgb.Booster(model_str=booster.model_to_string(
                num_iteration=booster.best_iteration))
        self.booster_ = booster
        curves = record.get("validation") or {}
        self.history_ = {"val_loss": [float(v) for v in next(iter(curves.values()), [])],
                         "trees": int(booster.current_iteration()),
                         "epochs_run": int(booster.current_iteration())}
        return self

    # -- predict ------------------------------------------------------------

    def _check(self, X):
        if self.classes_ is None:
            raise CimlError(f"estimator {self.name!r} is not fitted")
        shape = [int(d) for d in X.shape[1:]]
        if shape != list(self.input_shape_):
            raise ConfigError(f"the model expects examples shaped {tuple(self.input_shape_)}, "
                              f"got {tuple(shape)}")

    def predict_proba(self, X):
        self._check(X)
        n, k = int(X.shape[0]), len(self.classes_)
        if n == 0:
            return np.zeros((0, k))
        if self.booster_ is None:
            return np.tile(np.asarray(self.prior_, dtype=np.float64), (n, 1))
        raw = np.asarray(self.booster_.predict(_flat(X)), dtype=np.float64)
        if k == 2:
            raw = raw.reshape(-1)
            proba = np.stack([1.0 - raw, raw], axis=1)
        else:
            proba = raw.reshape(n, k)
        proba = np.clip(proba, 0.0, None)
        return proba / proba.sum(axis=1, keepdims=True)

    def explain(self, X, reference=None, target=None):
        """Exact per-input contributions (LightGBM's ``pred_contrib``), shaped like ``X``.

        Each value is the input's additive share of the raw score (log-odds)
        of class ``target`` (default: the predicted class); positive pushes
        toward it.  ``reference`` is not needed: tree contributions are
        relative to the training data's expected score.
        """
        self._check(X)
        n, k = int(X.shape[0]), len(self.classes_)
        shape = (n, *self.input_shape_)
        if n == 0 or self.booster_ is None:
            return np.zeros(shape)
        proba = self.predict_proba(X)
        target = proba.argmax(axis=1) if target is None else \
            np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
        width = int(np.prod(self.input_shape_))
        contrib = np.asarray(self.booster_.predict(_flat(X), pred_contrib=True),
                             dtype=np.float64)
        if k == 2:
            # One score, of class 1: class 0's contributions are its negation.
            per_input = contrib[:, :width]
            sign = np.where(target == 1, 1.0, -1.0)[:, None]
            out = per_input * sign
        else:
            contrib = contrib.reshape(n, k, width + 1)
            out = contrib[np.arange(n), target, :width]
        return out.reshape(shape)

    def feature_importance(self):
        """Total gain of each input over all trees, shaped like one example."""
        if self.booster_ is None:
            return np.zeros(self.input_shape_)
        gain = np.asarray(self.booster_.feature_importance(importance_type="gain"),
                          dtype=np.float64)
        return gain.reshape(self.input_shape_)

    # -- save / load --------------------------------------------------------

    def save(self, path):
        if self.classes_ is None:
            raise CimlError(f"estimator {self.name!r} is not fitted")
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.booster_ is not None:
            (path / MODEL_FILE).write_text(self.booster_.model_to_string())
        state = {
            "estimator": self.name,
            "params": self.get_params(include_secrets=False),
            "classes": self.classes_,
            "input_shape": self.input_shape_,
            "prior": self.prior_,
            "history": self.history_,
            "has_trees": self.booster_ is not None,
        }
        (path / PARAMS_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path):
        path = pathlib.Path(path)
        params_file = path / PARAMS_FILE
        if not params_file.is_file():
            raise NotFoundError(f"no saved {cls.name} model in {path} (expected "
                                f"{PARAMS_FILE} and {MODEL_FILE})")
        try:
            state = json.loads(params_file.read_text())
        except ValueError as exc:
            raise CimlError(f"{params_file} is not valid JSON: {exc}") from None
        known = {p.name for p in cls.parameters}
        est = cls(**{k: v for k, v in (state.get("params") or {}).items()
                     if k in known and v is not None})
        est.classes_ = list(state.get("classes") or [])
        est.input_shape_ = list(state.get("input_shape") or [])
        est.prior_ = state.get("prior")
        est.history_ = state.get("history") or {}
        if state.get("has_trees", True):
            model_file = path / MODEL_FILE
            if not model_file.is_file():
                raise NotFoundError(f"no saved {cls.name} model in {path} (expected "
                                    f"{MODEL_FILE})")
            est.booster_ = _load_booster(model_file)
        return est


def _load_booster(model_file):
    """The booster saved in ``model_file``: through LightGBM's C API where it can be.

    Predicting needs no more than the C library, and importing the
    ``lightgbm`` package costs more than the rest of a one-run ``ciml
    predict`` (:mod:`ciml_plugins.estimators.lightgbm_c`).
    """
    from ciml_plugins.estimators import lightgbm_c

    try:
        text = model_file.read_text()
        booster = lightgbm_c.load(text)
        if booster is None:
            lgb = _lgb()
            try:
                booster = lgb.Booster(model_str=text)
            except lgb.basic.LightGBMError as exc:
                raise lightgbm_c.LightGBMError(str(exc)) from None
    except (lightgbm_c.LightGBMError, UnicodeDecodeError) as exc:
        raise CimlError(f"{model_file} is not a LightGBM text model: "
                        f"{str(exc).strip()[:200]}") from None
    return booster


@hookimpl
def ciml_register_estimators(register):
    register(GBDTEstimator)
