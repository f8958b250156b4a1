"""The storage layer's pure parts and the raw cache's catalog (SQLite, MariaDB)."""

import json
import multiprocessing
import pickle
import sqlite3

import pytest

from ciml import storage
from ciml.catalog import CACHED, Catalog, catalog_uri, shown_uri
from ciml.errors import ConfigError
from ciml.paths import DataPath

# The index as ciml made it before the catalog (raw SQL, no SQLAlchemy).
_OLD_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, build_name TEXT, state TEXT NOT NULL,
    reason TEXT, message TEXT, dir TEXT, start TEXT, samples INTEGER, record TEXT,
    time REAL NOT NULL);
CREATE INDEX ix_runs_build_state ON runs (build_name, state);
CREATE TABLE human_labels (run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    who TEXT NOT NULL, time TEXT NOT NULL, PRIMARY KEY (run_id, key));
"""


def test_storage_options_parse_json_values_and_dotted_keys():
    options = storage.parse_storage_options(
        ["endpoint_url=http://127.0.0.1:8333", "anon=false", "client_kwargs.region_name=eu",
         "config_kwargs.retries={\"max_attempts\": 3}", "profile=ci=prod"])
    assert options == {"endpoint_url": "http://127.0.0.1:8333", "anon": False,
                       "client_kwargs": {"region_name": "eu"},
                       "config_kwargs": {"retries": {"max_attempts": 3}},
                       "profile": "ci=prod"}
    with pytest.raises(ConfigError, match="key=value"):
        storage.parse_storage_options(["endpoint_url"])
    shown = storage.redact_options({"key": "AKIA", "secret": "s3cr3t", "endpoint_url": "u",
                                    "client_kwargs": {"aws_session_token": "t"}})
    assert shown == {"key": "***", "secret": "***", "endpoint_url": "u",
                     "client_kwargs": {"aws_session_token": "***"}}


def test_a_data_path_url_keeps_its_options_across_processes(tmp_path):
    pytest.importorskip("s3fs")
    dp = DataPath("s3://bucket/prefix", {"endpoint_url": "http://127.0.0.1:1", "key": "k",
                                         "secret": "s"}, "sqlite:////tmp/x.sqlite")
    assert dp.is_remote and str(dp.model("d", "e")) == "s3://bucket/prefix/models/d/e"
    back = pickle.loads(pickle.dumps(dp))
    assert back.storage_options == dp.storage_options and back.catalog_uri == dp.catalog_uri
    assert str(back.root) == "s3://bucket/prefix" and back.root.fs.storage_options[
        "endpoint_url"] == "http://127.0.0.1:1"
    # A remote path is never mistaken for a local file name.
    with pytest.raises(TypeError):
        open(dp.root / "x", "wb")  # noqa: SIM115
    local = DataPath(tmp_path)
    assert not local.is_remote and pickle.loads(pickle.dumps(local)).root == tmp_path


def test_unknown_protocols_and_missing_catalogs_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown protocol 'nosuch'"):
        DataPath("nosuch://bucket/x")
    pytest.importorskip("s3fs")
    with pytest.raises(ConfigError, match="needs a catalog.*--catalog-uri"):
        catalog_uri(DataPath("s3://bucket/x", {"endpoint_url": "http://127.0.0.1:1"}))
    assert shown_uri("mysql+pymysql://ciml:pw@db/ciml") == "mysql+pymysql://ciml:***@db/ciml"


def test_memory_file_system_publish_and_abandoned_work():
    """The same layer over another fsspec protocol (memory://)."""
    dp = DataPath(f"memory://ciml-{id(object())}")
    folder = dp.models / "ds"
    work = storage.make_work_dir(folder, "e")
    (work / "estimator" / "model.txt").write_bytes(b"w")
    (work / "metadata.json").write_bytes(b"{}")
    storage.publish_dir(work, folder / "e", "metadata.json")
    assert sorted((folder / "e").files()) == ["estimator/model.txt", "metadata.json"]
    assert not work.exists()
    # Another host's fresh work folder stays; with no grace period it goes.
    other = folder / ".tmp@1@x@e"
    (other / storage.OWNER_FILE).write_bytes(b'{"host": "elsewhere", "pid": 1}')
    assert storage.remove_abandoned(folder) == 0
    assert storage.remove_abandoned(folder, grace_s=-1) == 1


def _old_index(path):
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SCHEMA)
    conn.execute("INSERT INTO runs VALUES ('r1', 'job', 'cached', NULL, NULL, 'r1', "
                 "'2025-01-01T00:00:00.000000', 5, ?, 1.0)",
                 (json.dumps({"id": "r1", "build_name": "job", "status": "passed"}),))
    conn.execute("INSERT INTO human_labels VALUES ('r1', 'cause', 'oom', 'me', 'now')")
    conn.commit()
    conn.close()


def test_an_index_made_before_the_catalog_opens_unchanged(tmp_path):
    from ciml import human_labels
    from ciml.cache import RawCache

    dp = DataPath(tmp_path / "data")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    _old_index(tmp_path / "data" / "raw" / "index.sqlite")
    with RawCache(dp) as cache:
        assert cache.counts() == {"cached": 1, "unavailable": 0}
        assert [r.id for r in cache.runs("job")] == ["r1"]
        assert cache.incomplete_ids() == set()  # the column added since
        assert human_labels.labels_of(cache)["r1"]["cause"]["value"] == "oom"
    conn = sqlite3.connect(tmp_path / "data" / "raw" / "index.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def _claim(uri, run_id, barrier, results):
    catalog = Catalog(uri)
    barrier.wait()
    won = catalog.commit_cached(run_id, "job", f"{run_id}@{id(catalog)}", "", 3, {}, None)
    results.put(won)
    catalog.close()


def _own_mariadb_database(request):
    """A database of this test's own: the session's holds a subunit2sql ``runs`` table."""
    import uuid

    import pymysql

    base = request.getfixturevalue("mariadb_url")
    name = f"ciml_catalog_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")

    def drop():
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()

    request.addfinalizer(drop)
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.mark.parametrize("db", ["sqlite", "mariadb", "postgresql"])
def test_only_the_first_writer_of_a_run_wins(db, tmp_path, request):
    if db == "sqlite":
        uri = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    elif db == "mariadb":
        uri = _own_mariadb_database(request)
    else:
        uri = request.getfixturevalue("postgres_url")
    catalog = Catalog(uri)
    unavailable = f"u-{tmp_path.name}"
    catalog.mark_unavailable(unavailable, "job", "gone", "404", "", {})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    run_id = f"race-{tmp_path.name}"
    procs = [ctx.Process(target=_claim, args=(uri, run_id, barrier, results))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    wins = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
    assert sorted(wins) == [False, False, False, True]
    assert catalog.state(run_id) == CACHED
    # An unavailable run may become cached; a cached one never becomes unavailable.
    assert catalog.commit_cached(unavailable, "job", "u1@x", "", 1, {}, None)
    catalog.mark_unavailable(unavailable, "job", "gone", "404", "", {})
    assert catalog.state(unavailable) == CACHED
    catalog.close()


def test_the_poll_triggers_state_lives_in_an_object_store_data_path():
    import datetime as dt

    from ciml_plugins.triggers.poll import PollCursor

    dp = DataPath(f"memory://ciml-state-{id(object())}")
    path = dp.state / "poll-tempest.json"
    cursor = PollCursor(path)
    assert not cursor.exists
    start = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    cursor.add("r1", start)
    cursor.save()
    again = PollCursor(path)
    assert again.exists and again.cursor == start and "r1" in again.seen
    path.write_bytes(b"not json")
    with pytest.raises(Exception, match="poll state memory://.* is unreadable"):
        PollCursor(path)


def _exercise(catalog):
    """Every catalog method once; returns what each answered (rows as tuples)."""
    catalog.mark_unavailable("u1", "job", "missing", "404", "2025-01-01", {"id": "u1"})
    first = catalog.commit_cached("r1", "job", "r1", "2025-01-02", 5, {"id": "r1"}, None)
    again = catalog.commit_cached("r1", "job", "r1-other", "2025-01-02", 5, {"id": "r1"},
                                  None)
    catalog.commit_cached("r2", "other", "r2", "2025-01-03", 7, {"id": "r2"}, "inventory")
    catalog.commit_cached("r3", "job", "r3", "2025-01-01", 3, {"id": "r3"}, None)
    updated = catalog.update_record("r1", {"id": "r1", "x": 1}, None)
    not_cached = catalog.update_record("u1", {}, None)
    catalog.mark_unavailable("r1", "job", "missing", "404", "", {})  # stays cached
    catalog.put_labels([("r1", "cause", "oom", "me", "t1"), ("r1", "cause", "disk", "you",
                                                              "t2")])
    return {
        "first": first, "again": again, "updated": updated, "not_cached": not_cached,
        "state": [catalog.state(i) for i in ("r1", "u1", "nosuch")],
        "states": catalog.states(), "states_job": catalog.states("job"),
        "cached": [tuple(r) for r in catalog.cached()],
        "cached_job": [tuple(r) for r in catalog.cached("job", ("run_id", "dir", "samples"))],
        "incomplete": catalog.incomplete_ids(), "incomplete_job": catalog.incomplete_ids("job"),
        "unavailable": [tuple(r)[:4] for r in catalog.unavailable("job")],
        "row": catalog.cached_row("r1"), "no_row": catalog.cached_row("u1"),
        "counts": catalog.counts(), "counts_other": catalog.counts("other"),
        "dirs": catalog.dirs(), "labels": [tuple(r) for r in catalog.labels()],
    }


def test_the_sqlite3_catalog_answers_as_the_sqlalchemy_one(tmp_path):
    from ciml.catalog import SqlAlchemyCatalog, SqliteCatalog

    fast = Catalog(f"sqlite:///{tmp_path / 'a.sqlite'}")
    slow = SqlAlchemyCatalog(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert isinstance(fast, SqliteCatalog)
    assert _exercise(fast) == _exercise(slow)
    fast.close()
    slow.close()
    schema = [sqlite3.connect(tmp_path / name).execute(
        "SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        for name in ("a.sqlite", "b.sqlite")]
    assert schema[0] == schema[1]
    # Either side opens what the other made.
    assert SqlAlchemyCatalog(f"sqlite:///{tmp_path / 'a.sqlite'}").counts() == \
        Catalog(f"sqlite:///{tmp_path / 'b.sqlite'}").counts() == {"cached": 3,
                                                                   "unavailable": 1}


def test_a_catalog_uri_with_a_query_goes_through_sqlalchemy(tmp_path):
    from ciml.catalog import SqlAlchemyCatalog, sqlite_file

    assert sqlite_file(f"sqlite:///{tmp_path}/x.sqlite") == f"{tmp_path}/x.sqlite"
    for uri in (f"sqlite:///{tmp_path}/x.sqlite?timeout=5", "sqlite://", "sqlite:///:memory:",
                "mysql+pymysql://u:p@h/db"):
        assert sqlite_file(uri) is None
    assert isinstance(Catalog(f"sqlite:///{tmp_path}/x.sqlite?timeout=5"), SqlAlchemyCatalog)


def test_a_local_raw_cache_never_imports_sqlalchemy(tmp_path):
    import subprocess
    import sys

    code = f"""
import sys, types
import numpy as np
from ciml.cache import RawCache
from ciml.paths import DataPath
from ciml.records import RunRecord
from ciml import human_labels
with RawCache(DataPath({str(tmp_path)!r})) as cache:
    fetched = types.SimpleNamespace(name="m.csv", url="file:///m.csv", data=b"x", source=None)
    series = (np.arange(3, dtype=np.int64) * 10**9, np.ones((3, 2)), ["a", "b"])
    cache.store(RunRecord(id="r1", build_name="job", status="passed"), fetched, series)
    cache.mark_unavailable(RunRecord(id="r2", build_name="job", status="failed"), "missing", "404")
    assert [r.id for r in cache.runs("job")] == ["r1"]
    assert cache.series("r1").values.shape == (3, 2)
    assert cache.counts() == {{"cached": 1, "unavailable": 1}}
    cache.catalog.put_labels([("r1", "cause", "oom", "me", "now")])
    assert human_labels.labels_of(cache)["r1"]["cause"]["value"] == "oom"
    print(repr(cache.catalog))
assert "sqlalchemy" not in sys.modules, "sqlalchemy imported"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "index.sqlite" in done.stdout
