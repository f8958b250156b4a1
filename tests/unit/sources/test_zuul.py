"""The Zuul result source against the local Zuul API server: both formats, paging, faults."""

import datetime as dt
import json

import pytest

from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.testing.servers import CIServer
from ciml_plugins.sources.zuul import ZuulResultSource

UTC = dt.timezone.utc


def zuul(server, **kw):
    kw.setdefault("backoff", 0.01)
    return ZuulResultSource(zuul_url=server.zuul_url, tenant="openstack", **kw)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from ciml.generator import generate_history

    return generate_history(tmp_path_factory.mktemp("zuul") / "hist", runs=60, seed=5,
                            tests=False)


@pytest.fixture(params=["nested", "flat"])
def server(request, history):
    path = history.zuul_builds if request.param == "nested" else history.zuul_builds_flat
    with CIServer(root=history.logs_dir, builds=path) as srv:
        srv.format = request.param
        yield srv


def test_sample_records_both_formats(sample_data):
    src = ZuulResultSource(zuul_url="http://x", tenant="t")
    flat = json.loads((sample_data / "zuul/build.flat-format.logjuicer-softwarefactory-2021.json")
                      .read_text())
    nested = json.loads((sample_data / "zuul/build.nested-ref-format.logjuicer-opendev-2024.json")
                        .read_text())
    a = src.record(flat)
    assert (a.id, a.build_name, a.status, a.result) == (
        "5bae5607ae964331bb5878aec0777637", "hlint", "passed", "SUCCESS")
    assert a.metadata["project"] == "software-factory/matrix-client-haskell"
    assert a.metadata["change"] == "22894"
    assert a.metadata["ref"] == "refs/changes/94/22894/1"
    assert a.start == dt.datetime(2021, 10, 13, 12, 57, 20, tzinfo=UTC)
    assert a.duration == 82.0
    b = src.record(nested)
    assert (b.status, b.result) == ("failed", "FAILURE")
    assert b.metadata["project"] == "zuul/nodepool"
    assert b.metadata["change"] == "908952"
    assert b.metadata["ref"] == "refs/changes/52/908952/1"
    assert b.metadata["pipeline"] == b.metadata["build_queue"] == "check"
    assert b.metadata["nodeset"] == "ubuntu-jammy"
    assert b.metadata["buildset_uuid"] == "338114acf62841f48d37862efc29cb87"
    assert b.artifacts_url == "https://localhost/log_url"
    lists = []
    for name in ("builds.current-list-format.constructed.json",
                 "builds.zuul3-2019-format.constructed.json"):
        lists += [src.record(x) for x in json.loads((sample_data / "zuul" / name).read_text())]
    # NODE_FAILURE without log_url is skipped; the rest are kept.
    assert [r.result if r else None for r in lists] == [
        "SUCCESS", None, "SUCCESS", "FAILURE", "SUCCESS"]


@pytest.mark.parametrize("result,status", [
    ("SUCCESS", "passed"), ("FAILURE", "failed"), ("TIMED_OUT", "failed"),
    ("POST_FAILURE", "failed"), ("NODE_FAILURE", "failed"), ("RETRY_LIMIT", "failed"),
    ("DISK_FULL", "failed")])
def test_result_mapping_keeps_raw_result(result, status):
    src = ZuulResultSource(zuul_url="http://x", tenant="t")
    run = src.record({"uuid": "u", "job_name": "j", "result": result, "log_url": "http://l/"})
    assert (run.status, run.result) == (status, result)


@pytest.mark.parametrize("build", [
    {"result": None},
    {"result": "SUCCESS", "final": False},
    {"result": "FAILURE", "log_url": None},
    {"result": "SKIPPED"},
    {"result": "CANCELED"},
])
def test_skips_unfinished_or_logless_builds(build):
    src = ZuulResultSource(zuul_url="http://x", tenant="t")
    assert src.record({"uuid": "u", "job_name": "j", "log_url": "http://l/", **build}) is None


def test_lists_every_finished_build_of_a_job(server, history):
    truth = {r["build_uuid"]: r for r in history.runs if r["build_name"] == "tempest-full"}
    with zuul(server, page_size=7) as src:
        runs = list(src.list_runs("tempest-full"))
    assert {r.id for r in runs} == set(truth)
    assert len(runs) == len(truth)
    for run in runs:
        assert run.status == truth[run.id]["status"]
        assert run.artifacts_url == truth[run.id]["artifacts_url"]
        assert run.source == "zuul"
    # Newest first, as Zuul lists them.
    starts = [r.start for r in runs]
    assert starts == sorted(starts, reverse=True)


def test_paging_requests_use_limit_and_skip(history):
    with CIServer(builds=history.zuul_builds) as srv:
        seen = []
        original = srv.query_builds

        def spy(query):
            seen.append((query.get("limit"), query.get("skip")))
            return original(query)

        srv.query_builds = spy
        with zuul(srv, page_size=10) as src:
            n = len(list(src.list_runs("grenade")))
    assert seen[0] == (["10"], ["0"])
    assert seen[1] == (["10"], ["10"])
    listed = len([b for b in srv.builds if b["job_name"] == "grenade"])
    assert len(seen) == listed // 10 + 1
    assert n <= listed


def test_filters_limit_window_balanced(server, history):
    with zuul(server) as src:
        gate = list(src.list_runs("tempest-full", filters={"pipeline": "gate"}))
        assert gate and all(r.metadata["pipeline"] == "gate" for r in gate)
        assert len(gate) == len([r for r in history.runs if r["build_name"] == "tempest-full"
                                 and r["pipeline"] == "gate"])
        assert len(list(src.list_runs("tempest-full", limit=3))) == 3
        runs = [r for r in history.runs if r["build_name"] == "tempest-full"]
        # Zuul gives start times to the second.
        since = sorted(r["start"] for r in runs)[len(runs) // 2].replace(microsecond=0)
        newer = list(src.list_runs("tempest-full", since=since))
        assert {r.id for r in newer} == {r["build_uuid"] for r in runs if r["start"] >= since}
        older = list(src.list_runs("tempest-full", until=since))
        assert {r.id for r in older} == {r["build_uuid"] for r in runs if r["start"] < since}
        balanced = list(src.list_runs("tempest-full", balanced=True, limit=4))
        assert [r.status for r in balanced] == ["failed", "passed", "failed", "passed"]
    with zuul(server, pipeline="check") as src:
        assert all(r.metadata["pipeline"] == "check" for r in src.list_runs("tempest-full"))


def test_get_run_and_404(server, history):
    run = history.runs[0]
    with zuul(server) as src:
        got = src.get_run(run["build_uuid"])
        assert got.id == run["build_uuid"]
        with pytest.raises(NotFoundError):
            src.get_run("0" * 32)
        with pytest.raises(NotFoundError):
            src.get_run("../../etc/passwd")


def test_retries_server_errors_and_dropped_connections(history):
    with CIServer(builds=history.zuul_builds) as srv:
        srv.fault("*/builds", status=500, times=2)
        srv.fault("*/builds", drop=True, times=1)
        with zuul(srv, retries=3) as src:
            assert list(src.list_runs("grenade", limit=2))
        assert srv.hits("*/builds") == 4


def test_persistent_500_is_a_transient_source_error(history):
    with CIServer(builds=history.zuul_builds) as srv:
        srv.fault("*/builds", status=500)
        with zuul(srv, retries=2) as src:
            with pytest.raises(SourceError, match="500") as info:
                list(src.list_runs("grenade"))
        assert info.value.transient
        assert srv.hits("*/builds") == 3


def test_api_token_is_sent_and_never_shown(history):
    with CIServer(builds=history.zuul_builds, token="t0ken-s3cret") as srv:
        with zuul(srv, api_token="t0ken-s3cret") as src:
            assert list(src.list_runs("grenade", limit=1))
            assert "t0ken-s3cret" not in repr(src)
            assert "t0ken-s3cret" not in str(src.get_params())
        with zuul(srv, api_token="wrong-t0ken") as src:
            with pytest.raises(SourceError) as info:
                list(src.list_runs("grenade"))
        assert "wrong-t0ken" not in str(info.value)


def test_wrong_tenant_or_url(history):
    with CIServer(builds=history.zuul_builds) as srv:
        src = ZuulResultSource(zuul_url=srv.zuul_url, tenant="nope", backoff=0.01)
        with pytest.raises(SourceError, match="--tenant"):
            list(src.list_runs("grenade"))
        # A URL that already names the tenant's API is used as it is.
        src = ZuulResultSource(zuul_url=srv.zuul_url + "/api/tenant/openstack")
        assert list(src.list_runs("grenade", limit=1))


def test_needs_url_and_tenant():
    with pytest.raises(ConfigError, match="--zuul-url"):
        ZuulResultSource(tenant="t")
    with pytest.raises(ConfigError, match="--tenant"):
        ZuulResultSource(zuul_url="http://x")


def test_credentials_in_the_zuul_url_never_reach_an_error(history):
    import socket

    with CIServer(builds=history.zuul_builds, token="t0ken") as srv:
        url = srv.zuul_url.replace("http://", "http://alice:SEKRIT@")
        src = ZuulResultSource(zuul_url=url, tenant="openstack", backoff=0, retries=1)
        with pytest.raises(SourceError) as info:
            list(src.list_runs("grenade"))
        # 401: a clear error, worth retrying once the token is fixed.
        assert "401" in str(info.value) and "--api-token" in str(info.value)
        assert info.value.transient
        assert "SEKRIT" not in str(info.value) and "alice" not in str(info.value)
        assert "SEKRIT" not in repr(src)
        with pytest.raises(NotFoundError) as info:
            ZuulResultSource(zuul_url=url, tenant="nope", api_token="t0ken").get_run("x")
        assert "SEKRIT" not in str(info.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = ZuulResultSource(zuul_url=f"http://alice:SEKRIT@127.0.0.1:{port}", tenant="t",
                           backoff=0, retries=0, connect_timeout=2)
    with pytest.raises(SourceError) as info:
        list(src.list_runs("grenade"))
    assert info.value.transient and "SEKRIT" not in str(info.value)


def test_retry_after_is_honoured(history, monkeypatch):
    import urllib3.util.retry

    waited = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", waited.append)
    with CIServer(builds=history.zuul_builds) as srv:
        srv.fault("*/builds", status=429, times=1, headers={"Retry-After": "4"})
        with zuul(srv) as src:
            assert list(src.list_runs("grenade", limit=1))
        assert srv.hits("*/builds") == 2
    assert 4.0 in waited
