"""The metric source contract: the resource time series of one run."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ciml.base.component import Component
from ciml.records import RunRecord

if TYPE_CHECKING:
    import numpy as np
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
    #: The metric source that fetched them and its non-secret parameters
    #: (:meth:`MetricSource.provenance`), kept in the raw cache so that a
    #: dataset, and then prediction, uses the same; ``None`` when unknown.
    source: dict[str, Any] | None = None


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

    def parse_series(self, data: bytes, run: RunRecord
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """:meth:`parse` as arrays: what the raw cache stores (``cache-data`` calls this).

        :return: ``(timestamps, values, columns)``: int64 nanoseconds since
            the epoch (UTC), float ``(time, column)`` values, the column
            names; the same data as :meth:`parse`'s frame.  The default
            converts that frame; a source that can read its format without
            building one overrides this to spare the stage the frame.
        :raises ciml.errors.MetricsUnavailable: as :meth:`parse`.
        """
        import numpy as np

        frame = self.parse(data, run)
        index = frame.index.tz_convert("UTC") if frame.index.tz is not None \
            else frame.index.tz_localize("UTC")
        stamps = np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
        return stamps, frame.to_numpy(), [str(c) for c in frame.columns]

    def load(self, run: RunRecord) -> tuple[FetchedMetrics, pd.DataFrame]:
        """Fetch and parse in one go (used at prediction time).

        :return: a pair ``(fetched, frame)``: the :class:`FetchedMetrics`
            of :meth:`fetch` (with :meth:`provenance` recorded in it) and the
            frame :meth:`parse` made of its bytes (``fetched, frame =
            source.load(run)``).
        :raises ciml.errors.MetricsUnavailable: as :meth:`fetch` and
            :meth:`parse` do.
        """
        fetched = self.stamp(self.fetch(run))
        return fetched, self.parse(fetched.data, run)

    def provenance(self) -> dict[str, Any]:
        """``{"name", "params"}``: this source and its non-secret parameters.

        Recorded with every cached run and in every dataset, so that
        prediction reads a new run's metrics the way the training runs' were
        read.  Secrets are left out: they are given again at prediction.
        """
        return {"name": self.name,
                "params": {p.name: getattr(self, p.name, None) for p in self.parameters
                           if not p.secret}}

    def stamp(self, fetched: FetchedMetrics) -> FetchedMetrics:
        """``fetched`` with :meth:`provenance` recorded in it (if it has none yet)."""
        if getattr(fetched, "source", None) is None:
            try:
                fetched.source = self.provenance()
            except AttributeError:  # a plugin's own, frozen result type
                pass
        return fetched


def common_provenance(provenances: Iterable[dict[str, Any] | None]
                      ) -> tuple[dict[str, Any] | None, int]:
    """The metric source most of a dataset's runs were cached with, and how many differ.

    :param provenances: one :meth:`MetricSource.provenance` dict (or ``None``
        for a run cached before ciml recorded it) per run.
    :return: ``(provenance or None, number of runs cached otherwise)``.
    """
    counts: dict[str, int] = {}
    for item in provenances:
        if item:
            key = provenance_key(item)
            counts[key] = counts.get(key, 0) + 1
    return common_provenance_of_counts(counts)


def provenance_key(provenance: dict[str, Any]) -> str:
    """A provenance as the text :func:`common_provenance_of_counts` counts by."""
    import json

    return json.dumps(provenance, sort_keys=True, default=str)


def common_provenance_of_counts(counts: Mapping[str, int]
                                ) -> tuple[dict[str, Any] | None, int]:
    """:func:`common_provenance` of runs counted by provenance.

    :param counts: ``{provenance_key(provenance): number of runs}``.
    :return: ``(provenance or None, number of runs cached otherwise)``; a
        tie goes to the greater JSON text.
    """
    import json

    if not counts:
        return None, 0
    best = max(counts, key=lambda k: (counts[k], k))
    return json.loads(best), sum(counts.values()) - counts[best]
