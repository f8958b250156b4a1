"""A local Gerrit REST server for tests: records review posts, answers as Gerrit does.

It knows a few changes (number -> patchset numbers) and HTTP accounts
(user -> HTTP password), and answers the one call the ``gerrit`` reporter
makes, with Gerrit's ``)]}'`` line before every JSON body::

    POST /a/changes/{project~number | number}/revisions/{patchset}/review

Basic auth is checked (a wrong password is ``401 Unauthorized``, as
Gerrit says it), an unknown change or patchset is ``404 Not found: ID``,
and a body that is not JSON with a ``message`` is ``400``.  Faults make
the unhappy paths testable: a status answered a number of times (500,
503...), or a delay longer than the client's timeout::

    with GerritServer(changes={1234: [1, 2]}, accounts={"ciml": "pw"}) as gerrit:
        gerrit.fault(status=500, times=1)
        ...
        assert gerrit.reviews[0]["body"]["message"].startswith("ciml:")
"""

import base64
import json
import re
import threading
import time
import urllib.parse

from ciml.testing import servers
from ciml.testing.servers import _Loopback

_REVIEW = re.compile(r"^/a/changes/(?P<change>[^/]+)/revisions/(?P<rev>[^/]+)/review$")
PREFIX = b")]}'\n"


class _Handler(servers._Handler):
    """The log server's handler (quiet, HTTP/1.1, its ``_send``), answering Gerrit's call."""

    server_version = "gerrit-test-server"

    def do_GET(self):
        self._answer(404, b"Not found\n", "text/plain")

    do_HEAD = do_GET

    def do_POST(self):
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        # Matched as sent: a project name's "/" arrives as %2F inside one segment.
        path = urllib.parse.urlsplit(self.path).path
        user = self._user()
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            body = None
        request = {"method": "POST", "path": path, "user": user, "body": body,
                   "headers": dict(self.headers.items()), "time": time.time()}
        with owner._lock:
            owner.requests.append(request)
            fault = owner._take_fault()
        if fault is not None:
            if fault["delay"]:
                time.sleep(fault["delay"])
            if fault["status"]:
                self._answer(fault["status"], fault["body"], "text/plain")
                return
        if user is None or owner.accounts.get(user[0]) != user[1]:
            self._answer(401, b"Unauthorized", "text/plain",
                         {"WWW-Authenticate": 'Basic realm="Gerrit Code Review"'})
            return
        match = _REVIEW.match(path)
        if not match:
            self._answer(404, b"Not found\n", "text/plain")
            return
        change_id = urllib.parse.unquote(match["change"])
        change = change_id.rpartition("~")[2]
        project = change_id.rpartition("~")[0] or None
        known = owner.changes.get(int(change)) if change.isdigit() else None
        if known is None or (match["rev"].isdigit() and int(match["rev"]) not in known):
            self._answer(404, f"Not found: {change_id}\n".encode(), "text/plain")
            return
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            self._answer(400, b"message required\n", "text/plain")
            return
        with owner._lock:
            owner.reviews.append({"change": int(change), "project": project,
                                  "patchset": int(match["rev"]), "user": user[0],
                                  "body": body})
        self._answer(200, PREFIX + json.dumps({"labels": {}}).encode(),
                     "application/json; charset=utf-8")

    def _user(self):
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password

    def _answer(self, status, body, content_type, headers=None):
        # A client that gave up (the timeout tests) is the server's handle_error's.
        self._send(status, body, content_type, head=self.command == "HEAD", headers=headers)


class GerritServer(_Loopback):
    """A threaded Gerrit REST stand-in on 127.0.0.1.

    :param changes: ``{change number: [patchset numbers]}`` it knows.
    :param accounts: ``{user: HTTP password}`` it accepts.
    """

    _handler = _Handler
    _thread_name = "ciml-test-gerrit"

    def __init__(self, changes=None, accounts=None):
        self.changes = {int(k): [int(p) for p in v] for k, v in (changes or {}).items()}
        self.accounts = dict(accounts or {})
        #: Every request: ``method``, ``path``, ``user`` (``(user, password)``
        #: or ``None``), ``body`` (parsed JSON or ``None``), ``headers``, ``time``.
        self.requests = []
        #: Reviews applied: ``change``, ``project``, ``patchset``, ``user``, ``body``.
        self.reviews = []
        self._faults = []
        self._lock = threading.Lock()

    @property
    def url(self):
        """The server's base URL (``http://127.0.0.1:PORT``)."""
        if self._server is None:
            raise RuntimeError("the Gerrit test server is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fault(self, *, status=None, times=1, delay=0.0, body=None):
        """Answer the next ``times`` posts with ``status`` (after ``delay`` seconds).

        ``status=None`` with a ``delay`` only delays (a timeout test); the
        post is then applied after the delay, as a slow Gerrit would.
        """
        with self._lock:
            self._faults.append({"status": status, "remaining": times, "delay": delay,
                                 "body": body if body is not None else
                                 f"{status} injected by the test server\n".encode()})

    def _take_fault(self):
        for fault in self._faults:
            if fault["remaining"] is None or fault["remaining"] > 0:
                if fault["remaining"] is not None:
                    fault["remaining"] -= 1
                return fault
        return None
