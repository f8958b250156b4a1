"""Fixtures for the result-source tests: subunit2sql databases on SQLite and MariaDB."""

import datetime as dt
import uuid

import pytest

UTC = dt.timezone.utc


@pytest.fixture
def s2s_mariadb(mariadb_url):
    """A database of its own on the session's MariaDB, dropped afterwards.

    The session database may be shared with other tests that write runs;
    counting runs needs a database nobody else writes to.
    """
    import sqlalchemy as sa

    base = sa.engine.make_url(mariadb_url)
    name = f"{base.database}_s2s_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@pytest.fixture(params=["sqlite", "mariadb"])
def db_uri(request, tmp_path):
    """An empty database URI, once on SQLite and once on MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'subunit2sql.db'}"
    return request.getfixturevalue("s2s_mariadb")


def add_run(conn, uuid_, *, passes=10, fails=0, skips=0, run_at=None, run_time=100.0,
            artifacts=None, metadata=None):
    """Insert one run and its metadata rows; returns the run's primary key."""
    from ciml_plugins.sources import subunit2sql_schema as schema

    result = conn.execute(schema.runs.insert().values(
        uuid=uuid_, passes=passes, fails=fails, skips=skips, run_time=run_time,
        artifacts=artifacts, run_at=run_at))
    pk = result.inserted_primary_key[0]
    rows = [{"run_id": pk, "key": k, "value": v} for k, v in (metadata or {}).items()]
    if rows:
        conn.execute(schema.run_metadata.insert(), rows)
    return pk


@pytest.fixture
def handmade_db(db_uri):
    """A small database whose every run is known: the edge cases by name.

    ``tempest-full`` runs r00..r11 one hour apart from 2024-01-01 (r04 and
    r05 share a start time), alternating gate/check; r03 has fails, r06 has
    no passes, r07 has NULL passes; r08's artifacts come from ``log_url``
    metadata pointing at the subunit file; r11 has no run_at.  ``grenade``
    has g0.
    """
    import sqlalchemy as sa

    from ciml_plugins.sources import subunit2sql_schema as schema

    engine = sa.create_engine(db_uri)
    schema.create_schema(engine)
    t0 = dt.datetime(2024, 1, 1, 0, 0, 0)
    with engine.begin() as conn:
        for i in range(12):
            run_at = t0 + dt.timedelta(hours=i if i != 5 else 4)
            if i == 11:
                run_at = None
            meta = {"build_name": "tempest-full", "build_uuid": f"b{i:02d}" + "0" * 29,
                    "build_queue": "gate" if i % 2 == 0 else "check",
                    "node_provider": "rax-dfw" if i < 6 else "ovh-bhs1"}
            kwargs = {}
            if i == 3:
                kwargs["fails"] = 2
            if i == 6:
                kwargs["passes"] = 0
            if i == 7:
                kwargs["passes"] = None
            artifacts = f"http://logs.example/{i:02d}"
            if i == 8:
                artifacts = None
                meta["filename"] = "testrepository.subunit"
                meta["log_url"] = "http://logs.example/08/testrepository.subunit"
            add_run(conn, f"r{i:02d}", run_at=run_at, artifacts=artifacts, metadata=meta,
                    **kwargs)
        add_run(conn, "g0", run_at=t0, artifacts="http://logs.example/g0",
                metadata={"build_name": "grenade"})
    engine.dispose()
    return db_uri


@pytest.fixture
def s2s_add_run():
    """The :func:`add_run` helper, for tests that build their own rows."""
    return add_run
