"""The subunit2sql database schema at its last migration, as SQLAlchemy Core tables.

This mirrors subunit2sql's alembic head ``10a2b6d4b06e`` ("Add even more
indexes"), as reconstructed in ``tests/data/subunit2sql/
schema-mysql.reconstructed.sql``.  Points that matter to readers of real
databases:

* there are no foreign keys at head (the "uuid to integer ids" migration
  rebuilt every table without them), so none are declared here: a real
  database and one created by :func:`create_schema` accept the same rows;
* run metadata is key/value rows (``run_metadata``), one row per key;
* ids are ``BIGINT`` on MySQL/MariaDB and ``INTEGER`` on SQLite, where only
  ``INTEGER PRIMARY KEY`` auto-increments;
* ``runs.uuid`` and ``runs.run_at`` have *client-side* defaults upstream
  (uuid4, utcnow), not server defaults, so writers must supply them;
* string index prefixes (30 characters) only exist on MySQL.

Column order follows the DDL, so ``SELECT *`` and the reconstructed DDL
agree column for column.
"""

import sqlalchemy as sa

#: The alembic revision this schema corresponds to.
ALEMBIC_HEAD = "10a2b6d4b06e"

# SQLite auto-increments only a column declared exactly INTEGER PRIMARY KEY.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_MYSQL = {"mysql_engine": "InnoDB"}

metadata = sa.MetaData()


def _id():
    return sa.Column("id", _ID, primary_key=True, autoincrement=True, nullable=False)


tests = sa.Table(
    "tests", metadata,
    _id(),
    sa.Column("test_id", sa.String(256), nullable=False),
    sa.Column("run_count", sa.Integer, nullable=True),
    sa.Column("success", sa.Integer, nullable=True),
    sa.Column("failure", sa.Integer, nullable=True),
    sa.Column("run_time", sa.Float, nullable=True),
    sa.Index("ix_test_ids", "id", "test_id", mysql_length={"test_id": 30}),
    sa.Index("ix_tests_test_id", "test_id", mysql_length=30),
    **_MYSQL,
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("uuid", sa.String(36), nullable=True),
    _id(),
    sa.Column("skips", sa.Integer, nullable=True),
    sa.Column("fails", sa.Integer, nullable=True),
    sa.Column("passes", sa.Integer, nullable=True),
    sa.Column("run_time", sa.Float, nullable=True),
    sa.Column("artifacts", sa.Text, nullable=True),
    sa.Column("run_at", sa.DateTime, nullable=True),
    sa.Index("ix_run_uuid", "uuid"),
    sa.Index("ix_run_at", "run_at"),
    **_MYSQL,
)

test_runs = sa.Table(
    "test_runs", metadata,
    _id(),
    sa.Column("test_id", _ID, nullable=True),
    sa.Column("run_id", _ID, nullable=True),
    sa.Column("status", sa.String(256), nullable=True),
    sa.Column("start_time", sa.DateTime, nullable=True),
    sa.Column("stop_time", sa.DateTime, nullable=True),
    sa.Column("start_time_microsecond", sa.Integer, nullable=True),
    sa.Column("stop_time_microsecond", sa.Integer, nullable=True),
    sa.UniqueConstraint("test_id", "run_id", name="uq_test_runs"),
    sa.Index("ix_test_id_status", "test_id", "status", mysql_length={"status": 30}),
    sa.Index("ix_test_id_start_time", "test_id", "start_time"),
    sa.Index("ix_test_runs_test_id", "test_id"),
    sa.Index("ix_test_runs_run_id", "run_id"),
    sa.Index("ix_test_runs_start_time", "start_time"),
    sa.Index("ix_test_runs_stop_time", "stop_time"),
    **_MYSQL,
)

run_metadata = sa.Table(
    "run_metadata", metadata,
    _id(),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("value", sa.String(255), nullable=True),
    sa.Column("run_id", _ID, nullable=True),
    sa.UniqueConstraint("run_id", "key", "value", name="uq_run_metadata"),
    sa.Index("ix_run_key_value", "key", "value"),
    sa.Index("ix_run_id", "run_id"),
    **_MYSQL,
)

test_run_metadata = sa.Table(
    "test_run_metadata", metadata,
    _id(),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("value", sa.String(255), nullable=True),
    sa.Column("test_run_id", _ID, nullable=True),
    sa.UniqueConstraint("test_run_id", "key", "value", name="uq_test_run_metadata"),
    sa.Index("ix_test_run_key_value", "key", "value"),
    sa.Index("ix_test_run_id", "test_run_id"),
    **_MYSQL,
)

test_metadata = sa.Table(
    "test_metadata", metadata,
    _id(),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("value", sa.String(255), nullable=True),
    sa.Column("test_id", _ID, nullable=True),
    sa.UniqueConstraint("test_id", "key", "value", name="uq_test_metadata"),
    sa.Index("ix_test_key_value", "key", "value"),
    sa.Index("ix_test_id", "test_id"),
    **_MYSQL,
)

attachments = sa.Table(
    "attachments", metadata,
    _id(),
    sa.Column("test_run_id", _ID, nullable=True),
    sa.Column("label", sa.String(255), nullable=True),
    sa.Column("attachment", sa.LargeBinary, nullable=True),
    sa.Index("ix_attach_test_run_id", "test_run_id"),
    **_MYSQL,
)

# Alembic's own bookkeeping: real databases have it, and subunit2sql's tools
# check it, so a database made here looks migrated to head.
alembic_version = sa.Table(
    "alembic_version", metadata,
    sa.Column("version_num", sa.String(32), primary_key=True, nullable=False),
)

#: The subunit2sql tables proper (without alembic's), in DDL order.
TABLES = (tests, runs, test_runs, run_metadata, test_run_metadata, test_metadata,
          attachments)


def create_schema(engine):
    """Create every table and index that is missing, and stamp alembic's head.

    :param engine: a SQLAlchemy :class:`~sqlalchemy.engine.Engine` (or a
        URL string) for SQLite or MySQL/MariaDB.  Existing tables are left
        as they are, so calling this on a real subunit2sql database is safe.
    :return: the engine.
    """
    if isinstance(engine, str):
        engine = sa.create_engine(engine)
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(alembic_version)).scalar()
        if not have:
            conn.execute(alembic_version.insert().values(version_num=ALEMBIC_HEAD))
    return engine
