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
