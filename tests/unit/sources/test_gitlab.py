"""The GitLab CI result source against the fake GitLab API: records, paging, faults."""

import json

import pytest

from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.testing.forges import GitLabServer
from ciml.testing.sources import check_result_source
from ciml_plugins.sources.gitlab import GitLabResultSource

JOB = "tempest-full"


def gitlab(server, **kw):
    kw.setdefault("backoff", 0)
    kw.setdefault("gitlab_token", "glpat-tok")
    kw.setdefault("project", "group/ci")
    return GitLabResultSource(gitlab_url=server.api_url, **kw)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("gl") / "hist", runs=36, seed=6,
                            tests=False, duration=(60, 90))


@pytest.fixture
def server(history):
    with GitLabServer.from_history(history, token="glpat-tok") as srv:
        yield srv


def test_documented_job_records(sample_data):
    src = GitLabResultSource(project="foo/bar", gitlab_url="https://gitlab.example.com")
    jobs = json.loads((sample_data / "gitlab/jobs.docs-example.json").read_text())
    first, second = (src.record(j) for j in jobs)
    assert (first.id, first.build_name, first.status, first.result) == (
        "7", "teaspoon", "failed", "failed")
    assert first.metadata["failure_reason"] == "script_failure"
    assert first.metadata["runner_id"] == "32" and first.metadata["ref"] == "main"
    assert first.metadata["runner_tags"] == "docker runner,ubuntu18"
    assert first.metadata["sha"] == "0ff3ae198f8601a285adcf5c0fff204ee6fba5fd"
    assert first.artifacts_url == \
        "https://gitlab.example.com/api/v4/projects/foo%2Fbar/jobs/7/artifacts"
    assert first.metadata["artifacts_archive"] == "zip"
    assert first.duration == 0.173 and first.start.isoformat().startswith("2015-12-24T17:54:27")
    assert second.metadata["failure_reason"] == "stuck_or_timeout_failure"
    assert second.artifacts_url is None and "runner_id" not in second.metadata


@pytest.mark.parametrize("status,mapped", [
    ("success", "passed"), ("failed", "failed"), ("canceled", None), ("skipped", None),
    ("manual", None), ("running", None), ("pending", None)])
def test_status_mapping(status, mapped):
    src = GitLabResultSource(project="1")
    run = src.record({"id": 1, "name": "j", "status": status, "failure_reason": "x"})
    assert (run.status if run else None) == mapped
    if run and mapped == "passed":
        assert "failure_reason" not in run.metadata


def test_the_conformance_kit(server):
    with gitlab(server, page_size=6) as src:
        check_result_source(src, JOB)


def test_lists_with_keyset_pages_and_by_numeric_id(server, history):
    truth = [r for r in history.runs if r["build_name"] == JOB]
    with gitlab(server, page_size=5, project="42") as src:
        runs = list(src.list_runs(JOB))
    assert len(runs) == len(truth)
    causes = {r["start"].strftime("%Y-%m-%dT%H:%M:%S"): r for r in truth}
    for run in runs:
        want = causes[run.start.strftime("%Y-%m-%dT%H:%M:%S")]
        assert run.status == want["status"]
        assert run.metadata["runner_description"] == want["node"]
        if want["status"] == "failed":
            assert run.metadata["failure_reason"] in (
                "script_failure", "job_execution_timeout", "runner_system_failure")
    listed = [p for m, p in server.requests if p.endswith("/jobs")]
    assert len(listed) > 1
    # Finished jobs only, asked of the server.
    assert all(r.metadata["status"] in ("success", "failed") for r in runs)


def test_offset_pages_are_followed_too(server, monkeypatch):
    original = server._list

    def offset_only(query, path):
        query = {k: v for k, v in query.items() if k != "pagination"}
        status, headers, body = original(query, path)
        headers.pop("Link", None)   # only X-Next-Page, as older instances answer
        return status, headers, body

    monkeypatch.setattr(server, "_list", offset_only)
    with gitlab(server, page_size=7) as src:
        offset = [r.id for r in src.list_runs(JOB)]
    monkeypatch.undo()
    with gitlab(server, page_size=7) as src:
        assert offset == [r.id for r in src.list_runs(JOB)]


def test_balanced_asks_the_server_for_each_status(server):
    with gitlab(server) as src:
        runs = list(src.list_runs(JOB, balanced=True, limit=4))
    assert [r.status for r in runs] == ["failed", "passed", "failed", "passed"]
    scopes = [p for m, p in server.requests if p.endswith("/jobs")]
    assert len(scopes) >= 2


def test_get_run(server):
    with gitlab(server) as src:
        first = next(src.list_runs(JOB))
        assert src.get_run(first.id).to_dict() == first.to_dict()
        with pytest.raises(NotFoundError):
            src.get_run("999999999")
        with pytest.raises(NotFoundError):
            src.get_run("abc")
        canceled = next(j for j in server.jobs if j["status"] == "canceled")
        with pytest.raises(NotFoundError, match="canceled"):
            src.get_run(str(canceled["id"]))


def test_rate_limit_with_retry_after(history, monkeypatch):
    import urllib3.util.retry

    waited = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", waited.append)
    with GitLabServer.from_history(history, rate_limit=1, retry_after=5) as srv:
        with gitlab(srv, gitlab_token=None, retries=2, page_size=5) as src:
            with pytest.raises(SourceError, match="rate-limits|429") as info:
                list(src.list_runs(JOB))
        assert info.value.transient
    assert waited.count(5.0) == 2
    with GitLabServer.from_history(history, rate_limit=1, retry_after=3600) as srv:
        with gitlab(srv, gitlab_token=None, page_size=5) as src:
            with pytest.raises(SourceError, match="3600 s"):
                list(src.list_runs(JOB))
        assert len(srv.requests) == 2   # the one allowed, the one refused


@pytest.mark.parametrize("fault,words", [
    (dict(status=503), "HTTP 503"),
    (dict(html=True), "HTML page"),
    (dict(status=200, body=b'[{"id": 3, "name": "tem'), "not JSON"),
])
def test_bad_answers(server, fault, words):
    server.fault("*/jobs", **fault)
    with gitlab(server, retries=1) as src:
        with pytest.raises(SourceError, match=words) as info:
            list(src.list_runs(JOB))
    assert info.value.transient


def test_expired_token_and_unknown_project(server):
    with gitlab(server, gitlab_token="glpat-expired") as src:
        with pytest.raises(SourceError) as info:
            list(src.list_runs(JOB))
    assert "HTTP 401" in str(info.value) and "CIML_GITLAB_TOKEN" in str(info.value)
    assert info.value.transient and "glpat-expired" not in str(info.value)
    with gitlab(server, project="other/project") as src:
        with pytest.raises(SourceError, match="no project 'other/project'"):
            list(src.list_runs(JOB))


def test_self_managed_url_and_env_token(history, monkeypatch):
    monkeypatch.setenv("CIML_GITLAB_TOKEN", "glpat-env")
    with GitLabServer.from_history(history, token="glpat-env") as srv:
        src = GitLabResultSource(gitlab_url=srv.api_url + "/api/v4/", project="group/ci")
        assert src.api_root == srv.api_url + "/api/v4"
        assert list(src.list_runs(JOB, limit=1))
        assert "glpat-env" not in repr(src)


def test_needs_a_project():
    with pytest.raises(ConfigError, match="--project"):
        GitLabResultSource()
