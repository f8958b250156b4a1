"""The estimator contract: a model that learns classes from a dataset's examples."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ciml.base.component import Component

if TYPE_CHECKING:
    from typing import Self

#: A dataset split's examples or labels: a numpy array, or a Zarr array read in chunks.
ArrayLike = Any
#: A folder a model is saved in or loaded from.
PathLike = str | os.PathLike[str]


class Estimator(Component, abc.ABC):
    """Base class of estimators (dnn, linear-svm, ...).

    Estimators follow scikit-learn's shape so that they are easy to write
    and to test with the conformance kit (:mod:`ciml.testing`):

    * ``__init__`` only stores hyper-parameters (declared in
      ``parameters``); it imports nothing heavy;
    * :meth:`fit` learns and returns ``self``;
    * :meth:`predict_proba` returns one probability per class;
      :meth:`predict` the most likely class index;
    * :meth:`save` writes everything needed to a directory and
      :meth:`load` reads it back without running arbitrary code (no
      pickle of code, Keras files in safe mode).

    ``X`` arrays are a dataset's examples, shaped ``(example, time,
    feature)`` or ``(example, aggregate, feature)``: a numpy array or a Zarr
    array that may not fit in memory.  Flattening, or reading in chunks, is
    the estimator's business (see :func:`ciml.dataset.iter_batches`).  ``y``
    holds class indices into ``classes``.

    Heavy libraries (TensorFlow) are imported inside methods, never at module
    level: registering plugins must stay fast.
    """

    kind = "estimator"

    @abc.abstractmethod
    def fit(self, X: ArrayLike, y: ArrayLike, *, classes: Sequence[str],
            validation: tuple[ArrayLike, ArrayLike] | None = None,
            log_dir: PathLike | None = None, seed: int | None = None) -> Self:
        """Learn from examples; returns ``self``.

        :param X: examples, ``(n, time, feature)``; numpy or Zarr.
        :param y: int class indices, ``(n,)``.
        :param classes: the class names; ``len(classes)`` is the number of
            outputs even if some class is absent from ``y``.
        :param validation: optional ``(X, y)`` to monitor (early stopping,
            curves); never used to fit weights.
        :param log_dir: where to write TensorBoard logs, if supported.
        :param seed: makes training reproducible on CPU.
        """

    @abc.abstractmethod
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Return float probabilities, shape ``(n, len(classes))``."""

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Return the most likely class index for each example."""
        return np.asarray(self.predict_proba(X)).argmax(axis=1)

    @abc.abstractmethod
    def save(self, path: PathLike) -> None:
        """Write the fitted model into the directory ``path`` (it exists)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: PathLike) -> Self:
        """Return a fitted estimator read from the directory ``path``."""

    def explain(self, X: ArrayLike, reference: ArrayLike,
                target: Sequence[int] | None = None) -> np.ndarray:
        """How much each input cell pushed each example toward a class.

        Returns a float array shaped like ``X`` (``(n, time, feature)``):
        positive values pushed example ``i`` toward class ``target[i]``
        (default: its predicted class), negative ones away from it.  Only
        signs and ranks are compared across cells, so the unit is the
        estimator's (a probability, a log-odds share...).

        ``reference`` is one typical example ``(time, feature)`` (ciml passes
        the median of the passed training runs): the default, model-agnostic
        method (:func:`ciml.explain.occlusion`) replaces groups of cells by
        it and measures how the probability of ``target`` drops.  Override
        it when the model knows better (trees' exact contributions), so that
        every estimator, a third party's too, explains its predictions.
        """
        from ciml.explain import occlusion

        return occlusion(self, X, reference, target)
