"""The prediction store: every prediction ``predict`` and ``watch`` made, queryable.

A prediction record (:mod:`ciml.online`) is a JSON line on a terminal;
the store keeps it where a dashboard (``ciml serve``), ``ciml prediction
list`` and a reporter can find it again.  It lives behind SQLAlchemy Core:
a SQLite file in the data path by default (``<data-path>/predictions.sqlite``),
or a shared MariaDB/MySQL or PostgreSQL database given by URL
(``--store-uri``, ``$CIML_STORE_URI``, or ``uri`` in the ``[store]`` section
of the configuration file) when several watchers and a dashboard share it.

One row per (run, model): storing a run's prediction again by the same
model replaces the row (a redelivered event, ``predict`` run twice), so the
store is idempotent.  The columns a dashboard filters and sorts on are
columns of their own, with indexes made for its queries (recent predictions,
per job, per class, the unusual ones, since a time, a run's history); the
whole record, explanation included, is kept as JSON beside them.

Pages are read newest first by *keyset*: a page ends with a cursor (the
time and id of its last row) and the next page starts strictly after it,
so reading page 1,000 costs what reading page 1 does.  ``offset`` is there
too, for a page number in a URL.

A second table, ``prediction_reports``, remembers what reporters did
(the Gerrit reporter's one comment per patchset and job): a reporter
*claims* a key before it acts, atomically, so two watchers sharing a
store never both comment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ciml.errors import CimlError, ConfigError
from ciml.hookspecs import hookimpl

LOG = logging.getLogger(__name__)

#: Environment variable naming the store's URL (``--store-uri`` overrides it).
ENV_VAR = "CIML_STORE_URI"
#: The SQLite file under the data path when no URL is given.
DEFAULT_FILE = "predictions.sqlite"
#: Rows a page holds when the caller does not say.
DEFAULT_LIMIT = 50
#: Rows a page may hold at most.
MAX_LIMIT = 1000

#: The keys of a row as :meth:`PredictionStore.list` returns it.
ROW_KEYS = ("id", "run_id", "build_uuid", "build_name", "status", "predicted",
            "probability", "unusual", "unusual_score", "unusual_percentile", "actual",
            "error", "reason", "dataset", "dataset_fingerprint", "experiment", "model",
            "model_fingerprint", "explanation", "time", "stored")


class StoreError(CimlError):
    """The prediction store cannot be reached or refused a query."""


def _utc(value: Any) -> dt.datetime | None:
    """A naive UTC datetime (what every dialect stores alike) from a datetime or ISO text."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"not a time: {text!r}; give ISO 8601, e.g. "
                              "2026-12-01 or 2026-12-01T12:00:00Z") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _iso(value: dt.datetime | None) -> str | None:
    # The stored times are naive UTC: the same text as .replace(tzinfo=utc).isoformat(),
    # without making a second datetime per value (a page has two per row).
    return None if value is None else value.isoformat() + "+00:00"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> dt.timedelta:
    """``"90d"``, ``"12h"``, ``"30min"``, ``"2w"``: a duration, for ``--since`` and pruning."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"not a duration: {text!r}; give a number and a unit "
                          "(s, min, h, d, w), e.g. 12h or 90d")
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A point in time from ISO text, or a duration back from now (``24h``, ``7d``)."""
    if _DURATION.match(str(text)):
        now = _utc(now) or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return now - parse_age(text)
    return _utc(text)  # type: ignore[return-value]


class NoDefaultStore(ConfigError):
    """The data path is on object storage, where the default SQLite store cannot live."""


def default_uri(data_path: Any) -> str:
    """The SQLite URL of the store in ``data_path``."""
    from ciml.storage import is_remote

    if is_remote(getattr(data_path, "root", data_path)):
        raise NoDefaultStore(
            f"the data path {data_path} is on object storage, where the prediction store "
            "cannot be a SQLite file: give --store-uri (a shared database; or "
            f"{ENV_VAR}, or uri in the config file's [store] table)")
    # A DataPath or a plain path: both are os.PathLike (a Path's .root is "/").
    return "sqlite:///" + os.path.join(os.fspath(data_path), DEFAULT_FILE)


def resolve_uri(uri: str | None = None, data_path: Any = None) -> str:
    """The store's URL: ``uri``, else ``$CIML_STORE_URI``, else the config's, else the default.

    ``data_path`` may be a callable returning it, called only when the
    store is the data path's.
    """
    if uri:
        return uri
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    from ciml.base.config import settings

    configured = settings("store").get("uri", str, secret=True)
    if configured:
        return str(configured.reveal())
    if callable(data_path):  # checked (and made) only when it is the store's place
        data_path = data_path()
    if data_path is None:
        raise ConfigError("no prediction store: give --store-uri or a data path")
    return default_uri(data_path)


def safe_url(uri: str) -> str:
    """``uri`` without its password, for messages and ``--help``."""
    from ciml.http import redact_url

    return redact_url(uri)


@dataclasses.dataclass
class Page:
    """One page of :meth:`PredictionStore.list`: its rows and the cursor of the next."""

    #: Rows, newest first; each a dict with the keys of :data:`ROW_KEYS`
    #: (plus ``record``, the whole prediction record, when ``full``).
    items: list[dict[str, Any]]
    #: Give it as ``after`` for the next page; ``None`` on the last page.
    next_cursor: str | None


def _encode_cursor(time: dt.datetime, row_id: int) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S.%f')}_{row_id}"


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        stamp, _, row_id = str(cursor).partition("_")
        return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f"), int(row_id)
    except ValueError:
        raise ConfigError(f"bad page cursor {cursor!r}: give the next_cursor of a "
                          "page as it came") from None


def _schema():
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    metadata = sa.MetaData()
    # BIGINT ids where the dialect has them; SQLite needs INTEGER for its rowid alias.
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # Microseconds: keyset paging orders by time, and MySQL's DATETIME drops them.
    stamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    # An explanation with windows and features runs past TEXT's 64 KiB on MySQL rarely,
    # but a truncated JSON record would be a corrupt one.
    long_text = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
    predictions = sa.Table(
        "predictions", metadata,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("build_uuid", sa.String(255)),
        sa.Column("build_name", sa.String(255)),
        sa.Column("status", sa.String(32)),
        sa.Column("predicted", sa.String(128)),
        sa.Column("probability", sa.Float),
        sa.Column("unusual", sa.Boolean),
        sa.Column("unusual_score", sa.Float),
        sa.Column("unusual_percentile", sa.Float),
        sa.Column("actual", sa.String(128)),
        sa.Column("error", sa.Text),
        sa.Column("reason", sa.String(64)),
        sa.Column("dataset", sa.String(128)),
        sa.Column("dataset_fingerprint", sa.String(64)),
        sa.Column("experiment", sa.String(128)),
        sa.Column("model_fingerprint", sa.String(64)),
        sa.Column("explanation", sa.String(512)),
        sa.Column("time", stamp, nullable=False),
        sa.Column("stored", stamp, nullable=False),
        sa.Column("record", long_text, nullable=False),
        sa.UniqueConstraint("run_id", "model", name="uq_predictions_run_model"),
        # One per filter the dashboard offers, each ending in (time, id) so
        # that a filtered page is an index range scan in paging order.
        sa.Index("ix_predictions_time", "time", "id"),
        sa.Index("ix_predictions_job_time", "build_name", "time", "id"),
        sa.Index("ix_predictions_class_time", "predicted", "time", "id"),
        sa.Index("ix_predictions_unusual_time", "unusual", "time", "id"),
        # Covers the per-job summary (jobs()): counted from this index alone,
        # never from the table, whose rows carry the whole record.
        sa.Index("ix_predictions_job_summary", "build_name", "unusual", "predicted", "time"),
    )
    reports = sa.Table(
        "prediction_reports", metadata,
        sa.Column("reporter", sa.String(64), primary_key=True),
        sa.Column("report_key", sa.String(255), primary_key=True),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("time", stamp, nullable=False),
        sa.Index("ix_prediction_reports_run", "run_id"),
    )
    return metadata, predictions, reports


def _columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The indexed columns of one prediction record."""
    probabilities = record.get("probabilities") or {}
    predicted = record.get("predicted")
    probability = probabilities.get(predicted) if predicted is not None else None
    if probability is None and predicted is not None and record.get("candidates"):
        # "uncertain": its best candidate's probability is the confidence.
        probability = max((float(c.get("probability") or 0) for c in record["candidates"]),
                          default=None)
    unusual = record.get("unusual") or {}
    explanation = ""
    if record.get("explanation"):
        from ciml.explain import summary

        explanation = summary(record["explanation"])
    return {
        "run_id": str(record.get("run_id") or "")[:255],
        "model": str(record.get("model") or
                     f"{record.get('dataset')}/{record.get('experiment')}")[:255],
        "build_uuid": _text(record.get("build_uuid"), 255),
        "build_name": _text(record.get("build_name"), 255),
        "status": _text(record.get("status"), 32),
        "predicted": _text(predicted, 128),
        "probability": float(probability) if probability is not None else None,
        "unusual": bool(unusual.get("unusual")) if unusual else None,
        "unusual_score": _number(unusual.get("score")),
        "unusual_percentile": _number(unusual.get("percentile")),
        "actual": _text(record.get("actual"), 128),
        "error": record.get("error"),
        "reason": _text(record.get("reason"), 64),
        "dataset": _text(record.get("dataset"), 128),
        "dataset_fingerprint": _text(record.get("dataset_fingerprint"), 64),
        "experiment": _text(record.get("experiment"), 128),
        "model_fingerprint": _text(record.get("model_fingerprint"), 64),
        "explanation": explanation[:512] or None,
    }


def _text(value: Any, size: int) -> str | None:
    return None if value is None else str(value)[:size]


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class PredictionStore:
    """The prediction store at ``uri`` (a SQLAlchemy URL); tables are made on first use.

    Thread-safe: one engine with a connection pool; every method takes a
    connection for itself.  Errors reaching the database raise
    :class:`StoreError` with the URL shown without its password.

    :param uri: ``sqlite:///PATH``, ``mysql+pymysql://USER:PASS@HOST/DB``,
        ``postgresql+psycopg://...``.
    :param create: make the tables when they are missing (readers of a
        store that does not exist yet get empty results either way).
    :param pool_size: connections kept open for reuse (SQLAlchemy's default,
        5, when ``None``); a server whose threads all query at once gives
        their number, so that no query pays for a new connection.
    """

    def __init__(self, uri: str, *, create: bool = True, connect_timeout: float = 10.0,
                 pool_size: int | None = None):
        import sqlalchemy as sa

        self.uri = uri
        try:
            url = sa.engine.make_url(uri)
        except Exception:
            raise ConfigError(f"bad prediction store URL {safe_url(uri)!r}: give a "
                              "SQLAlchemy URL such as sqlite:///PATH or "
                              "mysql+pymysql://USER@HOST/DATABASE") from None
        self.dialect = url.get_backend_name()
        kwargs: dict[str, Any] = {"future": True}
        # A reader must not make an empty SQLite file where the store is not.
        self._missing = False
        if self.dialect == "sqlite":
            if not create and url.database and url.database != ":memory:":
                self._missing = not os.path.exists(url.database)
            if url.database and url.database != ":memory:":
                folder = os.path.dirname(os.path.abspath(url.database))
                if not os.path.isdir(folder):
                    raise ConfigError(f"cannot make the prediction store {url.database}: "
                                      f"its folder {folder} does not exist")
            kwargs["connect_args"] = {"timeout": 30.0, "check_same_thread": False}
        else:
            # A server that went away is found out before a query is lost to it.
            kwargs.update(pool_pre_ping=True, pool_recycle=3600)
            if self.dialect in ("mysql", "mariadb"):
                # A paused server must not hold a writer for ever.
                kwargs["connect_args"] = {"connect_timeout": int(connect_timeout),
                                          "read_timeout": 30, "write_timeout": 30,
                                          "charset": "utf8mb4"}
            elif self.dialect == "postgresql":
                kwargs["connect_args"] = {"connect_timeout": int(connect_timeout)}
        if pool_size is not None and not (self.dialect == "sqlite" and
                                          url.database in (None, "", ":memory:")):
            # Beyond the pool, a connection is opened for one query and closed after
            # it: on SQLite that also drops its page cache.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except Exception as exc:  # a driver that is not installed, a bad option
            raise ConfigError(f"cannot use the prediction store {safe_url(uri)}: {exc}") \
                from None
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._metadata, self.predictions, self.reports = _schema()
        self._create = create
        self._ready = False
        self._ready_lock = threading.Lock()

    @classmethod
    def open(cls, data_path: Any = None, uri: str | None = None, **kwargs: Any) \
            -> PredictionStore:
        """The store ``uri`` names, or ``$CIML_STORE_URI``, the config's, or the data path's."""
        return cls(resolve_uri(uri, data_path), **kwargs)

    @property
    def url(self) -> str:
        """The store's URL without its password: what messages show."""
        return safe_url(self.uri)

    def __repr__(self) -> str:
        return f"PredictionStore({self.url!r})"

    def __enter__(self) -> PredictionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the pooled connections."""
        self.engine.dispose()

    # -- plumbing --------------------------------------------------------------

    def _error(self, exc: Exception, what: str) -> StoreError:
        from ciml.http import redact_text

        detail = redact_text(str(getattr(exc, "orig", None) or exc)).splitlines()[0][:300]
        return StoreError(f"prediction store {self.url}: cannot {what}: {detail}")

    def _ensure(self) -> bool:
        """Make the tables once; ``False`` when they do not exist and may not be made."""
        if self._ready:
            return True
        if self._missing:
            if not os.path.exists(self.engine.url.database or ""):
                return False
            self._missing = False
        import sqlalchemy as sa

        with self._ready_lock:
            if self._ready:
                return True
            try:
                if self._create:
                    self._metadata.create_all(self.engine)
                elif not sa.inspect(self.engine).has_table("predictions"):
                    return False
            except sa.exc.SQLAlchemyError as exc:
                raise self._error(exc, "open its tables") from None
            self._ready = True
            return True

    def _run(self, what: str, func: Any, write: bool = False) -> Any:
        import sqlalchemy as sa

        try:
            if not self._ensure():
                return None
            if write:
                with self.engine.begin() as conn:
                    return func(conn)
            with self.engine.connect() as conn:
                return func(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc, what) from None

    # -- writing ---------------------------------------------------------------

    def add(self, record: Mapping[str, Any], *, stored: dt.datetime | None = None) -> int:
        """Store one prediction record; returns its row id.

        The same run predicted again by the same model replaces the row, in
        place (same id): a store that saw an event twice holds it once.
        """
        return self.add_many([record], stored=stored)[0]

    def add_many(self, records: Iterable[Mapping[str, Any]], *,
                 stored: dt.datetime | None = None) -> list[int]:
        """Store several records in one transaction; returns their row ids, in order."""
        rows = []
        now = _utc(stored) or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        for record in records:
            values = _columns(record)
            if not values["run_id"]:
                raise ConfigError("a prediction record without a run_id cannot be stored")
            values["time"] = _utc(record.get("time")) or now
            values["stored"] = now
            values["record"] = json.dumps(record, sort_keys=True, default=str)
            rows.append(values)
        if not rows:
            return []
        return self._run("store predictions", lambda conn: self._upsert(conn, rows),
                         write=True)

    def _upsert(self, conn: Any, rows: list[dict[str, Any]]) -> list[int]:
        import sqlalchemy as sa

        t = self.predictions
        # A record given twice in one call: the last one wins, as it would one by one.
        unique = list({(v["run_id"], v["model"]): v for v in rows}.values())
        changed = [c.name for c in t.columns if c.name not in ("id", "run_id", "model")]
        if self.dialect in ("sqlite", "postgresql"):
            if self.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(t)
            stmt = stmt.on_conflict_do_update(index_elements=["run_id", "model"],
                                              set_={c: stmt.excluded[c] for c in changed})
            conn.execute(stmt, unique)
        elif self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert

            stmt = insert(t)
            stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in changed})
            conn.execute(stmt, unique)
        else:
            for values in unique:
                changes = {k: values[k] for k in changed}
                updated = conn.execute(sa.update(t).where(
                    t.c.run_id == values["run_id"], t.c.model == values["model"])
                    .values(**changes))
                if not updated.rowcount:
                    conn.execute(sa.insert(t).values(**values))
        ids: dict[tuple[str, str], int] = {}
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            found = conn.execute(sa.select(t.c.id, t.c.run_id, t.c.model).where(
                t.c.run_id.in_({v["run_id"] for v in chunk})))
            ids.update(((r.run_id, r.model), int(r.id)) for r in found)
        return [ids[(v["run_id"], v["model"])] for v in rows]

    def prune(self, older_than: dt.datetime | dt.timedelta | str, *,
              batch: int = 5000) -> int:
        """Delete the predictions made before a time (or older than an age); returns how many.

        Deleted in batches, each its own transaction, so a big prune never
        holds a long lock over a store that watchers write to.  Reporter
        marks of runs no longer stored go too.
        """
        import sqlalchemy as sa

        if isinstance(older_than, str):
            older_than = parse_age(older_than)
        if isinstance(older_than, dt.timedelta):
            cutoff = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - older_than
        else:
            cutoff = _utc(older_than)
        t = self.predictions
        total = 0
        while True:
            def one_batch(conn: Any) -> int:
                ids = [r[0] for r in conn.execute(
                    sa.select(t.c.id).where(t.c.time < cutoff).order_by(t.c.time, t.c.id)
                    .limit(batch))]
                if not ids:
                    return 0
                conn.execute(sa.delete(t).where(t.c.id.in_(ids)))
                return len(ids)

            done = self._run("prune predictions", one_batch, write=True) or 0
            total += done
            if done < batch:
                break
        r = self.reports
        self._run("prune reporter marks", lambda conn: conn.execute(
            sa.delete(r).where(r.c.time < cutoff)), write=True)
        return total

    # -- reading ---------------------------------------------------------------

    def _row(self, row: Any, full: bool) -> dict[str, Any]:
        mapping = row._mapping  # built on each access: once a row, not once a key
        out = {k: mapping[k] for k in ROW_KEYS}
        out["time"] = _iso(out["time"])
        out["stored"] = _iso(out["stored"])
        if out["unusual"] is not None:
            out["unusual"] = bool(out["unusual"])
        if full:
            try:
                out["record"] = json.loads(mapping["record"])
            except (TypeError, ValueError):
                out["record"] = None
            out["probabilities"] = (out["record"] or {}).get("probabilities") or {}
        return out

    def _where(self, *, build_name: str | None = None, predicted: str | None = None,
               unusual: bool | None = None, since: Any = None, until: Any = None,
               run_id: str | None = None, model: str | None = None,
               status: str | None = None, errors: bool | None = None) -> list[Any]:
        t = self.predictions
        clauses = []
        if build_name is not None:
            clauses.append(t.c.build_name == build_name)
        if predicted is not None:
            clauses.append(t.c.predicted == predicted)
        if unusual is not None:
            clauses.append(t.c.unusual.is_(True) if unusual else t.c.unusual.isnot(True))
        if since is not None:
            clauses.append(t.c.time >= _utc(since))
        if until is not None:
            clauses.append(t.c.time < _utc(until))
        if run_id is not None:
            clauses.append(t.c.run_id == run_id)
        if model is not None:
            clauses.append(t.c.model == model)
        if status is not None:
            clauses.append(t.c.status == status)
        if errors is not None:
            clauses.append(t.c.error.isnot(None) if errors else t.c.error.is_(None))
        return clauses

    def list(self, *, build_name: str | None = None, predicted: str | None = None,
             unusual: bool | None = None, since: Any = None, until: Any = None,
             run_id: str | None = None, model: str | None = None, status: str | None = None,
             errors: bool | None = None, limit: int = DEFAULT_LIMIT, offset: int = 0,
             after: str | None = None, full: bool = False) -> Page:
        """One page of predictions, newest first, filtered.

        :param build_name: only this job's.
        :param predicted: only those predicted this class.
        :param unusual: only the unusual runs (``True``) or the others (``False``).
        :param since: only those made at or after this time (datetime or ISO text).
        :param until: only those made before this time.
        :param run_id: only this run's (one row per model that predicted it).
        :param model: only this model's (``dataset/experiment``).
        :param status: only runs whose CI result was this (``failed``...).
        :param errors: only the runs that could not be predicted, or only the others.
        :param limit: rows per page (1 to 1000).
        :param offset: rows to skip (page numbers); prefer ``after``.
        :param after: the ``next_cursor`` of the previous page.
        :param full: add ``record`` (the whole prediction record) and ``probabilities``.
        """
        import sqlalchemy as sa

        limit = max(1, min(int(limit), MAX_LIMIT))
        if offset < 0:
            raise ConfigError("offset must not be negative")
        t = self.predictions
        clauses = self._where(build_name=build_name, predicted=predicted, unusual=unusual,
                              since=since, until=until, run_id=run_id, model=model,
                              status=status, errors=errors)
        if after:
            time, row_id = _decode_cursor(after)
            # "time <= X" first: an index range every dialect uses; the OR
            # alone made SQLite scan from the newest row to the cursor.
            clauses.append(t.c.time <= time)
            clauses.append(sa.or_(t.c.time < time, t.c.id < row_id))
        cols = [t.c[k] for k in ROW_KEYS] + ([t.c.record] if full else [])
        query = (sa.select(*cols).where(*clauses).order_by(t.c.time.desc(), t.c.id.desc())
                 .limit(limit + 1).offset(offset))

        def read(conn: Any) -> Page:
            rows = conn.execute(query).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            items = [self._row(r, full) for r in rows]
            cursor = _encode_cursor(rows[-1].time, rows[-1].id) if more and rows else None
            return Page(items, cursor)

        return self._run("list predictions", read) or Page([], None)

    def count(self, **filters: Any) -> int:
        """How many predictions match the filters of :meth:`list`."""
        import sqlalchemy as sa

        query = sa.select(sa.func.count()).select_from(self.predictions).where(
            *self._where(**filters))
        return int(self._run("count predictions",
                             lambda conn: conn.execute(query).scalar_one()) or 0)

    def get(self, prediction_id: int) -> dict[str, Any] | None:
        """One row by id, with its whole record, or ``None``."""
        import sqlalchemy as sa

        t = self.predictions
        query = sa.select(*[t.c[k] for k in ROW_KEYS], t.c.record).where(
            t.c.id == int(prediction_id))

        def read(conn: Any) -> dict[str, Any] | None:
            row = conn.execute(query).first()
            return self._row(row, True) if row is not None else None

        return self._run("read a prediction", read)

    def for_run(self, run_id: str) -> list[dict[str, Any]]:
        """Every prediction of one run (one per model), newest first, with whole records."""
        return self.list(run_id=run_id, limit=MAX_LIMIT, full=True).items

    def jobs(self) -> list[dict[str, Any]]:
        """Per job: ``build_name``, ``predictions``, ``unusual``, ``errors``, ``last`` (time).

        ``errors`` counts the runs that could not be predicted (no class).
        """
        import sqlalchemy as sa

        t = self.predictions
        # Only columns of ix_predictions_job_summary: an index-only scan.
        query = (sa.select(t.c.build_name, sa.func.count().label("predictions"),
                           sa.func.sum(sa.case((t.c.unusual.is_(True), 1), else_=0))
                           .label("unusual"),
                           sa.func.sum(sa.case((t.c.predicted.is_(None), 1), else_=0))
                           .label("errors"),
                           sa.func.max(t.c.time).label("last"))
                 .group_by(t.c.build_name).order_by(t.c.build_name))

        def read(conn: Any) -> list[dict[str, Any]]:
            return [{"build_name": r.build_name, "predictions": int(r.predictions),
                     "unusual": int(r.unusual or 0), "errors": int(r.errors or 0),
                     "last": _iso(_utc(r.last))} for r in conn.execute(query)]

        return self._run("list jobs", read) or []

    def classes(self, build_name: str | None = None) -> dict[str, int]:
        """``{class: predictions}`` (runs that could not be predicted are left out)."""
        import sqlalchemy as sa

        t = self.predictions
        query = (sa.select(t.c.predicted, sa.func.count()).where(
            t.c.predicted.isnot(None), *self._where(build_name=build_name))
            .group_by(t.c.predicted).order_by(t.c.predicted))
        return self._run("count classes", lambda conn: {
            r[0]: int(r[1]) for r in conn.execute(query)}) or {}

    def recent_per_job(self, per_job: int = 10, **filters: Any) -> dict[str, list[dict]]:
        """``{build_name: its newest rows}`` for a home page: one indexed page per job."""
        import sqlalchemy as sa

        t = self.predictions
        names = self._run("list jobs", lambda conn: [r[0] for r in conn.execute(
            sa.select(t.c.build_name).where(t.c.build_name.isnot(None)).distinct()
            .order_by(t.c.build_name))]) or []
        return {name: self.list(build_name=name, limit=per_job, **filters).items
                for name in names}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every row, newest first, page by page (never all in memory)."""
        cursor = None
        while True:
            page = self.list(limit=MAX_LIMIT, after=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def storage(self) -> dict[str, Any]:
        """``{"predictions", "bytes", "bytes_per_prediction"}``: what the store takes on disk.

        SQLite: the file's pages in use; MariaDB/MySQL: the table's data
        and index length from ``information_schema`` (InnoDB's estimate);
        PostgreSQL: ``pg_total_relation_size``.  ``bytes`` is ``None`` where
        the dialect offers no measure.
        """
        import sqlalchemy as sa

        rows = self.count()

        def measure(conn: Any) -> int | None:
            if self.dialect == "sqlite":
                page_size = conn.exec_driver_sql("PRAGMA page_size").scalar()
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
                return int(page_size) * (int(pages) - int(free))
            if self.dialect in ("mysql", "mariadb"):
                return int(conn.execute(sa.text(
                    "SELECT COALESCE(SUM(data_length + index_length), 0) FROM "
                    "information_schema.tables WHERE table_schema = DATABASE() "
                    "AND table_name IN ('predictions', 'prediction_reports')")).scalar() or 0)
            if self.dialect == "postgresql":
                return int(conn.execute(sa.text(
                    "SELECT pg_total_relation_size('predictions') + "
                    "pg_total_relation_size('prediction_reports')")).scalar() or 0)
            return None

        size = self._run("measure its size", measure)
        return {"predictions": rows, "bytes": size,
                "bytes_per_prediction": round(size / rows, 1) if size and rows else None}

    # -- reporter marks --------------------------------------------------------

    def claim_report(self, reporter: str, key: str, run_id: str, detail: str = "") -> bool:
        """Mark ``key`` as being reported by ``reporter``; ``False`` if it already was.

        Atomic across processes sharing the store (a primary key), so of two
        watchers only one gets ``True``.  A reporter whose post failed calls
        :meth:`release_report` so that a later run may try again.
        """
        import sqlalchemy as sa

        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

        def claim(conn: Any) -> bool:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(self.reports).values(
                        reporter=reporter[:64], report_key=key[:255], run_id=run_id[:255],
                        state="claimed", detail=detail, time=now))
            except sa.exc.IntegrityError:
                return False
            return True

        return bool(self._run("claim a report", claim, write=True))

    def finish_report(self, reporter: str, key: str, detail: str = "") -> None:
        """Record that the claimed report was made (``detail``: what was posted, briefly)."""
        import sqlalchemy as sa

        r = self.reports
        self._run("record a report", lambda conn: conn.execute(
            sa.update(r).where(r.c.reporter == reporter[:64], r.c.report_key == key[:255])
            .values(state="done", detail=detail)), write=True)

    def release_report(self, reporter: str, key: str) -> None:
        """Forget a claim whose report could not be made, so that it may be tried again."""
        import sqlalchemy as sa

        r = self.reports
        self._run("release a report", lambda conn: conn.execute(
            sa.delete(r).where(r.c.reporter == reporter[:64], r.c.report_key == key[:255])),
            write=True)

    def reports_of(self, run_id: str) -> list[dict[str, Any]]:
        """What reporters did for a run.

        One dict per report: ``reporter``, ``report_key``, ``state``
        (``claimed`` or ``done``), ``detail``, ``time``.
        """
        import sqlalchemy as sa

        r = self.reports
        query = sa.select(r).where(r.c.run_id == run_id).order_by(r.c.time)
        return self._run("read reports", lambda conn: [
            {"reporter": x.reporter, "report_key": x.report_key, "state": x.state,
             "detail": x.detail, "time": _iso(x.time)} for x in conn.execute(query)]) or []


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: the dashboard reads while a watcher writes, neither waiting.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


class StoreReporter:
    """Stores every prediction of a ``predict`` or ``watch``; a store that is away is survived.

    A plugin on ``ciml_prediction_made``.  The hook only queues the record:
    a thread of the reporter's own writes it, so a database that is slow,
    paused or gone never holds up predicting.  When the store cannot be
    written (MariaDB restarting, a full disk) the prediction is still
    printed and handed to the other reporters: the failure is logged (once
    per outage, then when it heals), counted, and the records wait in a
    bounded backlog, tried again with a growing delay (1 s to 30 s) and
    written as soon as the store answers.
    """

    #: Records kept for a store that is away; the oldest go first beyond it.
    BACKLOG = 10000
    #: Seconds between two prunes of a store with a retention.
    PRUNE_EVERY = 3600.0
    #: Longest wait between two tries of a store that is away.
    MAX_DELAY = 30.0

    def __init__(self, store: PredictionStore, *, backlog: int | None = None,
                 retention: dt.timedelta | None = None, background: bool = True):
        import collections

        self.store = store
        #: Predictions older than this are pruned, at most every :attr:`PRUNE_EVERY` s.
        self.retention = retention
        self.stats: collections.Counter[str] = collections.Counter()
        self._limit = backlog or self.BACKLOG
        self._backlog: collections.deque[Mapping[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._failing = False
        self._pruned_at: float | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._writer, name="ciml-store",
                                            daemon=True)
            self._thread.start()

    @hookimpl
    def ciml_prediction_made(self, prediction: Mapping[str, Any]) -> None:
        if self._thread is None:
            self.add(prediction)
            return
        self._queue(prediction)
        self._wake.set()

    def _queue(self, prediction: Mapping[str, Any]) -> None:
        with self._lock:
            self._backlog.append(prediction)
            while len(self._backlog) > self._limit:
                self._backlog.popleft()
                self.stats["lost"] += 1

    def add(self, prediction: Mapping[str, Any]) -> bool:
        """Store one record now (and the backlog before it); ``False`` if it waits."""
        self._queue(prediction)
        return self.flush()

    def flush(self) -> bool:
        """Write what waits; ``False`` when the store cannot be written (it still waits)."""
        with self._write_lock:
            with self._lock:
                pending = list(self._backlog)
                self._backlog.clear()
            if not pending:
                return True
            try:
                self.store.add_many(pending)
            except CimlError as exc:
                with self._lock:
                    # Back in front of what came meanwhile, within the bound.
                    self._backlog.extendleft(reversed(pending))
                    while len(self._backlog) > self._limit:
                        self._backlog.popleft()
                        self.stats["lost"] += 1
                self.stats["failed"] += 1
                if not self._failing:
                    LOG.warning("%s; predictions are kept in memory (at most %d) and stored "
                                "when it answers again", exc, self._limit)
                self._failing = True
                return False
            self.stats["stored"] += len(pending)
            if self._failing:
                LOG.warning("prediction store %s answers again: %d prediction(s) stored",
                            self.store.url, len(pending))
            self._failing = False
        self._prune()
        return True

    def _writer(self) -> None:
        delay = 0.0
        while True:
            self._wake.wait(delay or None)
            self._wake.clear()
            try:
                ok = self.flush()
            except Exception:  # a last guard: the writer must outlive any one record
                LOG.exception("prediction store writer")
                ok = False
            if self._stopping and (ok or not self._backlog):
                return
            delay = 0.0 if ok else min(max(1.0, delay * 2), self.MAX_DELAY)

    def _prune(self) -> None:
        import time

        if not self.retention or (self._pruned_at is not None and
                                  time.monotonic() - self._pruned_at < self.PRUNE_EVERY):
            return
        self._pruned_at = time.monotonic()
        try:
            deleted = self.store.prune(self.retention)
        except CimlError as exc:
            LOG.warning("%s", exc)
            return
        if deleted:
            LOG.info("pruned %d prediction(s) older than %s from %s", deleted,
                     self.retention, self.store.url)

    def close(self, timeout: float = 10.0) -> None:
        """Write what waits (trying for at most ``timeout`` seconds), then let the store go."""
        import time

        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout)
        deadline = time.monotonic() + (0 if self._thread is not None else timeout)
        while self._backlog and not self.flush() and time.monotonic() < deadline:
            time.sleep(1.0)
        with self._lock:
            left = len(self._backlog)
        if left:
            self.stats["lost"] += left
            LOG.error("prediction store %s: %d prediction(s) were not stored",
                      self.store.url, left)
        self.store.close()
