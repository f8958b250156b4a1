"""A local server answering Prometheus's ``query_range`` from given series, with faults.

Real Prometheus is the proof that the ``prometheus`` metric source works
(``tests/unit/metrics/test_prometheus_real.py`` runs one); this server is for
what a real one cannot easily do on demand: the demo's generated history
(``ciml demo --ci github``), answers from a week ago, and the unhappy
paths (an HTML login page, 401, 404, 429 with ``Retry-After``, JSON cut
short, a huge answer).

It knows each node's series as columns named like the ``prometheus``
source's queries (``cpu_usr``, ``mem_used``...), sampled at any times.  A
query is recognised as one of the source's query templates (the defaults
unless others are given) with the node's label matchers and any rate
window in it; the node is found by matching the query's ``instance``
matcher against each node's ``instance`` label (``<node>:9100``).  A query
it does not recognise, or a node it does not know, gives an empty result,
as Prometheus does for series it does not have.  At each step the value is
the series' latest sample at or before that time, if not older than five
minutes (Prometheus's lookback).

::

    with PrometheusServer({"runner-1": frame}) as prom:
        source = PrometheusMetricSource(prometheus_url=prom.url)
        prom.fault(status=429, retry_after=1, times=1)
"""

import http.server
import json
import re
import threading
import urllib.parse

import numpy as np

from ciml.testing.servers import _HTML_PAGE, _Loopback

LOOKBACK = 300.0
MAX_POINTS = 11000


class _Fault:
    def __init__(self, status, times, html, truncate, retry_after, huge):
        self.status = status
        self.remaining = times
        self.html = html
        self.truncate = truncate
        self.retry_after = retry_after
        self.huge = huge

    def take(self):
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ciml-test-prometheus"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        owner = self.server.owner
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query)
        fault = owner._record(parsed.path, query, self.headers.get("Authorization"))
        if fault is not None:
            if fault.html:
                self._send(200, _HTML_PAGE, "text/html; charset=utf-8")
                return
            if fault.huge:
                self._send(200, b'{"status":"success","data":{"resultType":"matrix","result":['
                           + b" " * fault.huge + b"]}}", "application/json")
                return
            if fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                self._send(fault.status, f"{fault.status} injected by the test server\n".encode(),
                           "text/plain", headers=headers)
                return
        if owner.token and self.headers.get("Authorization") != f"Bearer {owner.token}":
            self._send(401, b"Unauthorized\n", "text/plain",
                       headers={"WWW-Authenticate": "Bearer"})
            return
        if parsed.path.rstrip("/") != owner.prefix + "/api/v1/query_range":
            self._send(404, b"404 page not found\n", "text/plain")
            return
        status, answer = owner.query_range(query)
        body = json.dumps(answer).encode()
        if fault is not None and fault.truncate:
            self._send(status, body, "application/json", truncate=True)
            return
        self._send(status, body, "application/json")

    def _send(self, status, body, content_type, headers=None, truncate=False):
        if truncate:
            # A whole HTTP answer whose JSON stops half way (a proxy's buffer
            # limit, a crashed server behind a proxy).
            body = body[: len(body) // 2]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _error(message, kind="bad_data"):
    return 400, {"status": "error", "errorType": kind, "error": message}


def _number(query, name):
    values = query.get(name) or []
    if not values:
        raise ValueError(f'invalid parameter "{name}": missing')
    try:
        return float(values[0])
    except ValueError:
        raise ValueError(f'invalid parameter "{name}": cannot parse {values[0]!r}') from None


class PrometheusServer(_Loopback):
    """A threaded server on 127.0.0.1 with Prometheus's ``/api/v1/query_range``.

    :param series: ``{node: frame}``; a frame is a :class:`pandas.DataFrame`
        with a tz-aware ``DatetimeIndex`` and one column per query name.
    :param templates: ``{name: PromQL template}`` the queries come from
        (default: the ``prometheus`` source's defaults).
    :param instance: how a node's ``instance`` label is written.
    :param token: when set, requests must carry ``Authorization: Bearer``.
    :param prefix: a path prefix before ``/api/v1`` (a Prometheus behind a
        proxy, or started with ``--web.route-prefix``).
    """

    _handler = _Handler
    _thread_name = "ciml-test-prometheus"

    def __init__(self, series=None, *, templates=None, instance="{node}:9100", token=None,
                 prefix=""):
        from ciml_plugins.metrics.prometheus import DEFAULT_QUERIES

        self.templates = dict(templates or DEFAULT_QUERIES)
        self.instance = instance
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.requests = []
        self.authorizations = []
        self._nodes = {}
        self._faults = []
        self._compiled = None
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        for node, frame in (series or {}).items():
            self.add_node(node, frame)

    def add_node(self, node, frame):
        """Serve ``frame``'s columns as ``node``'s series (replacing any before)."""
        self.add_series(node, frame.index.as_unit("ns").asi8 / 1e9,
                        {str(c): np.asarray(frame[c]) for c in frame.columns})

    def add_series(self, node, seconds, columns):
        """Serve ``columns`` (``{name: values}``) at ``seconds`` since the epoch as ``node``'s."""
        with self._lock:
            self._nodes[node] = (np.asarray(seconds, dtype=np.float64), dict(columns))

    @property
    def nodes(self):
        """The nodes it has series of, sorted."""
        with self._lock:
            return sorted(self._nodes)

    @classmethod
    def from_history(cls, history, **kwargs):
        """A server holding every node series of a generated history.

        The history must have been generated with ``prometheus=True``
        (:func:`ciml.generator.generate_history`).
        """
        from ciml.generator import read_node_series

        if history.prometheus_dir is None:
            raise ValueError("the history has no node series: generate it with "
                             "prometheus=True")
        server = cls(**kwargs)
        for node, (seconds, columns) in read_node_series(history.prometheus_dir).items():
            server.add_series(node, seconds, columns)
        return server

    @property
    def url(self):
        """The base URL a ``prometheus`` source is given (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    # -- faults --------------------------------------------------------------

    def fault(self, *, status=None, times=None, html=False, truncate=False, retry_after=None,
              huge=0):
        """Answer the next ``times`` requests (all: ``None``) with one fault.

        ``status`` (with a ``Retry-After`` header when ``retry_after`` is
        given), ``html`` (a web page with status 200), ``truncate`` (the
        first half of the real answer) or ``huge`` (a
        valid answer padded to that many bytes).
        """
        effects = sum(bool(x) for x in (status is not None, html, truncate, huge))
        if effects != 1:
            raise ValueError("give exactly one of status, html, truncate, huge")
        with self._lock:
            self._faults.append(_Fault(status, times, html, truncate, retry_after, huge))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def _record(self, path, query, authorization):
        with self._lock:
            self.requests.append((path, query))
            self.authorizations.append(authorization)
            for fault in self._faults:
                if fault.take():
                    return fault
        return None

    # -- answers -------------------------------------------------------------

    def _identify(self, promql):
        """``(node, name)`` of a rendered query; ``None`` for what is not known."""
        for name, pattern in self._patterns().items():
            match = pattern.fullmatch(promql)
            if match is None:
                continue
            regex = re.sub(r"\\(.)", lambda m: m.group(1), match.group(1))
            with self._lock:
                nodes = list(self._nodes)
            for node in nodes:
                if re.fullmatch(regex, self.instance.format(node=node)):
                    return node, name
            return None, name
        return None, None

    def _patterns(self):
        """A regular expression per template that a rendered query must match whole."""
        if self._compiled is None:
            string = r'"((?:[^"\\]|\\.)*)"'
            extra = r'(?:,\s*[a-zA-Z_]\w*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*")*?'
            compiled = {}
            for name, template in self.templates.items():
                parts = []
                for k, piece in enumerate(template.split("$selector")):
                    if k:
                        parts.append(("instance=~" + string if k == 1
                                      else r'instance=~"(?:[^"\\]|\\.)*"') + extra)
                    parts.append(re.escape(piece).replace(r"\$window", r"\d+(?:ms|s|m|h)"))
                compiled[name] = re.compile("".join(parts))
            self._compiled = compiled
        return self._compiled

    def query_range(self, query):
        """``(status, answer)`` of a ``query_range`` request, as Prometheus answers."""
        try:
            promql = (query.get("query") or [""])[0]
            if not promql:
                raise ValueError('invalid parameter "query": missing')
            start, end, step = (_number(query, k) for k in ("start", "end", "step"))
        except ValueError as exc:
            return _error(str(exc))
        if step <= 0:
            return _error("zero or negative query resolution step widths are not accepted. "
                          "Try a positive integer")
        if end < start:
            return _error('invalid parameter "end": end timestamp must not be before start time')
        if (end - start) / step > MAX_POINTS:
            return _error("exceeded maximum resolution of 11,000 points per timeseries. Try "
                          "decreasing the query resolution (?step=XX)")
        node, name = self._identify(promql)
        result = []
        with self._lock:
            known = self._nodes.get(node)
        if known is not None and name is not None and name in known[1]:
            stamps, columns = known
            grid = start + step * np.arange(int(np.floor((end - start) / step + 1e-9)) + 1)
            at = np.searchsorted(stamps, grid + 1e-9, side="right") - 1
            ok = (at >= 0) & (grid - stamps[np.clip(at, 0, None)] <= LOOKBACK)
            values = np.asarray(columns[name][np.clip(at, 0, None)], dtype=np.float64)
            ok &= np.isfinite(values)
            if ok.any():
                result.append({
                    "metric": {"instance": self.instance.format(node=node), "job": "node"},
                    "values": [[round(float(t), 3), repr(float(v))]
                               for t, v in zip(grid[ok], values[ok])]})
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}

