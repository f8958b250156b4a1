"""ciml.http: the one client's retries, Retry-After, rate limits, auth errors, redaction,
and what it keeps of requests' behaviour (proxies, auth, redirects)."""

import http.server
import threading

import pytest
import urllib3

from ciml.http import (
    FetchError,
    HttpClient,
    redact_url,
    register_credentials,
    unregister_credentials,
)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from ``server.routes``; records each request line and its headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(self.path, (404, {}, b"missing"))
        if isinstance(route, list):   # answers in turn; the last one stays
            route = route.pop(0) if len(route) > 1 else route[0]
        status, headers, body = route
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
    resp = client.open(url)
    try:
        return resp.status, resp.read()
    finally:
        client.release(resp, body_read=True)


def test_credentials_in_the_url_become_basic_auth(server):
    server.routes["/f"] = (200, {}, b"data")
    client = HttpClient(user_agent="ciml-test")
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
    client = HttpClient(max_redirects=3)
    assert _get(client, server.url + "/old") == (200, b"moved")
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        _get(client, server.url + "/loop")
    assert sum(1 for path, _ in server.seen if path == "/loop") == 4


def test_the_environment_proxy_is_used_unless_bypassed(server, monkeypatch):
    # The recording server plays the proxy: a proxied request names the
    # whole URL on its request line.
    server.routes["http://logs.example.org/run/dstat.gz"] = (200, {}, b"via proxy")
    monkeypatch.setenv("http_proxy", server.url)
    client = HttpClient()
    assert _get(client, "http://logs.example.org/run/dstat.gz") == (200, b"via proxy")
    assert server.seen[-1][0] == "http://logs.example.org/run/dstat.gz"

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server.routes["/direct"] = (200, {}, b"direct")
    assert _get(client, server.url + "/direct") == (200, b"direct")
    assert server.seen[-1][0] == "/direct"


def test_close_keeps_the_client_usable(server):
    server.routes["/f"] = (200, {}, b"x")
    client = HttpClient()
    assert _get(client, server.url + "/f") == (200, b"x")
    client.close()
    client.close()
    assert _get(client, server.url + "/f") == (200, b"x")


def test_redact_url_keeps_host_and_port_as_written():
    assert redact_url("http://u:p%40ss@[::1]:8080/a?b=1") == "http://[::1]:8080/a?b=1"
    assert redact_url("https://token@Logs.Example.org/x") == "https://Logs.Example.org/x"
    assert redact_url("http://logs.example.org/x") == "http://logs.example.org/x"
    # Signed storage URLs and tokens in a query string.
    assert redact_url("https://blob.example/a.zip?sv=2021&sig=AbC%2B&se=x&name=dstat") == \
        "https://blob.example/a.zip?sv=****&sig=****&se=****&name=dstat"
    assert redact_url("https://gl.example/api?private_token=glpat-1&page=2") == \
        "https://gl.example/api?private_token=****&page=2"
    from ciml.http import without_credentials

    assert without_credentials is redact_url


def _client(**kw):
    kw.setdefault("backoff", 0)
    kw.setdefault("read_timeout", 5)
    return HttpClient(**kw)


@pytest.fixture
def sleeps(monkeypatch):
    """Every wait the client (or urllib3's Retry) asks for, without waiting."""
    import urllib3.util.retry

    import ciml.http

    waited = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", waited.append)
    monkeypatch.setattr(ciml.http.time, "sleep", waited.append)
    return waited


@pytest.mark.parametrize("status", [429, 503, 403])
def test_retry_after_is_honoured(server, sleeps, status):
    server.routes["/f"] = [(status, {"Retry-After": "7"}, b"slow down"), (200, {}, b"ok")]
    assert _client().fetch(server.url + "/f") == b"ok"
    assert len(server.seen) == 2
    assert 7.0 in sleeps


def test_retry_after_as_a_date(server, sleeps):
    import email.utils
    import time

    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    server.routes["/f"] = [(503, {"Retry-After": when}, b""), (200, {}, b"ok")]
    assert _client().fetch(server.url + "/f") == b"ok"
    assert any(15 <= s <= 21 for s in sleeps), sleeps


def test_a_longer_wait_than_allowed_is_not_fought(server, sleeps):
    server.routes["/f"] = (429, {"Retry-After": "3600"}, b"later")
    with pytest.raises(FetchError) as info:
        _client(max_wait=60).fetch(server.url + "/f")
    assert info.value.reason == "rate-limited" and info.value.transient
    assert "3600 s" in str(info.value)
    assert len(server.seen) == 1 and not [s for s in sleeps if s >= 60]


def test_an_exhausted_rate_limit_is_waited_for_before_asking_again(server, sleeps):
    import time

    soon = str(int(time.time()) + 30)
    server.routes["/a"] = (200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": soon},
                           b"a")
    server.routes["/b"] = (200, {}, b"b")
    client = _client()
    assert client.fetch(server.url + "/a") == b"a"
    assert client.fetch(server.url + "/b") == b"b"
    assert any(25 <= s <= 31 for s in sleeps), sleeps
    # A reset an hour away: refused without sending a request.
    later = str(int(time.time()) + 3600)
    server.routes["/a"] = (200, {"RateLimit-Remaining": "0", "RateLimit-Reset": later}, b"a")
    client.fetch(server.url + "/a")
    seen = len(server.seen)
    with pytest.raises(FetchError) as info:
        client.fetch(server.url + "/b")
    assert info.value.reason == "rate-limited" and info.value.transient
    assert len(server.seen) == seen


def test_github_primary_rate_limit_403_is_rate_limited_not_auth(server, sleeps):
    import time

    later = str(int(time.time()) + 3600)
    server.routes["/f"] = (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": later},
                           b'{"message": "API rate limit exceeded"}')
    with pytest.raises(FetchError) as info:
        _client().fetch(server.url + "/f")
    assert info.value.reason == "rate-limited" and info.value.transient


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_a_clear_retryable_error(server, status):
    server.routes["/f"] = (status, {}, b"Bad credentials")
    url = server.url.replace("://", "://bob:hunter2@") + "/f"
    with pytest.raises(FetchError) as info:
        _client().fetch(url)
    assert info.value.reason == "auth" and info.value.transient
    assert f"HTTP {status}" in str(info.value) and "credentials" in str(info.value)
    assert "hunter2" not in str(info.value) and "bob" not in str(info.value)
    assert len(server.seen) == 1   # not retried: the same token fails the same way


def test_server_errors_are_retried_then_transient(server, sleeps):
    server.routes["/f"] = (502, {}, b"bad gateway")
    with pytest.raises(FetchError) as info:
        _client(retries=2).fetch(server.url + "/f")
    assert info.value.reason == "http-error" and info.value.transient
    assert len(server.seen) == 3


def test_get_json_names_what_is_wrong(server):
    server.routes["/html"] = (200, {"Content-Type": "text/html"}, b"<!DOCTYPE html><html>")
    server.routes["/cut"] = (200, {}, b'{"jobs": [{"id": 1')
    server.routes["/ok"] = (200, {}, b'{"a": 1}')
    client = _client()
    assert client.get_json(server.url + "/ok")[0] == {"a": 1}
    assert client.get_json(server.url + "/none")[0] is None
    for path, words in (("/html", "an HTML page"), ("/cut", "not JSON")):
        with pytest.raises(FetchError, match=words) as info:
            client.get_json(server.url + path, what="the GitHub API")
        assert info.value.reason == "not-json"
        assert "the GitHub API" in str(info.value)


def test_lent_credentials_stay_under_their_api_and_on_their_host(server):
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    other.daemon_threads = True
    other.seen, other.routes = [], {"/blob": (200, {}, b"zip bytes")}
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        register_credentials(server.url + "/api/v3", {"Authorization": "Bearer s3cret-t0ken"})
        blob = f"http://127.0.0.1:{other.server_address[1]}/blob"
        server.routes["/api/v3/artifacts/1/zip"] = (302, {"Location": blob}, b"")
        server.routes["/api/v3x"] = (200, {}, b"")
        server.routes["/logs/f"] = (200, {}, b"")
        client = _client()
        assert client.fetch(server.url + "/api/v3/artifacts/1/zip") == b"zip bytes"
        client.fetch(server.url + "/api/v3x")
        client.fetch(server.url + "/logs/f")
    finally:
        other.shutdown()
        other.server_close()
        unregister_credentials(server.url + "/api/v3")
    auth = {path: headers.get("authorization") for path, headers in server.seen}
    assert auth == {"/api/v3/artifacts/1/zip": "Bearer s3cret-t0ken", "/api/v3x": None,
                    "/logs/f": None}
    # The signed storage URL on another host never sees the token.
    assert [h.get("authorization") for _, h in other.seen] == [None]


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


def test_a_rate_limit_said_only_in_the_body_waits_a_minute(server, sleeps):
    # GitHub's secondary rate limit may come without Retry-After.
    limited = (403, {"Content-Type": "application/json"},
               b'{"message": "You have exceeded a secondary rate limit. Please wait."}')
    server.routes["/f"] = [limited, (200, {}, b"ok")]
    assert _client().fetch(server.url + "/f") == b"ok"
    assert 60 in sleeps
    server.routes["/g"] = limited
    with pytest.raises(FetchError) as info:
        _client(max_wait=30).fetch(server.url + "/g")
    assert info.value.reason == "rate-limited" and info.value.transient
    # A plain 403 is still a refused credential.
    server.routes["/h"] = (403, {}, b'{"message": "Resource not accessible by integration"}')
    with pytest.raises(FetchError) as info:
        _client().fetch(server.url + "/h")
    assert info.value.reason == "auth"


def test_redact_text_and_the_logging_filter(caplog):
    import logging

    from ciml.http import RedactingFilter, redact_text

    text = ("cannot fetch http://u:pw1@logs.example/x?sig=abc (HTTP 500); "
            "see 'https://t0k@api.example/y'")
    assert redact_text(text) == ("cannot fetch http://logs.example/x?sig=**** (HTTP 500); "
                                 "see 'https://api.example/y'")
    assert redact_text("no url here") == "no url here"
    # A password already masked (SQLAlchemy renders URLs so) stays as shown.
    assert redact_text("db mysql+pymysql://root:***@db/x: denied") == \
        "db mysql+pymysql://root:***@db/x: denied"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", ("http://a:pw2@h/",),
                               None)
    assert RedactingFilter().filter(record) and record.getMessage() == "failed: http://h/"
    try:
        raise ValueError("http://a:pw3@h/")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    RedactingFilter().filter(record)
    assert "pw3" not in record.exc_text and "http://h/" in record.exc_text
