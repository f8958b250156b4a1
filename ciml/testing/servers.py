"""A local log server and Zuul API for tests and benchmarks, with injected faults.

:class:`CIServer` runs a threaded HTTP server on ``127.0.0.1`` (an ephemeral
port) in a background thread.  It serves a directory (a CI log tree, e.g.
the one :func:`ciml.generator.generate_history` writes) and, from a list of
Zuul build dicts, the two Zuul REST endpoints ciml uses::

    GET /api/tenant/<tenant>/builds?job_name=&project=&pipeline=&branch=&result=
                                    &uuid=&complete=&limit=&skip=
    GET /api/tenant/<tenant>/build/<uuid>

Faults make the unhappy paths testable: a latency added to every request
(the benchmarks' 50 ms), and per-path rules (glob patterns on the URL path)
that answer a status (404, 500...) a number of times then recover, drop the
connection before answering, cut a body short, or serve an HTML page::

    with CIServer(root=history.logs_dir, builds=history.zuul_builds) as server:
        server.fault("*/dstat-csv_log.txt.gz", status=500, times=2)
        server.fault("*/broken/*", drop=True)
        fetch(server.url + "...")
        assert server.hits("*/dstat-csv_log.txt.gz") == 3
"""

import fnmatch
import http.server
import json
import mimetypes
import pathlib
import socket
import threading
import time
import urllib.parse

_HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Log server</title></head>\n"
              b"<body><h1>Oops</h1><p>This is a web page, not the file you asked "
              b"for.</p></body></html>\n")


class _Rule:
    def __init__(self, pattern, status, times, drop, truncate, html, latency, headers=None,
                 body=None):
        self.pattern = pattern
        self.body = body
        self.headers = dict(headers or {})
        self.status = status
        self.remaining = times
        self.drop = drop
        self.truncate = truncate
        self.html = html
        self.latency = latency

    def take(self, path):
        """Whether the rule applies to this request (and count it if so)."""
        if not fnmatch.fnmatchcase(path, self.pattern):
            return False
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"
    server_version = "ciml-test-server"
    # Headers and body go out in two writes: with Nagle's algorithm the body
    # waits for the client's delayed ACK, about 40 ms on every request.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_HEAD(self):
        self._handle(head=True)

    def do_GET(self):
        self._handle(head=False)

    def _handle(self, head):
        owner = self.server.owner
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        rule = owner._record_and_match(self.command, path)
        delay = owner.latency + ((rule.latency or 0) if rule else 0)
        if delay:
            time.sleep(delay)
        if rule is not None:
            if rule.drop:
                self._drop()
                return
            if rule.html:
                self._send(200, _HTML_PAGE, "text/html; charset=utf-8", head=head)
                return
            if rule.status is not None:
                body = rule.body
                if body is None:
                    body = f"{rule.status} injected by the test server\n".encode()
                headers = dict(rule.headers)
                content_type = headers.pop("Content-Type", "text/plain")
                self._send(rule.status, body, content_type, head=head, headers=headers)
                return
        routed = owner.route(self.command, path, urllib.parse.parse_qs(parsed.query),
                             {k: v for k, v in self.headers.items()})
        if routed is not None:
            status, headers, body = routed
            headers = dict(headers)
            content_type = headers.pop("Content-Type", "application/json")
            self._send(status, body, content_type, head=head, headers=headers,
                       truncate=bool(rule and rule.truncate))
            return
        if owner.token and path.startswith("/api/"):
            if self.headers.get("Authorization") != f"Bearer {owner.token}":
                self._json(401, {"description": "Unauthorized"}, head)
                return
        if path.startswith("/api/"):
            self._api(path, urllib.parse.parse_qs(parsed.query), head)
            return
        if self.headers.get("Authorization"):
            with owner._lock:
                owner.authorized_files.append(path)
        self._file(path, head, truncate=bool(rule and rule.truncate))

    # -- responses -----------------------------------------------------------

    def _send(self, status, body, content_type, head=False, headers=None, truncate=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._drop()
            return
        self.wfile.write(body)

    def _drop(self):
        # Close without an answer: the client sees a reset or a closed connection.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _json(self, status, data, head):
        self._send(status, json.dumps(data).encode(), "application/json", head=head)

    def _file(self, path, head, truncate):
        owner = self.server.owner
        if owner.root is None:
            self._send(404, b"not found\n", "text/plain", head=head)
            return
        target = (owner.root / path.lstrip("/")).resolve()
        if target != owner.root and owner.root not in target.parents:
            self._send(404, b"not found\n", "text/plain", head=head)
            return
        if target.is_dir():
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir())
            listing = "".join(f'<a href="{n}">{n}</a><br>\n' for n in names)
            body = f"<!DOCTYPE html>\n<html><body>\n{listing}</body></html>\n".encode()
            self._send(200, body, "text/html; charset=utf-8", head=head)
            return
        try:
            body = target.read_bytes()
        except OSError:
            self._send(404, b"not found\n", "text/plain", head=head)
            return
        headers = {}
        if target.name.endswith(".gz"):
            if owner.gzip_content_encoding:
                # What many log servers do for *.txt.gz: the browser shows text.
                content_type = "text/plain"
                headers["Content-Encoding"] = "gzip"
            else:
                content_type = "application/gzip"
        else:
            content_type = mimetypes.guess_type(target.name)[0] or "text/plain"
        self._send(200, body, content_type, head=head, headers=headers, truncate=truncate)

    def _api(self, path, query, head):
        owner = self.server.owner
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "tenants"]:
            self._json(200, [{"name": owner.tenant}], head)
            return
        if len(parts) < 4 or parts[:2] != ["api", "tenant"] or parts[2] != owner.tenant:
            self._json(404, {"description": "Tenant not found"}, head)
            return
        if parts[3] == "builds" and len(parts) == 4:
            try:
                self._json(200, owner.query_builds(query), head)
            except ValueError as exc:
                self._json(400, {"description": str(exc)}, head)
            return
        if parts[3] == "build" and len(parts) == 5:
            build = owner.build(parts[4])
            if build is None:
                self._json(404, {"description": "Build not found"}, head)
            else:
                self._json(200, build, head)
            return
        self._json(404, {"description": "Not found"}, head)


class _Server(http.server.ThreadingHTTPServer):
    #: The CIServer whose files, API and faults this server answers with.
    owner: "CIServer"
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # Clients that hang up (timeouts, dropped-connection tests) are normal
        # here; anything else is still reported.
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def _field(build, name):
    """A build field, from the current nested-``ref`` format or the flat one."""
    if name in ("project", "branch", "change", "patchset") and isinstance(build.get("ref"), dict):
        return build["ref"].get(name)
    return build.get(name)


class _Loopback:
    """The life cycle the test servers share: a threaded HTTP server on a free
    loopback port, its handler reaching the owner through ``server.owner``."""

    _handler: type[http.server.BaseHTTPRequestHandler]
    _thread_name = "ciml-test-server"
    _server: "_Server | None" = None
    _thread: threading.Thread | None = None

    def start(self):
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", 0), self._handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class CIServer(_Loopback):
    """A threaded HTTP server on 127.0.0.1 serving a log tree and a Zuul API.

    :param root: the directory served at ``/`` (``None``: no files).
    :param builds: Zuul build dicts (newest first, as Zuul lists them), or
        the path of a JSON file holding that list.
    :param tenant: the Zuul tenant name in API paths.
    :param latency: seconds added to every request.
    :param token: when set, API requests must carry ``Authorization:
        Bearer <token>``.
    :param gzip_content_encoding: serve ``*.gz`` files with
        ``Content-Encoding: gzip`` as many log servers do.
    """

    _handler = _Handler

    def __init__(self, root=None, builds=None, *, tenant="openstack", latency=0.0,
                 token=None, gzip_content_encoding=False):
        self.root = pathlib.Path(root).resolve() if root is not None else None
        if isinstance(builds, (str, pathlib.Path)):
            builds = json.loads(pathlib.Path(builds).read_text())
        self.builds = list(builds or [])
        self.tenant = tenant
        self.latency = latency
        self.token = token
        self.gzip_content_encoding = gzip_content_encoding
        self.requests = []
        #: Paths of log files asked for with an ``Authorization`` header: an
        #: API token must never reach the log server.
        self.authorized_files = []
        self._rules = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self):
        """``http://127.0.0.1:PORT/`` (with the trailing slash)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self.port}/"

    @property
    def zuul_url(self):
        """The URL a Zuul result source is given (no ``/api``)."""
        return self.url.rstrip("/")

    # -- faults --------------------------------------------------------------

    def fault(self, pattern="*", *, status=None, times=None, drop=False, truncate=False,
              html=False, latency=None, headers=None, body=None):
        """Add a fault for request paths matching the glob ``pattern``.

        Exactly one effect: ``status`` (answer that HTTP status), ``drop``
        (close the connection without answering), ``truncate`` (send half of
        a file, then close), ``html`` (an HTML page with status 200) or only
        ``latency`` (extra seconds).  ``times``: how many matching requests
        it affects before it stops (``None``: all of them).  ``headers`` go
        with a ``status`` answer (``{"Retry-After": "2"}``), and so does
        ``body`` (default: a line of text), complete and well framed (a
        JSON document cut short, say).  Rules are tried
        in the order they were added; the first that applies wins.
        """
        effects = sum(bool(x) for x in (status is not None, drop, truncate, html))
        if effects > 1 or (effects == 0 and latency is None):
            raise ValueError("give exactly one of status, drop, truncate, html (or latency)")
        rule = _Rule(pattern, status, times, drop, truncate, html, latency, headers, body)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self):
        with self._lock:
            self._rules.clear()

    def _record_and_match(self, method, path):
        with self._lock:
            self.requests.append((method, path))
            for rule in self._rules:
                if rule.take(path):
                    return rule
        return None

    def hits(self, pattern="*"):
        """How many requests so far had a path matching ``pattern``."""
        with self._lock:
            return sum(1 for _, p in self.requests if fnmatch.fnmatchcase(p, pattern))

    # -- other CI systems' APIs --------------------------------------------------

    def route(self, method, path, query, headers):
        """Answer a request another way: ``(status, headers, body)``, or ``None``.

        The hook through which the fake GitHub, GitLab and Jenkins servers
        (:mod:`ciml.testing.forges`) answer their APIs; faults apply first.
        ``query`` is ``parse_qs``'s dict, ``headers`` the request's.
        """
        return None

    # -- Zuul ----------------------------------------------------------------

    def build(self, build_uuid):
        for build in self.builds:
            if build.get("uuid") == build_uuid:
                return build
        return None

    def query_builds(self, query):
        """Zuul's ``/builds`` filtering and paging over ``builds``."""
        def values(name):
            return [v for v in query.get(name, []) if v != ""]

        try:
            limit = int(query.get("limit", ["50"])[0])
            skip = int(query.get("skip", ["0"])[0])
        except ValueError:
            raise ValueError("limit and skip must be integers") from None
        if limit < 0 or skip < 0:
            raise ValueError("limit and skip must not be negative")
        filters = {name: values(name) for name in
                   ("job_name", "project", "pipeline", "branch", "result", "uuid", "change",
                    "patchset", "ref")}
        complete = values("complete")
        selected = []
        for build in self.builds:
            ok = True
            for name, wanted in filters.items():
                if wanted and str(_field(build, name)) not in wanted:
                    ok = False
                    break
            if ok and complete:
                done = build.get("result") is not None
                ok = done == (complete[0].lower() in ("1", "true", "yes"))
            if ok:
                selected.append(build)
        return selected[skip: skip + limit]
