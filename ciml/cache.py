"""The raw cache: fetched metrics, run records, parsed series and their index.

Layout under ``<data>/raw/``::

    index.sqlite                  which runs are cached / unavailable, and why
    runs/<safe run id>/
        record.json               the run record, plus where the bytes came from
        <file>.cimlraw            the fetched file's content, packed (ciml.rawpack)
        series.bin                the parsed series, compressed (ciml.series)

Why it is built this way:

* A run folder is written complete under a temporary name and renamed into
  place, and the index is updated *last*: a run is "cached" only once
  everything it needs is on disk, so an interruption at any moment (Ctrl-C,
  ``kill -9``, a full disk) leaves nothing that reads as data.  Leftover
  temporary folders of dead processes are removed by :meth:`RawCache.cleanup`.
* The fetched file is kept as its content (gunzipped), packed by column
  (:mod:`ciml.rawpack`: byte-identical when unpacked, CRC-checked): about
  half the bytes of the gzipped file, so that the fetched content and its
  series together take about what was fetched.  Caches written before keep
  the file as fetched (``e.g. dstat-csv_log.txt.gz``), and so does a file
  that packing would not shrink; :meth:`RawCache.fetched_content` reads
  either.
* ``series.bin`` is the parsed series, losslessly compressed per column
  (:mod:`ciml.series`): reading it back is a decompression and a cumulative
  sum into arrays, so building many datasets from one cache never re-parses
  CSV, and it takes about half the bytes of a gzipped dstat CSV (the
  uncompressed ``series.npz`` of older caches took 3-4 times them; those
  are still read, and :meth:`RawCache.upgrade_series` converts them).
* The index is a catalog (:mod:`ciml.catalog`): SQLite through sqlite3
  in WAL mode in a local data path, so readers never block writers and two
  ``cache-data`` processes can share a data path; a shared database
  (``--catalog-uri``) when the data path is on an object store.  There a
  run folder cannot be renamed into place: each writer fills its own
  ``runs/<safe run id>@<token>/`` and the catalog row, written last and
  won by the first writer only, names the folder that holds the run.
* Run ids come from remote systems; they only ever reach the file system
  through :func:`ciml.fileutil.safe_filename`.
"""

import contextlib
import datetime as dt
import io
import json
import logging
import operator
import os
import threading
import time

import numpy as np

from ciml import fileutil, rawpack, storage
from ciml.catalog import CACHED, UNAVAILABLE  # noqa: F401 -- re-exported: ciml.cache.UNAVAILABLE
from ciml.errors import MetricsUnavailable, NotFoundError
from ciml.records import RunRecord
from ciml.series import read_series, write_series

LOG = logging.getLogger(__name__)

SERIES_FILE = "series.bin"
#: The series file of caches written before ciml.series (read, never written).
LEGACY_SERIES_FILE = "series.npz"
RECORD_FILE = "record.json"
#: Added to the fetched file's name when it is stored packed (ciml.rawpack).
PACKED_SUFFIX = ".cimlraw"

class NotCommitted(Exception):
    """:meth:`RawCache.store` was told not to commit (``commit_if`` returned false)."""


def _utc_key(start):
    """A sortable UTC text for a start time (``""`` when unknown)."""
    if start is None:
        return ""
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    return start.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _write_synced(path, data):
    if storage.is_remote(path):
        path.write_bytes(data)
        return
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def frame_to_arrays(frame):
    """``(timestamps int64 ns UTC, values 2-D float, columns str)`` of a frame.

    ``frame`` may also be such a triple already (a metric source's
    ``parse_series``): then no pandas is needed.
    """
    if isinstance(frame, tuple):
        stamps, values, columns = frame
        values = np.asarray(values)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        return (np.asarray(stamps, dtype=np.int64), values,
                np.array([str(c) for c in columns], dtype=np.str_))
    import pandas as pd

    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError("a metrics frame needs a DatetimeIndex")
    if index.tz is None:
        index = index.tz_localize("UTC")
    stamps = index.tz_convert("UTC").as_unit("ns").asi8.astype(np.int64, copy=False)
    values = frame.to_numpy()
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    columns = np.array([str(c) for c in frame.columns], dtype=np.str_)
    return stamps, values, columns


def _stamp_text(ns):
    """A time stamp as ``str(pandas.Timestamp)`` writes it, UTC (the record's first/last)."""
    ns = int(ns)
    if ns % 1000:  # nanoseconds: only pandas writes them so
        import pandas as pd

        return str(pd.Timestamp(ns, tz="UTC"))
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        microseconds=ns // 1000)
    return str(moment)


def arrays_to_frame(stamps, values, columns):
    import pandas as pd

    index = pd.DatetimeIndex(stamps.astype("datetime64[ns]"), name="time").tz_localize("UTC")
    return pd.DataFrame(values, index=index, columns=[str(c) for c in columns], copy=False)


class RawCache:
    """The raw cache under a data path; safe to share between threads and processes."""

    #: Store fetched files packed (:mod:`ciml.rawpack`): about half the
    #: bytes of a gzipped dstat file; ``False`` keeps them as fetched.
    pack_raw = True

    def __init__(self, data_path):
        from ciml.catalog import Catalog, catalog_uri

        self.data_path = data_path
        self.root = data_path.raw
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "index.sqlite"
        self.remote = storage.is_remote(self.root)
        self._runs_root = None if self.remote else str(self.runs_dir)
        self.catalog = Catalog(catalog_uri(data_path))
        self._store_lock = threading.Lock()

    def __repr__(self):
        return f"RawCache({str(self.data_path)!r})"

    def exists(self):
        """Whether there is a cache to read: a local index file, or a catalog given.

        Asking does not create one (a mistyped data path stays empty).
        """
        if self.data_path.catalog_uri:
            return True
        return not self.remote and self.index_path.exists()

    def close(self):
        """Close the catalog's connections.  Idempotent."""
        self.catalog.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- paths -----------------------------------------------------------------

    def run_dir(self, run_id):
        """The folder of a run (whether or not it is cached)."""
        return self.runs_dir / fileutil.safe_filename(run_id)

    # -- writing ---------------------------------------------------------------

    def store(self, run, fetched, frame, *, commit_if=None, writer=None):
        """Keep a run: the fetched file (packed), its record and its parsed series.

        ``frame`` is the parsed series: a frame, or the ``(timestamps,
        values, columns)`` of :meth:`ciml.base.MetricSource.parse_series`.

        Everything is written to a temporary folder, moved into place, and
        only then recorded in the index, so a run is never "cached" with
        missing or partial files.  Storing a run that another thread or
        process cached meanwhile keeps the existing copy.

        :param commit_if: called just before the run is moved into place
            and indexed; when it returns false, nothing is stored and
            :class:`NotCommitted` is raised (a worker whose command died).
        :param writer: recorded as the record's ``cache.writer``: who stored
            the run (a Dask cache-data's token, so that a retried task tells
            a run its own dead worker stored from one another command did).
        :return: ``True`` if this call stored the run, ``False`` if it was
            already cached (so that concurrent writers each count only
            their own runs).
        """
        stamps, values, columns = frame_to_arrays(frame)
        final = self.run_dir(run.id)
        fetched_name = fileutil.safe_filename(fetched.name or "metrics")
        raw_name = fetched_name
        if raw_name in (SERIES_FILE, LEGACY_SERIES_FILE, RECORD_FILE):
            raw_name = "raw-" + raw_name
        raw_data, packed = fetched.data, "as-fetched"
        if self.pack_raw:
            raw_data, how = rawpack.pack(fetched.data)
            packed = how["packed"]
            if packed != "as-fetched":
                raw_name += PACKED_SUFFIX
        record = run.to_dict()
        record["cache"] = {
            "raw_file": raw_name,
            # What the raw file holds: the bytes as fetched, or their content
            # (gunzipped) packed by ciml.rawpack; RawCache.fetched_content
            # gives the content back either way.
            "raw_packed": packed,
            "fetched_name": fetched_name,
            "url": fetched.url,
            "bytes": len(fetched.data),
            "samples": int(len(stamps)),
            "columns": [str(c) for c in columns],
            "first": _stamp_text(stamps[0]) if len(stamps) else None,
            "last": _stamp_text(stamps[-1]) if len(stamps) else None,
            "stored": dt.datetime.now(dt.timezone.utc).isoformat(),
            # 12.8: how the metrics were read; the dataset and prediction reuse it.
            "metric_source": getattr(fetched, "source", None),
        }
        if writer is not None:
            record["cache"]["writer"] = writer
        tmp, final = self._new_folder(run.id)
        try:
            # The temporary folder is invisible to readers until it is renamed
            # (on an object store: until the catalog names it), so its files
            # need no rename of their own: one fsync each, then one for the
            # folder, before the move makes them data.
            buf = io.BytesIO()
            series_bytes = write_series(buf, stamps, values, columns)
            record["cache"]["series_bytes"] = series_bytes
            text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
            _write_synced(tmp / raw_name, raw_data)
            _write_synced(tmp / SERIES_FILE, buf.getvalue())
            _write_synced(tmp / RECORD_FILE, text.encode("utf-8"))
            fileutil.fsync_dir(tmp)
            with self._locked_store():
                if (not self.remote and self.state(run.id) == CACHED
                        and (final / RECORD_FILE).is_file()):
                    return False
                if commit_if is not None and not commit_if():
                    raise NotCommitted(f"run {run.id} not stored: its requester is gone")
                if not self.remote:
                    fileutil.replace_dir(tmp, final, sync=False)
                    tmp = None
                # The catalog row is the run's completion marker, written last;
                # on a shared store the first writer wins and a later one
                # removes its own copy.
                stored = self.catalog.commit_cached(
                    run.id, run.build_name, final.name, _utc_key(run.start), len(stamps),
                    record, run.incomplete, replace=not self.remote)
                if stored:
                    tmp = None
                return stored
        finally:
            if tmp is not None:
                storage.rmtree(tmp)

    def _new_folder(self, run_id):
        """``(folder to write, folder the run will be in)``.

        Locally a hidden work folder renamed to the run's folder.  An object
        store cannot rename: each writer fills a folder of its own,
        ``<run>@<token>``, and the catalog names the one that won.
        """
        import uuid

        if self.remote:
            folder = self.runs_dir / f"{fileutil.safe_filename(run_id)}@{uuid.uuid4().hex[:12]}"
            return folder, folder
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.runs_dir / fileutil.work_name("tmp")
        tmp.mkdir()
        return tmp, self.run_dir(run_id)

    def update_record(self, run):
        """Replace a cached run's record (its metadata completed later); keeps its files.

        :return: ``False`` if the run is not cached (nothing to update).
        """
        with self._locked_store():
            try:
                folder, old = self._cached_row(run.id)
            except NotFoundError:
                return False
            record = run.to_dict()
            record["cache"] = old.get("cache") or {}
            fileutil.atomic_write_json(folder / RECORD_FILE, record)
            self.catalog.update_record(run.id, record, run.incomplete)
        return True

    def incomplete_ids(self, build_name=None):
        """Ids of cached runs whose optional metadata is still incomplete."""
        return self.catalog.incomplete_ids(build_name)

    @contextlib.contextmanager
    def _locked_store(self):
        """Serialise the short move-into-place step across threads and processes."""
        import fcntl

        if self.remote:
            # No shared lock on an object store: the catalog's conditional
            # commit decides between writers.
            with self._store_lock:
                yield
            return
        with self._store_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".store.lock", "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def mark_unavailable(self, run, reason, message):
        """Record that a run's metrics cannot be had, and why.

        A run already cached (by another process, say) stays cached.
        """
        self.catalog.mark_unavailable(run.id, run.build_name, reason, message,
                                      _utc_key(run.start), run.to_dict())

    def cleanup(self, grace_s=None):
        """Remove temporary folders left by processes that died mid-write.

        On an object store, a run folder that the catalog does not name is
        a writer's that died or lost a race; it is removed once nothing in
        it changed for ``grace_s`` (:data:`ciml.storage.ABANDONED_AFTER_S`),
        so a writer still filling it is left alone.

        :return: how many were removed.
        """
        if not self.remote:
            return fileutil.remove_leftovers(self.runs_dir)
        grace_s = storage.ABANDONED_AFTER_S if grace_s is None else grace_s
        named = self.catalog.dirs()
        removed = 0
        now = time.time()
        for entry in self.runs_dir.iterdir():
            if entry.name in named or "@" not in entry.name:
                continue
            # Listed before the catalog was read? Read it again before removing.
            times = [(entry / rel).stat_mtime() or now for rel in entry.files()]
            if times and now - max(times) <= grace_s:
                continue
            if entry.name in self.catalog.dirs():
                continue
            entry.rmtree()
            removed += 1
        return removed

    # -- reading ---------------------------------------------------------------

    def state(self, run_id):
        """``"cached"``, ``"unavailable"`` or ``None`` for a run id."""
        return self.catalog.state(run_id)

    def states(self, build_name=None):
        """``{run_id: state}`` for every indexed run (of a build name)."""
        return self.catalog.states(build_name)

    def runs(self, build_name=None):
        """The cached runs (of a build name), sorted by start time then id."""
        return [entry["run"] for entry in self.entries(build_name)]

    def entries(self, build_name=None):
        """Cached runs with their sample counts: ``{"run": RunRecord, "samples": n}``."""
        return [{"run": RunRecord.from_dict(json.loads(record)), "samples": samples}
                for samples, record in self.catalog.cached(build_name)]

    def scan(self, build_name=None):
        """``(RunRecord, cache info, folder name)`` of each cached run (of a build name).

        Sorted by start then id and read from the catalog as a stream, a
        thousand rows at a time: a build of a million runs reads them all
        but never holds them all (:mod:`ciml.dataset.runs` keeps a few
        bytes of each).  The cache info is the record's ``cache`` part
        (what :meth:`info` gives).
        """
        for _run_id, folder, record in self.catalog.iter_cached(build_name,
                                                                ("run_id", "dir", "record")):
            data = json.loads(record)
            info = data.pop("cache", None) or {}
            yield RunRecord.from_dict(data), info, folder

    def unavailable(self, build_name=None):
        """Runs known to be unavailable: ``run_id, build_name, reason, message, time``."""
        return [{"run_id": r[0], "build_name": r[1], "reason": r[2], "message": r[3],
                 "time": dt.datetime.fromtimestamp(r[4], dt.timezone.utc).isoformat()}
                for r in self.catalog.unavailable(build_name)]

    def _catalog_row(self, run_id):
        """``(dir, record text)`` of a cached run; :class:`NotFoundError` if absent."""
        row = self.catalog.cached_row(run_id)
        if row is None:
            raise NotFoundError(f"run {run_id!r} is not in the raw cache under "
                                f"{self.data_path}")
        return row

    def _cached_row(self, run_id):
        folder, record = self._catalog_row(run_id)
        return self.runs_dir / folder, json.loads(record)

    def record(self, run_id):
        """The :class:`RunRecord` of a cached run; :class:`NotFoundError` if absent."""
        _, record = self._cached_row(run_id)
        return RunRecord.from_dict(record)

    def info(self, run_id):
        """What the cache knows about a cached run's files (raw file, url, columns...)."""
        _, record = self._cached_row(run_id)
        return dict(record.get("cache") or {})

    def raw_file(self, run_id):
        """The path of a cached run's metrics file: as fetched, or packed.

        Packed (``info(run_id)["raw_packed"]`` is ``"table"`` or ``"zstd"``,
        the name ends with :data:`PACKED_SUFFIX`) it holds the fetched
        content in :mod:`ciml.rawpack`'s format: read it with
        :meth:`fetched_content`.
        """
        folder, record = self._cached_row(run_id)
        return folder / record["cache"]["raw_file"]

    def fetched_content(self, run_id):
        """A cached run's metrics file as fetched, gunzipped if it was gzipped.

        Byte for byte what was fetched for a plain file, what ``gunzip``
        gives for a gzipped one (packed files keep the content, not the
        gzip stream; files cached before packing, or stored unpacked, are
        gunzipped here the same way).
        """
        path = self.raw_file(run_id)
        data = path.read_bytes()
        if rawpack.is_packed(data) and path.name.endswith(PACKED_SUFFIX):
            try:
                return rawpack.unpack(data)
            except rawpack.RawPackError as exc:
                raise MetricsUnavailable(
                    "corrupt-cache", f"cached metrics of run {run_id} at {path} are "
                    f"unreadable: {exc}") from None
        return rawpack.content_of(data)[0]

    def frame(self, run_id):
        """The parsed series of a cached run as a DataFrame (never re-parsed)."""
        return arrays_to_frame(*self.series(run_id))

    def series(self, run_id, folder=None):
        """The parsed series of a cached run as arrays: a :class:`ciml.series.Series`.

        What the dataset build reads: no CSV, no DataFrame.  ``folder``: the
        run's folder name as :meth:`scan` gave it, which spares asking the
        catalog (a round trip, with a shared database).
        """
        if folder is None:
            folder = self._catalog_row(run_id)[0]
        if self.remote:
            folder = self.runs_dir / folder
            join, opener = operator.truediv, lambda path: path.open("rb")
        else:
            # Plain strings: a pathlib.Path per run would intern every run's
            # folder name, and the interpreter's table of interned names
            # only grows (about 100 bytes a run in a build).
            folder = os.path.join(self._runs_root, folder)
            join, opener = os.path.join, lambda path: open(path, "rb")
        # series.bin, else the series.npz of an older cache, else series.bin
        # again: an upgrade may have replaced one by the other meanwhile.
        names = (SERIES_FILE, LEGACY_SERIES_FILE, SERIES_FILE)
        path = join(folder, SERIES_FILE)
        try:
            for i, name in enumerate(names):
                path = join(folder, name)
                try:
                    fh = opener(path)
                except FileNotFoundError:
                    if i == len(names) - 1:
                        raise
                    continue
                with fh:
                    return read_series(fh)
        except Exception as exc:
            raise MetricsUnavailable(
                "corrupt-cache", f"cached series of run {run_id} at {path} is unreadable: "
                f"{type(exc).__name__}: {exc}") from None

    def sizes(self, run_id):
        """Bytes of a cached run: ``{"fetched", "raw", "series", "record", "total"}``.

        ``fetched`` is how many bytes were fetched; the others are on disk:
        ``raw`` the metrics file (packed, or as fetched), ``series`` the
        parsed series (``series.bin``, or ``series.npz`` in a cache not
        upgraded yet), ``total`` the three files.
        """
        folder, record = self._cached_row(run_id)
        cache = record.get("cache") or {}
        raw = cache.get("raw_file")
        out = {"raw": 0, "series": 0, "record": 0}
        for path in folder.iterdir():
            kind = ("raw" if path.name == raw else "record" if path.name == RECORD_FILE
                    else "series" if path.name in (SERIES_FILE, LEGACY_SERIES_FILE)
                    else None)
            if kind is not None:
                out[kind] += path.stat().st_size
        out["total"] = out["raw"] + out["series"] + out["record"]
        # Records before packing have no need to tell: the file is as fetched.
        out["fetched"] = int(cache.get("bytes") or out["raw"])
        return out

    def upgrade_series(self, run_id):
        """Rewrite a run's ``series.npz`` as ``series.bin``; returns the bytes saved.

        ``None`` when there is nothing to upgrade.

        Crash-safe at every step: the new file is written beside the old
        one under a temporary name, synced and renamed into place; only
        then is the old one removed.  A crash in between leaves both, and
        readers prefer ``series.bin``, which is complete by then.
        """
        folder, _ = self._cached_row(run_id)
        legacy = folder / LEGACY_SERIES_FILE
        if not legacy.exists():
            return None
        series = self.series(run_id)  # MetricsUnavailable if the old file is unreadable
        before = legacy.stat().st_size
        if not (folder / SERIES_FILE).exists():
            with fileutil.atomic_open(folder / SERIES_FILE, "wb") as fh:
                write_series(fh, *series)
        after = (folder / SERIES_FILE).stat().st_size
        legacy.unlink()
        fileutil.fsync_dir(folder)
        return before - after

    def pack_fetched(self, run_id):
        """Pack a run's fetched file kept as fetched (an older cache); returns the bytes saved.

        ``None`` when there is nothing to do (already packed, or packing
        would not shrink it).  The packed file is checked to unpack to the
        very content before anything changes (the fetched bytes go away), then
        written beside the old one (synced, renamed into place), then the
        record names it (record.json, then the catalog row, which readers
        follow), and only then is the old file removed.  A crash at any
        step leaves the run readable; a file left behind by a crash between
        the last two steps is removed by the next call.
        """
        with self._locked_store():
            folder, record = self._cached_row(run_id)
            info = dict(record.get("cache") or {})
            if info.get("raw_packed", "as-fetched") != "as-fetched":
                leftover = info.get("fetched_name")
                if leftover and leftover != info.get("raw_file") and (folder / leftover).exists():
                    (folder / leftover).unlink()
                return None
            old = folder / info["raw_file"]
            data = old.read_bytes()
            packed, how = rawpack.pack(data)
            if how["packed"] == "as-fetched" or \
                    rawpack.unpack(packed) != rawpack.content_of(data)[0]:
                return None
            new = folder / (info["raw_file"] + PACKED_SUFFIX)
            with fileutil.atomic_open(new, "wb") as fh:
                fh.write(packed)
            info.update(raw_file=new.name, raw_packed=how["packed"],
                        fetched_name=info.get("fetched_name") or old.name)
            info.setdefault("bytes", len(data))
            record["cache"] = info
            fileutil.atomic_write_json(folder / RECORD_FILE, record)
            self.catalog.update_record(run_id, record, RunRecord.from_dict(record).incomplete)
            old.unlink()
            fileutil.fsync_dir(folder)
        return len(data) - len(packed)

    def counts(self, build_name=None):
        """``{"cached": n, "unavailable": m}`` (of a build name)."""
        return self.catalog.counts(build_name)
