"""Built-in estimators on TensorFlow/Keras: ``dnn`` (an MLP), ``linear-svm`` and ``cnn``.

TensorFlow is imported inside methods only: registering these plugins, and
every command that merely lists them, stays fast.

Both estimators flatten each ``(time, feature)`` example, standardize the
flattened inputs with statistics computed on the training examples (features
constant in training, such as zero padding past the longest training run,
get unit variance so that later values are never divided by ~0), and stream
training data in whole chunks through ``tf.data``: an example array may be a
Zarr array larger than memory.

Saved models are a ``model.keras`` file plus ``params.json``; they are
loaded with ``keras.saving.load_model(..., safe_mode=True)``, so a model
file that would run code on load (a ``Lambda`` layer) is refused.
"""

import json
import logging
import math
import pathlib

import numpy as np

from ciml.base import (
    Estimator,
    Parameter,
    non_negative_float,
    non_negative_int,
    parse_bool,
    positive_float,
    positive_int,
)
from ciml.errors import CimlError, ConfigError, NotFoundError
from ciml.hookspecs import hookimpl

LOG = logging.getLogger(__name__)

#: Optimizer names users type (the original ciml's), to Keras class names.
OPTIMIZERS = {
    "Adagrad": "Adagrad",
    "Adam": "Adam",
    "Ftrl": "Ftrl",
    "RMSProp": "RMSprop",
    "SGD": "SGD",
}
ACTIVATIONS = ("relu", "elu", "selu", "gelu", "tanh", "sigmoid", "swish", "leaky_relu")

MODEL_FILE = "model.keras"
PARAMS_FILE = "params.json"
#: Examples read per step when the input is not chunked (numpy).
DEFAULT_CHUNK = 1024
#: A Zarr split at most this large (and under a quarter of the free memory) is
#: decompressed once and kept in memory for the later epochs; a larger one is
#: streamed from Zarr again on every epoch.  ``CIML_TRAIN_MEMORY_BYTES``
#: overrides it (0: always stream).
MEMORY_BYTES = 1 << 30


def hidden_layers_type(value):
    """``"100/100/100"`` (or a list of ints) -> the canonical ``"100/100/100"``."""
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        parts = [p for p in str(value).replace(",", "/").split("/") if p.strip()]
    try:
        units = [int(p) for p in parts]
    except ValueError:
        raise ValueError("expected unit counts separated by '/', e.g. 100/100/100") from None
    if not units or any(u <= 0 for u in units):
        raise ValueError("expected one or more positive unit counts, e.g. 100/100/100")
    return "/".join(str(u) for u in units)


def _fraction(value):
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError("expected a number in [0, 1)")
    return value


_fraction.type_name = "float in [0, 1)"  # type: ignore[attr-defined]  # plugin show


def _tf():
    import os

    from ciml import native_logs

    # TensorFlow's C++ chatter is not for ciml's users: what the log level
    # does not hide goes to ciml's debug log (the CLI only).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    native_logs.install()
    import keras
    import tensorflow as tf

    return tf, keras


def configure_devices(tf, gpu):
    """``True`` requires a GPU, ``False`` hides them all, ``None`` is TensorFlow's choice.

    Hiding GPUs only works before TensorFlow has initialized them: it runs
    first thing in :meth:`_KerasEstimator.fit`.
    """
    if gpu is None:
        return
    gpus = tf.config.list_physical_devices("GPU")
    if gpu:
        if not gpus:
            raise ConfigError("a GPU was required (--gpu) but TensorFlow sees none "
                              "(is a CUDA-enabled tensorflow installed?)")
        return
    if gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:
            raise CimlError(f"--no-gpu came too late: TensorFlow already uses the GPU "
                            f"({exc})") from None


def _chunk_size(X):
    chunks = getattr(X, "chunks", None)
    if chunks:
        return max(1, int(chunks[0]))
    return DEFAULT_CHUNK


def _as_labels(y):
    return np.asarray(y[...] if hasattr(y, "shape") and not isinstance(y, np.ndarray) else y,
                      dtype=np.int64).reshape(-1)


def _iter_chunks(X, start, stop, size=None):
    """Yield ``(offset, float32 array)`` over ``X[start:stop]``, one chunk at a time.

    Boundaries follow the array's own chunks so that each Zarr chunk is
    decompressed exactly once.
    """
    size = size or _chunk_size(X)
    pos = start
    while pos < stop:
        end = min(stop, (pos // size + 1) * size)
        yield pos, np.asarray(X[pos:end], dtype=np.float32)
        pos = end


def _memory_budget():
    import os

    env = os.environ.get("CIML_TRAIN_MEMORY_BYTES")
    if env is not None:
        return int(env)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = 0
    return min(MEMORY_BYTES, free // 4)


def in_memory_if_small(X, start, stop):
    """``(array, start, stop)``: ``X[start:stop]`` as numpy when it fits the budget.

    Decompressing every chunk on every epoch costs CPU that training needs
    (2 cores); a split small enough is read once, chunk by chunk, instead.
    Numpy input and large splits are returned as they are.
    """
    if isinstance(X, np.ndarray):
        return X, start, stop
    nbytes = (stop - start) * int(np.prod(X.shape[1:])) * 4
    if nbytes > _memory_budget():
        return X, start, stop
    out = np.empty((stop - start, *X.shape[1:]), dtype=np.float32)
    for pos, x in _iter_chunks(X, start, stop):
        out[pos - start:pos - start + len(x)] = x
    return out, 0, stop - start


def _pipeline_options(tf):
    options = tf.data.Options()
    # Keras does the same for numpy input: the default graph rewrites cost a
    # serialization of the pipeline and buy nothing for these few steps.
    options.experimental_optimization.apply_default_optimizations = False
    return options


def class_weights(y, n_classes):
    """Balanced weights ``n / (k * count_c)`` over the classes present in ``y``."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes, dtype=np.float64)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def feature_moments(X, start, stop):
    """Mean and variance of each flattened input over ``X[start:stop]``, streamed."""
    total = None
    total_sq = None
    n = 0
    for _, x in _iter_chunks(X, start, stop):
        flat = x.reshape(len(x), -1).astype(np.float64)
        if total is None:
            total = np.zeros(flat.shape[1])
            total_sq = np.zeros(flat.shape[1])
        total += flat.sum(axis=0)
        total_sq += np.square(flat).sum(axis=0)
        n += len(flat)
    if not n:
        raise ConfigError("no training examples")
    mean = total / n
    var = np.maximum(total_sq / n - np.square(mean), 0.0)
    # A feature (nearly) constant in training would otherwise be divided by
    # ~0 at prediction time: keep its scale.
    var[var < 1e-12] = 1.0
    return mean.astype(np.float32), var.astype(np.float32)


class _KerasEstimator(Estimator):
    """Shared machinery of the Keras estimators: streaming fit, chunked predict, save/load."""

    #: Bump when the saved layout changes.
    format_version = 1

    def __init__(self, **params):
        super().__init__(**params)
        self.model_ = None
        self.classes_ = None
        self.input_shape_ = None
        self.history_ = {}

    # -- to be provided by subclasses --------------------------------------

    def _build(self, keras, input_shape, n_classes, mean, variance):
        raise NotImplementedError

    def _loss(self, keras, n_classes):
        raise NotImplementedError

    def _targets(self, tf, y, n_classes):
        """Map int labels to what the loss expects (inside ``tf.data``)."""
        return y

    def _proba(self, outputs):
        return outputs

    def _after_fit(self, X, y, validation):
        """Hook for post-fit calibration."""

    def _extra_state(self):
        return {}

    def _set_extra_state(self, state):
        pass

    # -- data ---------------------------------------------------------------

    def _dataset(self, tf, X, y, start, stop, weights, n_classes, shuffle, seed, chunk=None):
        """A ``tf.data`` pipeline of ``(x, target, weight)`` batches of ``X[start:stop]``.

        Each pass visits the chunks in a new order and shuffles within each
        chunk: a good approximation of a full shuffle that never needs the
        split in memory.  ``chunk``: the chunk length to shuffle by (the
        Zarr array's, also when the split was copied to memory, so that the
        same seed gives the same batches, and model, whatever the memory
        budget).

        A Zarr array is streamed: Python reads whole chunks (never single
        rows, which caps near 4,000 rows/s) and ``rebatch`` cuts them into
        training batches across chunk boundaries.  A numpy array (a split
        small enough to be kept in memory) becomes one tensor and Python
        draws only the shuffled row order, gathered per batch inside
        TensorFlow: copying rows in Python would hold the GIL that the
        training loop needs.
        """
        size = chunk or _chunk_size(X)
        bounds = []
        pos = start
        while pos < stop:
            end = min(stop, (pos // size + 1) * size)
            bounds.append((pos, end))
            pos = end
        rng = np.random.default_rng(seed)
        shape = tuple(X.shape[1:])
        w_of_class = weights.astype(np.float32)
        batch = int(self.batch_size)
        targets = self._targets
        # One finite pass with its length declared: Keras then knows an
        # epoch's end, also when it runs several steps per call.
        known_length = tf.data.experimental.assert_cardinality(
            math.ceil((stop - start) / batch))

        def order():
            """``(a, b, permutation or None)`` per chunk, for one pass."""
            chunks = rng.permutation(len(bounds)) if shuffle else range(len(bounds))
            for i in chunks:
                a, b = bounds[i]
                yield a, b, (rng.permutation(b - a) if shuffle else None)

        # Python runs through tf.py_function, never Dataset.from_generator:
        # the generator op sets glibc's M_TRIM_THRESHOLD for the whole
        # process, which turns off malloc's adaptive mmap threshold, so every
        # batch-sized buffer is mmap'ed and unmapped again; training ran 1.5-2x
        # slower than Keras on the same arrays because of it.
        if isinstance(X, np.ndarray):
            rows = slice(start, stop)
            labels = np.asarray(y[rows], dtype=np.int64)
            data = (np.asarray(X[rows], dtype=np.float32), labels, w_of_class[labels])

            def pass_indices():
                # One element per pass (each repeat calls it again): the
                # whole pass's row order.
                parts = [np.arange(a - start, b - start, dtype=np.int64)[perm]
                         if perm is not None else np.arange(a - start, b - start)
                         for a, b, perm in order()]
                return np.concatenate(parts) if parts else np.zeros(0, np.int64)

            def indices(_):
                idx = tf.py_function(pass_indices, [], tf.int64)
                idx.set_shape((None,))
                return idx

            idx = tf.data.Dataset.range(1).map(indices).rebatch(batch)
            # The arrays travel as one dataset element (as Keras feeds numpy),
            # not as constants captured in the map function.
            ds = tf.data.Dataset.zip((idx, tf.data.Dataset.from_tensors(data).repeat()))

            def gather(i, arrays):
                x, yy, w = (tf.gather(a, i) for a in arrays)
                return x, targets(tf, yy, n_classes), w

            ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return ds.apply(known_length).with_options(_pipeline_options(tf))

        plan = []

        def read_chunk(j):
            # Chunks are read in order; the first of a pass draws its plan.
            j = int(j)
            if j == 0:
                plan[:] = list(order())
            a, b, perm = plan[j]
            x = np.asarray(X[a:b], dtype=np.float32)
            yy = np.asarray(y[a:b], dtype=np.int64)
            if perm is not None:
                x, yy = x[perm], yy[perm]
            return x, yy, w_of_class[yy]

        def chunk(j):
            x, yy, w = tf.py_function(read_chunk, [j], (tf.float32, tf.int64, tf.float32))
            x.set_shape((None, *shape))
            yy.set_shape((None,))
            w.set_shape((None,))
            return x, yy, w

        # Sequential map: chunks must be read in plan order.
        ds = tf.data.Dataset.range(len(bounds)).map(chunk)

        def to_targets(x, yy, w):
            return x, targets(tf, yy, n_classes), w

        ds = ds.rebatch(batch).map(to_targets, num_parallel_calls=1, deterministic=True)
        return ds.apply(known_length).with_options(_pipeline_options(tf))

    # -- fit ----------------------------------------------------------------

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        tf, keras = _tf()
        configure_devices(tf, self.gpu)
        classes = [str(c) for c in classes]
        n_classes = len(classes)
        if n_classes < 2:
            raise ConfigError("an estimator needs at least two classes")
        seed = self.seed if seed is None else seed
        if seed is not None:
            keras.utils.set_random_seed(int(seed))
            if self.deterministic:
                # Process-wide and one-way: every later TensorFlow op in this
                # process runs its deterministic (sometimes slower) kernel.
                tf.config.experimental.enable_op_determinism()
        y = _as_labels(y)
        n = int(X.shape[0])
        if len(y) != n:
            raise ConfigError(f"{n} examples but {len(y)} labels")
        if n == 0:
            raise ConfigError("no training examples")
        if y.min() < 0 or y.max() >= n_classes:
            raise ConfigError(f"labels must be class indices in [0, {n_classes})")

        # Early stopping needs examples that are not fitted: the caller's
        # validation set (ciml passes the dev split), else the last slice of
        # the training examples (with a time split, the most recent runs).
        n_train = n
        val = None
        if validation is not None and int(validation[0].shape[0]) > 0:
            vX, vy = validation[0], _as_labels(validation[1])
            val = (vX, vy, 0, int(vX.shape[0]))
        elif self.validation_fraction > 0:
            n_val = int(round(n * self.validation_fraction))
            if n_val >= 8 and n - n_val >= 8:
                n_train = n - n_val
                val = (X, y, n_train, n)

        weights = (class_weights(y[:n_train], n_classes)
                   if self.class_weight == "balanced" else np.ones(n_classes))
        tX, ta, tb = in_memory_if_small(X, 0, n_train)
        if self.normalize:
            mean, variance = feature_moments(tX, ta, tb)
        else:
            mean = variance = None

        data_seed = 0 if seed is None else int(seed)
        train_ds = self._dataset(tf, tX, y[:n_train], ta, tb, weights, n_classes, True,
                                 data_seed, chunk=_chunk_size(X))
        batch = int(self.batch_size)
        steps_per_epoch = max(1, math.ceil(n_train / batch))
        epochs = int(self.epochs)
        if self.steps:
            # The cap spread over whole epochs (each a prefix of a freshly
            # shuffled pass): at most one step per epoch over it.
            epochs = max(1, min(epochs, math.ceil(int(self.steps) / steps_per_epoch)))
            steps_per_epoch = min(steps_per_epoch, math.ceil(int(self.steps) / epochs))
            train_ds = train_ds.take(steps_per_epoch)
        # A finite pass per epoch (see ``_dataset``), not an endless dataset
        # cut by ``steps_per_epoch``: with several steps per execution Keras
        # would run past the end of an epoch.
        train_ds = train_ds.prefetch(tf.data.AUTOTUNE)

        val_ds = None
        if val is not None:
            vX, vy, a, b = val
            vX, a2, b2 = in_memory_if_small(vX, a, b)
            if a2 != a:
                vy, a, b = vy[a:b], a2, b2
            # Validation examples weighted like training ones: the monitored
            # loss then cares about the rare class as much as the fit does.
            val_ds = self._dataset(tf, vX, vy, a, b, weights, n_classes, False, 0)
            val_ds = val_ds.prefetch(tf.data.AUTOTUNE)

        input_shape = tuple(int(d) for d in X.shape[1:])
        model = self._build(keras, input_shape, n_classes, mean, variance)
        # Several steps per call of the compiled train function: for the
        # small models this estimator builds, Keras' per-step Python work
        # costs as much as the step itself.
        model.compile(optimizer=self._optimizer(keras), loss=self._loss(keras, n_classes),
                      weighted_metrics=[],
                      steps_per_execution=min(int(self.steps_per_execution), steps_per_epoch))
        progress = _ProgressCallback.make(keras, epochs)
        callbacks = [progress]
        if val_ds is not None and self.patience:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=int(self.patience),
                restore_best_weights=True))
        if log_dir is not None:
            pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
            callbacks.append(_tensorboard_callback(tf, keras, log_dir))
        self.interrupted_ = None
        try:
            history = model.fit(train_ds, epochs=epochs, validation_data=val_ds,
                                callbacks=callbacks, verbose=0,
                                shuffle=False)
        except KeyboardInterrupt:
            progress.reporter.close()
            if progress.best_weights is not None:
                # Fitted to the best epoch so far: the caller may keep it.
                model.set_weights(progress.best_weights)
                self.model_ = model
                self.classes_ = classes
                self.input_shape_ = input_shape
                self.history_ = dict(progress.history, epochs_run=progress.epochs_run)
                self.interrupted_ = {"epochs_run": progress.epochs_run,
                                     "best_epoch": progress.best_epoch}
            raise
        self.model_ = model
        self.classes_ = classes
        self.input_shape_ = input_shape
        self.history_ = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        self.history_["epochs_run"] = len(next(iter(history.history.values()), []))
        self._after_fit(X, y, val)
        return self

    def finish_interrupted(self, X, y, validation=None):
        """After an interrupted :meth:`fit`, complete the best model so far; ``False`` if none."""
        if not self.interrupted_:
            return False
        val = None
        if validation is not None and int(validation[0].shape[0]) > 0:
            val = (validation[0], _as_labels(validation[1]), 0, int(validation[0].shape[0]))
        self._after_fit(X, _as_labels(y), val)
        return True

    def _optimizer(self, keras):
        cls = getattr(keras.optimizers, OPTIMIZERS[self.optimizer])
        return cls(learning_rate=float(self.learning_rate))

    # -- predict ------------------------------------------------------------

    def _check_fitted(self):
        if self.model_ is None:
            raise CimlError(f"estimator {self.name!r} is not fitted")

    def _outputs(self, X):
        self._check_fitted()
        shape = tuple(int(d) for d in X.shape[1:])
        if shape != tuple(self.input_shape_):
            raise ConfigError(f"the model expects examples shaped {tuple(self.input_shape_)}, "
                              f"got {shape}")
        n = int(X.shape[0])
        if n == 0:
            return np.zeros((0, self.model_.output_shape[-1]), dtype=np.float64)
        # predict_on_batch runs Keras' traced predict function: the same
        # numbers as calling the model eagerly, for about a tenth of the CPU
        # on the one-run batches of predict and watch (0.7 ms, not 9 ms).
        parts = [np.asarray(self.model_.predict_on_batch(x), dtype=np.float64)
                 for _, x in _iter_chunks(X, 0, n)]
        return np.concatenate(parts)

    def predict_proba(self, X):
        proba = self._proba(self._outputs(X))
        # Softmax outputs are float32: renormalize so rows sum to 1 in float64.
        proba = np.clip(proba, 0.0, None)
        return proba / proba.sum(axis=1, keepdims=True)

    # -- save / load --------------------------------------------------------

    def save(self, path):
        self._check_fitted()
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model_.save(path / MODEL_FILE)
        state = {
            "format_version": self.format_version,
            "estimator": self.name,
            "params": self.get_params(include_secrets=False),
            "classes": self.classes_,
            "input_shape": list(self.input_shape_),
            "history": self.history_,
            "state": self._extra_state(),
        }
        (path / PARAMS_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path):
        path = pathlib.Path(path)
        model_file = path / MODEL_FILE
        params_file = path / PARAMS_FILE
        if not model_file.is_file() or not params_file.is_file():
            raise NotFoundError(f"no saved {cls.name or cls.__name__} model in {path} "
                                f"(expected {MODEL_FILE} and {PARAMS_FILE})")
        try:
            state = json.loads(params_file.read_text())
        except ValueError as exc:
            raise CimlError(f"{params_file} is not valid JSON: {exc}") from None
        known = {p.name for p in cls.parameters}
        est = cls(**{k: v for k, v in (state.get("params") or {}).items()
                     if k in known and v is not None})
        _, keras = _tf()
        try:
            model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
        except Exception as exc:
            # Keras' message is a page long (a config dump and a traceback of
            # its own): the reason in ciml's words, the details in the debug log.
            LOG.debug("keras could not load %s", model_file, exc_info=True)
            text = str(exc)
            if "safe_mode" in text or "Lambda" in text or "arbitrary code" in text:
                reason = ("it holds code that would run when loaded (a Lambda layer), "
                          "which Keras' safe mode refuses")
            else:
                reason = ("it is not a Keras model file this version can read: "
                          f"{type(exc).__name__}")
            raise CimlError(f"refusing to load {model_file}: {reason}; retrain the model "
                            "with ciml train-model (ciml -vv shows Keras' message)") from None
        est.model_ = model
        est.classes_ = list(state.get("classes") or [])
        est.input_shape_ = tuple(state.get("input_shape") or model.input_shape[1:])
        est.history_ = state.get("history") or {}
        est._set_extra_state(state.get("state") or {})
        return est


class _ProgressCallback:
    """Epochs reported through :mod:`ciml.progress`; the best weights so far kept.

    The best epoch (lowest ``val_loss``, else ``loss``) is remembered so that
    an interrupted fit can still leave a usable model when the caller wants
    it (``train-model --keep-on-interrupt``).
    """

    @staticmethod
    def make(keras, epochs):
        from ciml.progress import EpochProgress

        class Progress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.reporter = EpochProgress(epochs, desc="training")
                self.history = {}
                self.best = None
                self.best_weights = None
                self.best_epoch = None
                self.epochs_run = 0

            def on_epoch_end(self, epoch, logs=None):
                logs = dict(logs or {})
                self.epochs_run = epoch + 1
                for key, value in logs.items():
                    self.history.setdefault(key, []).append(float(value))
                monitor = "val_loss" if "val_loss" in logs else "loss"
                value = logs.get(monitor)
                if value is not None and (self.best is None or value < self.best):
                    self.best, self.best_epoch = float(value), epoch + 1
                    self.best_weights = self.model.get_weights()
                self.reporter.update(epoch + 1, logs)

            def on_train_end(self, logs=None):
                self.reporter.close()

        return Progress()


def _tensorboard_callback(tf, keras, log_dir):
    """Epoch curves as TensorBoard event files, as Keras' TensorBoard writes them.

    Keras' own callback needs the ``tensorboard`` package for
    ``tf.summary.scalar``; the summary op and the metadata it attaches are
    in TensorFlow itself, so ``tensorboard --logdir`` works on these logs
    without tensorboard installed where the model is trained.
    """
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    # The scalars plugin's marker: what makes TensorBoard plot a tag as a curve.
    meta.plugin_data.plugin_name = "scalars"
    meta = meta.SerializeToString()
    root = pathlib.Path(log_dir)

    class ScalarLogger(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.writers = {
                "train": tf.summary.create_file_writer(str(root / "train")),
                "validation": tf.summary.create_file_writer(str(root / "validation")),
            }

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                which = "validation" if key.startswith("val_") else "train"
                tag = "epoch_" + (key[4:] if which == "validation" else key)
                with self.writers[which].as_default():
                    tf.summary.write(tag, tf.constant(float(value), tf.float32),
                                     step=epoch, metadata=meta)

        def on_train_end(self, logs=None):
            for writer in self.writers.values():
                writer.flush()
                writer.close()

    return ScalarLogger()


_COMMON = (
    Parameter("optimizer", str, "Adam", "optimizer", choices=tuple(OPTIMIZERS)),
    Parameter("learning_rate", positive_float, 0.001, "learning rate"),
    Parameter("batch_size", positive_int, 64, "examples per training step"),
    Parameter("epochs", positive_int, 100, "most passes over the training examples"),
    Parameter("steps", non_negative_int, None,
              "cap on the total number of training steps (optional)"),
    Parameter("steps_per_execution", positive_int, 32,
              "training steps run per call into TensorFlow (fewer Python round trips; "
              "the model trained is the same)"),
    Parameter("patience", non_negative_int, 10,
              "epochs without improvement of the validation loss before stopping "
              "(the best weights are kept); 0 disables early stopping"),
    Parameter("validation_fraction", _fraction, 0.1,
              "share of the training examples held out for early stopping when no "
              "validation set is given"),
    Parameter("class_weight", str, "balanced",
              "weigh classes inversely to their frequency (failures are rare)",
              choices=("balanced", "none")),
    Parameter("normalize", parse_bool, True,
              "standardize inputs with training-set statistics"),
    Parameter("seed", int, None, "random seed (train-model --seed overrides it)"),
    Parameter("gpu", parse_bool, None,
              "true: require a GPU; false: hide every GPU; unset: TensorFlow's choice "
              "(train-model --gpu/--no-gpu sets it for one training)"),
    Parameter("deterministic", parse_bool, True,
              "with a seed, use TensorFlow's deterministic kernels: the same seed gives "
              "the same model bit for bit, at some cost in speed"),
)


class DNNEstimator(_KerasEstimator):
    """Deep neural network classifier (Keras MLP on the flattened examples)

    Defaults are chosen to hold up on unseen CI histories rather than tuned
    to one: standardized inputs, three hidden ReLU layers with dropout, Adam,
    balanced class weights (failures are a few percent of runs) and early
    stopping on the validation loss with the best weights restored.  Binary
    and multiclass labels both use a softmax output, so ``predict_proba``
    returns true class probabilities.
    """

    name = "dnn"
    parameters = (
        Parameter("hidden_layers", hidden_layers_type, "100/100/100",
                  "units per hidden layer, separated by '/'"),
        Parameter("activation", str, "relu", "hidden layer activation", choices=ACTIVATIONS),
        Parameter("dropout", _fraction, 0.2, "dropout rate after each hidden layer"),
        Parameter("l2", non_negative_float, 1e-4, "L2 weight regularisation"),
    ) + _COMMON

    def _build(self, keras, input_shape, n_classes, mean, variance):
        inputs = keras.Input(shape=input_shape, name="example")
        x = keras.layers.Flatten(name="flatten")(inputs)
        if mean is not None:
            x = _normalization(keras, mean, variance)(x)
        reg = keras.regularizers.L2(float(self.l2)) if self.l2 else None
        for i, units in enumerate(int(u) for u in self.hidden_layers.split("/")):
            x = keras.layers.Dense(units, activation=self.activation, kernel_regularizer=reg,
                                   name=f"hidden_{i}")(x)
            if self.dropout:
                x = keras.layers.Dropout(float(self.dropout), name=f"dropout_{i}")(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="proba")(x)
        return keras.Model(inputs, outputs, name="ciml_dnn")

    def _loss(self, keras, n_classes):
        return keras.losses.SparseCategoricalCrossentropy()


class LinearSVMEstimator(_KerasEstimator):
    """Linear support vector machine (hinge loss, L2; one-vs-rest for multiclass)

    A linear layer on the standardized, flattened examples, trained with the
    hinge loss and L2 regularisation: one output for two classes, one
    output per class (one-vs-rest) otherwise.  The prediction is the class
    with the largest margin.  An SVM gives margins, not probabilities:
    ``predict_proba`` is a sigmoid (binary) or softmax (multiclass) of the
    margins divided by a single temperature fitted after training on the
    validation examples (the training examples when there are none) by
    minimizing the log loss.  It preserves the SVM's decision; read the
    probabilities as calibrated confidences, not as a probabilistic model.
    """

    name = "linear-svm"
    parameters = (
        Parameter("l2", non_negative_float, 1e-3, "L2 regularisation (the SVM's 1/C)"),
    ) + tuple(p if p.name != "learning_rate"
              else Parameter("learning_rate", positive_float, 0.01, "learning rate")
              for p in _COMMON)

    def __init__(self, **params):
        super().__init__(**params)
        self.temperature_ = 1.0

    def _build(self, keras, input_shape, n_classes, mean, variance):
        inputs = keras.Input(shape=input_shape, name="example")
        x = keras.layers.Flatten(name="flatten")(inputs)
        if mean is not None:
            x = _normalization(keras, mean, variance)(x)
        reg = keras.regularizers.L2(float(self.l2)) if self.l2 else None
        units = 1 if n_classes == 2 else n_classes
        outputs = keras.layers.Dense(units, kernel_regularizer=reg, name="margin")(x)
        return keras.Model(inputs, outputs, name="ciml_linear_svm")

    def _loss(self, keras, n_classes):
        # Keras' hinge turns {0, 1} targets into {-1, +1}: with one-hot
        # targets that is one binary SVM per class, i.e. one-vs-rest.
        return keras.losses.Hinge()

    def _targets(self, tf, y, n_classes):
        if n_classes == 2:
            return tf.cast(tf.reshape(y, (-1, 1)), tf.float32)
        return tf.one_hot(y, n_classes, dtype=tf.float32)

    @staticmethod
    def _softmax_of(margins, temperature):
        if margins.shape[1] == 1:
            z = np.clip(margins[:, 0] / temperature, -60, 60)
            p1 = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1.0 - p1, p1], axis=1)
        z = margins / temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def _proba(self, outputs):
        return self._softmax_of(outputs, self.temperature_)

    def _after_fit(self, X, y, val):
        if val is not None:
            vX, vy, a, b = val
            margins = np.concatenate([np.asarray(self.model_(x, training=False), np.float64)
                                      for _, x in _iter_chunks(vX, a, b)])
            labels = vy[a:b]
        else:
            margins = self._outputs(X)
            labels = y
        best, best_loss = 1.0, np.inf
        for t in np.logspace(-2, 2, 81):
            p = self._softmax_of(margins, t)
            loss = -np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)))
            if loss < best_loss:
                best, best_loss = float(t), loss
        self.temperature_ = best

    def _extra_state(self):
        return {"temperature": self.temperature_}

    def _set_extra_state(self, state):
        self.temperature_ = float(state.get("temperature", 1.0))


class CNNEstimator(_KerasEstimator):
    """1-D convolutional classifier over the time axis (Keras, global pooling)

    Convolutions slide along the time steps, so a spike matters wherever it
    happens, and global max and average pooling make the verdict depend on
    *what* happened and how long, not on padding.  Inputs are standardized
    with training-set statistics like ``dnn``'s.  Meant for time-series
    datasets; on an aggregate dataset the "time" axis is the aggregates.
    """

    name = "cnn"
    parameters = (
        Parameter("filters", positive_int, 32, "filters per convolution layer"),
        Parameter("kernel_size", positive_int, 5, "time steps each filter spans"),
        Parameter("conv_layers", positive_int, 2,
                  "convolution layers (each but the last followed by max pooling of 2)"),
        Parameter("dropout", _fraction, 0.2, "dropout rate before the output layer"),
        Parameter("l2", non_negative_float, 1e-4, "L2 weight regularisation"),
    ) + _COMMON

    def _build(self, keras, input_shape, n_classes, mean, variance):
        inputs = keras.Input(shape=input_shape, name="example")
        x = inputs
        if mean is not None:
            x = keras.layers.Flatten(name="flatten")(x)
            x = _normalization(keras, mean, variance)(x)
            x = keras.layers.Reshape(tuple(int(d) for d in input_shape), name="series")(x)
        reg = keras.regularizers.L2(float(self.l2)) if self.l2 else None
        steps = int(input_shape[0])
        for i in range(int(self.conv_layers)):
            x = keras.layers.Conv1D(int(self.filters), int(self.kernel_size), padding="same",
                                    activation="relu", kernel_regularizer=reg,
                                    name=f"conv_{i}")(x)
            if i < int(self.conv_layers) - 1 and steps >= 4:
                x = keras.layers.MaxPooling1D(2, name=f"pool_{i}")(x)
                steps //= 2
        x = keras.layers.Concatenate(name="pooled")([
            keras.layers.GlobalMaxPooling1D(name="max_over_time")(x),
            keras.layers.GlobalAveragePooling1D(name="mean_over_time")(x)])
        if self.dropout:
            x = keras.layers.Dropout(float(self.dropout), name="dropout")(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="proba")(x)
        return keras.Model(inputs, outputs, name="ciml_cnn")

    def _loss(self, keras, n_classes):
        return keras.losses.SparseCategoricalCrossentropy()


def _normalization(keras, mean, variance):
    """A built Normalization layer holding ``mean``/``variance`` as saved weights.

    Set the way ``adapt`` sets them (weights, not config), so that a model
    with 100,000 inputs does not carry them as JSON in its config.
    """
    layer = keras.layers.Normalization(axis=-1, name="standardize")
    layer.build((None, int(mean.shape[0])))
    layer.adapt_mean.assign(mean)
    layer.adapt_variance.assign(variance)
    layer.finalize_state()
    return layer


@hookimpl
def ciml_register_estimators(register):
    register(DNNEstimator)
    register(LinearSVMEstimator)
    register(CNNEstimator)
