"""The GitHub Actions result source against the fake GitHub API: records, paging, faults."""

import json

import pytest

from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.testing.forges import GitHubServer
from ciml.testing.sources import check_result_source
from ciml_plugins.sources.github import GitHubResultSource, artifact_slug

JOB = "tempest-full"


def github(server, **kw):
    kw.setdefault("backoff", 0)
    kw.setdefault("github_token", "tok")
    return GitHubResultSource(github_url=server.api_url, repo="octo/ci", **kw)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("gh") / "hist", runs=36, seed=4,
                            tests=False, duration=(60, 90))


@pytest.fixture
def server(history):
    with GitHubServer.from_history(history, token="tok") as srv:
        yield srv


@pytest.fixture
def sleeps(monkeypatch):
    import urllib3.util.retry

    import ciml.http

    waited = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", waited.append)
    monkeypatch.setattr(ciml.http.time, "sleep", waited.append)
    return waited


def test_a_documented_job_record(sample_data):
    src = GitHubResultSource(repo="octo-org/octo-repo")
    [job] = json.loads((sample_data / "github/jobs.docs-example.json").read_text())["jobs"]
    artifacts = json.loads((sample_data / "github/artifacts.constructed.json").read_text())
    run = src.record(job, {"event": "push", "path": ".github/workflows/ci.yml",
                           "run_number": 7}, artifacts["artifacts"])
    assert (run.id, run.build_name, run.status, run.result) == (
        "399444496", "build", "passed", "success")
    assert run.start.isoformat() == "2020-01-20T17:42:40+00:00" and run.duration == 119.0
    meta = run.metadata
    assert meta["runner_name"] == "my runner"
    assert meta["runner_labels"] == "self-hosted,foo,bar"   # label_filters, 2026 API
    assert meta["runner_group_name"] == "my runner group"
    assert meta["head_sha"] == "f83a356604ae3c5d03e1b46ef4d1ca77d64a90b0"
    assert (meta["workflow_name"], meta["event"], meta["head_branch"]) == ("CI", "push", "main")
    assert meta["workflow_run_id"] == "29679449" and meta["run_number"] == "7"
    assert meta["artifact_name"] == "dstat-build" and meta["artifacts_archive"] == "zip"
    assert run.artifacts_url.endswith("/actions/artifacts/11/zip")
    # The older field name is read too.
    assert src.record({**job, "label_filters": None, "labels": ["gpu"]}).metadata[
        "runner_labels"] == "gpu"


@pytest.mark.parametrize("conclusion,status", [
    ("success", "passed"), ("failure", "failed"), ("timed_out", "failed"),
    ("cancelled", None), ("skipped", None), ("neutral", None), ("action_required", None),
    ("stale", None)])
def test_conclusions_map_to_status_and_the_raw_one_is_kept(conclusion, status):
    src = GitHubResultSource(repo="o/r")
    run = src.record({"id": 1, "name": "j", "status": "completed", "conclusion": conclusion})
    assert (run.status if run else None) == status
    if run:
        assert run.result == conclusion and run.metadata["conclusion"] == conclusion
    assert src.record({"id": 1, "name": "j", "status": "in_progress", "conclusion": None}) \
        is None


def test_expired_or_missing_artifacts_leave_no_url():
    src = GitHubResultSource(repo="o/r", artifact_name="metrics-{job_id}")
    job = {"id": 5, "name": "test (3.11)", "status": "completed", "conclusion": "failure"}
    expired = [{"name": "metrics-5", "expired": True, "archive_download_url": "https://x/zip"}]
    run = src.record(job, {}, expired)
    assert run.artifacts_url is None and run.metadata["artifact_expired"] == "1"
    assert src.record(job, {}, [{"name": "other", "archive_download_url": "u"}]) \
        .artifacts_url is None
    # A run with one artifact named "dstat" is found whatever the template.
    assert src.record(job, {}, [{"name": "dstat", "archive_download_url": "u"}]) \
        .artifacts_url == "u"
    assert artifact_slug('test (3.11, "a/b")') == "test (3.11, -a-b-)"


def test_the_conformance_kit(server):
    with github(server, page_size=5) as src:
        check_result_source(src, JOB)


def test_lists_every_finished_job_newest_first_over_pages(server, history):
    truth = {r["start"].strftime("%Y-%m-%dT%H:%M:%SZ"): r for r in history.runs
             if r["build_name"] == JOB}
    with github(server, page_size=4) as src:
        runs = list(src.list_runs(JOB))
    assert len(runs) == len(truth)
    for run in runs:
        want = truth[run.start.strftime("%Y-%m-%dT%H:%M:%SZ")]
        assert run.status == want["status"]
        assert run.metadata["runner_name"] == want["node"]
        assert (run.artifacts_url is None) == (want["dstat_path"] is None)
    starts = [r.start for r in runs]
    assert starts == sorted(starts, reverse=True)
    # Paging followed the Link header, 4 runs at a time.
    pages = [p for m, p in server.requests if p.endswith("/actions/runs")]
    assert len(pages) == -(-len(server.runs) // 4)


def test_filters_go_to_the_api(server):
    with github(server, event="push") as src:
        runs = list(src.list_runs(JOB))
    assert runs and all(r.metadata["event"] == "push" for r in runs)
    with github(server) as src:
        runs = list(src.list_runs(JOB, filters={"event": "schedule", "runner_group_name": "rax"}))
    assert all(r.metadata["event"] == "schedule" and r.metadata["runner_group_name"] == "rax"
               for r in runs)
    with github(server, workflow="ci.yml") as src:
        assert list(src.list_runs(JOB, limit=2))
    with github(server, workflow="nope.yml") as src:
        with pytest.raises(SourceError, match="--workflow"):
            list(src.list_runs(JOB))


def test_get_run(server):
    with github(server) as src:
        first = next(src.list_runs(JOB))
        again = src.get_run(first.id)
        assert again.to_dict() == first.to_dict()
        for bad in ("123", "../../etc", "abc"):
            with pytest.raises(NotFoundError):
                src.get_run(bad)
        with pytest.raises(NotFoundError, match="not a finished job"):
            src.get_run("69999999")   # the job still in progress


def test_server_errors_and_retry_after_are_handled(server, sleeps):
    server.fault("*/actions/runs", status=502, times=2)
    server.fault("*/jobs", status=429, times=1, headers={"Retry-After": "3"})
    server.fault("*/artifacts", drop=True, times=1)
    with github(server, retries=3) as src:
        assert len(list(src.list_runs(JOB, limit=3))) == 3
    assert 3.0 in sleeps


@pytest.mark.parametrize("fault,words", [
    (dict(status=500), "HTTP 500"),
    (dict(html=True), "HTML page"),
    (dict(truncate=True), "closed before the whole answer"),
    (dict(status=200, body=b'{"total_count": 3, "workflow_runs": [{"id": 1'), "not JSON"),
    (dict(status=429, headers={"Retry-After": "7200"}), "7200 s"),
])
def test_bad_answers_are_clear_transient_errors(server, sleeps, fault, words):
    server.fault("*/actions/runs", **fault)
    with github(server, retries=1) as src:
        with pytest.raises(SourceError, match=words) as info:
            list(src.list_runs(JOB))
    assert info.value.transient
    assert "tok" not in str(info.value).replace("token", "")


def test_an_exhausted_rate_limit_is_not_fought(history, sleeps):
    with GitHubServer.from_history(history, rate_limit=3, rate_reset=3600) as srv:
        with github(srv, github_token=None) as src:
            with pytest.raises(SourceError, match="rate") as info:
                list(src.list_runs(JOB))
        assert info.value.transient
        # The third answer said the limit is spent until an hour from now:
        # the client waits for nothing and asks nothing more than the
        # requests already in flight (the listing asks a few runs at once).
        from ciml_plugins.sources.github import _LISTING_THREADS

        assert 3 <= len(srv.requests) <= 3 + _LISTING_THREADS
    assert not [s for s in sleeps if s > 60]


def test_a_bad_token_is_a_clear_retryable_error(server):
    with github(server, github_token="expired-t0ken") as src:
        with pytest.raises(SourceError) as info:
            list(src.list_runs(JOB))
    message = str(info.value)
    assert info.value.transient and "HTTP 401" in message and "CIML_GITHUB_TOKEN" in message
    assert "expired-t0ken" not in message and "expired-t0ken" not in repr(src)
    assert "expired-t0ken" not in str(src.get_params())


def test_token_from_the_environment_and_enterprise_url(history, monkeypatch):
    monkeypatch.setenv("CIML_GITHUB_TOKEN", "env-tok")
    with GitHubServer.from_history(history, token="env-tok", enterprise=True) as srv:
        assert srv.api_url.endswith("/api/v3")
        src = GitHubResultSource(github_url=srv.api_url, repo="octo/ci")
        assert src.github_token == "env-tok"
        assert list(src.list_runs(JOB, limit=1))


def test_needs_a_repo_and_an_http_url():
    with pytest.raises(ConfigError, match="--repo"):
        GitHubResultSource()
    with pytest.raises(ConfigError, match="--repo"):
        GitHubResultSource(repo="just-a-name")
    with pytest.raises(ConfigError, match="http"):
        GitHubResultSource(repo="o/r", github_url="file:///etc")
