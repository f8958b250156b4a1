"""``predict`` and ``watch`` store their predictions; ``ciml prediction`` reads them; Gerrit.

The model is a fake (``fake_model``): what is tested is the store, the
commands and the reporters around the prediction, not the estimator.
"""

import json

import pytest
from mqtt_helpers import use_fake_predictor

JOB = "tempest-full"


@pytest.fixture
def fake_model(monkeypatch, data_path):
    """``ciml predict``/``watch`` load a fake instead of a trained model."""
    use_fake_predictor(monkeypatch, data_path, dataset_fingerprint="d" * 16,
                       model_fingerprint="m" * 16)


@pytest.fixture
def history(tmp_path):
    from ciml.generator import generate_history

    return generate_history(tmp_path / "h", runs=8, seed=4, jobs=[JOB], duration=(60, 120),
                            tests=False)


def store_tables_dropped_after(request, url):
    """The database lasts the session: leave it without this test's tables."""
    def drop():
        from ciml.prediction_store import PredictionStore

        store = PredictionStore(url)
        store._metadata.drop_all(store.engine)
        store.close()

    request.addfinalizer(drop)


def _watch_args(data_path, history, *extra):
    first = min(r["start"] for r in history.runs).isoformat()
    return ["--data-path", data_path.root, *extra, "watch", "--dataset", "ds",
            "--experiment", "exp", "--trigger", "poll", "--source", "subunit2sql",
            "--db-uri", history.db_uri, "--once", "--status-interval", "0",
            "--since", first, "--allow-scheme", "file"]


def test_predict_stores_once_per_run_and_prediction_list_and_show_read_it(
        data_path, fake_model, run_ciml, tmp_path):
    files = []
    for name, value in (("a.csv", b"90"), ("b.csv", b"10")):
        path = tmp_path / name
        path.write_bytes(value)
        files.append(str(path))
    base = ["--data-path", data_path.root]
    for _ in range(2):  # predicting again replaces, never duplicates
        rc, out, err = run_ciml(base + ["predict", "--dataset", "ds", "--experiment", "exp",
                                        *files])
        assert rc == 0, err
    assert (data_path.root / "predictions.sqlite").exists()
    rc, out, err = run_ciml(base + ["prediction", "list", "-f", "json"])
    assert rc == 0, err
    rows = json.loads(out)
    assert sorted(r["run_id"] for r in rows) == sorted(files)
    assert {r["run_id"]: r["predicted"] for r in rows} == {files[0]: "failed",
                                                           files[1]: "passed"}
    rc, out, err = run_ciml(base + ["prediction", "list", "--class", "failed", "-f", "value",
                                    "-c", "run_id"])
    assert out.split() == [files[0]]
    rc, out, err = run_ciml(base + ["prediction", "show", files[0], "-f", "json"])
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["predicted"] == "failed" and shown["probabilities"] == {
        "passed": pytest.approx(0.1), "failed": pytest.approx(0.9)}
    assert shown["model"] == "ds/exp" and shown["model_fingerprint"] == "m" * 16
    rc, out, err = run_ciml(base + ["prediction", "show", "no-such-run"])
    assert rc != 0 and "no stored prediction of run 'no-such-run'" in err
    rc, out, err = run_ciml(base + ["prediction", "stats", "-f", "json"])
    stats = json.loads(out)
    assert stats["predictions"] == 2 and stats["bytes_per_prediction"] > 0


def test_no_store_stores_nothing_and_a_reader_makes_no_store(data_path, fake_model, run_ciml,
                                                             tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"90")
    rc, out, err = run_ciml(["--data-path", data_path.root, "predict", "--dataset", "ds",
                             "--experiment", "exp", "--no-store", str(path)])
    assert rc == 0, err
    rc, out, err = run_ciml(["--data-path", data_path.root, "prediction", "list",
                             "-f", "json"])
    assert rc == 0 and json.loads(out) == []
    assert not (data_path.root / "predictions.sqlite").exists()


@pytest.mark.parametrize("server", ["mariadb_url", "postgres_url"])
def test_watch_stores_in_a_database_server_and_list_filters_and_pages(
        data_path, fake_model, run_ciml, history, request, server):
    url = request.getfixturevalue(server)
    store_tables_dropped_after(request, url)
    rc, out, err = run_ciml(_watch_args(data_path, history) + ["--store-uri", url])
    assert rc == 0, err
    printed = [json.loads(line)["run_id"] for line in out.splitlines()]
    assert len(printed) == 8
    base = ["--data-path", data_path.root, "prediction", "list", "--store-uri", url]
    rc, out, err = run_ciml(base + ["--build-name", JOB, "-f", "json"])
    assert sorted(r["run_id"] for r in json.loads(out)) == sorted(printed)
    rc, out, err = run_ciml(base + ["--limit", "5", "-f", "json"])
    first = json.loads(out)
    assert len(first) == 5 and "more predictions: --after " in err
    cursor = err.split("--after ")[1].split()[0]
    rc, out, err = run_ciml(base + ["--limit", "5", "--after", cursor, "-f", "json"])
    rest = json.loads(out)
    assert len(rest) == 3 and not {r["id"] for r in rest} & {r["id"] for r in first}
    rc, out, err = run_ciml(base + ["--since", "1h", "-f", "json"])
    assert len(json.loads(out)) == 8  # predicted just now
    rc, out, err = run_ciml(base + ["--since", "2000-01-01", "--unusual", "-f", "json"])
    assert json.loads(out) == []  # the fake model gives no unusual score


def test_a_store_that_is_away_does_not_stop_watch(data_path, fake_model, run_ciml, history):
    url = "mysql+pymysql://ciml:hunter2@127.0.0.1:1/nowhere"
    rc, out, err = run_ciml(_watch_args(data_path, history) + ["--store-uri", url])
    assert rc == 0, err
    assert len(out.splitlines()) == 8  # every prediction still printed
    assert "prediction store mysql+pymysql://127.0.0.1:1/nowhere: cannot" in err
    assert "kept in memory" in err and "were not stored" in err
    assert "hunter2" not in out + err


def test_watch_comments_on_gerrit_from_the_config_file(data_path, fake_model, run_ciml,
                                                       history, tmp_path):
    from ciml.testing.gerrit import GerritServer

    changes = {}
    for run in history.runs:
        if run.get("change"):
            changes.setdefault(run["change"], []).append(run["patchset"])
    creds = tmp_path / "gerrit-creds"
    creds.write_text("ciml-bot:s3cret-pw\n")
    creds.chmod(0o600)
    with GerritServer(changes=changes, accounts={"ciml-bot": "s3cret-pw"}) as gerrit:
        config = tmp_path / "ciml.toml"
        config.write_text(f'[gerrit]\nurl = "{gerrit.url}"\ncredentials_file = "{creds}"\n'
                          'classes = ["failed"]\nmin_confidence = 0.8\n'
                          '[serve]\nbase_url = "https://ciml.example.org"\n')
        rc, out, err = run_ciml(_watch_args(data_path, history, "--config", config))
        assert rc == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        expected = {(r["metadata"]["build_change"], r["metadata"]["build_patchset"])
                    for r in records if r["status"] == "failed" and r["predicted"] == "failed"
                    and r["metadata"].get("build_change")}
        assert expected, "the generated history has a failed run on a change"
        got = {(str(r["change"]), str(r["patchset"])) for r in gerrit.reviews}
        assert got == expected
        assert all("https://ciml.example.org/runs/" in r["body"]["message"]
                   for r in gerrit.reviews)
    assert "s3cret-pw" not in out + err


def test_prune_by_age_or_by_the_configured_retention(data_path, fake_model, run_ciml,
                                                     tmp_path):
    import datetime as dt

    from ciml.prediction_store import PredictionStore, default_uri

    data_path.root.mkdir(parents=True, exist_ok=True)
    store = PredictionStore(default_uri(data_path))
    now = dt.datetime.now(dt.timezone.utc)
    store.add_many([{"run_id": f"r{i}", "model": "ds/exp", "predicted": "failed",
                     "time": (now - dt.timedelta(days=i * 10)).isoformat()}
                    for i in range(6)])  # 0, 10, ... 50 days old
    store.close()
    base = ["--data-path", data_path.root, "prediction", "prune", "-f", "json"]
    rc, out, err = run_ciml(base)
    assert rc != 0 and "give --older-than AGE" in err
    rc, out, err = run_ciml(base + ["--older-than", "35d"])
    assert rc == 0, err
    assert json.loads(out) == [{"deleted": 2, "kept": 4, "older_than": "35d"}]
    config = tmp_path / "ciml.toml"
    config.write_text('[store]\nretention = "15d"\n')
    rc, out, err = run_ciml(["--config", config] + base)
    assert json.loads(out) == [{"deleted": 2, "kept": 2, "older_than": "15d"}]
    config.write_text('[store]\nretention = "a fortnight"\n')
    rc, out, err = run_ciml(["--config", config] + base)
    assert rc != 0 and "[store] retention" in err
