"""The Jenkins result source against the fake Jenkins: records, folders, ranges, faults."""

import json

import pytest

from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.testing.forges import JenkinsServer
from ciml.testing.sources import check_result_source
from ciml_plugins.sources.jenkins import JenkinsResultSource, job_path

JOB = "ci/tempest-full"


def jenkins(server, **kw):
    kw.setdefault("backoff", 0)
    kw.setdefault("jenkins_user", "bot")
    kw.setdefault("jenkins_token", "11aa22bb")
    return JenkinsResultSource(jenkins_url=server.api_url, **kw)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("jk") / "hist", runs=36, seed=8,
                            tests=False, duration=(60, 90))


@pytest.fixture
def server(history):
    with JenkinsServer.from_history(history, user="bot", token="11aa22bb") as srv:
        yield srv


def test_documented_build_records(sample_data):
    src = JenkinsResultSource(jenkins_url="https://ci.example.org/")
    doc = json.loads((sample_data / "jenkins/job-builds.constructed.json").read_text())
    runs = [src.record(b, JOB) for b in doc["allBuilds"]]
    assert runs[0] is None and runs[3] is None        # building, aborted
    unstable, pipeline = runs[1], runs[2]
    assert (unstable.id, unstable.status, unstable.result) == (
        "ci/tempest-full#14", "failed", "UNSTABLE")
    assert unstable.metadata["node_name"] == "linux-agent-3"
    assert unstable.artifacts_url == "https://ci.example.org/job/ci/job/tempest-full/14/artifact/"
    assert unstable.metadata["artifacts"] == "dstat-csv_log.txt,reports/junit.xml"
    assert unstable.duration == 1836.512
    assert unstable.start.isoformat() == "2024-01-25T09:16:00+00:00"
    # A Pipeline build names its node in the description, as the recipe does.
    assert pipeline.metadata["node_name"] == "linux-agent-7" and pipeline.status == "passed"


def test_job_paths():
    assert job_path("tempest-full") == "/job/tempest-full"
    assert job_path("/folder/sub/job/") == "/job/folder/job/sub/job/job"
    # A multibranch branch "feature/x" is the job "feature%2Fx".
    assert job_path("proj/feature%2Fx") == "/job/proj/job/feature%252Fx"
    with pytest.raises(ConfigError):
        job_path("/")


def test_the_conformance_kit(server):
    with jenkins(server, page_size=5) as src:
        check_result_source(src, JOB)


def test_lists_every_build_over_ranges(server, history):
    truth = [r for r in history.runs if r["build_name"] == "tempest-full"]
    with jenkins(server, page_size=4) as src:
        runs = list(src.list_runs(JOB))
    assert len(runs) == len(truth)
    nodes = {r["node"] for r in truth}
    assert {r.metadata["node_name"] for r in runs} <= nodes
    numbers = [int(r.id.rsplit("#", 1)[1]) for r in runs]
    assert numbers == sorted(numbers, reverse=True)
    ranges = [p for m, p in server.requests if p.endswith("/api/json")]
    assert len(ranges) == -(-(len(truth) + 2) // 4) + (1 if (len(truth) + 2) % 4 == 0 else 0)


def test_get_run(server):
    with jenkins(server) as src:
        first = next(src.list_runs(JOB))
        assert src.get_run(first.id).to_dict() == first.to_dict()
        for bad in ("ci/tempest-full#9999", "nope#1", "ci/tempest-full", "#3"):
            with pytest.raises(NotFoundError):
                src.get_run(bad)
        top = server.jobs["tempest-full"][0]["number"]
        with pytest.raises(NotFoundError, match="did not finish"):
            src.get_run(f"{JOB}#{top}")


def test_a_folder_or_unknown_job_is_a_clear_error(server):
    with jenkins(server) as src:
        with pytest.raises(SourceError, match="no job 'ci/nope'"):
            list(src.list_runs("ci/nope"))
        with pytest.raises(SourceError, match="'ci' is a folder, not a job"):
            list(src.list_runs("ci"))


def test_bad_token_and_html_pages(server):
    with jenkins(server, jenkins_token="expired") as src:
        with pytest.raises(SourceError) as info:
            list(src.list_runs(JOB))
    assert "HTTP 401" in str(info.value) and "CIML_JENKINS_TOKEN" in str(info.value)
    assert info.value.transient and "expired" not in repr(src)
    server.fault("*/api/json", html=True)
    with jenkins(server) as src:
        with pytest.raises(SourceError, match="HTML page"):
            list(src.list_runs(JOB))


def test_retries_and_retry_after(server, monkeypatch):
    import urllib3.util.retry

    waited = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", waited.append)
    server.fault("*/api/json", status=503, times=1, headers={"Retry-After": "2"})
    server.fault("*/api/json", drop=True, times=1)
    with jenkins(server, retries=3) as src:
        assert len(list(src.list_runs(JOB, limit=2))) == 2
    assert 2.0 in waited


def test_user_and_token_go_together(monkeypatch):
    monkeypatch.delenv("CIML_JENKINS_USER", raising=False)
    monkeypatch.delenv("CIML_JENKINS_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="together"):
        JenkinsResultSource(jenkins_url="http://j", jenkins_token="t")
    with pytest.raises(ConfigError, match="--jenkins-url"):
        JenkinsResultSource()
