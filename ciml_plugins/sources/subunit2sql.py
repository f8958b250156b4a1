"""The ``subunit2sql`` result source: runs and test results from a subunit2sql database.

Runs of a job are the ``runs`` rows whose ``run_metadata`` has
``build_name = <job>``; every other metadata row becomes a key of the
record's ``metadata``.  A run failed when it has failures or no passes at
all (as the original ciml decided).  Queries page through the tables by
key (``run_at, id``) in batches, so memory does not grow with the history,
and they work the same on MySQL/MariaDB and SQLite.

A database that stops answering must not hang ciml: every MySQL/MariaDB
connection has read and write timeouts (``query_timeout``), so a stalled
query fails as a transient error ("database did not answer in N s").
Transient errors (a stall, a refused or lost connection) are retried with
a bounded backoff for up to ``retry_for`` seconds, from the very query that
failed, so an outage shorter than that costs nothing but the wait.

The database URI is a secret: it usually holds a password.  It is shown
only with the password replaced by ``***``; it may also come from the
``CIML_DB_URI`` environment variable, which keeps it out of ``ps``.
"""

import itertools
import logging
import os
import threading
import time

from ciml.base import Parameter, ResultSource
from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.hookspecs import hookimpl
from ciml.records import FAILED, PASSED, RunRecord, TestResult
from ciml_plugins.sources.common import as_utc, interleave, naive_utc

LOG = logging.getLogger(__name__)

ENV_DB_URI = "CIML_DB_URI"

#: Metadata keys that may hold a run's artifacts (log) URL, in order of preference.
ARTIFACT_KEYS = ("artifacts", "artifact", "log_url")


# MySQL errors that trying again will not fix: access denied (1044, 1045),
# unknown database (1049), no such table (1146).  Lost connections (2006,
# 2013) and refused ones (2003) stay transient.
_PERMANENT_MYSQL_ERRORS = frozenset({1044, 1045, 1049, 1146})


def _run_status(fails, passes):
    return FAILED if (fails or 0) > 0 or not passes else PASSED


def _artifacts_url(meta, artifacts):
    for key in ARTIFACT_KEYS:
        value = meta.get(key)
        if not value:
            continue
        # log_url points at the subunit file itself (…/testrepository.subunit):
        # the artifacts are the folder around it.
        filename = meta.get("filename")
        if key == "log_url" and filename and value.rstrip("/").endswith("/" + filename):
            value = value.rstrip("/")[: -len(filename)]
        return value
    return artifacts or None


class Subunit2sqlResultSource(ResultSource):
    """Runs and test results from a subunit2sql database (MySQL/MariaDB or SQLite)"""

    name = "subunit2sql"
    parameters = (
        Parameter("db_uri", str, secret=True,
                  help=("SQLAlchemy URL of the subunit2sql database, e.g. "
                        "mysql+pymysql://user:pass@host/subunit2sql or "
                        f"sqlite:///path.db (env {ENV_DB_URI})")),
        Parameter("batch_size", int, default=500,
                  help="rows fetched per query while streaming runs"),
        Parameter("connect_timeout", float, default=10.0,
                  help="seconds to wait for the database server's TCP connection"),
        Parameter("query_timeout", float, default=60.0,
                  help="seconds to wait for the database to answer (its greeting, each "
                       "read and write of a query) before it counts as stalled"),
        Parameter("retry_for", float, default=60.0,
                  help="seconds to keep retrying a query after transient database errors "
                       "(a stall, a refused or lost connection), with a growing pause; "
                       "0 gives up at once"),
    )

    #: The longest pause between two tries of a query (seconds).
    MAX_RETRY_PAUSE_S = 15.0

    def __init__(self, **params):
        super().__init__(**params)
        if not self.db_uri:
            self.db_uri = os.environ.get(ENV_DB_URI) or None
        if not self.db_uri:
            raise ConfigError(f"result source 'subunit2sql' needs --db-uri (or {ENV_DB_URI})")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        if self.query_timeout <= 0:
            raise ConfigError("--query-timeout must be more than 0 seconds")
        if self.retry_for < 0:
            raise ConfigError("--retry-for must not be negative")
        self._engine = None
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------

    @property
    def safe_uri(self):
        """The database URI with its password hidden: the only form ever shown."""
        import sqlalchemy as sa

        try:
            return sa.engine.make_url(self.db_uri).render_as_string(hide_password=True)
        except Exception:
            return "(unparsable database URI)"

    def __repr__(self):
        return f"{type(self).__name__}(db_uri={self.safe_uri!r}, batch_size={self.batch_size})"

    def _hide(self, text):
        """Remove the password from a driver's message, should it ever echo it."""
        import sqlalchemy as sa

        text = str(text)
        try:
            password = sa.engine.make_url(self.db_uri).password
        except Exception:
            password = None
        if password:
            text = text.replace(str(password), "***")
        return text.replace(self.db_uri, self.safe_uri)

    def engine(self):
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self):
        import sqlalchemy as sa

        try:
            url = sa.engine.make_url(self.db_uri)
        except Exception:
            # Never echo the URI: it may hold a password.
            raise ConfigError("bad --db-uri: not a SQLAlchemy database URL "
                              "(e.g. mysql+pymysql://user:pass@host/db or sqlite:///file.db)"
                              ) from None
        kwargs = {"pool_pre_ping": True}
        backend = url.get_backend_name()
        if backend == "sqlite":
            path = url.database
            if path and path != ":memory:" and not path.startswith("file:"):
                if not os.path.isfile(path):
                    raise SourceError(f"no subunit2sql database at {path}")
        elif backend == "mysql":
            # PyMySQL waits for ever without read and write timeouts: the
            # connect timeout covers the TCP handshake only, not the greeting.
            kwargs["connect_args"] = {"connect_timeout": max(1, int(self.connect_timeout)),
                                      "read_timeout": float(self.query_timeout),
                                      "write_timeout": float(self.query_timeout)}
        try:
            return sa.create_engine(url, **kwargs)
        except Exception as exc:
            raise SourceError(f"cannot use database {self.safe_uri}: "
                              f"{self._hide(exc)}") from None

    def close(self):
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _error(self, exc):
        """A :class:`SourceError` for a database exception, password hidden."""
        import sqlalchemy as sa

        orig = getattr(exc, "orig", None)
        detail = self._hide(orig if orig is not None else exc)
        transient = isinstance(exc, (sa.exc.OperationalError, sa.exc.TimeoutError,
                                     sa.exc.DisconnectionError)) or getattr(
                                         exc, "connection_invalidated", False)
        code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
        if code in _PERMANENT_MYSQL_ERRORS:
            transient = False
        if code in (1146,) or (isinstance(exc, sa.exc.OperationalError)
                               and "no such table" in detail):
            transient = False
            detail += " (is this a subunit2sql database?)"
        if code in (2003, 2013) and "timed out" in detail:
            # A socket timeout: the server took the connection but said nothing.
            return SourceError(f"subunit2sql database {self.safe_uri}: database did not "
                               f"answer in {self.query_timeout:g} s", transient=True)
        return SourceError(f"subunit2sql database {self.safe_uri}: "
                           f"{type(orig or exc).__name__}: {detail}", transient=transient)

    def _fetch(self, stmt):
        """All rows of ``stmt``; transient errors are retried for up to ``retry_for`` s."""
        import sqlalchemy as sa

        deadline = None
        pause = 1.0
        while True:
            try:
                with self.engine().connect() as conn:
                    return conn.execute(stmt).fetchall()
            except sa.exc.SQLAlchemyError as exc:
                error = self._error(exc)
            if not error.transient or self.retry_for <= 0:
                raise error from None
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.retry_for
            if now >= deadline:
                raise SourceError(f"{error} (still failing after {self.retry_for:g} s of "
                                  "retries)", transient=True) from None
            wait = min(pause, deadline - now)
            LOG.warning("%s; trying again in %.0f s", error, wait)
            time.sleep(wait)
            pause = min(pause * 2, self.MAX_RETRY_PAUSE_S)

    # -- runs ------------------------------------------------------------------

    def _select_runs(self, build_name, since, until, filters, status):
        import sqlalchemy as sa

        from ciml_plugins.sources.subunit2sql_schema import run_metadata, runs

        def has(key, value):
            rm = run_metadata.alias()
            return sa.exists().where(rm.c.run_id == runs.c.id, rm.c.key == key,
                                     rm.c.value == str(value))

        conds = [has("build_name", build_name)]
        for key, value in (filters or {}).items():
            conds.append(has(key, value))
        if since is not None:
            conds.append(runs.c.run_at >= naive_utc(since))
        if until is not None:
            conds.append(runs.c.run_at < naive_utc(until))
        failed = sa.or_(sa.func.coalesce(runs.c.fails, 0) > 0,
                        sa.func.coalesce(runs.c.passes, 0) == 0)
        if status == FAILED:
            conds.append(failed)
        elif status == PASSED:
            conds.append(sa.not_(failed))
        return runs, conds

    def _iter_runs(self, build_name, since=None, until=None, filters=None, status=None):
        """Stream runs oldest first, a batch at a time (keyset paging on run_at, id)."""
        import sqlalchemy as sa

        runs, conds = self._select_runs(build_name, since, until, filters, status)
        cols = [runs.c.id, runs.c.uuid, runs.c.skips, runs.c.fails, runs.c.passes,
                runs.c.run_time, runs.c.artifacts, runs.c.run_at]
        last = None
        while True:
            page = [runs.c.run_at.is_not(None)]
            if last is not None:
                page.append(sa.or_(runs.c.run_at > last[0],
                                   sa.and_(runs.c.run_at == last[0], runs.c.id > last[1])))
            stmt = (sa.select(*cols).where(*conds, *page)
                    .order_by(runs.c.run_at, runs.c.id).limit(self.batch_size))
            rows = self._fetch(stmt)
            if not rows:
                break
            yield from self._records(build_name, rows)
            last = (rows[-1].run_at, rows[-1].id)
            if len(rows) < self.batch_size:
                break
        if since is not None or until is not None:
            return
        # Runs without a time cannot be placed in order: they come last, by id.
        last_id = None
        while True:
            page = [runs.c.run_at.is_(None)]
            if last_id is not None:
                page.append(runs.c.id > last_id)
            stmt = (sa.select(*cols).where(*conds, *page)
                    .order_by(runs.c.id).limit(self.batch_size))
            rows = self._fetch(stmt)
            if not rows:
                break
            yield from self._records(build_name, rows)
            last_id = rows[-1].id
            if len(rows) < self.batch_size:
                break

    def _metadata(self, ids):
        import sqlalchemy as sa

        from ciml_plugins.sources.subunit2sql_schema import run_metadata

        meta = {i: {} for i in ids}
        if not ids:
            return meta
        stmt = (sa.select(run_metadata.c.run_id, run_metadata.c.key, run_metadata.c.value)
                .where(run_metadata.c.run_id.in_(ids)).order_by(run_metadata.c.id))
        for run_id, key, value in self._fetch(stmt):
            if key is None:
                continue
            # The schema allows several values per key; the first one wins.
            meta[run_id].setdefault(key, value)
        return meta

    def _records(self, build_name, rows):
        meta = self._metadata([r.id for r in rows])
        for row in rows:
            yield self._record(row, meta[row.id], build_name)

    def _record(self, row, meta, build_name=None):
        return RunRecord(
            id=row.uuid or str(row.id),
            build_name=meta.get("build_name") or build_name or "",
            status=_run_status(row.fails, row.passes),
            artifacts_url=_artifacts_url(meta, row.artifacts),
            build_uuid=meta.get("build_uuid"),
            start=as_utc(row.run_at),
            duration=row.run_time,
            result=meta.get("build_status"),
            source=self.name,
            metadata={**meta, **{k: str(v) for k, v in (("passes", row.passes),
                                                          ("fails", row.fails),
                                                          ("skips", row.skips))
                                 if v is not None and k not in meta}},
        )

    def list_runs(self, build_name, *, since=None, until=None, filters=None,
                  limit=None, balanced=False):
        if limit is not None and limit <= 0:
            return
        if balanced:
            stream = interleave(
                self._iter_runs(build_name, since, until, filters, FAILED),
                self._iter_runs(build_name, since, until, filters, PASSED))
        else:
            stream = self._iter_runs(build_name, since, until, filters)
        yield from itertools.islice(stream, limit)

    def get_run(self, run_id):
        import sqlalchemy as sa

        from ciml_plugins.sources.subunit2sql_schema import run_metadata, runs

        cols = [runs.c.id, runs.c.uuid, runs.c.skips, runs.c.fails, runs.c.passes,
                runs.c.run_time, runs.c.artifacts, runs.c.run_at]
        rows = self._fetch(sa.select(*cols).where(runs.c.uuid == str(run_id)).limit(1))
        if not rows:
            by_build = (sa.select(run_metadata.c.run_id)
                        .where(run_metadata.c.key == "build_uuid",
                               run_metadata.c.value == str(run_id)))
            rows = self._fetch(sa.select(*cols).where(runs.c.id.in_(by_build))
                               .order_by(runs.c.id).limit(1))
        if not rows:
            raise NotFoundError(f"no run {run_id!r} (run uuid or build uuid) in "
                                f"subunit2sql database {self.safe_uri}")
        row = rows[0]
        return self._record(row, self._metadata([row.id])[row.id])

    # -- tests -----------------------------------------------------------------

    def test_results(self, run):
        """Stream a run's per-test results (microseconds restored), by test_runs id."""
        import sqlalchemy as sa

        from ciml_plugins.sources.subunit2sql_schema import runs, test_runs, tests

        run_id = getattr(run, "id", run)
        ids = self._fetch(sa.select(runs.c.id).where(runs.c.uuid == str(run_id)).limit(1))
        if not ids:
            try:
                ids = [(int(run_id),)]
            except (TypeError, ValueError):
                raise NotFoundError(f"no run {run_id!r} in subunit2sql database "
                                    f"{self.safe_uri}") from None
        db_run_id = ids[0][0]
        last = None
        while True:
            stmt = (sa.select(test_runs.c.id, tests.c.test_id, test_runs.c.status,
                              test_runs.c.start_time, test_runs.c.start_time_microsecond,
                              test_runs.c.stop_time, test_runs.c.stop_time_microsecond)
                    .select_from(test_runs.join(tests, tests.c.id == test_runs.c.test_id))
                    .where(test_runs.c.run_id == db_run_id))
            if last is not None:
                stmt = stmt.where(test_runs.c.id > last)
            rows = self._fetch(stmt.order_by(test_runs.c.id).limit(self.batch_size))
            for row in rows:
                yield TestResult(
                    test_id=row.test_id, status=row.status,
                    start=_with_micro(row.start_time, row.start_time_microsecond),
                    stop=_with_micro(row.stop_time, row.stop_time_microsecond))
            if len(rows) < self.batch_size:
                return
            last = rows[-1].id


def _with_micro(value, micro):
    if value is None:
        return None
    if micro:
        value = value.replace(microsecond=int(micro) % 1_000_000)
    return as_utc(value)


@hookimpl
def ciml_register_result_sources(register):
    register(Subunit2sqlResultSource)


__all__ = ["Subunit2sqlResultSource"]
