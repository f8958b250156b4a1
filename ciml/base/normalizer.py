"""The normalizer contract: one step from a raw series towards a fixed-shape example."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ciml.base.component import Component

if TYPE_CHECKING:
    from typing import Self

    import pandas as pd


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class Normalizer(Component):
    """Base class of normalizers (filter, resample, fixed length, aggregate, scale).

    A dataset is built by a chain of normalizers, applied in order to each
    run's :class:`pandas.DataFrame`.  Before the shaping step (fixed length
    or aggregate) a frame is indexed by time (a ``DatetimeIndex``); after
    it, by position (a ``RangeIndex`` of time steps) or by aggregate name.
    The last frame of the chain becomes one example: its values are stored
    as float32 ``(time or aggregate, feature)``, its columns are the
    feature labels.

    The chain, with every fitted parameter, is saved in the dataset, and
    the same chain turns a new run into an example at prediction time.  So
    the shape is scikit-learn's transformer:

    * ``__init__`` only stores parameters;
    * :meth:`partial_fit` learns from one training frame at a time (the
      build streams, so whole-split statistics must be accumulated);
      learned state lives in attributes ending in ``_``;
    * :meth:`transform` is pure: the same frame and state give the same
      result, on any machine, at build or at prediction time;
    * :meth:`get_state` / :meth:`set_state` save and restore the learned
      state as JSON-compatible values.

    Stateless steps only implement :meth:`transform`.  Stateful ones set
    ``stateful = True``; the pipeline then fits them on the training split
    only, after every earlier step has been applied.
    """

    kind = "normalizer"
    #: Whether this step learns from training data.
    stateful = False

    def fit(self, frames: Iterable[pd.DataFrame]) -> Self:
        """Learn from an iterable of frames; returns ``self``."""
        for frame in frames:
            self.partial_fit(frame)
        return self

    def partial_fit(self, frame: pd.DataFrame) -> Self:
        """Learn from one training frame; returns ``self``."""
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the transformed frame; never modify the argument."""
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """The learned state: every attribute ending in ``_``, JSON-ready."""
        return {k: _jsonable(v) for k, v in vars(self).items()
                if k.endswith("_") and not k.startswith("_")}

    def set_state(self, state: Mapping[str, Any] | None) -> Self:
        """Restore what :meth:`get_state` returned; returns ``self``."""
        for key, value in (state or {}).items():
            if not key.endswith("_"):
                raise ValueError(f"not a learned attribute: {key!r}")
            setattr(self, key, value)
        return self
