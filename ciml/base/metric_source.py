"""The metric source contract: the resource time series of one run."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING

from ciml.base.component import Component
from ciml.records import RunRecord

if TYPE_CHECKING:
    import pandas as pd


@dataclasses.dataclass
class FetchedMetrics:
    """The bytes of a run's metrics exactly as fetched, and where from.

    ``name`` is the file name to keep them under in the raw cache (e.g.
    ``dstat-csv_log.txt.gz``); the bytes are kept as they are, compressed
    or not, so that the cache is a faithful copy of the CI system's logs.
    """

    name: str
    data: bytes
    url: str


class MetricSource(Component, abc.ABC):
    """Base class of metric sources (dstat, ...).

    Fetching and parsing are separate steps because the raw cache keeps the
    fetched bytes unchanged and, beside them, the parsed series in a compact
    binary form: a file is fetched once, parsed once to validate it, and
    never re-parsed when datasets are built from it.

    Both steps reject bad input with :class:`ciml.errors.MetricsUnavailable`
    carrying a short reason code; they never return partial data.
    """

    kind = "metric_source"

    @abc.abstractmethod
    def fetch(self, run: RunRecord) -> FetchedMetrics:
        """Fetch a run's metrics.

        :param run: a :class:`ciml.records.RunRecord` (its ``artifacts_url``
            says where the logs are).
        :return: :class:`FetchedMetrics`.
        :raises ciml.errors.MetricsUnavailable: nothing usable was found;
            ``transient`` is set when trying later may help.
        """

    @abc.abstractmethod
    def parse(self, data: bytes, run: RunRecord) -> pd.DataFrame:
        """Parse fetched bytes into a time-indexed numeric frame.

        :param data: the bytes :meth:`fetch` returned.
        :param run: the run they belong to (its ``start`` anchors
            timestamps that lack a year).
        :return: a :class:`pandas.DataFrame` with a tz-aware (UTC), strictly
            increasing ``DatetimeIndex`` and float64 columns with unique,
            stable names.
        :raises ciml.errors.MetricsUnavailable: the data is not valid.
        """

    def load(self, run: RunRecord) -> tuple[FetchedMetrics, pd.DataFrame]:
        """Fetch and parse in one go (used at prediction time).

        :return: a pair ``(fetched, frame)``: the :class:`FetchedMetrics`
            of :meth:`fetch` and the frame :meth:`parse` made of its bytes
            (``fetched, frame = source.load(run)``).
        :raises ciml.errors.MetricsUnavailable: as :meth:`fetch` and
            :meth:`parse` do.
        """
        fetched = self.fetch(run)
        return fetched, self.parse(fetched.data, run)
