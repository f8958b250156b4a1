"""The raw cache's catalog: which runs are cached or unavailable.

One table, ``runs``, one row per run id.  Where it lives:

* a local data path: SQLite at ``<data>/raw/index.sqlite`` (WAL, a busy
  timeout; the file earlier versions made opens as it is);
* ``--catalog-uri`` / ``$CIML_CATALOG_URI``: any SQLAlchemy URL, for a
  store that many machines write (``mysql+pymysql://user@host/ciml``,
  ``postgresql+psycopg://…``) or a local SQLite file beside an object-store
  data path (``sqlite:////var/lib/ciml/catalog.sqlite``, one machine only).

A SQLite file (``sqlite:///<path>``, the local index included) is read and
written with the standard library's :mod:`sqlite3`, the same schema that
SQLAlchemy makes: SQLAlchemy costs about 0.5 s to import and 0.45 ms per
query where sqlite3 takes 0.035 ms, and a build or a prediction asks the
index several times per run.  Every other URL goes through SQLAlchemy.

A data path on an object store without a catalog URI is an error: SQLite
cannot live on S3, and a guessed default would let two machines each keep
their own index of one store.

A run becomes cached by :meth:`Catalog.commit_cached`, one conditional
statement that only the first writer of a run wins, whatever the database:
two machines caching the same run neither duplicate nor lose it.
"""

import json
import os
import sqlite3
import threading
import time

from ciml.errors import CimlError, ConfigError

CACHED = "cached"
UNAVAILABLE = "unavailable"

# How long a SQLite connection waits for another writer before giving up.
_BUSY_TIMEOUT_S = 60.0


class CatalogError(CimlError):
    """The catalog's database failed (unreachable, refused, out of space)."""


def _table(metadata):
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    return sa.Table(
        "runs", metadata,
        sa.Column("run_id", sa.String(512), primary_key=True),
        sa.Column("build_name", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255)),
        sa.Column("message", text),
        sa.Column("dir", sa.String(512)),
        sa.Column("start", sa.String(32)),
        sa.Column("samples", sa.Integer),
        sa.Column("record", text),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("incomplete", sa.String(255)),
        sa.Index("ix_runs_build_state", "build_name", "state"),
        mysql_charset="utf8mb4",
    )


def _labels_table(metadata):
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    return sa.Table(
        "human_labels", metadata,
        sa.Column("run_id", sa.String(512), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", text, nullable=False),
        sa.Column("who", sa.String(255), nullable=False),
        sa.Column("time", sa.String(32), nullable=False),
        mysql_charset="utf8mb4",
    )


# Columns added since the first index layout: (name, SQL type), for old SQLite files.
_ADDED_COLUMNS = (("incomplete", "TEXT"),)


def shown_uri(uri):
    """A catalog URI fit for output: its password masked."""
    if sqlite_file(uri) is not None:
        return uri  # a file name: no password to hide
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(uri).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- an unparsable URI is shown by its scheme only
        return str(uri).split("://", 1)[0] + "://…"


def catalog_uri(data_path):
    """The catalog URI of a :class:`ciml.paths.DataPath` (see the module docs)."""
    if data_path.catalog_uri:
        return data_path.catalog_uri
    if data_path.is_remote:
        raise ConfigError(
            f"the raw cache of {data_path} needs a catalog: SQLite cannot live on an "
            "object store. Give --catalog-uri (or $CIML_CATALOG_URI): "
            "mysql+pymysql://user@host/db or postgresql+psycopg://... when several "
            "machines share the store, sqlite:////local/file.sqlite for one machine")
    return "sqlite:///" + str(data_path.raw / "index.sqlite")


def sqlite_file(uri):
    """The file of a plain ``sqlite:///<path>`` URI, else ``None``.

    Only the plain form: a query string, an escape or an in-memory
    database keep SQLAlchemy's reading of the URL.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or any(c in uri for c in "?#%"):
        return None
    path = uri[len(prefix):]
    return path if path and path != ":memory:" else None


# The tables as SQLAlchemy creates them on SQLite (``_table``, ``_labels_table``),
# so either side opens what the other made.
_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (\n\trun_id VARCHAR(512) NOT NULL, "
    "\n\tbuild_name VARCHAR(255), \n\tstate VARCHAR(16) NOT NULL, "
    "\n\treason VARCHAR(255), \n\tmessage TEXT, \n\tdir VARCHAR(512), "
    "\n\tstart VARCHAR(32), \n\tsamples INTEGER, \n\trecord TEXT, "
    "\n\ttime DOUBLE NOT NULL, \n\tincomplete VARCHAR(255), "
    "\n\tPRIMARY KEY (run_id)\n)",
    "CREATE INDEX IF NOT EXISTS ix_runs_build_state ON runs (build_name, state)",
    "CREATE TABLE IF NOT EXISTS human_labels (\n\trun_id VARCHAR(512) NOT NULL, "
    "\n\t\"key\" VARCHAR(64) NOT NULL, \n\tvalue TEXT NOT NULL, "
    "\n\twho VARCHAR(255) NOT NULL, \n\ttime VARCHAR(32) NOT NULL, "
    "\n\tPRIMARY KEY (run_id, \"key\")\n)",
)

_RUN_COLUMNS = ("run_id", "build_name", "state", "reason", "message", "dir", "start",
                "samples", "record", "time", "incomplete")


def _retry_locked(call, error, attempts=50):
    """``call()``, again while SQLite answers ``error`` "database is locked".

    Switching SQLite to WAL and creating the schema take an exclusive lock
    that the busy handler does not always wait for.
    """
    for attempt in range(attempts):
        try:
            return call()
        except error as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _add_missing_columns(have, alter, error):
    """Bring a ``runs`` table with the columns ``have`` up to the current ones.

    ``alter(sql)`` runs one statement; ``error`` is what it raises when
    another process added the column first, which is fine.
    """
    for name, sql_type in _ADDED_COLUMNS:
        if name in have:
            continue
        try:
            alter(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")
        except error as exc:
            if "duplicate column" not in str(exc):
                raise


def _record_text(record):
    return json.dumps(record, sort_keys=True, default=str)


class Catalog:
    """The ``runs`` table of one catalog; safe to share between threads and processes.

    ``Catalog(uri)`` is a :mod:`sqlite3` catalog for a plain SQLite file
    URI and a SQLAlchemy one for anything else; both answer the same
    methods with the same rows.
    """

    def __new__(cls, uri=None):
        if cls is Catalog and uri is not None:
            cls = SqliteCatalog if sqlite_file(uri) is not None else SqlAlchemyCatalog
        return super().__new__(cls)

    def __init__(self, uri):
        self.uri = uri
        self._lock = threading.Lock()
        self.is_sqlite = uri.startswith("sqlite")

    def __repr__(self):
        return f"Catalog({shown_uri(self.uri)!r})"

    def iter_cached(self, build_name=None, columns=("samples", "record")):
        """:meth:`cached`, row by row where the database allows: a build of a
        million runs need not hold every record's text at once."""
        return iter(self.cached(build_name, columns))


class SqlAlchemyCatalog(Catalog):
    """A catalog behind SQLAlchemy: MariaDB, PostgreSQL, or SQLite by an unusual URL."""

    def __init__(self, uri):
        super().__init__(uri)
        self._engine = None
        self._pid = None

    # -- the engine ---------------------------------------------------------------

    @property
    def engine(self):
        # An engine's connections must not cross a fork: a child makes its own.
        if self._engine is not None and self._pid == os.getpid():
            return self._engine
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                if self._engine is not None:
                    self._engine.dispose(close=False)
                self._engine = self._create()
                self._pid = os.getpid()
        return self._engine

    def _create(self):
        import sqlalchemy as sa

        try:
            url = sa.engine.make_url(self.uri)
        except sa.exc.ArgumentError:
            raise ConfigError(f"--catalog-uri {shown_uri(self.uri)} is not a database "
                              "URL (mysql+pymysql://user@host/db, sqlite:////path)") from None
        kwargs = {"isolation_level": "AUTOCOMMIT", "pool_pre_ping": not self.is_sqlite}
        if self.is_sqlite:
            if url.database and url.database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
            kwargs["connect_args"] = {"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False}
        try:
            engine = sa.create_engine(url, **kwargs)
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise ConfigError(f"catalog {shown_uri(self.uri)}: its database driver is not "
                              f"installed ({exc})") from None
        if self.is_sqlite:
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        metadata = sa.MetaData()
        self.table = _table(metadata)
        self.labels_table = _labels_table(metadata)
        try:
            self._create_tables(engine, metadata)
            if self.is_sqlite:
                self._add_columns(engine)
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise CimlError(f"catalog {shown_uri(self.uri)} cannot be opened: "
                            f"{_reason(exc)}") from None
        return engine

    def _create_tables(self, engine, metadata):
        import sqlalchemy as sa

        # Two processes opening a new catalog at once both see no table and
        # both create it: the second one's "already exists" means done.
        for attempt in range(5):
            try:
                return self._retry_locked(lambda: metadata.create_all(engine, checkfirst=True))
            except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
                if "already exists" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _add_columns(self, engine):
        """Bring an index made by an older ciml up to the current columns."""
        import sqlalchemy as sa

        with engine.connect() as conn:
            have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(runs)")}
            _add_missing_columns(
                have, lambda sql: self._retry_locked(lambda: conn.exec_driver_sql(sql)),
                sa.exc.OperationalError)

    @staticmethod
    def _retry_locked(call):
        import sqlalchemy as sa

        return _retry_locked(call, sa.exc.OperationalError)

    def _run(self, statement):
        return self._call(lambda conn: conn.execute(statement))

    def _rows(self, statement):
        return self._call(lambda conn: conn.execute(statement).fetchall())

    def _call(self, work):
        import sqlalchemy as sa

        engine = self.engine
        try:
            with engine.connect() as conn:
                return self._retry_locked(lambda: work(conn))
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            # A database that went away is named, without its SQL or values.
            raise CatalogError(f"catalog {shown_uri(self.uri)}: {_reason(exc)}") from None

    def close(self):
        """Close the pooled connections.  Idempotent; the next call reopens."""
        with self._lock:
            if self._engine is not None and self._pid == os.getpid():
                self._engine.dispose()
            self._engine = None

    # -- writing ------------------------------------------------------------------

    def commit_cached(self, run_id, build_name, folder, start, samples, record, incomplete,
                      *, replace=False):
        """Record a run as cached in ``folder``; ``False`` if another writer was first.

        Portable and atomic on every database: an INSERT, which a primary
        key conflict refuses, then an UPDATE of a row that is not cached
        yet.  ``replace`` overwrites a cached row (the local cache, which
        serialises its writers and moved the folder in place already).
        """
        import sqlalchemy as sa

        t = self._t()
        values = {"run_id": str(run_id), "build_name": build_name, "state": CACHED,
                  "reason": None, "message": None, "dir": folder, "start": start,
                  "samples": int(samples), "incomplete": incomplete, "time": time.time(),
                  "record": _record_text(record)}
        try:
            self._run(sa.insert(t).values(**values))
            return True
        except sa.exc.IntegrityError:
            pass
        update = sa.update(t).where(t.c.run_id == str(run_id))
        if not replace:
            update = update.where(t.c.state != CACHED)
        result = self._run(update.values(**{k: v for k, v in values.items() if k != "run_id"}))
        return result.rowcount > 0

    def update_record(self, run_id, record, incomplete):
        import sqlalchemy as sa

        t = self._t()
        result = self._run(sa.update(t).where(t.c.run_id == str(run_id), t.c.state == CACHED)
                           .values(record=_record_text(record),
                                   incomplete=incomplete, time=time.time()))
        return result.rowcount > 0

    def mark_unavailable(self, run_id, build_name, reason, message, start, record):
        """Record that a run's metrics cannot be had; a cached run stays cached."""
        import sqlalchemy as sa

        t = self._t()
        values = {"build_name": build_name, "state": UNAVAILABLE, "reason": str(reason)[:255],
                  "message": str(message), "start": start, "time": time.time(),
                  "record": _record_text(record)}
        try:
            self._run(sa.insert(t).values(run_id=str(run_id), dir=None, samples=None, **values))
            return
        except sa.exc.IntegrityError:
            pass
        self._run(sa.update(t).where(t.c.run_id == str(run_id), t.c.state != CACHED)
                  .values(**values))

    def put_labels(self, rows):
        """Store human labels ``(run_id, key, value, who, time)``; one per run and key."""
        import sqlalchemy as sa

        self._t()
        t = self.labels_table
        for run_id, key, value, who, when in rows:
            values = {"value": value, "who": who, "time": when}
            try:
                self._run(sa.insert(t).values(run_id=run_id, key=key, **values))
            except sa.exc.IntegrityError:
                self._run(sa.update(t).where(t.c.run_id == run_id, t.c.key == key)
                          .values(**values))

    def labels(self):
        """Every human label: rows ``(run_id, key, value, who, time)`` by run and key."""
        import sqlalchemy as sa

        self._t()
        t = self.labels_table
        return self._rows(sa.select(t.c.run_id, t.c.key, t.c.value, t.c.who, t.c.time)
                          .order_by(t.c.run_id, t.c.key))

    # -- reading ------------------------------------------------------------------

    def _t(self):
        self.engine  # noqa: B018 -- creates the table object on first use
        return self.table

    def state(self, run_id):
        import sqlalchemy as sa

        t = self._t()
        rows = self._rows(sa.select(t.c.state).where(t.c.run_id == str(run_id)))
        return rows[0][0] if rows else None

    def states(self, build_name=None):
        import sqlalchemy as sa

        t = self._t()
        query = sa.select(t.c.run_id, t.c.state)
        if build_name is not None:
            query = query.where(t.c.build_name == build_name)
        return dict(self._rows(query))

    def cached(self, build_name=None, columns=("samples", "record")):
        """Rows of cached runs (of a build name), by start time then run id."""
        import sqlalchemy as sa

        t = self._t()
        query = sa.select(*(t.c[c] for c in columns)).where(t.c.state == CACHED)
        if build_name is not None:
            query = query.where(t.c.build_name == build_name)
        return self._rows(query.order_by(t.c.start, t.c.run_id))

    def incomplete_ids(self, build_name=None):
        import sqlalchemy as sa

        t = self._t()
        query = sa.select(t.c.run_id).where(t.c.state == CACHED, t.c.incomplete.is_not(None))
        if build_name is not None:
            query = query.where(t.c.build_name == build_name)
        return {row[0] for row in self._rows(query)}

    def unavailable(self, build_name=None):
        import sqlalchemy as sa

        t = self._t()
        query = (sa.select(t.c.run_id, t.c.build_name, t.c.reason, t.c.message, t.c.time)
                 .where(t.c.state == UNAVAILABLE))
        if build_name is not None:
            query = query.where(t.c.build_name == build_name)
        return self._rows(query.order_by(t.c.start, t.c.run_id))

    def cached_row(self, run_id):
        """``(dir, record text)`` of a cached run, or ``None``."""
        import sqlalchemy as sa

        t = self._t()
        rows = self._rows(sa.select(t.c.dir, t.c.record)
                          .where(t.c.run_id == str(run_id), t.c.state == CACHED))
        return tuple(rows[0]) if rows else None

    def counts(self, build_name=None):
        import sqlalchemy as sa

        t = self._t()
        query = sa.select(t.c.state, sa.func.count()).group_by(t.c.state)
        if build_name is not None:
            query = query.where(t.c.build_name == build_name)
        out = {CACHED: 0, UNAVAILABLE: 0}
        out.update(dict(self._rows(query)))
        return out

    def dirs(self):
        """The run folders the catalog names (cleanup keeps these)."""
        import sqlalchemy as sa

        t = self._t()
        return {row[0] for row in self._rows(sa.select(t.c.dir).where(t.c.dir.is_not(None)))}


class SqliteCatalog(Catalog):
    """A catalog in a SQLite file through the standard library's :mod:`sqlite3`.

    One connection per thread (sqlite3 releases the GIL while it works, and
    WAL lets readers run beside a writer), opened again in a forked child.
    Autocommit: each statement is its own transaction, as on the SQLAlchemy
    side, so the first-writer-wins INSERT then conditional UPDATE of
    :meth:`commit_cached` holds across processes.
    """

    def __init__(self, uri):
        super().__init__(uri)
        self.path = sqlite_file(uri)
        self._local = threading.local()
        self._conns = []       # this process's connections, for close()
        self._generation = 0   # bumped by close(): older thread connections are stale
        self._ready_pid = None  # the process that checked the schema

    # -- connections ----------------------------------------------------------------

    def _conn(self):
        pid = os.getpid()
        local = self._local
        if getattr(local, "key", None) == (pid, self._generation):
            return local.conn
        with self._lock:
            if self._ready_pid != pid:
                # A forked child neither uses nor closes its parent's connections.
                self._conns = []
                self._open_schema()
                self._ready_pid = pid
            conn = self._connect()
            self._conns.append(conn)
            local.conn, local.key = conn, (pid, self._generation)
        return conn

    def _connect(self):
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            _sqlite_pragmas(conn, None)
        except sqlite3.Error as exc:
            raise CimlError(f"catalog {shown_uri(self.uri)} cannot be opened: "
                            f"{_reason(exc)}") from None
        return conn

    def _open_schema(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = self._connect()
        try:
            for statement in _SQLITE_SCHEMA:
                self._retry_locked(lambda statement=statement: conn.execute(statement))
            have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            _add_missing_columns(
                have, lambda sql: self._retry_locked(lambda: conn.execute(sql)),
                sqlite3.OperationalError)
        except sqlite3.Error as exc:
            raise CimlError(f"catalog {shown_uri(self.uri)} cannot be opened: "
                            f"{_reason(exc)}") from None
        finally:
            conn.close()

    @staticmethod
    def _retry_locked(call):
        return _retry_locked(call, sqlite3.OperationalError)

    def _execute(self, sql, params=()):
        conn = self._conn()
        try:
            return self._retry_locked(lambda: conn.execute(sql, params))
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {shown_uri(self.uri)}: {_reason(exc)}") from None

    def _rows(self, sql, params=()):
        conn = self._conn()
        try:
            return self._retry_locked(lambda: conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise CatalogError(f"catalog {shown_uri(self.uri)}: {_reason(exc)}") from None

    def close(self):
        """Close this process's connections.  Idempotent; the next call reopens."""
        with self._lock:
            if self._ready_pid == os.getpid():
                for conn in self._conns:
                    conn.close()
            self._conns = []
            self._generation += 1
            self._ready_pid = None

    # -- writing ------------------------------------------------------------------

    def _insert_or_update(self, table, key, values, where=""):
        """INSERT ``key`` + ``values``; on a key conflict UPDATE ``values`` ``where``.

        Returns whether a row was written.
        """
        columns = list(key) + list(values)
        try:
            self._execute(f"INSERT INTO {table} ({', '.join(_q(c) for c in columns)}) "
                          f"VALUES ({', '.join('?' * len(columns))})",
                          [*key.values(), *values.values()])
            return True
        except sqlite3.IntegrityError:
            pass
        sets = ", ".join(f"{_q(c)} = ?" for c in values)
        keys = " AND ".join(f"{_q(c)} = ?" for c in key)
        cursor = self._execute(f"UPDATE {table} SET {sets} WHERE {keys}{where}",
                               [*values.values(), *key.values()])
        return cursor.rowcount > 0

    def commit_cached(self, run_id, build_name, folder, start, samples, record, incomplete,
                      *, replace=False):
        """Record a run as cached in ``folder``; ``False`` if another writer was first.

        See :meth:`SqlAlchemyCatalog.commit_cached`: the same two statements.
        """
        values = {"build_name": build_name, "state": CACHED, "reason": None, "message": None,
                  "dir": folder, "start": start, "samples": int(samples),
                  "incomplete": incomplete, "time": time.time(),
                  "record": _record_text(record)}
        where = "" if replace else f" AND state != '{CACHED}'"
        return self._insert_or_update("runs", {"run_id": str(run_id)}, values, where)

    def update_record(self, run_id, record, incomplete):
        cursor = self._execute(
            "UPDATE runs SET record = ?, incomplete = ?, time = ? WHERE run_id = ? "
            "AND state = ?", (_record_text(record), incomplete, time.time(), str(run_id),
                              CACHED))
        return cursor.rowcount > 0

    def mark_unavailable(self, run_id, build_name, reason, message, start, record):
        """Record that a run's metrics cannot be had; a cached run stays cached."""
        values = {"build_name": build_name, "state": UNAVAILABLE, "reason": str(reason)[:255],
                  "message": str(message), "start": start, "time": time.time(),
                  "record": _record_text(record)}
        # A new row has no folder and no samples (NULL by default).
        self._insert_or_update("runs", {"run_id": str(run_id)}, values,
                               f" AND state != '{CACHED}'")

    def put_labels(self, rows):
        """Store human labels ``(run_id, key, value, who, time)``; one per run and key."""
        for run_id, key, value, who, when in rows:
            self._insert_or_update("human_labels", {"run_id": run_id, "key": key},
                                   {"value": value, "who": who, "time": when})

    def labels(self):
        """Every human label: rows ``(run_id, key, value, who, time)`` by run and key."""
        return self._rows('SELECT run_id, "key", value, who, time FROM human_labels '
                          'ORDER BY run_id, "key"')

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def _of_build(build_name, where=""):
        """``(WHERE clause, parameters)`` adding a build name to ``where``."""
        clauses = [where] if where else []
        params = []
        if build_name is not None:
            clauses.append("build_name = ?")
            params.append(build_name)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def state(self, run_id):
        rows = self._rows("SELECT state FROM runs WHERE run_id = ?", (str(run_id),))
        return rows[0][0] if rows else None

    def states(self, build_name=None):
        where, params = self._of_build(build_name)
        return dict(self._rows(f"SELECT run_id, state FROM runs{where}", params))

    def _cached_query(self, build_name, columns):
        """``(SQL, parameters)`` of the cached runs' ``columns``, by start then run id."""
        unknown = set(columns) - set(_RUN_COLUMNS)
        if unknown:
            raise ValueError(f"no such catalog column: {sorted(unknown)}")
        where, params = self._of_build(build_name, "state = ?")
        return (f"SELECT {', '.join(columns)} FROM runs{where} ORDER BY start, run_id",
                [CACHED, *params])

    def cached(self, build_name=None, columns=("samples", "record")):
        """Rows of cached runs (of a build name), by start time then run id."""
        return self._rows(*self._cached_query(build_name, columns))

    def iter_cached(self, build_name=None, columns=("samples", "record")):
        cursor = self._execute(*self._cached_query(build_name, columns))
        try:
            while True:
                try:
                    rows = cursor.fetchmany(1000)
                except sqlite3.Error as exc:
                    raise CatalogError(
                        f"catalog {shown_uri(self.uri)}: {_reason(exc)}") from None
                if not rows:
                    return
                yield from rows
        finally:
            cursor.close()

    def incomplete_ids(self, build_name=None):
        where, params = self._of_build(build_name, "state = ? AND incomplete IS NOT NULL")
        return {row[0] for row in self._rows(f"SELECT run_id FROM runs{where}",
                                             [CACHED, *params])}

    def unavailable(self, build_name=None):
        where, params = self._of_build(build_name, "state = ?")
        return self._rows(f"SELECT run_id, build_name, reason, message, time FROM runs{where} "
                          "ORDER BY start, run_id", [UNAVAILABLE, *params])

    def cached_row(self, run_id):
        """``(dir, record text)`` of a cached run, or ``None``."""
        rows = self._rows("SELECT dir, record FROM runs WHERE run_id = ? AND state = ?",
                          (str(run_id), CACHED))
        return tuple(rows[0]) if rows else None

    def counts(self, build_name=None):
        where, params = self._of_build(build_name)
        out = {CACHED: 0, UNAVAILABLE: 0}
        out.update(dict(self._rows(f"SELECT state, count(*) FROM runs{where} GROUP BY state",
                                   params)))
        return out

    def dirs(self):
        """The run folders the catalog names (cleanup keeps these)."""
        return {row[0] for row in self._rows("SELECT dir FROM runs WHERE dir IS NOT NULL")}


def _q(column):
    # "key" is an SQL keyword: every column name is quoted as SQLAlchemy quotes that one.
    return f'"{column}"'


def _sqlite_pragmas(dbapi_conn, _record):
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
                break
            except Exception as exc:  # noqa: BLE001 -- sqlite3.OperationalError: locked
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _reason(exc):
    """A database error's cause in one line, without its SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    return f"{type(orig).__name__}: {text[:300]}"
