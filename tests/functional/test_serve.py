"""``ciml serve`` over real HTTP: a uvicorn server on a loopback port, a real data path.

The data path holds a raw cache of synthetic runs (dstat column names, so a
real dstat file can be uploaded), a dataset built from it, a trained gbdt
model and a prediction store filled by that model.
"""

import datetime as dt
import json
import re
import subprocess
import sys
import time

import pytest
import requests

pytest.importorskip("fastapi")
pytest.importorskip("lightgbm")

TOKEN = "t0ken-for-tests"
JOB = "tempest-full"
EVIL = "<script>alert('x')</script>"


def _runs(n=90):
    from ciml.testing.estimators import synthetic_runs

    runs, frames = synthetic_runs(n=n, seed=3, build_name=JOB)
    names = {"usr": "cpu_usr", "sys": "cpu_sys", "used": "mem_used", "free": "mem_free"}
    frames = {k: f.rename(columns=names) for k, f in frames.items()}
    # A run whose metadata a hostile CI system filled with markup.
    runs[-1].metadata["node_provider"] = EVIL
    return runs, frames


@pytest.fixture(scope="module")
def served_data(tmp_path_factory):
    """``(data_path, predictions stored)``: cache, dataset, model, store."""
    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.dataset import build_dataset
    from ciml.experiment import Experiment
    from ciml.model import train_model
    from ciml.online import Predictor
    from ciml.paths import DataPath
    from ciml.prediction_store import PredictionStore, default_uri

    dp = DataPath(tmp_path_factory.mktemp("serve"))
    runs, frames = _runs()
    with RawCache(dp) as cache:
        for run in runs:
            cache.store(run, FetchedMetrics("dstat-csv_log.txt", b"raw", "file:///x"),
                        frames[run.id])
    build_dataset(dp, "ds", JOB, class_label="status", seed=0, progress=False,
                  aggregation_functions=("mean", "max", "min"), executor="serial")
    Experiment.create("gb", "gbdt", {"trees": 30, "min_data_in_leaf": 3}).save(dp)
    train_model(dp, "ds", "gb")
    predictor = Predictor.load(dp, "ds", "gb")
    store = PredictionStore(default_uri(dp))
    start = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    for i, run in enumerate(runs[-40:]):
        record = predictor.record(run, frames[run.id])
        record["time"] = (start + dt.timedelta(minutes=i)).isoformat()
        store.add(record)
    error = predictor.error_record(RuntimeError("logs gone"), run=runs[0])
    error["reason"] = "missing"
    error["time"] = start.isoformat()
    store.add(error)
    store.close()
    return dp, 41


@pytest.fixture(scope="module")
def server(served_data):
    from ciml.serve import create_app
    from ciml.serve.server import serve_in_thread

    dp, _ = served_data
    app = create_app(dp, token=TOKEN)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def _html(session, url, **kw):
    return session.get(url, headers={"Accept": "text/html"}, timeout=30, **kw)


# -- the API --------------------------------------------------------------------


def test_predictions_page_through_every_row_once(server, served_data, http):
    url, _ = server
    _, stored = served_data
    seen = []
    next_url = "/api/v1/predictions?limit=7"
    pages = 0
    while next_url:
        r = http.get(url + next_url, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [row["id"] for row in body["items"]]
        next_url = body["next"]
        pages += 1
    assert len(seen) == stored == len(set(seen))
    assert pages == -(-stored // 7)
    times = [row["time"] for row in http.get(url + "/api/v1/predictions?limit=1000",
                                              timeout=30).json()["items"]]
    assert times == sorted(times, reverse=True)


def test_predictions_filter_by_class_job_and_errors(server, http):
    url, _ = server
    rows = http.get(url + "/api/v1/predictions", params={"class": "failed", "limit": 1000},
                    timeout=30).json()["items"]
    assert rows and all(r["predicted"] == "failed" for r in rows)
    errors = http.get(url + "/api/v1/predictions", params={"errors": "true"},
                      timeout=30).json()["items"]
    assert [e["reason"] for e in errors] == ["missing"]
    assert http.get(url + "/api/v1/predictions", params={"job": "nosuch"},
                    timeout=30).json()["items"] == []
    bad = http.get(url + "/api/v1/predictions", params={"limit": 0}, timeout=30)
    assert bad.status_code == 400 and "limit" in bad.json()["error"]
    bad = http.get(url + "/api/v1/predictions", params={"unusual": "maybe"}, timeout=30)
    assert bad.status_code == 400 and "unusual: expected true or false" in bad.json()["error"]
    bad = http.get(url + "/api/v1/predictions", params={"since": "yesterday"}, timeout=30)
    assert bad.status_code == 400 and "not a time" in bad.json()["error"]


def test_one_prediction_and_jobs(server, http):
    url, _ = server
    first = http.get(url + "/api/v1/predictions?limit=1", timeout=30).json()["items"][0]
    full = http.get(url + f"/api/v1/predictions/{first['id']}", timeout=30).json()
    assert full["record"]["run_id"] == first["run_id"]
    assert http.get(url + "/api/v1/predictions/999999", timeout=30).status_code == 404
    jobs = http.get(url + "/api/v1/jobs", timeout=30).json()["items"]
    assert [j["build_name"] for j in jobs] == [JOB]


def test_runs_with_labels_datasets_models_plugins(server, http):
    url, _ = server
    runs = http.get(url + "/api/v1/runs?limit=10", timeout=30).json()
    assert runs["total"] == 90 and len(runs["items"]) == 10
    assert runs["items"][0]["id"] == "run-0089"  # newest first
    run = http.get(url + "/api/v1/runs/run-0010", timeout=30).json()
    assert run["run"]["status"] in ("passed", "failed") and run["state"] == "cached"
    ds = http.get(url + "/api/v1/datasets/ds", timeout=30).json()
    assert ds["classes"] == ["failed", "passed"] or ds["classes"] == ["passed", "failed"]
    assert sum(ds["splits"].values()) == 90
    classes = http.get(url + "/api/v1/datasets/ds/classes", timeout=30).json()
    assert sum(sum(c.values()) for c in classes["counts"].values()) == 90
    assert http.get(url + "/api/v1/datasets/ds/splits", timeout=30).status_code == 200
    assert http.get(url + "/api/v1/datasets/ds/profile", timeout=30).status_code == 200
    assert http.get(url + "/api/v1/datasets/nosuch", timeout=30).status_code == 404
    model = http.get(url + "/api/v1/models/ds/gb", timeout=30).json()
    assert model["macro_f1"] is not None and model["baseline_macro_f1"] is not None
    assert any(r["metric"] == "macro_f1" for r in model["rows"])
    assert model["operating_point"]["kind"] == "threshold"
    assert model["importance"]
    assert [m["name"] for m in http.get(url + "/api/v1/models", timeout=30).json()[
        "items"]] == ["ds/gb"]
    names = {p["name"] for p in http.get(url + "/api/v1/plugins", timeout=30).json()["items"]}
    assert {"dstat", "gbdt", "poll"} <= names


def test_label_needs_the_token_and_lands_in_run_label_store(server, served_data, http,
                                                            run_ciml):
    url, _ = server
    dp, _ = served_data
    target = url + "/api/v1/runs/run-0020/labels"
    body = {"labels": {"cause": "oom"}, "who": "alice"}
    assert http.post(target, json=body, timeout=30).status_code == 401
    assert http.post(target, json=body, headers={"Authorization": "Bearer nope"},
                     timeout=30).status_code == 403
    # A cookie is never a credential for the API.
    http.cookies.set("ciml_session", "x")
    assert http.post(target, json=body, timeout=30).status_code == 401
    r = http.post(target, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                  timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["value"] == "oom"
    shown = http.get(url + "/api/v1/runs/run-0020", timeout=30).json()
    assert shown["run"]["human_labels"]["cause"]["value"] == "oom"
    labelled = http.get(url + "/api/v1/runs?labelled=true", timeout=30).json()
    assert "run-0020" in [r["id"] for r in labelled["items"]]
    rc, out, err = run_ciml(["--data-path", str(dp.root), "run", "show", "run-0020",
                             "-f", "json"])
    assert rc == 0, err
    assert json.loads(out)["human_labels"]["cause"]["who"] == "alice"
    bad = http.post(target, json={"labels": {"bad key!": "x"}},
                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert bad.status_code == 400 and "bad label key" in bad.json()["error"]
    missing = http.post(url + "/api/v1/runs/nosuch/labels", json=body,
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert missing.status_code == 404


def test_predict_a_cached_run_and_an_uploaded_dstat_file(server, sample_data, http):
    url, app = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = http.post(url + "/api/v1/predict", json={"model": "ds/gb", "run_id": "run-0001"},
                  headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["run_id"] == "run-0001" and record["predicted"] in ("passed", "failed")
    assert app.state.ciml.store.for_run("run-0001")[0]["predicted"] == record["predicted"]
    assert http.post(url + "/api/v1/predict", json={"model": "ds/gb", "run_id": "run-0001"},
                     timeout=30).status_code == 401
    # A run id is never a path on the server.
    r = http.post(url + "/api/v1/predict", json={"model": "ds/gb", "run_id": "/etc/passwd"},
                  headers=auth, timeout=30)
    assert r.status_code == 404
    dstat = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes()
    r = http.post(url + "/api/v1/predict", data={"model": "ds/gb"},
                  files={"file": ("dstat.csv", dstat, "text/csv")}, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["run_id"] == "upload:dstat.csv" and r.json()["predicted"]
    r = http.post(url + "/api/v1/predict", data={"model": "ds/gb"},
                  files={"file": ("x.csv", b"<html>not dstat</html>", "text/csv")},
                  headers=auth, timeout=60)
    assert r.status_code == 422 and "error" in r.json()
    r = http.post(url + "/api/v1/predict", data={"model": "nosuch/gb"},
                  files={"file": ("d.csv", dstat, "text/csv")}, headers=auth, timeout=60)
    assert r.status_code == 404


def test_uploads_and_bodies_are_size_limited(served_data, http):
    from ciml.serve import create_app
    from ciml.serve.server import serve_in_thread

    dp, _ = served_data
    app = create_app(dp, token=TOKEN, max_upload=1024)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve_in_thread(app) as url:
        r = http.post(url + "/api/v1/predict", data={"model": "ds/gb"},
                      files={"file": ("big.csv", b"x" * 4096, "text/csv")}, headers=auth,
                      timeout=30)
        assert r.status_code == 413
        # Without a Content-Length: counted as it streams.
        r = http.post(url + "/api/v1/predict", data=iter([b"x" * 800] * 4), headers={
            **auth, "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413
        r = http.post(url + "/api/v1/runs/run-0001/labels", headers=auth, timeout=30,
                      json={"labels": {"cause": "x" * (70 * 1024)}})
        assert r.status_code == 413


# -- pages ----------------------------------------------------------------------


def test_home_page_lists_recent_predictions_per_job_with_filters(server, http):
    url, _ = server
    r = _html(http, url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f"<h2>{JOB}</h2>" in r.text
    assert r.text.count('<a href="/runs/') == 10
    failed = _html(http, url + "/", params={"class": "failed", "job": JOB})
    classes = re.findall(r'<td class="cls">([^<]*)</td>', failed.text)
    assert classes and set(classes) == {"failed"}
    none = _html(http, url + "/", params={"job": "nosuch"})
    assert "no predictions" in none.text


def test_script_in_metadata_renders_as_text(server, http):
    url, _ = server
    page = _html(http, url + "/runs/run-0089")
    assert page.status_code == 200
    assert EVIL not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_every_page_renders(server, http):
    url, _ = server
    for path in ("/", "/predictions", "/runs", "/runs/run-0070", "/models", "/models/ds/gb",
                 "/datasets", "/datasets/ds", "/plugins", "/api", "/login"):
        r = _html(http, url + path)
        assert r.status_code == 200, (path, r.text[:300])
        assert "<main>" in r.text
        # Every page names its icon, so no browser asks for a missing /favicon.ico.
        assert 'rel="icon" href="/static/favicon.svg"' in r.text, path
    assert _html(http, url + "/runs/nosuch").status_code == 404
    assert _html(http, url + "/models/ds/nosuch").status_code == 404
    spec = http.get(url + "/api/v1/openapi.json", timeout=30).json()
    assert "/api/v1/predictions" in spec["paths"]
    assert "/api/v1/runs/{run_id}/labels" in spec["paths"]
    assert http.get(url + "/healthz", timeout=30).text == "ok\n"
    for icon in ("/static/favicon.svg", "/favicon.ico"):
        r = http.get(url + icon, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml", icon
        assert r.text.startswith("<svg")


def test_label_form_with_csrf_token_and_session(server, http, served_data):
    url, _ = server
    page = _html(http, url + "/runs/run-0030")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert http.cookies.get("ciml_csrf") == csrf
    form = {"csrf": csrf, "key": "cause", "value": "network", "who": "bob", "token": TOKEN}
    target = url + "/runs/run-0030/labels"
    # From another site: refused, whatever it carries.
    evil = http.post(target, data=form, headers={"Origin": "https://evil.example"},
                     allow_redirects=False, timeout=30)
    assert evil.status_code == 403
    no_csrf = http.post(target, data={**form, "csrf": "forged"}, headers={"Origin": url},
                        allow_redirects=False, timeout=30)
    assert no_csrf.status_code == 403
    wrong = http.post(target, data={**form, "token": "nope"}, headers={"Origin": url},
                      allow_redirects=False, timeout=30)
    assert wrong.status_code == 403
    ok = http.post(target, data=form, headers={"Origin": url}, allow_redirects=False,
                   timeout=30)
    assert ok.status_code == 303, ok.text
    assert ok.headers["location"] == "/runs/run-0030?saved=cause#labels"
    after = _html(http, url + ok.headers["location"])
    assert '<td class="label-cause">network</td>' in after.text
    assert 'class="saved"' in after.text
    # Signed in now: the form no longer asks for the token.
    assert 'name="token"' not in after.text
    again = http.post(target, data={**form, "value": "oom", "token": ""},
                      headers={"Origin": url}, allow_redirects=False, timeout=30)
    assert again.status_code == 303
    from ciml.cache import RawCache
    from ciml.human_labels import labels_of

    dp, _ = served_data
    with RawCache(dp) as cache:
        assert labels_of(cache, {"run-0030"})["run-0030"]["cause"]["value"] == "oom"


def test_a_server_error_shows_no_traceback(server, http, monkeypatch):
    url, app = server

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail at /srv/ciml/predictions.sqlite")

    monkeypatch.setattr(app.state.ciml.store, "jobs", broken)
    monkeypatch.setattr(app.state.ciml.store, "list", broken)
    for accept in ("text/html", "application/json"):
        # A query no other test asks for: never a page rendered before the break.
        r = http.get(url + "/?per_job=3", headers={"Accept": accept}, timeout=30)
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text
        assert "internal error (id " in r.text
    r = http.get(url + "/api/v1/jobs", timeout=30)
    assert r.status_code == 500 and set(r.json()) == {"error", "status"}


def test_metrics_in_prometheus_format(server, http):
    from prometheus_client.parser import text_string_to_metric_families

    url, _ = server
    r = http.get(url + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    predicted = {(s.labels["job"], s.labels["class"]): s.value
                 for s in families["ciml_predictions"].samples}
    assert sum(predicted.values()) >= 40 and all(job == JOB for job, _ in predicted)
    failures = families["ciml_fetch_failures"].samples
    assert [(s.labels["reason"], s.value) for s in failures] == [("missing", 1.0)]
    ages = families["ciml_model_age_seconds"].samples
    assert [s.labels["model"] for s in ages] == ["ds/gb"] and ages[0].value >= 0
    assert families["ciml_store_up"].samples[0].value == 1
    assert "ciml_event_to_prediction_seconds" in families
    assert "ciml_watch_queue_depth" in families


def test_reads_can_be_protected(served_data, http):
    from ciml.serve import create_app
    from ciml.serve.server import serve_in_thread

    dp, _ = served_data
    with serve_in_thread(create_app(dp, token=TOKEN, protect_reads=True)) as url:
        assert http.get(url + "/api/v1/predictions", timeout=30).status_code == 401
        assert http.get(url + "/metrics", timeout=30).status_code == 401
        assert _html(http, url + "/").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get(url + "/api/v1/predictions", headers=auth,
                        timeout=30).status_code == 200
        login = _html(http, url + "/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        r = http.post(url + "/login", data={"csrf": csrf, "token": TOKEN,
                                            "next": "https://evil.example/"},
                      headers={"Origin": url}, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert _html(http, url + "/").status_code == 200


# -- the command ----------------------------------------------------------------


def _listening(proc):
    """``(base URL, stderr so far)`` once ``ciml serve`` says where it listens."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "listening on" in line:
            break
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", "".join(lines))
    assert match, lines
    return match.group(1), "".join(lines)


def test_ciml_serve_command_binds_loopback_and_stops_on_sigterm(served_data, tmp_path):
    import os
    import signal

    dp, _ = served_data
    env = {**os.environ, "CIML_SERVE_TOKEN": ""}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from ciml.shell import main; "
                             "sys.exit(main())", "--data-path", str(dp.root),
                             "serve", "--port", "0"], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        url, lines = _listening(proc)
        token_file = dp.state / "serve-token"
        assert f"token from {token_file}" in lines
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        assert requests.get(url + "/healthz", timeout=30).text == "ok\n"
        token = token_file.read_text().strip()
        assert token not in lines
        r = requests.post(url + "/api/v1/runs/run-0001/labels",
                          json={"labels": {"cause": "timeout"}},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_links_carry_the_reverse_proxy_prefix(served_data, http):
    from ciml.serve import create_app
    from ciml.serve.server import serve_in_thread

    dp, _ = served_data
    with serve_in_thread(create_app(dp, token=TOKEN), root_path="/ciml") as url:
        # What a proxy that strips /ciml sends.
        home = _html(http, url + "/")
        assert home.status_code == 200
        assert 'href="/ciml/runs/' in home.text and 'href="/ciml/static/ciml.css"' in home.text
        assert 'href="/runs/' not in home.text
        page = _html(http, url + "/runs/run-0040")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert 'action="/ciml/runs/run-0040/labels"' in page.text
        r = http.post(url + "/runs/run-0040/labels", data={
            "csrf": csrf, "key": "cause", "value": "oom", "token": TOKEN},
            headers={"Origin": url}, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"].startswith("/ciml/runs/run-0040")


def test_plots_of_a_run_and_a_model_are_svg(server, http):
    url, _ = server
    page = _html(http, url + "/runs/run-0070")
    src = re.search(r'<img src="(/runs/run-0070/plot\.svg\?model=[^"]+)"', page.text)
    assert src, "the run page shows no plot"
    svg = http.get(url + src.group(1).replace("&amp;", "&"), timeout=120)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.lstrip().startswith((b"<?xml", b"<svg"))
    assert "default-src 'none'" in svg.headers["content-security-policy"]
    model = _html(http, url + "/models/ds/gb")
    kinds = re.findall(r'<img src="/models/ds/gb/(\w+)\.svg"', model.text)
    assert kinds
    for kind in kinds:
        r = http.get(url + f"/models/ds/gb/{kind}.svg", timeout=120)
        assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml", kind
    assert http.get(url + "/models/ds/gb/nosuch.svg", timeout=30).status_code == 404
    assert http.get(url + "/runs/run-0070/plot.svg?model=ds/nosuch",
                    timeout=30).status_code == 404


def test_serve_hosts_the_watcher_and_measures_it(tmp_path):
    """``ciml serve --watch``: the watcher's predictions reach the store and /metrics."""
    import os
    import signal

    from prometheus_client.parser import text_string_to_metric_families
    from serve_helpers import BUILD, DATASET, EXPERIMENT, WATCHED, _ciml_argv

    from ciml.collect import cache_data
    from ciml.dataset import build_dataset
    from ciml.experiment import Experiment
    from ciml.generator import generate_history
    from ciml.model import train_model
    from ciml.paths import DataPath
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

    dp = DataPath(tmp_path / "data")
    history = generate_history(tmp_path / "history", runs=50, seed=7, jobs=(BUILD,),
                               tests=False, bad_fraction=0.0)
    since = sorted(r["start"] for r in history.runs)[-WATCHED]
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(dp, source, DstatMetricSource(), BUILD, until=since, progress=False)
    build_dataset(dp, DATASET, BUILD, sample_interval="1min", class_label="status", seed=0,
                  progress=False)
    Experiment.create(EXPERIMENT, "gbdt", {"trees": 20, "min_data_in_leaf": 3}).save(dp)
    train_model(dp, DATASET, EXPERIMENT, progress=False)

    proc = subprocess.Popen(
        _ciml_argv("--data-path", dp.root, "serve", "--port", "0", "--watch",
                   "--trigger", "poll", "--once", "--since", since.isoformat(),
                   "--dataset", DATASET, "--experiment", EXPERIMENT, "--source",
                   "subunit2sql", "--db-uri", history.db_uri, "--allow-scheme", "file",
                   "--status-interval", "0", "--fetch-attempts", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CIML_SERVE_TOKEN": TOKEN})
    try:
        url, _ = _listening(proc)
        deadline = time.monotonic() + 300
        while True:
            answer = requests.get(url + "/api/v1/predictions", timeout=30)
            assert "items" in answer.json(), (answer.status_code, answer.text)
            rows = answer.json()["items"]
            if len(rows) >= WATCHED or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(rows) == WATCHED and all(r["build_name"] == BUILD for r in rows)
        text = requests.get(url + "/metrics", timeout=30).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        done = sum(s.value for s in families["ciml_watch_predictions"].samples
                   if s.name.endswith("_total"))
        failed = sum(s.value for s in families["ciml_watch_fetch_failures"].samples
                     if s.name.endswith("_total"))
        assert done + failed == WATCHED
        latency = {s.name: s.value for s in families["ciml_event_to_prediction_seconds"]
                   .samples if not s.labels}
        assert latency["ciml_event_to_prediction_seconds_count"] == WATCHED
        assert latency["ciml_event_to_prediction_seconds_sum"] > 0
        assert [s.value for s in families["ciml_watch_queue_depth"].samples] == [0.0]
        # The watcher ended (--once); the server goes on until it is told to stop.
        assert requests.get(url + "/healthz", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        assert len([line for line in out.splitlines() if line.startswith("{")]) == WATCHED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
