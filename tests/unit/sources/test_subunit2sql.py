"""The subunit2sql result source on SQLite and on the real MariaDB."""

import datetime as dt

import pytest

from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

UTC = dt.timezone.utc


def ids(runs):
    return [r.id for r in runs]


def source(uri, **kw):
    return Subunit2sqlResultSource(db_uri=uri, **kw)


def test_lists_runs_oldest_first_with_records(handmade_db):
    with source(handmade_db) as src:
        runs = list(src.list_runs("tempest-full"))
    # r04 and r05 share a start time: ties go by id; r11 has none, so it is last.
    assert ids(runs) == [f"r{i:02d}" for i in range(12)]
    r0 = runs[0]
    assert r0.build_name == "tempest-full"
    assert r0.status == "passed"
    assert r0.start == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert r0.start.tzinfo is not None
    assert r0.duration == 100.0
    assert r0.artifacts_url == "http://logs.example/00"
    assert r0.build_uuid == "b00" + "0" * 29
    assert r0.source == "subunit2sql"
    assert r0.metadata["build_queue"] == "gate"
    assert r0.metadata["node_provider"] == "rax-dfw"
    assert runs[11].start is None


def test_status_rule_of_the_original(handmade_db):
    with source(handmade_db) as src:
        status = {r.id: r.status for r in src.list_runs("tempest-full")}
    assert status["r03"] == "failed"      # fails > 0
    assert status["r06"] == "failed"      # passes == 0
    assert status["r07"] == "failed"      # passes NULL counts as none
    assert {k for k, v in status.items() if v == "failed"} == {"r03", "r06", "r07"}


def test_artifacts_from_log_url_metadata_is_the_folder(handmade_db):
    with source(handmade_db) as src:
        run = src.get_run("r08")
    assert run.artifacts_url == "http://logs.example/08/"


def test_filters_window_and_limit(handmade_db):
    with source(handmade_db) as src:
        gate = list(src.list_runs("tempest-full", filters={"build_queue": "gate"}))
        assert ids(gate) == ["r00", "r02", "r04", "r06", "r08", "r10"]
        both = list(src.list_runs("tempest-full", filters={"build_queue": "gate",
                                                           "node_provider": "ovh-bhs1"}))
        assert ids(both) == ["r06", "r08", "r10"]
        since = dt.datetime(2024, 1, 1, 2, tzinfo=UTC)
        until = dt.datetime(2024, 1, 1, 5, tzinfo=UTC)
        assert ids(src.list_runs("tempest-full", since=since, until=until)) == [
            "r02", "r03", "r04", "r05"]
        # An aware time in another zone means the same instant.
        plus2 = dt.timezone(dt.timedelta(hours=2))
        assert ids(src.list_runs("tempest-full", since=since.astimezone(plus2),
                                 until=until.astimezone(plus2))) == ["r02", "r03", "r04", "r05"]
        assert ids(src.list_runs("tempest-full", limit=3)) == ["r00", "r01", "r02"]
        assert ids(src.list_runs("grenade")) == ["g0"]
        assert list(src.list_runs("no-such-job")) == []


def test_balanced_interleaves_failed_and_passed(handmade_db):
    with source(handmade_db) as src:
        runs = list(src.list_runs("tempest-full", balanced=True, limit=6))
    assert [r.status for r in runs] == ["failed", "passed"] * 3
    with source(handmade_db) as src:
        everything = list(src.list_runs("tempest-full", balanced=True))
    assert sorted(ids(everything)) == sorted(f"r{i:02d}" for i in range(12))


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_keyset_paging_loses_and_repeats_nothing(handmade_db, batch):
    with source(handmade_db, batch_size=batch) as src:
        assert ids(src.list_runs("tempest-full")) == [f"r{i:02d}" for i in range(12)]


def test_streams_in_batches(handmade_db):
    """The first run arrives after one page, not after reading every run."""
    import sqlalchemy as sa

    src = source(handmade_db, batch_size=3)
    statements = []
    sa.event.listen(src.engine(), "before_cursor_execute",
                    lambda *a: statements.append(a[2]))
    stream = src.list_runs("tempest-full")
    next(stream)
    selects = [s for s in statements if "FROM runs" in s]
    assert len(selects) == 1
    assert "LIMIT" in selects[0].upper()
    rest = list(stream)
    assert len(rest) == 11
    src.close()


def test_get_run_by_uuid_or_build_uuid(handmade_db):
    with source(handmade_db) as src:
        assert src.get_run("r02").id == "r02"
        assert src.get_run("b05" + "0" * 29).id == "r05"
        with pytest.raises(NotFoundError):
            src.get_run("nope")


def test_test_results_with_microseconds(db_uri, s2s_add_run):
    import sqlalchemy as sa

    from ciml_plugins.sources import subunit2sql_schema as schema

    engine = schema.create_schema(sa.create_engine(db_uri))
    with engine.begin() as conn:
        pk = s2s_add_run(conn, "t-run", run_at=dt.datetime(2024, 5, 1),
                         metadata={"build_name": "unit"})
        conn.execute(schema.tests.insert(), [{"id": 1, "test_id": "a.test_one"},
                                             {"id": 2, "test_id": "a.test_two"}])
        conn.execute(schema.test_runs.insert(), [
            {"test_id": 1, "run_id": pk, "status": "success",
             "start_time": dt.datetime(2024, 5, 1, 0, 0, 1), "start_time_microsecond": 250,
             "stop_time": dt.datetime(2024, 5, 1, 0, 0, 2), "stop_time_microsecond": 999999},
            {"test_id": 2, "run_id": pk, "status": "fail",
             "start_time": dt.datetime(2024, 5, 1, 0, 0, 3), "start_time_microsecond": 0,
             "stop_time": None, "stop_time_microsecond": None}])
    engine.dispose()
    with source(db_uri, batch_size=1) as src:
        results = list(src.test_results(src.get_run("t-run")))
    assert [(t.test_id, t.status) for t in results] == [("a.test_one", "success"),
                                                        ("a.test_two", "fail")]
    assert results[0].start == dt.datetime(2024, 5, 1, 0, 0, 1, 250, tzinfo=UTC)
    assert results[0].stop == dt.datetime(2024, 5, 1, 0, 0, 2, 999999, tzinfo=UTC)
    assert results[1].stop is None


def test_generated_history_round_trip(db_uri, tmp_path):
    from ciml.generator import generate_history

    history = generate_history(tmp_path / "hist", runs=40, seed=3, db_uri=db_uri)
    with source(db_uri, batch_size=7) as src:
        for job in {r["build_name"] for r in history.runs}:
            truth = [r for r in history.runs if r["build_name"] == job]
            got = list(src.list_runs(job))
            assert sorted(ids(got)) == sorted(r["run_id"] for r in truth)
            by_id = {r.id: r for r in got}
            for run in truth:
                rec = by_id[run["run_id"]]
                assert rec.status == run["status"], run
                assert rec.build_uuid == run["build_uuid"]
                assert rec.metadata["node_provider"] == run["node_provider"]
                assert rec.artifacts_url.rstrip("/") == run["artifacts_url"].rstrip("/")
                assert abs((rec.start - run["start"]).total_seconds()) < 1
            starts = [r.start for r in got]
            assert starts == sorted(starts)


def test_missing_sqlite_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no subunit2sql database"):
        list(source(f"sqlite:///{tmp_path / 'absent.db'}").list_runs("x"))


def test_not_a_subunit2sql_database(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(SourceError, match="subunit2sql") as info:
        list(source(f"sqlite:///{path}").list_runs("x"))
    assert not info.value.transient


def test_needs_a_uri(monkeypatch):
    monkeypatch.delenv("CIML_DB_URI", raising=False)
    with pytest.raises(ConfigError, match="--db-uri"):
        Subunit2sqlResultSource()


def test_uri_from_environment(monkeypatch, handmade_db):
    monkeypatch.setenv("CIML_DB_URI", handmade_db)
    with Subunit2sqlResultSource() as src:
        assert src.get_run("r01").id == "r01"


def test_bad_uri_is_not_echoed():
    src = source("this is not a url:secret")
    with pytest.raises(ConfigError) as info:
        list(src.list_runs("x"))
    assert "secret" not in str(info.value)



def test_password_never_shown(mariadb_url):
    import sqlalchemy as sa

    url = sa.engine.make_url(mariadb_url).set(password="Sup3rS3cretPw")
    uri = url.render_as_string(hide_password=False)
    src = Subunit2sqlResultSource(db_uri=uri, connect_timeout=5)
    assert "Sup3rS3cretPw" not in repr(src)
    assert "Sup3rS3cretPw" not in str(src.get_params())
    with pytest.raises(SourceError) as info:
        list(src.list_runs("tempest-full"))
    message = str(info.value)
    assert "Sup3rS3cretPw" not in message
    assert "***" in message
    assert not info.value.transient  # access denied: trying again will not help
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_lost_server_is_transient():
    src = Subunit2sqlResultSource(db_uri="mysql+pymysql://u:pw1234567@127.0.0.1:1/db",
                                  connect_timeout=2, retry_for=0)
    with pytest.raises(SourceError) as info:
        list(src.list_runs("x"))
    assert info.value.transient
    assert "pw1234567" not in str(info.value)


def test_transient_errors_are_retried_for_a_bounded_time(caplog):
    """20.2: a refused connection is tried again, with warnings, then given up."""
    import logging

    src = Subunit2sqlResultSource(db_uri="mysql+pymysql://u:pw1234567@127.0.0.1:1/db",
                                  connect_timeout=2, retry_for=1.5)
    with caplog.at_level(logging.WARNING, logger="ciml_plugins.sources.subunit2sql"):
        with pytest.raises(SourceError) as info:
            list(src.list_runs("x"))
    assert info.value.transient
    assert str(info.value).endswith("(still failing after 1.5 s of retries)")
    retries = [r.getMessage() for r in caplog.records]
    assert retries and all("trying again in" in m and "pw1234567" not in m for m in retries)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("bad", [{"query_timeout": 0}, {"retry_for": -1}])
def test_bad_timeouts_are_refused(bad):
    with pytest.raises(ConfigError):
        Subunit2sqlResultSource(db_uri="sqlite:///x.db", **bad)
