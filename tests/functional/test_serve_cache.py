"""Shared copies of the home page and prediction lists, over real HTTP (ciml.serve.cache).

The clock the copies and the store's counts age by is replaced by one the
test moves, so "at most TTL seconds behind the store" is checked without
waiting.
"""

import datetime as dt
import gzip

import pytest
import requests

from ciml.prediction_store import PredictionStore, default_uri
from ciml.serve.server import serve_in_thread

TOKEN = "cache-test-token"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def _record(i, job="tempest-full", predicted="oom"):
    when = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i)
    return {"run_id": f"run-{i}", "build_name": job, "model": "d/e", "dataset": "d",
            "experiment": "e", "predicted": predicted,
            "probabilities": {predicted: 0.9, "passed": 0.1}, "time": when.isoformat()}


@pytest.fixture
def clock(monkeypatch):
    import ciml.serve.app
    import ciml.serve.cache

    fake = Clock()
    monkeypatch.setattr(ciml.serve.cache, "time", fake)
    monkeypatch.setattr(ciml.serve.app, "time", fake)
    return fake


@pytest.fixture
def store(tmp_path):
    with PredictionStore(default_uri(tmp_path)) as s:
        s.add_many([_record(i) for i in range(3)])
        yield s


def _serve(tmp_path, **options):
    from ciml.serve.app import create_app

    return serve_in_thread(create_app(tmp_path, token=TOKEN, **options))


def _ids(url, **params):
    answer = requests.get(url + "/api/v1/predictions", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return [r["run_id"] for r in answer.json()["items"]]


def test_a_repeated_view_is_the_same_copy_with_etag_304_and_gzip(tmp_path, store, clock):
    with _serve(tmp_path) as url:
        first = requests.get(url + "/", timeout=30)
        again = requests.get(url + "/", timeout=30)
        assert first.status_code == again.status_code == 200
        assert first.headers["etag"] == again.headers["etag"]
        assert first.text == again.text and "tempest-full" in first.text
        # The guard's headers are on a copy too.
        assert again.headers["x-frame-options"] == "DENY"
        assert again.headers["content-encoding"] == "gzip"
        raw = requests.get(url + "/", headers={"Accept-Encoding": "identity"}, timeout=30)
        assert "content-encoding" not in raw.headers and raw.text == first.text
        # Stored gzipped bytes decode to the page itself.
        zipped = requests.get(url + "/", stream=True, timeout=30)
        assert gzip.decompress(zipped.raw.read()).decode() == first.text
        not_modified = requests.get(url + "/", timeout=30,
                                    headers={"If-None-Match": first.headers["etag"]})
        assert not_modified.status_code == 304 and not_modified.content == b""
        other = requests.get(url + "/", timeout=30, headers={"If-None-Match": '"other"'})
        assert other.status_code == 200 and other.text == first.text


def test_a_new_prediction_shows_within_the_ttl(tmp_path, store, clock):
    from ciml.serve.app import SUMMARY_MAX_AGE

    with _serve(tmp_path, cache_ttl=2.0) as url:
        assert _ids(url) == ["run-2", "run-1", "run-0"]
        home = requests.get(url + "/", timeout=30).text
        # A watcher in another process stores two predictions, one of a new job.
        store.add(_record(7))
        store.add(_record(8, job="grenade"))
        clock.now += 1.0
        assert _ids(url) == ["run-2", "run-1", "run-0"]  # a copy, under 2 s old
        assert requests.get(url + "/", timeout=30).text == home
        clock.now += 1.5
        assert _ids(url) == ["run-8", "run-7", "run-2", "run-1", "run-0"]
        page = requests.get(url + "/", timeout=30).text
        assert "run-7" in page
        # A new job gets its section once the counts are read again.
        clock.now += SUMMARY_MAX_AGE
        page = requests.get(url + "/", timeout=30).text
        assert "grenade" in page and "run-8" in page


def test_each_url_has_its_own_copy(tmp_path, store, clock):
    store.add(_record(5, job="grenade", predicted="timeout"))
    with _serve(tmp_path) as url:
        assert _ids(url, job="grenade") == ["run-5"]
        assert _ids(url, **{"class": "oom"}) == ["run-2", "run-1", "run-0"]
        assert _ids(url, limit=1) == ["run-5"]
        nxt = requests.get(url + "/api/v1/predictions", params={"limit": 1},
                           timeout=30).json()["next_cursor"]
        assert _ids(url, limit=1, after=nxt) == ["run-2"]


def test_errors_are_not_kept(tmp_path, store, clock):
    with _serve(tmp_path) as url:
        for _ in range(2):
            bad = requests.get(url + "/api/v1/predictions", params={"unusual": "maybe"},
                               timeout=30)
            assert bad.status_code == 400 and "etag" not in bad.headers
            assert "unusual" in bad.json()["error"]


@pytest.mark.parametrize("options", [{"cache_ttl": 0}, {"protect_reads": True}])
def test_no_copies_when_off_or_when_reads_need_the_token(tmp_path, store, clock, options):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _serve(tmp_path, **options) as url:
        first = requests.get(url + "/api/v1/predictions", headers=auth, timeout=30)
        assert first.status_code == 200 and "etag" not in first.headers
        store.add(_record(9))
        again = requests.get(url + "/api/v1/predictions", headers=auth, timeout=30)
        assert again.json()["items"][0]["run_id"] == "run-9"
        if options.get("protect_reads"):
            # A copy made for one visitor is never handed to another.
            assert requests.get(url + "/api/v1/predictions", timeout=30).status_code == 401
