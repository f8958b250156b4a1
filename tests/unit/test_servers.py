"""The test log server and Zuul API: files, filters, paging, faults."""

import time

import pytest
import requests

from ciml.testing.servers import CIServer

BUILDS = [
    {"_id": 5, "uuid": "u5", "job_name": "tempest-full", "result": "SUCCESS", "final": True,
     "pipeline": "gate", "log_url": "x/", "ref": {"project": "openstack/nova",
                                                  "branch": "master"}},
    {"_id": 4, "uuid": "u4", "job_name": "grenade", "result": "FAILURE", "final": True,
     "pipeline": "check", "log_url": "x/", "ref": {"project": "openstack/nova",
                                                   "branch": "stable"}},
    {"_id": 3, "uuid": "u3", "job_name": "tempest-full", "result": "FAILURE",
     "pipeline": "check", "log_url": "x/", "project": "openstack/cinder",
     "branch": "master"},  # the flat format
    {"_id": 2, "uuid": "u2", "job_name": "tempest-full", "result": None, "final": False,
     "pipeline": "gate", "log_url": None, "ref": {"project": "openstack/nova",
                                                  "branch": "master"}},
]


@pytest.fixture
def server(tmp_path):
    (tmp_path / "logs" / "a").mkdir(parents=True)
    (tmp_path / "logs" / "a" / "file.txt").write_text("hello\n" * 100)
    (tmp_path / "secret.txt").write_text("outside")
    with CIServer(root=tmp_path / "logs", builds=BUILDS) as srv:
        yield srv


def _uuids(server, **params):
    resp = requests.get(server.url + "api/tenant/openstack/builds", params=params, timeout=5)
    assert resp.status_code == 200
    return [b["uuid"] for b in resp.json()]


def test_files_and_listing(server):
    resp = requests.get(server.url + "a/file.txt", timeout=5)
    assert resp.status_code == 200 and resp.text == "hello\n" * 100
    assert requests.get(server.url + "a/nope.txt", timeout=5).status_code == 404
    assert "file.txt" in requests.get(server.url + "a/", timeout=5).text
    assert requests.get(server.url + "a/../../secret.txt", timeout=5).status_code == 404
    assert requests.get(server.url + "%2e%2e/secret.txt", timeout=5).status_code == 404
    assert requests.head(server.url + "a/file.txt", timeout=5).headers["Content-Length"] == "600"


def test_zuul_builds_filters_and_paging(server):
    assert _uuids(server) == ["u5", "u4", "u3", "u2"]
    assert _uuids(server, job_name="tempest-full") == ["u5", "u3", "u2"]
    assert _uuids(server, project="openstack/cinder") == ["u3"]
    assert _uuids(server, project="openstack/nova", branch="master") == ["u5", "u2"]
    assert _uuids(server, pipeline="check", result="FAILURE") == ["u4", "u3"]
    assert _uuids(server, result=["SUCCESS", "FAILURE"]) == ["u5", "u4", "u3"]
    assert _uuids(server, complete="true") == ["u5", "u4", "u3"]
    assert _uuids(server, limit=2) == ["u5", "u4"]
    assert _uuids(server, limit=2, skip=2) == ["u3", "u2"]
    assert _uuids(server, limit=2, skip=4) == []
    resp = requests.get(server.url + "api/tenant/openstack/builds?limit=x", timeout=5)
    assert resp.status_code == 400


def test_zuul_build_and_tenant(server):
    base = server.zuul_url + "/api/tenant/openstack/build/"
    assert requests.get(base + "u4", timeout=5).json()["job_name"] == "grenade"
    assert requests.get(base + "nope", timeout=5).status_code == 404
    other = server.url + "api/tenant/other/builds"
    assert requests.get(other, timeout=5).status_code == 404
    assert requests.get(server.url + "api/tenants", timeout=5).json() == [{"name": "openstack"}]


def test_builds_from_a_file_and_token(tmp_path):
    import json

    path = tmp_path / "builds.json"
    path.write_text(json.dumps(BUILDS))
    with CIServer(builds=path, token="t0ken") as server:
        url = server.url + "api/tenant/openstack/builds"
        assert requests.get(url, timeout=5).status_code == 401
        resp = requests.get(url, headers={"Authorization": "Bearer t0ken"}, timeout=5)
        assert len(resp.json()) == 4


def test_faults(server):
    url = server.url + "a/file.txt"
    server.fault("/a/*", status=500, times=2)
    assert [requests.get(url, timeout=5).status_code for _ in range(3)] == [500, 500, 200]
    server.fault("/a/*", status=404, times=1)
    assert requests.get(url, timeout=5).status_code == 404
    server.fault("/a/*", html=True, times=1)
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 200 and resp.text.startswith("<!DOCTYPE html>")
    server.fault("/a/*", drop=True, times=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    server.fault("/a/*", truncate=True, times=1)
    with pytest.raises(requests.RequestException):
        requests.get(url, timeout=5)
    assert requests.get(url, timeout=5).status_code == 200
    assert server.hits("/a/file.txt") == 8
    with pytest.raises(ValueError):
        server.fault("*", status=500, drop=True)


def test_latency(server):
    server.latency = 0.05
    t0 = time.perf_counter()
    requests.get(server.url + "a/file.txt", timeout=5)
    assert time.perf_counter() - t0 >= 0.05
    server.latency = 0
    server.fault("*", latency=0.05, times=1)
    t0 = time.perf_counter()
    assert requests.get(server.url + "a/file.txt", timeout=5).status_code == 200
    assert time.perf_counter() - t0 >= 0.05


def test_url_needs_a_started_server():
    server = CIServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    server.stop()   # harmless when never started
