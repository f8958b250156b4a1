"""An LSTM estimator: reads each example as a sequence of time steps."""

import json
import pathlib

import numpy as np

from ciml.base import Estimator, Parameter

_MODEL = "model.keras"
_STATE = "lstm.json"


def _read(X):
    """A dataset split (numpy or Zarr) as one float32 array, read in whole chunks."""
    from ciml.dataset import iter_batches

    return np.concatenate([x for x, _ in iter_batches(X)])


class LSTMEstimator(Estimator):
    """Long short-term memory network over the time axis of the examples

    Where ``dnn`` flattens an example, the LSTM reads it one time step
    after the other, so the order of what happened in a run counts.  Use it
    on datasets with a time axis (``--sample-interval``, not
    ``--aggregation-functions``).  Inputs are standardized per feature
    with statistics of the training split, inside the saved model.
    """

    name = "lstm"
    parameters = (
        Parameter("units", int, 32, "units per LSTM layer"),
        Parameter("layers", int, 1, "stacked LSTM layers"),
        Parameter("dropout", float, 0.1, "dropout rate after each LSTM layer"),
        Parameter("epochs", int, 20, "most passes over the training examples"),
        Parameter("batch_size", int, 32, "examples per training step"),
        Parameter("learning_rate", float, 0.001, "Adam's learning rate"),
        Parameter("patience", int, 5, "epochs without a better validation loss before "
                  "stopping (the best weights are kept); 0 never stops early"),
    )

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        # Imported here: every plugin module is imported by `ciml --help`.
        import keras
        import tensorflow as tf

        if seed is not None:
            keras.utils.set_random_seed(int(seed))
            # Multi-threaded CPU kernels may sum in any order; this makes
            # the same seed give the same model.
            tf.config.experimental.enable_op_determinism()
        x = _read(X)
        y = np.asarray(y, dtype=np.int64)
        model = keras.Sequential([
            keras.Input(shape=x.shape[1:]),
            keras.layers.Normalization(axis=-1, mean=x.mean(axis=(0, 1)),
                                       variance=np.maximum(x.var(axis=(0, 1)), 1e-12)),
        ])
        for i in range(self.layers):
            model.add(keras.layers.LSTM(self.units, return_sequences=i < self.layers - 1))
            model.add(keras.layers.Dropout(self.dropout))
        # One output per class, even for a class absent from this training split.
        model.add(keras.layers.Dense(len(classes), activation="softmax"))
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss="sparse_categorical_crossentropy")
        callbacks, validation_data = [], None
        if validation is not None:
            validation_data = (_read(validation[0]),
                               np.asarray(validation[1], dtype=np.int64))
            if self.patience:
                callbacks.append(keras.callbacks.EarlyStopping(
                    patience=self.patience, restore_best_weights=True))
        # Failures are rare: weigh each class inversely to its frequency.
        counts = np.bincount(y, minlength=len(classes))
        weights = {c: len(y) / (len(counts[counts > 0]) * n) for c, n in enumerate(counts) if n}
        model.fit(x, y, epochs=self.epochs, batch_size=self.batch_size, class_weight=weights,
                  validation_data=validation_data, callbacks=callbacks, verbose=0)
        self.classes_ = list(classes)
        self.model_ = model
        return self

    def predict_proba(self, X):
        proba = self.model_.predict(_read(X), batch_size=256, verbose=0).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def save(self, path):
        path = pathlib.Path(path)
        self.model_.save(path / _MODEL)
        state = {"classes": self.classes_, "params": self.get_params()}
        (path / _STATE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, path):
        import keras

        path = pathlib.Path(path)
        # A missing folder raises FileNotFoundError here, which ciml reports cleanly.
        state = json.loads((path / _STATE).read_text())
        estimator = cls(**state["params"])
        estimator.classes_ = state["classes"]
        # Safe mode: loading a model never runs code stored in the file.
        estimator.model_ = keras.saving.load_model(path / _MODEL, compile=False,
                                                   safe_mode=True)
        return estimator
