"""A normalizer that clips outliers, to fitted percentiles or to fixed bounds."""

import numpy as np

from ciml.base import Normalizer, Parameter
from ciml.errors import ConfigError


class ClipNormalizer(Normalizer):
    """Clip each feature to percentiles fitted on the training split, or to fixed bounds

    A spike (a runaway process, a counter reset) can dominate a scaled
    feature; clipping bounds it first.  With ``lower``/``upper`` the bounds
    are fixed and nothing is learned.  Otherwise each column's
    ``lower_percentile`` and ``upper_percentile`` are estimated from a
    reservoir sample of at most ``sample_size`` training values per column
    (seeded, so the same training data gives the same bounds), and saved
    with the dataset.  Columns not seen in training pass unchanged.
    """

    name = "clip"
    stateful = True
    parameters = (
        Parameter("lower_percentile", float, default=1.0,
                  help="Lower bound as a percentile of the training values (0-100)"),
        Parameter("upper_percentile", float, default=99.0,
                  help="Upper bound as a percentile of the training values (0-100)"),
        Parameter("lower", float, help="Fixed lower bound for every feature"),
        Parameter("upper", float, help="Fixed upper bound for every feature"),
        Parameter("sample_size", int, default=10000,
                  help="Training values kept per feature to estimate percentiles"),
        Parameter("seed", int, default=0, help="Seed of the reservoir sample"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        if not 0 <= self.lower_percentile <= self.upper_percentile <= 100:
            raise ConfigError("clip: need 0 <= lower_percentile <= upper_percentile <= 100")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ConfigError("clip: lower must not be above upper")
        self._samples = {}
        self._seen = {}
        self._rng = np.random.default_rng(self.seed)

    @property
    def _fixed(self):
        return self.lower is not None or self.upper is not None

    def partial_fit(self, frame):
        if self._fixed:
            return self
        for column in frame.columns:
            values = np.asarray(frame[column], dtype=np.float64)
            values = values[np.isfinite(values)]
            self._add(str(column), values)
        self.lower_ = {c: float(np.percentile(s, self.lower_percentile))
                       for c, s in self._samples.items() if len(s)}
        self.upper_ = {c: float(np.percentile(s, self.upper_percentile))
                       for c, s in self._samples.items() if len(s)}
        return self

    def _add(self, column, values):
        # Algorithm R, vectorised per frame: memory stays at sample_size.
        sample = self._samples.get(column, np.empty(0))
        seen = self._seen.get(column, 0)
        room = max(self.sample_size - len(sample), 0)
        sample = np.concatenate([sample, values[:room]])
        rest = values[room:]
        if len(rest):
            positions = seen + room + np.arange(len(rest))
            slots = (self._rng.random(len(rest)) * (positions + 1)).astype(np.int64)
            keep = slots < self.sample_size
            sample[slots[keep]] = rest[keep]
        self._samples[column] = sample
        self._seen[column] = seen + len(values)

    def transform(self, frame):
        if self._fixed:
            return frame.clip(lower=self.lower, upper=self.upper)
        lower = getattr(self, "lower_", None)
        upper = getattr(self, "upper_", None)
        if lower is None or upper is None:
            raise ConfigError("clip: transform called before fitting on training data")
        out = frame.copy()
        for column in out.columns:
            key = str(column)
            if key in lower:
                out[column] = out[column].clip(lower=lower[key], upper=upper[key])
        return out
