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


def _span_seconds(cache, run_id):
    """Seconds from the run's first to its last sample (metadata first, frame if needed)."""
    info = {}
    if hasattr(cache, "info"):
        try:
            info = cache.info(run_id) or {}
        except Exception:  # an index without the figures: read the series instead
            info = {}
    first, last = info.get("first"), info.get("last")
    if first and last:
        span = _seconds_between(str(first), str(last))
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
    step = interval_seconds(sample_interval)
    steps = []
    for run_id in run_ids:
        span = _span_seconds(cache, run_id)
        if span is not None and span >= 0:
            steps.append(math.floor(span / step) + 1)
    if not steps:
        return None
    return max(1, int(math.ceil(np.percentile(steps, percentile))))
