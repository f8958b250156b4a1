"""ciml.http.Downloader: what it keeps of requests' behaviour (proxies, auth, redirects)."""

import http.server
import threading

import pytest
import urllib3

from ciml.http import Downloader


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from ``server.routes``; records each request line and its headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        status, headers, body = self.server.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.daemon_threads = True
    srv.seen = []
    srv.routes = {}
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy",
                "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _get(client, url):
    resp = client.get(url, 5, 5)
    try:
        return resp.status, resp.read()
    finally:
        client.release(resp, body_read=True)


def test_credentials_in_the_url_become_basic_auth(server):
    server.routes["/f"] = (200, {}, b"data")
    client = Downloader(user_agent="ciml-test")
    status, body = _get(client, server.url.replace("://", "://al%40ice:s3cret@") + "/f")
    assert (status, body) == (200, b"data")
    path, headers = server.seen[-1]
    assert path == "/f"
    # base64("al@ice:s3cret")
    assert headers["authorization"] == "Basic YWxAaWNlOnMzY3JldA=="
    assert headers["user-agent"] == "ciml-test"


def test_redirects_are_followed_and_capped(server):
    server.routes["/old"] = (302, {"Location": "/new"}, b"")
    server.routes["/new"] = (200, {}, b"moved")
    server.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    client = Downloader(max_redirects=3)
    assert _get(client, server.url + "/old") == (200, b"moved")
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        _get(client, server.url + "/loop")
    assert sum(1 for path, _ in server.seen if path == "/loop") == 4


def test_the_environment_proxy_is_used_unless_bypassed(server, monkeypatch):
    # The recording server plays the proxy: a proxied request names the
    # whole URL on its request line.
    server.routes["http://logs.example.org/run/dstat.gz"] = (200, {}, b"via proxy")
    monkeypatch.setenv("http_proxy", server.url)
    client = Downloader()
    assert _get(client, "http://logs.example.org/run/dstat.gz") == (200, b"via proxy")
    assert server.seen[-1][0] == "http://logs.example.org/run/dstat.gz"

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server.routes["/direct"] = (200, {}, b"direct")
    assert _get(client, server.url + "/direct") == (200, b"direct")
    assert server.seen[-1][0] == "/direct"


def test_close_keeps_the_client_usable(server):
    server.routes["/f"] = (200, {}, b"x")
    client = Downloader()
    assert _get(client, server.url + "/f") == (200, b"x")
    client.close()
    client.close()
    assert _get(client, server.url + "/f") == (200, b"x")


def test_without_credentials_keeps_host_and_port_as_written():
    from ciml.http import without_credentials

    assert without_credentials("http://u:p%40ss@[::1]:8080/a?b=1") == "http://[::1]:8080/a?b=1"
    assert without_credentials("https://token@Logs.Example.org/x") == "https://Logs.Example.org/x"
    assert without_credentials("http://logs.example.org/x") == "http://logs.example.org/x"


@pytest.mark.parametrize("name,value", [("retries", "-1"), ("timeout", "0"),
                                        ("connect_timeout", "-2"), ("backoff", "-0.5")])
def test_http_settings_are_checked_when_given(name, value):
    from ciml.errors import ConfigError
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.zuul import ZuulResultSource

    for make in (DstatMetricSource, lambda **kw: ZuulResultSource(zuul_url="http://z",
                                                                  tenant="t", **kw)):
        with pytest.raises(ConfigError, match=name):
            make(**{name: value})


def test_read_local(tmp_path):
    from ciml.http import FetchError, read_local

    (tmp_path / "f.txt").write_bytes(b"x" * 10)
    assert read_local(tmp_path / "f.txt", 10) == b"x" * 10
    # Nothing there: no file, a folder, a path under a file.
    assert read_local(tmp_path / "missing", 10) is None
    assert read_local(tmp_path, 10) is None
    assert read_local(tmp_path / "f.txt" / "below", 10) is None
    with pytest.raises(FetchError, match="is 10 bytes, over the 9 limit") as info:
        read_local(tmp_path / "f.txt", 9)
    assert info.value.reason == "too-large" and not info.value.transient


def test_looks_like_html():
    from ciml.http import looks_like_html

    for page in (b"<!DOCTYPE html><html>", b"\xef\xbb\xbf  <HTML lang=en>", b"<?xml version",
                 b"<!-- x -->\n<html>"):
        assert looks_like_html(page), page
    for data in (b'"Dstat 0.7.3 CSV output"\n', b"all:\n  hosts: {}\n", b"\x1f\x8b\x08"):
        assert not looks_like_html(data), data
