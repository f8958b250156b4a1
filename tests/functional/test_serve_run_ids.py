"""Run ids holding ``/`` (Jenkins folders, ``org/repo#12``) reach their page and API routes."""

import dataclasses
import datetime as dt
import re
import urllib.parse

import pytest
import requests

TOKEN = "run-id-token"
RUN = "periodic/nova/stable#12"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.paths import DataPath
    from ciml.prediction_store import PredictionStore, default_uri
    from ciml.serve import create_app
    from ciml.serve.server import serve_in_thread
    from ciml.testing.estimators import synthetic_runs

    dp = DataPath(tmp_path_factory.mktemp("run-ids"))
    runs, frames = synthetic_runs(n=2, seed=5, build_name="periodic-nova")
    run = dataclasses.replace(runs[0], id=RUN)
    with RawCache(dp) as cache:
        cache.store(run, FetchedMetrics("dstat-csv_log.txt", b"raw", "file:///x"),
                    frames[runs[0].id])
    with PredictionStore(default_uri(dp)) as store:
        store.add({"run_id": RUN, "build_name": "periodic-nova", "model": "ds/gb",
                   "predicted": "failed", "probabilities": {"failed": 0.8, "passed": 0.2},
                   "time": dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).isoformat()})
    with serve_in_thread(create_app(dp, token=TOKEN)) as url:
        yield url, dp


def test_a_run_id_with_slashes_has_a_page_an_api_entry_and_a_label_form(server):
    from ciml.cache import RawCache
    from ciml.human_labels import labels_of

    url, dp = server
    quoted = urllib.parse.quote(RUN, safe="")
    with requests.Session() as http:
        home = http.get(url + "/", headers={"Accept": "text/html"}, timeout=30)
        # The home page links the run with its id quoted, and the link leads to it.
        assert f'href="/runs/{quoted}"' in home.text
        page = http.get(f"{url}/runs/{quoted}", headers={"Accept": "text/html"}, timeout=30)
        assert page.status_code == 200, page.text[:300]
        assert RUN in page.text
        action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
        assert action == f"/runs/{quoted}/labels"
        api = http.get(f"{url}/api/v1/runs/{quoted}", timeout=30)
        assert api.status_code == 200 and api.json()["id"] == RUN
        assert api.json()["predictions"][0]["run_id"] == RUN
        assert http.get(f"{url}/api/v1/predictions", params={"run": RUN},
                        timeout=30).json()["items"][0]["run_id"] == RUN
        # The form: CSRF cookie and field from the page, the token as a field.
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        posted = http.post(url + action, data={"csrf": csrf, "token": TOKEN, "key": "cause",
                                               "value": "oom", "who": "test"},
                           headers={"Origin": url}, allow_redirects=False, timeout=30)
        assert posted.status_code == 303, posted.text[:300]
        assert posted.headers["location"].startswith(f"/runs/{quoted}?saved=cause")
        labelled = http.post(f"{url}/api/v1/runs/{quoted}/labels", timeout=30,
                             json={"labels": {"owner": "nova"}},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert labelled.status_code == 200, labelled.text
    with RawCache(dp) as cache:
        labels = labels_of(cache, {RUN})[RUN]
    assert {k: v["value"] for k, v in labels.items()} == \
        {"cause": "oom", "owner": "nova"}


def test_unknown_ids_with_slashes_are_404_not_another_route(server):
    url, _ = server
    for path in ("/runs/a%2Fb", "/api/v1/runs/a%2Fb", "/runs/a%2Fb/plot.svg?model=ds/gb"):
        r = requests.get(url + path, timeout=30)
        assert r.status_code == 404, (path, r.status_code)
        assert "a/b" in r.json()["error"]
