"""The prediction store on SQLite and on a real MariaDB: upserts, filters, paging, pruning."""

import datetime as dt
import json
import threading

import pytest

from ciml.errors import ConfigError
from ciml.prediction_store import (
    ROW_KEYS,
    PredictionStore,
    StoreError,
    StoreReporter,
    parse_age,
    parse_since,
)

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)


def record(i, *, job=None, predicted=None, unusual=None, model="ds/exp", error=None,
           when=None):
    """A prediction record shaped as ciml.online makes them."""
    predicted = predicted if predicted is not None else ("oom" if i % 3 == 0 else "failed")
    rec = {
        "run_id": f"run-{i:05d}", "build_uuid": f"uuid-{i}", "build_name":
            job or ("tempest-full" if i % 2 else "nova-live"),
        "status": "failed", "predicted": None if error else predicted,
        "probabilities": {} if error else {predicted: 0.9, "passed": 0.1},
        "unusual": None if error else {
            "score": float(i), "percentile": 99.5 if unusual else 50.0,
            "unusual": bool(unusual if unusual is not None else i % 5 == 0),
            "features": [{"feature": "mem_used", "z": 4.2}]},
        "explanation": None if error else {
            "class": predicted, "method": "occlusion",
            "features": [{"feature": "mem_used", "contribution": 0.4, "value": 7.8e9,
                          "typical": 3.1e9, "typical_low": 2e9, "typical_high": 4e9}],
            "windows": [{"start_s": 600, "end_s": 660, "contribution": 0.3,
                         "features": ["mem_used"]}]},
        "actual": "failed", "dataset": model.split("/")[0],
        "experiment": model.split("/")[1], "model": model,
        "dataset_fingerprint": "d" * 16, "model_fingerprint": "m" * 16,
        "artifacts_url": "https://logs.example.org/x/", "trigger": "poll",
        "metadata": {"change": "1234", "patchset": "2", "project": "openstack/nova"},
        "time": (when or T0 + dt.timedelta(seconds=i)).isoformat(),
    }
    if error:
        rec.update(error=error, reason="missing")
    return rec


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'predictions.sqlite'}"
    elif request.param == "mariadb":
        uri = request.getfixturevalue("mariadb_url")
    else:
        uri = request.getfixturevalue("postgres_url")
    s = PredictionStore(uri)
    yield s
    # The MariaDB database lasts the session: each test starts with no tables.
    s._metadata.drop_all(s.engine)
    s.close()


def test_a_record_goes_in_and_comes_back_whole(store):
    rec = record(3, unusual=True)
    row_id = store.add(rec)
    row = store.get(row_id)
    assert set(ROW_KEYS) <= set(row)
    assert row["run_id"] == "run-00003" and row["build_name"] == "tempest-full"
    assert row["predicted"] == "oom" and row["probability"] == pytest.approx(0.9)
    assert row["unusual"] is True and row["unusual_percentile"] == 99.5
    assert row["model_fingerprint"] == "m" * 16 and row["dataset_fingerprint"] == "d" * 16
    assert row["explanation"].startswith("mem_used 7.8e+09 (typ 3.1e+09)")
    assert row["time"] == (T0 + dt.timedelta(seconds=3)).isoformat()
    assert row["record"] == json.loads(json.dumps(rec))
    assert row["probabilities"] == {"oom": 0.9, "passed": 0.1}


def test_storing_a_run_again_by_the_same_model_replaces_its_row(store):
    first = store.add(record(1))
    again = record(1, predicted="timeout")
    assert store.add(again) == first
    assert store.count() == 1
    assert store.get(first)["predicted"] == "timeout"
    # Another model's prediction of the same run is a row of its own.
    other = store.add(record(1, model="ds/gbdt"))
    assert other != first
    # Same time: the newer row first.
    assert [r["model"] for r in store.for_run("run-00001")] == ["ds/gbdt", "ds/exp"]
    assert store.count(run_id="run-00001") == 2


def test_add_many_returns_ids_in_order_and_a_repeat_in_one_call_keeps_the_last(store):
    ids = store.add_many([record(1), record(2), record(1, predicted="timeout")])
    assert ids[0] == ids[2] and ids[0] != ids[1]
    assert store.get(ids[0])["predicted"] == "timeout"
    assert store.count() == 2


def test_filters_match_what_they_say(store):
    store.add_many([record(i) for i in range(60)])
    store.add(record(99, error="no dstat file"))
    assert store.count() == 61
    assert store.count(build_name="tempest-full") == 31  # odd i, and 99
    assert store.count(predicted="oom") == 20
    assert store.count(unusual=True) == 12
    assert store.count(unusual=False) == 49  # the error row has no unusual score
    assert store.count(errors=True) == 1
    assert store.count(since=T0 + dt.timedelta(seconds=50)) == 11
    assert store.count(since=(T0 + dt.timedelta(seconds=50)).isoformat(),
                       until=T0 + dt.timedelta(seconds=55)) == 5
    rows = store.list(build_name="nova-live", predicted="oom", unusual=True, limit=100).items
    assert rows and all(r["build_name"] == "nova-live" and r["predicted"] == "oom" and
                        r["unusual"] for r in rows)
    assert [r["run_id"] for r in rows] == ["run-00030", "run-00000"]
    assert store.classes() == {"failed": 40, "oom": 20}
    assert store.classes("nova-live") == {"failed": 20, "oom": 10}
    jobs = {j["build_name"]: j for j in store.jobs()}
    assert jobs["tempest-full"]["predictions"] == 31 and jobs["tempest-full"]["errors"] == 1
    assert jobs["nova-live"]["unusual"] == 6
    assert jobs["tempest-full"]["last"] == (T0 + dt.timedelta(seconds=99)).isoformat()


def test_keyset_pages_cover_every_row_once_newest_first_even_with_equal_times(store):
    # Equal times: the id breaks the tie, so no row is skipped or repeated.
    same = T0 + dt.timedelta(hours=1)
    store.add_many([record(i, when=same if i % 4 == 0 else None) for i in range(103)])
    seen, cursor, pages = [], None, 0
    while True:
        page = store.list(limit=10, after=cursor)
        seen += [(r["time"], r["id"]) for r in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 11 and len(seen) == 103 and len(set(seen)) == 103
    assert seen == sorted(seen, reverse=True)
    # Offsets give the same rows.
    by_offset = [(r["time"], r["id"]) for r in store.list(limit=10, offset=20).items]
    assert by_offset == seen[20:30]
    # A filtered walk pages the filtered rows only.
    walked = [r["run_id"] for r in store]
    assert len(walked) == 103


def test_a_bad_cursor_is_a_clear_error(store):
    with pytest.raises(ConfigError, match="bad page cursor"):
        store.list(after="yesterday")


def test_prune_deletes_only_what_is_older(store):
    old = T0 - dt.timedelta(days=100)
    store.add_many([record(i, when=old + dt.timedelta(seconds=i)) for i in range(7)] +
                   [record(i) for i in range(7, 10)])
    store.claim_report("gerrit", "k-old", "run-00001")
    assert store.prune(T0 - dt.timedelta(days=1), batch=3) == 7
    assert store.count() == 3
    assert store.prune(T0 - dt.timedelta(days=1)) == 0
    assert [r["run_id"] for r in store.list().items] == ["run-00009", "run-00008",
                                                          "run-00007"]


def test_claims_are_once_only_and_can_be_released(store):
    assert store.claim_report("gerrit", "nova~1234,2,tempest-full", "run-1")
    assert not store.claim_report("gerrit", "nova~1234,2,tempest-full", "run-2")
    assert store.claim_report("gerrit-dry-run", "nova~1234,2,tempest-full", "run-2")
    store.finish_report("gerrit", "nova~1234,2,tempest-full", "posted")
    assert store.reports_of("run-1")[0]["state"] == "done"
    store.release_report("gerrit", "nova~1234,2,tempest-full")
    assert store.claim_report("gerrit", "nova~1234,2,tempest-full", "run-3")


def test_concurrent_claims_give_exactly_one_winner(store):
    results = []

    def claim(n):
        other = PredictionStore(store.uri)
        try:
            results.append(other.claim_report("gerrit", "race", f"run-{n}"))
        finally:
            other.close()

    store.count()  # tables made once, before the race
    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_storage_is_measured(store):
    store.add_many([record(i) for i in range(200)])
    size = store.storage()
    assert size["predictions"] == 200
    if store.dialect == "sqlite":
        assert 200 < size["bytes_per_prediction"] < 20000
    else:
        assert size["bytes"] is not None


def test_a_reader_does_not_create_a_missing_sqlite_store(tmp_path):
    path = tmp_path / "predictions.sqlite"
    reader = PredictionStore(f"sqlite:///{path}", create=False)
    page = reader.list()
    assert page.items == [] and page.next_cursor is None
    assert reader.count() == 0 and reader.jobs() == []
    assert not path.exists()


def test_a_store_in_a_missing_folder_and_a_bad_url_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        PredictionStore(f"sqlite:///{tmp_path / 'nope' / 'p.sqlite'}")
    with pytest.raises(ConfigError, match="bad prediction store URL"):
        PredictionStore("::not a url::")


def test_an_unreachable_server_is_a_store_error_without_the_password():
    store = PredictionStore("mysql+pymysql://ciml:hunter2@127.0.0.1:1/ciml",
                            connect_timeout=2)
    with pytest.raises(StoreError) as info:
        store.add(record(1))
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value) and "cannot" in str(info.value)
    assert "hunter2" not in store.url and "hunter2" not in repr(store)


def test_the_reporter_keeps_predictions_while_the_store_is_away_and_stores_them_later(
        tmp_path, caplog):
    path = tmp_path / "predictions.sqlite"
    store = PredictionStore(f"sqlite:///{path}")
    reporter = StoreReporter(store, background=False)
    broken = {"on": True}
    real = store.add_many

    def flaky(records, **kw):
        if broken["on"]:
            from ciml.prediction_store import StoreError

            raise StoreError("prediction store x: cannot store predictions: gone away")
        return real(records, **kw)

    store.add_many = flaky
    assert reporter.add(record(1)) is False
    assert reporter.add(record(2)) is False
    assert reporter.stats["failed"] == 2
    # Said once per outage, not once per prediction.
    assert sum("kept in memory" in r.getMessage() for r in caplog.records) == 1
    broken["on"] = False
    assert reporter.add(record(3)) is True
    assert store.count() == 3 and reporter.stats["stored"] == 3
    assert any("answers again" in r.getMessage() for r in caplog.records)
    reporter.close()


def test_the_background_writer_stores_a_burst_in_few_transactions(tmp_path):
    store = PredictionStore(f"sqlite:///{tmp_path / 'p.sqlite'}")
    batches = []
    real = store.add_many

    def counting(records, **kw):
        records = list(records)
        batches.append(len(records))
        return real(records, **kw)

    store.add_many = counting
    reporter = StoreReporter(store)
    # Longer than the test: closing must end the wait, and write what came.
    reporter.BATCH_WINDOW = 600.0
    for i in range(20):
        reporter.ciml_prediction_made(record(i))
    reporter.close()
    assert store.count() == 20 and reporter.stats["stored"] == 20
    # What arrived while the writer waited went in one transaction.
    assert batches == [20]


def test_the_reporter_prunes_with_a_retention(tmp_path):
    store = PredictionStore(f"sqlite:///{tmp_path / 'p.sqlite'}")
    store.add(record(1, when=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)))
    reporter = StoreReporter(store, retention=dt.timedelta(days=30), background=False)
    reporter.add(record(2, when=dt.datetime.now(dt.timezone.utc)))
    assert [r["run_id"] for r in store.list().items] == ["run-00002"]
    reporter.close()


@pytest.mark.parametrize("text,seconds", [("90d", 90 * 86400), ("12h", 43200),
                                          ("30min", 1800), ("2w", 1209600), ("45s", 45)])
def test_ages(text, seconds):
    assert parse_age(text).total_seconds() == seconds


def test_since_takes_iso_times_and_ages():
    now = dt.datetime(2026, 12, 2, 12, 0)
    assert parse_since("24h", now=now) == dt.datetime(2026, 12, 1, 12, 0)
    assert parse_since("2026-12-01T10:00:00+02:00") == dt.datetime(2026, 12, 1, 8, 0)
    assert parse_since("2026-12-01") == dt.datetime(2026, 12, 1)
    with pytest.raises(ConfigError, match="not a time"):
        parse_since("last tuesday")
    with pytest.raises(ConfigError, match="not a duration"):
        parse_age("ten days")


def test_the_hook_never_waits_for_a_database_that_stops_and_comes_back(private_mariadb):
    """A real MariaDB stopped under a watcher's store, then started again."""
    import time

    store = PredictionStore(private_mariadb.create_database("predictions"),
                            connect_timeout=2)
    reporter = StoreReporter(store)
    reporter.MAX_DELAY = 1.0
    reporter.ciml_prediction_made(record(1))
    deadline = time.monotonic() + 30
    while store.count() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.count() == 1
    private_mariadb.stop()
    start = time.monotonic()
    for i in range(2, 12):
        reporter.ciml_prediction_made(record(i))
    assert time.monotonic() - start < 1.0  # queued, not written, by the caller
    deadline = time.monotonic() + 30
    while not reporter.stats["failed"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reporter.stats["failed"] >= 1
    private_mariadb.start()
    deadline = time.monotonic() + 60
    while reporter.stats["stored"] < 11 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reporter.stats["stored"] == 11 and reporter.stats["lost"] == 0
    assert store.count() == 11
    reporter.close()


def test_a_data_path_on_object_storage_has_no_default_store():
    """SQLite cannot live on object storage: the error says what to give instead."""
    from ciml.paths import DataPath
    from ciml.prediction_store import NoDefaultStore, default_uri

    with pytest.raises(NoDefaultStore, match="--store-uri"):
        default_uri(DataPath("memory://ciml-no-default-store"))
