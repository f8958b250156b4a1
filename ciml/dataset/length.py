"""How long a time-series dataset's examples are: what the training runs need, not 5500 s.

The original ciml cut or padded every run to 5500 s; CI runs of a few
minutes then became examples that are mostly zero padding, which models
must learn to ignore and scalers fit on.  By default the fixed length is a
high percentile (:data:`PERCENTILE`) of the training runs' lengths, in
time steps at the dataset's sample interval, so that nearly every run is
whole and little is padding; ``--fixed-length`` overrides it.  The length
is stored in the dataset's chain: prediction pads or cuts each new run to
exactly that length.
"""

import datetime as dt
import math

import numpy as np

#: The share of training runs that fit whole (the rest are cut).
PERCENTILE = 95.0


def interval_seconds(sample_interval):
    """Seconds per time step (the raw series has one sample a second)."""
    if not sample_interval:
        return 1.0
    from ciml.base.component import fixed_interval_ns

    step = fixed_interval_ns(sample_interval)
    if step is not None:
        return step / 1e9
    import pandas as pd

    return float(pd.Timedelta(pd.tseries.frequencies.to_offset(sample_interval))
                 .total_seconds())


def span_seconds(cache, run_id):
    """Seconds from the run's first to its last sample (metadata first, frame if needed)."""
    info = {}
    if hasattr(cache, "info"):
        try:
            info = cache.info(run_id) or {}
        except Exception:  # an index without the figures: read the series instead
            info = {}
    span = recorded_span(info)
    if span is not None:
        return span
    from ciml.errors import CimlError, MetricsUnavailable

    try:
        frame = cache.frame(run_id)
    except (MetricsUnavailable, CimlError, OSError, ValueError):
        # The build skips (and reports) this run; it has no length to count.
        return None
    if len(frame.index) == 0:
        return None
    return (frame.index[-1] - frame.index[0]).total_seconds()


def recorded_span(info):
    """Seconds from first to last sample as a run's cache info records them, or ``None``."""
    first, last = (info or {}).get("first"), (info or {}).get("last")
    if first and last:
        return _seconds_between(str(first), str(last))
    return None


def _seconds_between(first, last):
    """``last - first`` in seconds, as pandas computes it; ``None`` if unreadable.

    The record's stamps are what ``str()`` of a datetime writes; the standard
    library reads them in microseconds, and ``total_seconds`` of the same
    span in microseconds is the same float pandas gives (both divide the
    same integer exactly once).  Nanosecond stamps, which datetime would
    cut, go to pandas.
    """
    if any(len(part.split(".", 1)[1].split("+")[0].split("-")[0]) > 6
           for part in (first, last) if "." in part):
        import pandas as pd

        try:
            return (pd.Timestamp(last) - pd.Timestamp(first)).total_seconds()
        except (ValueError, TypeError):
            return None
    try:
        return (dt.datetime.fromisoformat(last) - dt.datetime.fromisoformat(first)) \
            .total_seconds()
    except (ValueError, TypeError):
        return None


def training_length(cache, run_ids, sample_interval=None, percentile=PERCENTILE):
    """The :data:`PERCENTILE` of the runs' lengths in time steps (``None`` if unknown)."""
    spans = [span_seconds(cache, run_id) for run_id in run_ids]
    return length_of_spans(np.array([np.nan if s is None else s for s in spans],
                                    dtype="float64"), sample_interval, percentile)


def length_of_spans(spans, sample_interval=None, percentile=PERCENTILE):
    """:func:`training_length` of the runs' spans in seconds (NaN: unknown, left out)."""
    step = interval_seconds(sample_interval)
    spans = np.asarray(spans, dtype="float64")
    spans = spans[~np.isnan(spans) & (spans >= 0)]
    if not len(spans):
        return None
    steps = np.floor(spans / step) + 1
    return max(1, int(math.ceil(np.percentile(steps, percentile))))
