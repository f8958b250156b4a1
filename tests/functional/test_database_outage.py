"""cache-data against a subunit2sql MariaDB that stalls, stops and restarts (issue 20).

Each test runs a MariaDB server of its own (the ``private_mariadb``
fixture) and pauses it with SIGSTOP, stops it and starts it again; the
shared server on 3306 is never touched.
"""

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from ciml.cache import RawCache
from ciml.generator import generate_history
from ciml.testing.servers import CIServer

JOB = "tempest-full"


@pytest.fixture
def history(private_mariadb, tmp_path):
    """40 runs in the private database, their logs on a local log server."""
    url = private_mariadb.create_database("subunit2sql")
    server = CIServer(root=tmp_path / "hist" / "logs").start()
    (tmp_path / "hist" / "logs").mkdir(parents=True)
    try:
        hist = generate_history(tmp_path / "hist", runs=40, seed=5, jobs=(JOB,),
                                duration=(60, 120), base_url=server.url, db_uri=url,
                                bad_fraction=0.0, tests=False)
        yield hist, server
    finally:
        server.stop()


def _cache_data(data_path, db_uri, *extra):
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
         "--data-path", str(data_path.root), "cache-data", "--db-uri", db_uri,
         "--build-name", JOB, "--batch-size", "5", "--workers", "2", "--processes", "0",
         "-f", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cached(data_path):
    try:
        with sqlite3.connect(data_path.raw / "index.sqlite", timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM runs WHERE state='cached'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_cached(data_path, proc, at_least):
    deadline = time.monotonic() + 120
    while _cached(data_path) < at_least and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _cached(data_path) >= at_least, proc.communicate(timeout=60)


def test_a_stalled_database_is_an_error_not_a_hang(private_mariadb, history, data_path):
    """20.1: with the server paused, cache-data says so instead of waiting for ever."""
    hist, _ = history
    private_mariadb.pause()
    try:
        proc = _cache_data(data_path, hist.db_uri, "--query-timeout", "2", "--retry-for", "0")
        # A bound for liveness only: the fix answers in about 2 s, the fault never.
        out, err = proc.communicate(timeout=120)
    finally:
        private_mariadb.resume()
    assert proc.returncode == 1
    assert "database did not answer in 2 s" in err
    assert "rerun cache-data to continue" in err
    assert len(err.strip().splitlines()) == 1, err


def test_an_outage_shorter_than_the_retries_costs_nothing(private_mariadb, history,
                                                          data_path):
    """20.2: the server stops mid-listing and comes back; cache-data carries on."""
    hist, logs = history
    logs.latency = 0.05  # so that the listing is still going when the server stops
    proc = _cache_data(data_path, hist.db_uri, "--query-timeout", "5", "--retry-for", "120")
    try:
        _wait_cached(data_path, proc, 6)
        private_mariadb.stop()
        time.sleep(2)  # the outage: queries are refused meanwhile
        private_mariadb.start()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["selected"] == summary["cached"] == 40
    assert "trying again in" in err
    with RawCache(data_path) as cache:
        assert len(cache.runs(JOB)) == 40


def test_giving_up_reports_what_is_stored_and_a_rerun_resumes(private_mariadb, history,
                                                             data_path):
    """20.2: a longer outage ends with the summary so far and "rerun to continue"."""
    hist, logs = history
    logs.latency = 0.05
    proc = _cache_data(data_path, hist.db_uri, "--query-timeout", "5", "--retry-for", "3")
    try:
        _wait_cached(data_path, proc, 6)
        private_mariadb.stop()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    stored = _cached(data_path)
    assert 6 <= stored < 40
    assert f"before that: {stored} run(s) cached" in err
    assert "rerun cache-data to continue" in err
    assert "still failing after 3 s of retries" in err
    private_mariadb.start()
    logs.latency = 0.0
    proc = _cache_data(data_path, hist.db_uri)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["skipped_cached"] == stored
    assert summary["cached"] == 40 - stored and summary["total_cached"] == 40


def test_the_poll_trigger_says_that_the_database_stalls(private_mariadb, history, data_path,
                                                        caplog):
    """20.1: ``watch --trigger poll`` logs the stall and its retries instead of nothing."""
    import datetime as dt
    import logging

    from ciml.errors import SourceError
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource
    from ciml_plugins.triggers.poll import PollTrigger

    hist, _ = history
    source = Subunit2sqlResultSource(db_uri=hist.db_uri, query_timeout=1, retry_for=2)
    trigger = PollTrigger(once=True, since=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    trigger.setup(data_path=data_path, build_name=JOB, result_source=source)
    events = []
    private_mariadb.pause()
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as info:
            trigger.run(events.append)
    finally:
        private_mariadb.resume()
        source.close()
    assert "database did not answer in 1 s" in str(info.value) and info.value.transient
    assert any("did not answer" in r.getMessage() and "trying again in" in r.getMessage()
               for r in caplog.records)
    assert events == []
    # Once the server answers again, the same watcher catches up.
    source = Subunit2sqlResultSource(db_uri=hist.db_uri, query_timeout=5)
    trigger.setup(data_path=data_path, build_name=JOB, result_source=source)
    trigger.run(events.append)
    source.close()
    assert len(events) == 40
