"""Built-in normalizers: filter, resample, fixed-length, aggregate and scale.

They are registered through ``ciml_register_normalizers`` like any
third-party normalizer.  ``build-dataset`` chains them in this order::

    filter -> resample -> fixed-length | aggregate -> scale

Columns are always matched by *name*: dstat 0.7.2 and 0.7.3 order their
memory columns differently, so a position never identifies a feature.
pandas is imported inside the methods, so that loading plugins stays cheap.

Filter, fixed-length and aggregate also transform a :class:`ciml.series.Block`
(``transform_block``): the same arithmetic on the same arrays as their
``transform``, without building a DataFrame, which is most of what a
dataset build spends per run.  ``transform_block`` may return
``NotImplemented`` for an input it does not handle; the build then uses
``transform``.
"""

import re

import numpy as np

from ciml import hookspecs
from ciml.base import Normalizer, Parameter
from ciml.base.component import interval

# Both live in the core, where any shaping step reaches them; still importable
# from here.
from ciml.base.normalizer import BASE_LENGTH, normalized_length  # noqa: F401
from ciml.errors import ConfigError, MetricsUnavailable


def check_interval(value):
    """Validate a sampling interval (``10s``, ``1min``...) and return it."""
    return interval(value)


def _duration(delta):
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _fill_gaps(values):
    """NaN (a gap, or a cell that was not a number) -> the previous value, else 0."""
    if not np.isnan(values).any():
        return values
    import pandas as pd

    return pd.DataFrame(values).ffill().fillna(0.0).to_numpy()


class MissingColumns(MetricsUnavailable):
    """A run lacks columns the dataset selected."""

    def __init__(self, missing):
        self.missing = list(missing)
        shown = ", ".join(self.missing[:8]) + (" ..." if len(self.missing) > 8 else "")
        super().__init__("missing-columns",
                         f"missing column(s) the dataset was built with: {shown}")


class FilterNormalizer(Normalizer):
    """Keep the metric columns whose name matches a regular expression"""

    name = "filter"
    selects_features = True
    parameters = (
        Parameter("regex", help="Regular expression searched in each column name "
                  "(re.search); all numeric columns when not given"),
        Parameter("columns", multiple=True,
                  help="Exact column names to keep, in this order (set by "
                  "build-dataset: the matching columns every run has, sorted by name)"),
    )

    def select(self, columns):
        """The names among ``columns`` this filter keeps, in their order."""
        if self.columns:
            return [c for c in self.columns if c in set(columns)]
        if not self.regex:
            return list(columns)
        try:
            pattern = re.compile(self.regex)
        except re.error as exc:
            raise ConfigError(f"bad features regex {self.regex!r}: {exc}") from None
        return [c for c in columns if pattern.search(str(c))]

    def pin_features(self, columns):
        self.columns = list(columns)

    def transform(self, frame):
        if self.columns:
            missing = [c for c in self.columns if c not in frame.columns]
            if missing:
                raise MissingColumns(missing)
            keep = list(self.columns)
        else:
            import pandas as pd

            numeric = [c for c in frame.columns
                       if pd.api.types.is_numeric_dtype(frame[c].dtype)]
            keep = self.select(numeric)
        return frame[keep].astype("float64")

    def transform_block(self, block):
        position = {c: i for i, c in enumerate(block.columns)}
        if len(position) != len(block.columns) or block.values.dtype.kind != "f":
            return NotImplemented  # duplicate names or odd dtypes: pandas' rules apply
        if self.columns:
            missing = [c for c in self.columns if c not in position]
            if missing:
                raise MissingColumns(missing)
            keep = list(self.columns)
        else:
            keep = self.select(block.columns)
        # Taken as pandas takes them: a (column, time) array, so that the
        # (time, column) result has the layout frame.to_numpy() gives.
        taken = block.values.T[[position[c] for c in keep]]
        values = taken.astype(np.float64, copy=False).T
        return type(block)(values, keep, block.stamps, block.labels)


class ResampleNormalizer(Normalizer):
    """Resample a time-indexed series to a fixed interval (the mean of each bin)"""

    name = "resample"
    parameters = (
        Parameter("interval", type=check_interval, required=True,
                  help="pandas interval: 10s, 1min, ..."),
    )

    def transform(self, frame):
        # A bin with no sample (dstat skipped a beat) takes the previous bin's
        # value: a hole must not become a NaN in a float32 example.
        import pandas as pd

        if len(frame) >= 2:
            span = frame.index[-1] - frame.index[0]
            if span < pd.Timedelta(self.interval):
                # Shorter than one interval: one or two partial bins, no time series.
                raise MetricsUnavailable(
                    "too-short",
                    f"the run spans {_duration(span)}, less than the sample interval "
                    f"{self.interval}; use a --sample-interval well under the runs' length")
        out = frame.resample(self.interval).mean().ffill()
        return out

    def _tick_ns(self):
        """The interval in nanoseconds if it is a fixed duration (``None``: a month...)."""
        if not hasattr(self, "_tick"):
            import pandas as pd

            offset = pd.tseries.frequencies.to_offset(self.interval)
            self._tick = int(offset.nanos) if isinstance(offset, pd.offsets.Tick) else None
        return self._tick

    def transform_block(self, block):
        """``transform`` without a DataFrame, where pandas' own arithmetic is known.

        pandas 3 averages a bin of a sorted series without NaN as
        ``numpy.add.reduceat`` over the ``(column, time)`` values divided by
        the bin's count (``_REDUCEAT_UFUNCS`` in ``pandas.core.groupby.ops``);
        this does the same, so the bits are the same.  Anything else (NaN,
        unsorted times, calendar intervals, a pandas that averages
        otherwise) goes to :meth:`transform`.
        """
        freq = self._tick_ns() if block.timed else None
        stamps = block.stamps
        if freq is None or len(stamps) < 2 or not _pandas_means_by_reduceat():
            return NotImplemented
        span = int(stamps[-1] - stamps[0])
        if span < freq:
            import datetime as dt

            raise MetricsUnavailable(
                "too-short",
                f"the run spans {_duration(dt.timedelta(microseconds=span // 1000))}, "
                f"less than the sample interval {self.interval}; use a "
                "--sample-interval well under the runs' length")
        values = np.asarray(block.values, dtype=np.float64)
        if not (np.diff(stamps) > 0).all() or np.isnan(values).any():
            return NotImplemented
        # Bins start at multiples of the interval from midnight UTC of the
        # first sample's day (origin="start_day"), closed and labelled left.
        day = 86_400 * 10**9
        origin = int(stamps[0]) - int(stamps[0]) % day
        bins = (np.asarray(stamps, dtype=np.int64) - origin) // freq
        labels = bins - bins[0]
        count = int(labels[-1]) + 1
        starts = np.flatnonzero(np.diff(labels, prepend=-1))
        sizes = np.diff(np.append(starts, len(labels))).astype(np.float64)
        # pandas reduces its block: (column, time), C-ordered.
        sums = np.add.reduceat(np.ascontiguousarray(values.T), starts, axis=1)
        means = np.full((count, values.shape[1]), np.nan)
        means[labels[starts]] = (sums / sizes[None, :]).T
        if len(starts) < count:  # an empty bin takes the previous bin's means
            filled = np.zeros(count, dtype=np.int64)
            filled[labels[starts]] = labels[starts]
            means = means[np.maximum.accumulate(filled)]
        stamps_out = origin + (int(bins[0]) + np.arange(count, dtype=np.int64)) * freq
        return type(block)(means, block.columns, stamps=stamps_out)


def _pandas_means_by_reduceat():
    """Whether this pandas averages a sorted, NaN-free bin with ``numpy.add.reduceat``."""
    global _REDUCEAT_MEAN
    if _REDUCEAT_MEAN is None:
        try:
            from pandas.core.groupby import ops

            _REDUCEAT_MEAN = getattr(ops, "_REDUCEAT_UFUNCS", {}).get("mean") is np.add
        except ImportError:
            _REDUCEAT_MEAN = False
    return _REDUCEAT_MEAN


_REDUCEAT_MEAN = None


class FixedLengthNormalizer(Normalizer):
    """Cut or zero-pad a series to a fixed number of time steps"""

    name = "fixed-length"
    parameters = (
        Parameter("length", type=int, default=BASE_LENGTH,
                  help="Number of time steps (5500 at 1 s; build-dataset scales "
                  "it to the sample interval)"),
    )

    def _cut(self, values):
        values = _fill_gaps(values)[:self.length]
        if len(values) < self.length:
            values = np.concatenate(
                [values, np.zeros((self.length - len(values), values.shape[1]))])
        return values

    def transform(self, frame):
        import pandas as pd

        values = self._cut(frame.to_numpy(dtype="float64", copy=False))
        return pd.DataFrame(values, columns=list(frame.columns))

    def transform_block(self, block):
        values = self._cut(np.asarray(block.values, dtype=np.float64))
        return type(block)(values, block.columns)


_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")


def _length(values, axis):
    """How many samples the run has: its length in sample intervals."""
    shape = list(np.shape(values))
    n = shape.pop(axis)
    return np.full(shape, float(n))


def _diff_std(values, axis):
    """Standard deviation of the step-to-step changes: how jittery a metric is."""
    if np.shape(values)[axis] < 2:
        return np.zeros(np.delete(np.shape(values), axis))
    return np.std(np.diff(values, axis=axis), axis=axis)


def _peak_at(values, axis):
    """When the maximum came, as a share of the run (0: first sample, 1: last)."""
    n = np.shape(values)[axis]
    return np.argmax(values, axis=axis) / max(n - 1, 1)


#: Aggregation functions numpy has no reduction for, by name.
EXTRA_REDUCERS = {"length": _length, "diff_std": _diff_std, "peak_at": _peak_at}

#: What the demo and the docs suggest for an aggregate dataset: level and
#: spread, robust quantiles (a failure's collapse or spike survives a few
#: odd samples), jitter, when the peak came, and how long the run lasted
#: (a timeout runs to the job's limit, an out-of-memory run dies early).
SUGGESTED_AGGREGATES = ("mean", "std", "min", "max", "p5", "median", "p95", "diff_std",
                        "peak_at", "length")


def _reducer(name):
    """A reduction by name: numpy's, ``pNN`` (a percentile) or one of :data:`EXTRA_REDUCERS`."""
    match = _PERCENTILE.match(name)
    if match:
        q = float(match.group(1))
        return lambda values, axis: np.percentile(values, q, axis=axis)
    if name in EXTRA_REDUCERS:
        return EXTRA_REDUCERS[name]
    func = getattr(np, name, None)
    if not callable(func):
        raise ConfigError(f"unknown aggregation function {name!r}: give numpy "
                          "reductions by name (mean, std, max, min, median, ...), "
                          "pNN for a percentile (p95), or one of "
                          f"{', '.join(EXTRA_REDUCERS)}")
    return func


class AggregateNormalizer(Normalizer):
    """Reduce a series to one row per numpy function (mean, std, max, ...)"""

    name = "aggregate"
    parameters = (
        Parameter("functions", multiple=True, required=True,
                  help="numpy reductions by name, e.g. mean std max min median; "
                  "pNN for a percentile (p95)"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        for name in self.functions:
            _reducer(name)

    def _reduce(self, values):
        values = _fill_gaps(values)
        if len(values) == 0:
            raise MetricsUnavailable("empty", "no samples to aggregate")
        return np.vstack([np.asarray(_reducer(n)(values, axis=0), dtype="float64")
                          for n in self.functions])

    def transform(self, frame):
        import pandas as pd

        return pd.DataFrame(self._reduce(frame.to_numpy(dtype="float64", copy=False)),
                            index=list(self.functions), columns=list(frame.columns))

    def transform_block(self, block):
        return type(block)(self._reduce(np.asarray(block.values, dtype=np.float64)),
                           block.columns, labels=list(self.functions))


class ScaleNormalizer(Normalizer):
    """Scale each feature with statistics of the training split (range or z-score)

    ``range`` is the original ciml's ``(x - mean) / (max - min)``; ``zscore``
    is ``(x - mean) / std``.  Statistics are kept per (time step or
    aggregate, feature), as the original did for its unrolled features.
    A feature constant in training (zero range or zero deviation, e.g. zero
    padding past the longest training run) is mapped to 0: it carries no
    information, and passing it through raw gave the original values up to
    9e7 in dev and test.
    """

    name = "scale"
    stateful = True
    parameters = (
        Parameter("method", default="range", choices=("range", "zscore"),
                  help="range: (x - mean) / (max - min); zscore: (x - mean) / std"),
        Parameter("per", default="cell", choices=("cell", "feature"),
                  help="cell: statistics per (time step or aggregate, feature), as the "
                  "original; feature: one per feature over all time steps, so that a "
                  "time step few training runs reach is not scaled by their few values"),
    )

    def partial_state(self, values):
        """The statistics of one batch ``(n, t, f)`` (or ``(t, f)``), to :meth:`merge_state` later.

        ``{"n", "mean", "m2", "min", "max"}`` (float64 arrays).  A fit is
        the fold of such states in a fixed order, whoever computed them:
        the local build folds one state per chunk of training examples, in
        chunk order, and a distributed build that folds the same chunks'
        states in the same order gets the same bits.
        """
        values = np.asarray(values)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype("float64")
        if values.ndim == 2:
            values = values[None]
        if self.per == "feature":
            # Every time step of every example is one sample of its feature.
            values = values.reshape(-1, 1, values.shape[-1])
        n = values.shape[0]
        if n == 0:
            return {"n": 0}
        # float32 examples are summed in float64 as they are read, in the same
        # order as a float64 copy would be (the reduction runs along the first
        # axis either way), and their minimum and maximum are exact in float32:
        # no float64 copy of the batch.
        mean = values.mean(axis=0, dtype=np.float64)
        # The range method needs no second moment: skip its extra pass.
        m2 = (((values.astype("float64") - mean) ** 2).sum(axis=0)
              if self.method == "zscore" else np.zeros_like(mean))
        return {"n": n, "mean": mean, "m2": m2,
                "min": values.min(axis=0).astype("float64"),
                "max": values.max(axis=0).astype("float64")}

    def merge_state(self, part):
        """Fold one :meth:`partial_state` into the fit (the first one starts it)."""
        n = part["n"]
        if n == 0:
            return self
        if getattr(self, "n_samples_seen_", 0) == 0:
            self._mean = part["mean"]
            self._m2 = part["m2"]
            self._min = part["min"]
            self._max = part["max"]
            self.n_samples_seen_ = n
        else:
            if part["mean"].shape != self._mean.shape:
                raise ValueError(f"shape {part['mean'].shape} does not match the "
                                 f"fitted shape {self._mean.shape}")
            # Chan et al.'s pairwise update: stable for any batch sizes.
            total = self.n_samples_seen_ + n
            delta = part["mean"] - self._mean
            self._mean = self._mean + delta * (n / total)
            self._m2 = self._m2 + part["m2"] + delta ** 2 * (self.n_samples_seen_ * n / total)
            self._min = np.minimum(self._min, part["min"])
            self._max = np.maximum(self._max, part["max"])
            self.n_samples_seen_ = total
        if self.method == "range":
            scale = self._max - self._min
        else:
            scale = np.sqrt(self._m2 / self.n_samples_seen_)
        self.mean_ = self._mean
        self.scale_ = scale
        self._arrays = None
        return self

    def _accumulate(self, values):
        self.merge_state(self.partial_state(values))

    def partial_fit(self, frame):
        if not hasattr(self, "features_"):
            self.features_ = [str(c) for c in frame.columns]
        elif [str(c) for c in frame.columns] != self.features_:
            frame = frame[self.features_]
        self._accumulate(frame.to_numpy(dtype="float64", copy=False))
        return self

    def partial_fit_array(self, values, columns=None):
        """Learn from a stacked batch ``(n, t, f)`` whose columns are ``columns``."""
        if columns is not None and not hasattr(self, "features_"):
            self.features_ = [str(c) for c in columns]
        self._accumulate(values)
        return self

    def _params(self):
        if getattr(self, "_arrays", None) is None:
            if not hasattr(self, "mean_"):
                raise RuntimeError("scale normalizer used before it was fitted")
            mean = np.asarray(self.mean_, dtype="float64")
            scale = np.asarray(self.scale_, dtype="float64")
            constant = ~(scale > 0)
            self._arrays = (mean, np.where(constant, 1.0, scale), constant)
        return self._arrays

    def transform_array(self, values):
        """Scale an array ``(t, f)`` or ``(n, t, f)``; returns float32."""
        mean, scale, constant = self._params()
        values = np.asarray(values)
        if (values.ndim == 3 and mean.ndim == scale.ndim == constant.ndim == 2
                and np.broadcast_shapes(values.shape[1:], mean.shape, scale.shape,
                                        constant.shape) == values.shape[1:]):
            # A batch, one example at a time: the same float64 arithmetic on
            # an example that stays in the CPU's cache, written straight into
            # the float32 result.
            out = np.empty(values.shape, dtype="float32")
            for i, example in enumerate(values):
                out[i] = self._scaled(example, mean, scale, constant)
            return out
        return self._scaled(values, mean, scale, constant).astype("float32")

    @staticmethod
    def _scaled(values, mean, scale, constant):
        """``(values - mean) / scale`` in float64, 0 where the feature was constant."""
        out = np.array(values, dtype="float64")
        if np.broadcast_shapes(out.shape, mean.shape, scale.shape) == out.shape:
            out -= mean
            out /= scale
        else:
            out = (out - mean) / scale
        if constant.shape == out.shape[-constant.ndim:]:
            out[..., constant] = 0.0
        elif constant.ndim and all(d == 1 for d in constant.shape[:-1]) \
                and constant.shape[-1] == out.shape[-1]:
            out[..., constant.reshape(-1)] = 0.0  # a constant feature: its whole column
        else:
            out = np.where(constant, 0.0, out)
        return out

    def transform(self, frame):
        import pandas as pd

        if hasattr(self, "features_"):
            missing = [c for c in self.features_ if c not in frame.columns]
            if missing:
                raise MissingColumns(missing)
            frame = frame[self.features_]
        return pd.DataFrame(self.transform_array(frame.to_numpy()),
                            index=frame.index, columns=frame.columns)

    def set_state(self, state):
        super().set_state(state)
        self._arrays = None
        return self


BUILTINS = (FilterNormalizer, ResampleNormalizer, FixedLengthNormalizer,
            AggregateNormalizer, ScaleNormalizer)


@hookspecs.hookimpl
def ciml_register_normalizers(register):
    for cls in BUILTINS:
        register(cls)
