"""A baseline estimator: always the class frequencies seen in training."""

import json
import pathlib

import numpy as np

from ciml.base import Estimator, Parameter

_FILE = "majority.json"


class MajorityEstimator(Estimator):
    """Baseline: predict the training class frequencies for every run

    Any model worth keeping must beat this one: its accuracy is the share of
    the most common class.  ``smoothing`` adds that many pseudo-counts to
    every class so that a class absent from training keeps a small
    probability.  It never reads ``X``, so it trains instantly on any
    dataset, and it saves as a small JSON file.
    """

    name = "majority"
    parameters = (
        Parameter("smoothing", float, default=0.0,
                  help="Pseudo-count added to every class (Laplace smoothing)"),
    )

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        y = np.asarray(y, dtype=np.int64)
        counts = np.bincount(y, minlength=len(classes)).astype(np.float64)
        if len(counts) > len(classes):
            raise ValueError(f"class index {int(y.max())} out of range for {len(classes)} "
                             "classes")
        counts += self.smoothing
        total = counts.sum()
        if total <= 0:
            raise ValueError("cannot fit on no examples without smoothing")
        self.classes_ = list(classes)
        self.counts_ = counts
        self.proba_ = counts / total
        return self

    def predict_proba(self, X):
        n = len(X) if not hasattr(X, "shape") else X.shape[0]
        return np.tile(self.proba_, (n, 1))

    def save(self, path):
        data = {"classes": self.classes_, "counts": self.counts_.tolist(),
                "smoothing": self.smoothing}
        (pathlib.Path(path) / _FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path):
        data = json.loads((pathlib.Path(path) / _FILE).read_text())
        estimator = cls(smoothing=data["smoothing"])
        estimator.classes_ = list(data["classes"])
        estimator.counts_ = np.asarray(data["counts"], dtype=np.float64)
        estimator.proba_ = estimator.counts_ / estimator.counts_.sum()
        return estimator
