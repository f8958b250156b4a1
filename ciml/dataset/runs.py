"""The runs a build selects, held as a few numpy arrays: tens of bytes a run.

A build reads every cached run's record once, to learn its label, its
columns, its length and where it came from, and then only needs those
few facts.  Holding the records themselves (or the catalog's rows) cost
kilobytes a run: some 5 GB for a build of a million runs.  Here the
catalog is read as a stream, each record is reduced to one row of small
columns as it passes, and values that repeat from run to run (labels,
sources, column lists, metric-source provenance) are stored once and
referred to by a code.  What the table holds per run: the id (UTF-8
bytes), the start (microseconds), four codes, a flag and a length in
seconds, and on an object store the run's folder name.
"""

from __future__ import annotations

import array
import dataclasses
import datetime as dt
import itertools
import math

import numpy as np

from ciml.base.metric_source import provenance_key
from ciml.dataset import labels as labels_mod
from ciml.dataset.length import recorded_span
from ciml.human_labels import relabelled

#: The start of a run that has none: before every real start, as
#: ``datetime.min`` was when runs were sorted as records.
NO_START = int(np.iinfo("int64").min)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

#: Rows gathered as Python values before they become arrays.
_BATCH = 4096


def start_key(start):
    """A run's start as integer microseconds since the epoch, UTC.

    Naive starts are UTC and a missing start sorts first, as the build
    always ordered them; microseconds are what a datetime holds, so the
    order is the datetimes' order exactly.
    """
    if start is None:
        return NO_START
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    delta = start - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


#: The code of a value the index did not have (columns: ask the run itself).
UNKNOWN = -1


class Codes:
    """Values stored once, each given the next integer code."""

    def __init__(self, values=()):
        self.values = list(values)
        self._code = {}
        for code, value in enumerate(self.values):
            self._code.setdefault(value, code)

    def code(self, value):
        found = self._code.get(value)
        if found is None:
            found = self._code[value] = len(self.values)
            self.values.append(value)
        return found


@dataclasses.dataclass
class RunTable:
    """Runs as columns; row ``i`` of every array is one run.

    ``label``, ``source``, ``columns`` and ``provenance`` are codes into
    the lists of the same name (``-1``: none, or for ``columns`` not known
    from the index); ``span`` is the seconds from first to last sample
    (NaN: not known from the index); ``passed`` is ``status == "passed"``.
    ``folders``: the runs' folder names in a raw cache on an object store
    (``None`` elsewhere).
    """

    ids: np.ndarray
    start: np.ndarray
    label: np.ndarray
    passed: np.ndarray
    source: np.ndarray
    columns: np.ndarray
    span: np.ndarray
    provenance: np.ndarray
    folders: np.ndarray | None
    labels: list
    sources: list
    column_sets: list
    provenances: list

    _ROWS = ("ids", "start", "label", "passed", "source", "columns", "span", "provenance",
             "folders")

    def __len__(self):
        return len(self.ids)

    def take(self, index):
        """The runs at ``index`` (a slice, a mask or positions), same code lists."""
        rows = {name: None if getattr(self, name) is None else getattr(self, name)[index]
                for name in self._ROWS}
        return dataclasses.replace(self, **rows)

    def run_id(self, i):
        return self.ids[i].decode("utf-8")

    def run_ids(self, index=None):
        """The ids (of the runs at ``index``) as strings, in order."""
        return list(decoded(self.ids if index is None else self.ids[index]))

    def folder_names(self, index=None):
        """The folder names (of the runs at ``index``) as strings; ``None`` if not kept."""
        if self.folders is None:
            return None
        folders = self.folders if index is None else self.folders[index]
        return list(decoded(folders))

    def iter_runs(self):
        """``(run id, folder name or None)`` of each run, in order."""
        folders = decoded(self.folders) if self.folders is not None else itertools.repeat(None)
        return zip(decoded(self.ids), folders)


def decoded(values, batch=_BATCH):
    """The strings of a UTF-8 byte-string array one at a time, decoded a batch at a time."""
    for start in range(0, len(values), batch):
        yield from (v.decode("utf-8") for v in values[start:start + batch].tolist())


def scan(cache, build_name, class_label, human=None):
    """A :class:`RunTable` of the cached runs of ``build_name``, sorted by start then id.

    ``cache`` is a :class:`ciml.cache.RawCache` (read as a stream of
    catalog rows) or anything with ``runs(build_name)`` and, optionally,
    ``info(run_id)``.  ``human``: ``{run_id: {key: value}}`` of the labels
    a person set, applied before the run's label is taken.
    """
    human = human or {}
    labels, sources, column_sets, provenances = Codes(), Codes(), Codes(), Codes()
    ints = {name: array.array("q") for name in ("start", "label", "source", "columns",
                                                "provenance")}
    spans, passed = array.array("d"), array.array("b")
    id_parts, ids, folder_parts, folders = [], [], [], []
    # On an object store a run's folder is named by the catalog (not by its
    # id alone): kept, so that loading the run does not ask the catalog
    # again (a round trip to a shared database).  Locally the catalog is a
    # SQLite file, and asking it costs microseconds.
    keep_folders = bool(getattr(cache, "remote", False))
    for run, info, folder in _records(cache, build_name):
        mine = human.get(run.id)
        if mine:
            run = relabelled(run, mine)
        label = labels_mod.run_label(run, class_label)
        ints["label"].append(-1 if label is None else labels.code(label))
        ints["start"].append(start_key(getattr(run, "start", None)))
        passed.append(getattr(run, "status", None) == "passed")
        ints["source"].append(sources.code(str(getattr(run, "source", None) or "unknown")))
        ints["columns"].append(_columns_code(column_sets, info))
        spans.append(_span(info))
        ints["provenance"].append(_provenance_code(provenances, info))
        ids.append(run.id.encode("utf-8"))
        if keep_folders:
            folders.append((folder or "").encode("utf-8"))
        if len(ids) >= _BATCH:
            id_parts.append(np.array(ids, dtype="S"))
            ids.clear()
            if keep_folders:
                folder_parts.append(np.array(folders, dtype="S"))
                folders.clear()
    id_parts.append(np.array(ids, dtype="S"))
    if keep_folders:
        folder_parts.append(np.array(folders, dtype="S"))
    table = RunTable(
        ids=np.concatenate(id_parts) if id_parts else np.array([], dtype="S"),
        start=np.frombuffer(ints["start"], dtype="int64"),
        label=np.frombuffer(ints["label"], dtype="int64").astype("int32"),
        passed=np.frombuffer(passed, dtype="int8").astype(bool),
        source=np.frombuffer(ints["source"], dtype="int64").astype("int32"),
        columns=np.frombuffer(ints["columns"], dtype="int64").astype("int32"),
        span=np.frombuffer(spans, dtype="float64"),
        provenance=np.frombuffer(ints["provenance"], dtype="int64").astype("int32"),
        folders=np.concatenate(folder_parts) if keep_folders else None,
        labels=labels.values, sources=sources.values, column_sets=column_sets.values,
        provenances=provenances.values)
    # By start, then id: bytes of UTF-8 sort as the strings' code points do.
    return table.take(np.lexsort((table.ids, table.start)))


def _records(cache, build_name):
    """``(RunRecord, cache info or None, folder name or None)`` per cached run."""
    scan_records = getattr(cache, "scan", None)
    if scan_records is not None:
        yield from scan_records(build_name)
        return
    info = getattr(cache, "info", None)
    for run in cache.runs(build_name):
        yield run, _info_of(info, run.id), None


def _info_of(info, run_id):
    if info is None:
        return None
    try:
        return info(run_id) or {}
    except Exception:  # a cache without the record: its series answers later
        return None


def _columns_code(column_sets, info):
    columns = (info or {}).get("columns")
    if columns is None:
        return UNKNOWN
    columns = tuple(str(c) for c in columns)
    return column_sets.code(columns)


def _span(info):
    span = recorded_span(info)
    return math.nan if span is None else span


def _provenance_code(provenances, info):
    found = (info or {}).get("metric_source")
    if not found:
        return -1
    return provenances.code(provenance_key(found))
