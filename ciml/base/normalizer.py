"""The normalizer contract: one step from a raw series towards a fixed-shape example."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ciml.base.component import Component

if TYPE_CHECKING:
    from typing import Self

    import pandas as pd

#: The original ciml's fixed example length, in samples at 1 s.
BASE_LENGTH = 5500


def normalized_length(sample_interval: str | None = None,
                      base_length: int = BASE_LENGTH) -> int:
    """The fixed example length for a sample interval, as the original computed it.

    ``base_length`` samples at 1 s, resampled to the interval: the number of
    bins that span them (5500 at 1 s, 550 at 10s, 92 at 1min).  Any
    shaping step may use it; ``build-dataset`` gives it to ``fixed-length``.
    """
    if not sample_interval:
        return base_length
    from ciml.base.component import fixed_interval_ns, interval

    step = fixed_interval_ns(sample_interval)
    if step is not None:
        # Bins from the first sample (midnight, so pandas' day-aligned bins
        # start there too) to the last, empty ones included: what the
        # resample below counts, without importing pandas.
        return (base_length - 1) * 1_000_000_000 // step + 1
    import pandas as pd

    from ciml.errors import ConfigError

    try:
        interval(sample_interval)
    except ValueError as exc:
        raise ConfigError(f"bad --sample-interval: {exc}") from None
    index = pd.date_range("2012-01-01", periods=base_length, freq="s")
    try:
        return int(pd.Series(np.ones(base_length), index=index)
                   .resample(sample_interval).sum().shape[0])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad sample interval {sample_interval!r}: {exc}") from None


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

    One step of a chain chooses the features (``selects_features = True``;
    the built-in ``filter`` by default, or a third-party step given to the
    build).  Before anything is computed, the build asks it which of each
    run's columns it keeps (:meth:`select`), takes the columns every run
    has, and pins them (:meth:`pin_features`): from then on the step must
    give exactly those columns, in that order, or raise
    :class:`ciml.errors.MetricsUnavailable` (``missing-columns``), so that a
    run at prediction time gives the features the model was trained on.
    """

    kind = "normalizer"
    #: Whether this step learns from training data.
    stateful = False
    #: Whether this step chooses the feature columns (see the class docstring).
    selects_features = False

    def select(self, columns: Sequence[str]) -> list[str]:
        """The names among ``columns`` this step keeps, from column names alone."""
        return list(columns)

    def pin_features(self, columns: Sequence[str]) -> None:
        """From now on, keep exactly ``columns`` (names), in this order.

        Part of the saved parameters or state, so that the stored chain
        selects them again.  Only steps that select features implement it.
        """
        raise NotImplementedError(f"normalizer {self.name!r} does not select features")

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
