"""The raw cache: fetched metrics kept as fetched, run records, parsed series and their index.

Layout under ``<data>/raw/``::

    index.sqlite                  which runs are cached / unavailable, and why
    runs/<safe run id>/
        record.json               the run record, plus where the bytes came from
        <file as fetched>         e.g. dstat-csv_log.txt.gz, byte for byte
        series.bin                the parsed series, compressed (ciml.series)

Why it is built this way:

* A run folder is written complete under a temporary name and renamed into
  place, and the index is updated *last*: a run is "cached" only once
  everything it needs is on disk, so an interruption at any moment (Ctrl-C,
  ``kill -9``, a full disk) leaves nothing that reads as data.  Leftover
  temporary folders of dead processes are removed by :meth:`RawCache.cleanup`.
* ``series.bin`` is the parsed series, losslessly compressed per column
  (:mod:`ciml.series`): reading it back is a decompression and a cumulative
  sum into arrays, so building many datasets from one cache never re-parses
  CSV, and it takes about half the bytes of a gzipped dstat CSV (the
  uncompressed ``series.npz`` of older caches took 3-4 times them; those
  are still read, and :meth:`RawCache.upgrade_series` converts them).
* The index is SQLite in WAL mode with a busy timeout, one connection per
  thread and process, so readers never block writers and two ``cache-data``
  processes can share a data path.
* Run ids come from remote systems; they only ever reach the file system
  through :func:`ciml.fileutil.safe_filename`.
"""

import contextlib
import datetime as dt
import io
import json
import logging
import os
import shutil
import sqlite3
import threading
import time

import numpy as np

from ciml import fileutil
from ciml.errors import MetricsUnavailable, NotFoundError
from ciml.records import RunRecord
from ciml.series import read_series, write_series

LOG = logging.getLogger(__name__)

CACHED = "cached"
UNAVAILABLE = "unavailable"

SERIES_FILE = "series.bin"
#: The series file of caches written before ciml.series (read, never written).
LEGACY_SERIES_FILE = "series.npz"
RECORD_FILE = "record.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    build_name  TEXT,
    state       TEXT NOT NULL,
    reason      TEXT,
    message     TEXT,
    dir         TEXT,
    start       TEXT,
    samples     INTEGER,
    record      TEXT,
    time        REAL NOT NULL,
    incomplete  TEXT
);
CREATE INDEX IF NOT EXISTS ix_runs_build_state ON runs (build_name, state);
"""

# Columns added since the first index layout: (name, SQL type).
_ADDED_COLUMNS = (("incomplete", "TEXT"),)

# How long a connection waits for another writer before giving up.
_BUSY_TIMEOUT_S = 60.0


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
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def frame_to_arrays(frame):
    """``(timestamps int64 ns UTC, values 2-D float, columns str)`` of a frame."""
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


def arrays_to_frame(stamps, values, columns):
    import pandas as pd

    index = pd.DatetimeIndex(stamps.astype("datetime64[ns]"), name="time").tz_localize("UTC")
    return pd.DataFrame(values, index=index, columns=[str(c) for c in columns], copy=False)


class RawCache:
    """The raw cache under a data path; safe to share between threads and processes."""

    def __init__(self, data_path):
        self.data_path = data_path
        self.root = data_path.raw
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "index.sqlite"
        self._local = threading.local()
        self._conns = []
        self._conns_lock = threading.Lock()
        self._store_lock = threading.Lock()

    def __repr__(self):
        return f"RawCache({str(self.root)!r})"

    # -- the index -------------------------------------------------------------

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        # A connection must not cross a fork: a child opens its own.
        if conn is not None and self._local.pid == os.getpid():
            return conn
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.index_path), timeout=_BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        self._retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        self._retry_locked(lambda: conn.executescript(_SCHEMA))
        self._add_columns(conn)
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _add_columns(self, conn):
        """Bring an index made by an older ciml up to the current columns."""
        have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        for name, sql_type in _ADDED_COLUMNS:
            if name in have:
                continue
            sql = f"ALTER TABLE runs ADD COLUMN {name} {sql_type}"
            try:
                self._retry_locked(lambda sql=sql: conn.execute(sql))
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process was first
                    raise

    @staticmethod
    def _retry_locked(call, attempts=50):
        # Switching to WAL and creating the schema take an exclusive lock that
        # the busy handler does not always wait for; retry briefly instead.
        for attempt in range(attempts):
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    def _write(self, sql, params):
        conn = self._conn()
        return self._retry_locked(lambda: conn.execute(sql, params))

    def close(self):
        """Close the index connections of every thread.  Idempotent."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- paths -----------------------------------------------------------------

    def run_dir(self, run_id):
        """The folder of a run (whether or not it is cached)."""
        return self.runs_dir / fileutil.safe_filename(run_id)

    # -- writing ---------------------------------------------------------------

    def store(self, run, fetched, frame, *, commit_if=None):
        """Keep a run: raw bytes as fetched, its record and its parsed series.

        Everything is written to a temporary folder, moved into place, and
        only then recorded in the index, so a run is never "cached" with
        missing or partial files.  Storing a run that another thread or
        process cached meanwhile keeps the existing copy.

        :param commit_if: called just before the run is moved into place
            and indexed; when it returns false, nothing is stored and
            :class:`NotCommitted` is raised (a worker whose command died).
        :return: ``True`` if this call stored the run, ``False`` if it was
            already cached (so that concurrent writers each count only
            their own runs).
        """
        stamps, values, columns = frame_to_arrays(frame)
        final = self.run_dir(run.id)
        raw_name = fileutil.safe_filename(fetched.name or "metrics")
        if raw_name in (SERIES_FILE, LEGACY_SERIES_FILE, RECORD_FILE):
            raw_name = "raw-" + raw_name
        record = run.to_dict()
        record["cache"] = {
            "raw_file": raw_name,
            "url": fetched.url,
            "bytes": len(fetched.data),
            "samples": int(len(stamps)),
            "columns": [str(c) for c in columns],
            "first": str(frame.index[0]) if len(frame.index) else None,
            "last": str(frame.index[-1]) if len(frame.index) else None,
            "stored": dt.datetime.now(dt.timezone.utc).isoformat(),
            # 12.8: how the metrics were read; the dataset and prediction reuse it.
            "metric_source": getattr(fetched, "source", None),
        }
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.runs_dir / fileutil.work_name("tmp")
        tmp.mkdir()
        try:
            # The temporary folder is invisible to readers until it is renamed,
            # so its files need no rename of their own: one fsync each, then
            # one for the folder, before the move makes them data.
            buf = io.BytesIO()
            series_bytes = write_series(buf, stamps, values, columns)
            record["cache"]["series_bytes"] = series_bytes
            text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
            _write_synced(tmp / raw_name, fetched.data)
            _write_synced(tmp / SERIES_FILE, buf.getvalue())
            _write_synced(tmp / RECORD_FILE, text.encode("utf-8"))
            fileutil.fsync_dir(tmp)
            with self._locked_store():
                if self.state(run.id) == CACHED and (final / RECORD_FILE).is_file():
                    return False
                if commit_if is not None and not commit_if():
                    raise NotCommitted(f"run {run.id} not stored: its requester is gone")
                fileutil.replace_dir(tmp, final, sync=False)
                tmp = None
                self._write(
                    "INSERT INTO runs (run_id, build_name, state, reason, message, dir,"
                    " start, samples, record, time, incomplete)"
                    " VALUES (?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(run_id) DO UPDATE SET build_name=excluded.build_name,"
                    " state=excluded.state, reason=NULL, message=NULL, dir=excluded.dir,"
                    " start=excluded.start, samples=excluded.samples,"
                    " record=excluded.record, time=excluded.time,"
                    " incomplete=excluded.incomplete",
                    (str(run.id), run.build_name, CACHED, final.name, _utc_key(run.start),
                     int(len(stamps)), json.dumps(record, sort_keys=True, default=str),
                     time.time(), run.incomplete))
            return True
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

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
            self._write("UPDATE runs SET record = ?, incomplete = ?, time = ?"
                        " WHERE run_id = ? AND state = 'cached'",
                        (json.dumps(record, sort_keys=True, default=str), run.incomplete,
                         time.time(), str(run.id)))
        return True

    def incomplete_ids(self, build_name=None):
        """Ids of cached runs whose optional metadata is still incomplete."""
        sql, args = ("SELECT run_id FROM runs WHERE state = 'cached'"
                     " AND incomplete IS NOT NULL"), ()
        if build_name is not None:
            sql, args = sql + " AND build_name = ?", (build_name,)
        return {row[0] for row in self._conn().execute(sql, args)}

    @contextlib.contextmanager
    def _locked_store(self):
        """Serialise the short move-into-place step across threads and processes."""
        import fcntl

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
        self._write(
            "INSERT INTO runs (run_id, build_name, state, reason, message, dir, start,"
            " samples, record, time) VALUES (?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?)"
            " ON CONFLICT(run_id) DO UPDATE SET build_name=excluded.build_name,"
            " state=excluded.state, reason=excluded.reason, message=excluded.message,"
            " start=excluded.start, record=excluded.record, time=excluded.time"
            " WHERE runs.state != 'cached'",
            (str(run.id), run.build_name, UNAVAILABLE, str(reason), str(message),
             _utc_key(run.start), json.dumps(run.to_dict(), sort_keys=True, default=str),
             time.time()))

    def cleanup(self):
        """Remove temporary folders left by processes that died mid-write.

        :return: how many were removed.
        """
        return fileutil.remove_leftovers(self.runs_dir)

    # -- reading ---------------------------------------------------------------

    def state(self, run_id):
        """``"cached"``, ``"unavailable"`` or ``None`` for a run id."""
        row = self._conn().execute(
            "SELECT state FROM runs WHERE run_id = ?", (str(run_id),)).fetchone()
        return row[0] if row else None

    def states(self, build_name=None):
        """``{run_id: state}`` for every indexed run (of a build name)."""
        sql, args = "SELECT run_id, state FROM runs", ()
        if build_name is not None:
            sql, args = sql + " WHERE build_name = ?", (build_name,)
        return dict(self._conn().execute(sql, args).fetchall())

    def runs(self, build_name=None):
        """The cached runs (of a build name), sorted by start time then id."""
        return [entry["run"] for entry in self.entries(build_name)]

    def entries(self, build_name=None):
        """Cached runs with their sample counts: ``{"run": RunRecord, "samples": n}``."""
        sql = "SELECT samples, record FROM runs WHERE state = 'cached'"
        args = ()
        if build_name is not None:
            sql += " AND build_name = ?"
            args = (build_name,)
        sql += " ORDER BY start, run_id"
        out = []
        for samples, record in self._conn().execute(sql, args):
            out.append({"run": RunRecord.from_dict(json.loads(record)), "samples": samples})
        return out

    def unavailable(self, build_name=None):
        """Runs known to be unavailable: ``run_id, build_name, reason, message, time``."""
        sql = ("SELECT run_id, build_name, reason, message, time FROM runs"
               " WHERE state = 'unavailable'")
        args = ()
        if build_name is not None:
            sql += " AND build_name = ?"
            args = (build_name,)
        sql += " ORDER BY start, run_id"
        return [{"run_id": r[0], "build_name": r[1], "reason": r[2], "message": r[3],
                 "time": dt.datetime.fromtimestamp(r[4], dt.timezone.utc).isoformat()}
                for r in self._conn().execute(sql, args)]

    def _cached_row(self, run_id):
        row = self._conn().execute(
            "SELECT dir, record FROM runs WHERE run_id = ? AND state = 'cached'",
            (str(run_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id!r} is not in the raw cache under "
                                f"{self.data_path.root}")
        return self.runs_dir / row[0], json.loads(row[1])

    def record(self, run_id):
        """The :class:`RunRecord` of a cached run; :class:`NotFoundError` if absent."""
        _, record = self._cached_row(run_id)
        return RunRecord.from_dict(record)

    def info(self, run_id):
        """What the cache knows about a cached run's files (raw file, url, columns...)."""
        _, record = self._cached_row(run_id)
        return dict(record.get("cache") or {})

    def raw_file(self, run_id):
        """The path of a cached run's metrics, byte for byte as fetched."""
        folder, record = self._cached_row(run_id)
        return folder / record["cache"]["raw_file"]

    def frame(self, run_id):
        """The parsed series of a cached run as a DataFrame (never re-parsed)."""
        return arrays_to_frame(*self.series(run_id))

    def series(self, run_id):
        """The parsed series of a cached run as arrays: a :class:`ciml.series.Series`.

        What the dataset build reads: no CSV, no DataFrame.
        """
        folder, _ = self._cached_row(run_id)
        path = folder / SERIES_FILE
        if not path.exists() and (folder / LEGACY_SERIES_FILE).exists():
            path = folder / LEGACY_SERIES_FILE
        try:
            with open(path, "rb") as fh:
                return read_series(fh)
        except Exception as exc:
            raise MetricsUnavailable(
                "corrupt-cache", f"cached series of run {run_id} at {path} is unreadable: "
                f"{type(exc).__name__}: {exc}") from None

    def sizes(self, run_id):
        """Bytes on disk of a cached run: ``{"fetched", "series", "record", "total"}``.

        ``fetched`` is the file as fetched; ``series`` the parsed series
        (``series.bin``, or ``series.npz`` in a cache not upgraded yet).
        """
        folder, record = self._cached_row(run_id)
        raw = (record.get("cache") or {}).get("raw_file")
        out = {"fetched": 0, "series": 0, "record": 0}
        for path in folder.iterdir():
            kind = ("fetched" if path.name == raw else "record" if path.name == RECORD_FILE
                    else "series" if path.name in (SERIES_FILE, LEGACY_SERIES_FILE)
                    else None)
            if kind is not None:
                out[kind] += path.stat().st_size
        out["total"] = out["fetched"] + out["series"] + out["record"]
        return out

    def upgrade_series(self, run_id):
        """Rewrite a run's ``series.npz`` as ``series.bin``; returns bytes saved (0: nothing to do).

        Crash-safe at every step: the new file is written beside the old
        one under a temporary name, synced and renamed into place; only
        then is the old one removed.  A crash in between leaves both, and
        readers prefer ``series.bin``, which is complete by then.
        """
        folder, _ = self._cached_row(run_id)
        legacy = folder / LEGACY_SERIES_FILE
        if not legacy.exists():
            return 0
        series = self.series(run_id)  # MetricsUnavailable if the old file is unreadable
        before = legacy.stat().st_size
        if not (folder / SERIES_FILE).exists():
            with fileutil.atomic_open(folder / SERIES_FILE, "wb") as fh:
                write_series(fh, *series)
        after = (folder / SERIES_FILE).stat().st_size
        legacy.unlink()
        fileutil.fsync_dir(folder)
        return before - after

    def counts(self, build_name=None):
        """``{"cached": n, "unavailable": m}`` (of a build name)."""
        sql, args = "SELECT state, count(*) FROM runs", ()
        if build_name is not None:
            sql, args = sql + " WHERE build_name = ?", (build_name,)
        out = {CACHED: 0, UNAVAILABLE: 0}
        out.update(dict(self._conn().execute(sql + " GROUP BY state", args).fetchall()))
        return out
