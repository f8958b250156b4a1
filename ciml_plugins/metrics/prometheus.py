"""The ``prometheus`` metric source: a run's node, queried over the run's window.

Where CI nodes (self-hosted GitHub runners, GitLab runners, Jenkins agents)
are scraped by Prometheus, their resource history is already kept and no
file has to be collected during the job.  For a run :class:`PrometheusMetricSource`

1. finds the run's node in its metadata (the first of ``node_keys`` that
   the run has, e.g. ``runner_name``) and turns it into a label matcher:
   ``instance=~"<node>(:[0-9]+)?"`` by default, because node_exporter
   targets are usually ``host:9100`` (``node_label``, ``node_match`` and
   ``selector`` change that);
2. asks ``/api/v1/query_range`` each query over the run's window ``[start,
   start + duration]`` at ``step`` seconds, in pieces of at most
   ``max_points`` steps (Prometheus refuses more than 11,000 per query);
3. keeps the answers, unchanged, as one JSON document: that is the file the
   raw cache stores (``prometheus.json``), so a run is fetched once and
   parsed without the network.

The queries
-----------
A query is ``NAME=PROMQL``; ``$selector`` in it becomes the node's label
matchers and ``$window`` the rate window (``rate_window``, default four
steps but at least a minute).  The defaults read node_exporter's metrics
and produce :mod:`ciml.columns`' common vocabulary, in the same units as
dstat (so datasets mix, and models trained on dstat predict from
Prometheus), plus ``cpu_stl``, ``mem_buff``, ``mem_avail`` and
``load_5m``/``load_15m``.  ``queries`` adds queries or replaces defaults of
the same name; ``default_queries=false`` drops the rest.

Series, gaps and counters
-------------------------
* A query that gives no series has no column (node_exporter without that
  collector); when no query gives any, the node is unknown to Prometheus in
  that window and the run is unavailable (``unknown-node``).
* A query giving several series makes one column per series, named
  ``NAME_<value>`` after the labels that tell them apart.
* A series that is a raw counter (its metric name ends in ``_total`` and
  the query did not wrap it in ``rate()``) becomes a per-second rate here;
  a value lower than the one before is a counter reset (the exporter
  restarted), so the increase is the new value, never a negative rate.
  ``rate()`` in PromQL handles resets in Prometheus itself.
* Every column is put on the one time grid ``start + k * step``.  Missing
  steps inside the window (a failed scrape, an exporter restart) are
  interpolated linearly when no longer than ``max_gap`` seconds; a longer
  gap makes the run unavailable (``gap``) rather than inventing minutes of
  data.  Steps before the first or after the last sample of any column are
  cut off.

Errors
------
Reason codes: ``no-node`` (the run names no node), ``no-window`` (no start
or duration), ``unknown-node``, ``gap``, ``query-error`` (Prometheus
refused a query: its message is kept), ``not-prometheus`` (404, or JSON
that is not Prometheus's), ``html`` (a web page, as a login proxy
answers), ``not-json`` (a body cut short), ``too-large`` (over
``max_bytes``), and, worded by the shared HTTP client
(:mod:`ciml.http`), the transient ``auth`` (401/403: fix the token and run
again), ``rate-limited`` (the server asks for a wait over ``max_wait``),
``http-error`` and ``connection-error`` (after retries; 429 and 503 are
retried after their ``Retry-After``).  Messages never show the URL's
credentials or the token.
"""

import datetime as dt
import json
import logging
import math
import os
import re
import string

import numpy as np

from ciml.base import FetchedMetrics, MetricSource, Parameter
from ciml.base.component import non_negative_float, parse_bool, positive_float, positive_int
from ciml.errors import MetricsUnavailable
from ciml.hookspecs import hookimpl
from ciml.http import (
    HTTP_PARAMETERS,
    FetchError,
    HttpClient,
    check_status,
    looks_like_html,
    redact_url,
)

LOG = logging.getLogger(__name__)

FORMAT = "ciml-prometheus-1"
FILE_NAME = "prometheus.json"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
TOKEN_ENV = "CIML_PROMETHEUS_TOKEN"


def _cpu(mode):
    # The mode's share of all CPU time in the window, as dstat computes it from
    # jiffies.  Dividing by the rate of every mode, rather than by the number
    # of CPUs, makes rate()'s extrapolation at the edges of a series (its
    # start, an exporter restart) cancel out: the modes never add up to more
    # than 100.
    return (f'100 * sum(rate(node_cpu_seconds_total{{$selector,mode=~"{mode}"}}[$window]))'
            ' / sum(rate(node_cpu_seconds_total{$selector}[$window]))')


def _mem(field):
    return f"node_memory_{field}_bytes{{$selector}}"


#: The default queries: node_exporter metrics in ciml's common vocabulary.
DEFAULT_QUERIES = {
    "cpu_usr": _cpu("user|nice"),
    "cpu_sys": _cpu("system"),
    "cpu_idl": _cpu("idle"),
    "cpu_wai": _cpu("iowait"),
    "cpu_stl": _cpu("steal"),
    "mem_used": " - ".join(_mem(f) for f in ("MemTotal", "MemFree", "Buffers", "Cached")),
    "mem_free": _mem("MemFree"),
    "mem_buff": _mem("Buffers"),
    "mem_cach": _mem("Cached"),
    "mem_avail": _mem("MemAvailable"),
    "load_1m": "node_load1{$selector}",
    "load_5m": "node_load5{$selector}",
    "load_15m": "node_load15{$selector}",
    # Device-mapper and md devices repeat the bytes of the disks under them.
    "dsk_read": 'sum(rate(node_disk_read_bytes_total{$selector,device!~"dm-.*|md.*"}[$window]))',
    "dsk_writ": 'sum(rate(node_disk_written_bytes_total{$selector,device!~"dm-.*|md.*"}'
                '[$window]))',
    "net_recv": 'sum(rate(node_network_receive_bytes_total{$selector,device!="lo"}[$window]))',
    "net_send": 'sum(rate(node_network_transmit_bytes_total{$selector,device!="lo"}[$window]))',
    "procs_run": "node_procs_running{$selector}",
    "procs_blk": "node_procs_blocked{$selector}",
}

DEFAULT_NODE_KEYS = ("node", "runner_name", "node_name", "hostname")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SLUG = re.compile(r"[^a-z0-9]+")


def _query_pair(text):
    name, sep, query = str(text).partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name) or not query.strip():
        raise ValueError("expected NAME=PROMQL with a lowercase NAME such as cpu_usr")
    return f"{name}={query.strip()}"


def _label_name(text):
    text = str(text).strip()
    if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", text):
        raise ValueError("not a Prometheus label name")
    return text


# What ciml plugin show and --help print as these parameters' types.
_query_pair.type_name = "NAME=PROMQL"  # type: ignore[attr-defined]
_label_name.type_name = "label name"  # type: ignore[attr-defined]


def _promql_string(text):
    """``text`` as a double-quoted PromQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _regex_escape(text):
    # RE2 (Prometheus's regex engine) accepts a backslash before any
    # punctuation, as Python's re.escape writes it.
    return re.escape(text)


def _iso(moment):
    return moment.astimezone(dt.timezone.utc).isoformat()


class _Failure(Exception):
    def __init__(self, reason, message, transient=False):
        super().__init__(message)
        self.reason = reason
        self.transient = transient


class PrometheusMetricSource(MetricSource):
    """A run's node from Prometheus (node_exporter), over the run's time window

    Queries ``/api/v1/query_range`` for the run's node (found in the run's
    metadata, matched on a label such as ``instance``) from the run's start
    to its end, with PromQL queries that default to node_exporter's CPU,
    memory, load, disk, network and process metrics under ciml's common
    column names and dstat's units.  Gaps are interpolated up to a limit,
    raw counters are turned into rates across resets, and a node Prometheus
    does not know is unavailable with a reason.
    """

    name = "prometheus"
    parameters = (
        Parameter("prometheus_url", str, required=True,
                  help="Prometheus base URL, e.g. http://prometheus:9090 (user:password@ "
                       "for basic auth)"),
        Parameter("prometheus_token", str, secret=True,
                  help=f"bearer token sent to Prometheus (env {TOKEN_ENV})"),
        Parameter("node_keys", str, default=list(DEFAULT_NODE_KEYS), multiple=True,
                  help="run metadata keys naming the run's node, tried in order"),
        Parameter("node_label", _label_name, default="instance",
                  help="the Prometheus label that names a node"),
        Parameter("node_match", str, default="{node}(:[0-9]+)?",
                  help="regular expression for the node label's value; {node} is the "
                       "node's name, escaped"),
        Parameter("selector", str, default="",
                  help='more label matchers for every query, e.g. job="node"'),
        Parameter("queries", _query_pair, multiple=True,
                  help="NAME=PROMQL queries to add or replace ($selector: the node's "
                       "matchers, $window: the rate window)"),
        Parameter("default_queries", parse_bool, default=True,
                  help="also run the node_exporter default queries"),
        Parameter("step", positive_float, default=10.0,
                  help="seconds between samples (at most the datasets' sample interval)"),
        Parameter("rate_window", non_negative_float, default=0.0,
                  help="seconds of the $window of rate(); 0: four steps, at least 60"),
        Parameter("max_gap", non_negative_float, default=300.0,
                  help="longest run of missing samples (seconds) interpolated; longer "
                       "makes the run unavailable"),
        Parameter("max_points", positive_int, default=10000,
                  help="most steps asked in one query_range request"),
        *HTTP_PARAMETERS,
        Parameter("max_bytes", positive_int, default=DEFAULT_MAX_BYTES,
                  help="largest answer accepted, in bytes"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        if not self.prometheus_token:
            self.prometheus_token = os.environ.get(TOKEN_ENV) or None
        self._client = HttpClient.for_component(self, "ciml-prometheus")

    def __repr__(self):
        return (f"PrometheusMetricSource(prometheus_url="
                f"{redact_url(self.prometheus_url)!r}, "
                f"prometheus_token={'****' if self.prometheus_token else None})")

    def close(self):
        """Close the pooled HTTP connections.  Idempotent; the source stays usable."""
        self._client.close()

    # -- what to ask ---------------------------------------------------------

    def query_templates(self):
        """``{name: PromQL template}``: the defaults (if on) updated by ``queries``."""
        queries = dict(DEFAULT_QUERIES) if self.default_queries else {}
        for pair in self.queries or ():
            name, _, query = pair.partition("=")
            queries[name] = query
        return queries

    def node_of(self, run):
        """The run's node name from its metadata, or ``None``."""
        metadata = run.metadata or {}
        for key in self.node_keys or ():
            value = metadata.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    def selector_for(self, node):
        """The label matchers (without braces) that pick ``node``'s series."""
        pattern = self.node_match.replace("{node}", _regex_escape(node))
        matchers = [f"{self.node_label}=~{_promql_string(pattern)}"]
        if self.selector and self.selector.strip():
            matchers.append(self.selector.strip().strip("{}").strip())
        return ",".join(matchers)

    def window_seconds(self):
        if self.rate_window:
            return self.rate_window
        return max(4 * self.step, 60.0)

    def render(self, template, selector):
        window = self.window_seconds()
        if float(window).is_integer():
            window_text = f"{int(window)}s"
        else:
            window_text = f"{int(window * 1000)}ms"
        return string.Template(template).safe_substitute(selector=selector, window=window_text)

    def _window(self, run):
        if run.start is None or not run.duration or float(run.duration) <= 0:
            raise MetricsUnavailable(
                "no-window", f"run {run.id} has no start time and duration: its window is "
                "unknown")
        start = run.start if run.start.tzinfo else run.start.replace(tzinfo=dt.timezone.utc)
        return start, start + dt.timedelta(seconds=float(run.duration))

    # -- fetching ------------------------------------------------------------

    def fetch(self, run):
        node = self.node_of(run)
        if node is None:
            raise MetricsUnavailable(
                "no-node", f"run {run.id} names no node (none of the metadata keys "
                f"{', '.join(self.node_keys or ())})")
        start, end = self._window(run)
        selector = self.selector_for(node)
        queries = {name: self.render(t, selector) for name, t in self.query_templates().items()}
        if not queries:
            raise MetricsUnavailable("no-queries", "no queries to ask Prometheus")
        base = self.prometheus_url.rstrip("/")
        results, warnings = {}, []
        try:
            for name, query in queries.items():
                results[name] = self._query_range(base, query, start, end, warnings)
        except _Failure as exc:
            raise MetricsUnavailable(exc.reason, f"run {run.id}: {exc}",
                                     transient=exc.transient) from None
        if not any(results.values()):
            raise MetricsUnavailable(
                "unknown-node", f"run {run.id}: Prometheus at {redact_url(base)} "
                f"has no series for {{{selector}}} between {_iso(start)} and {_iso(end)}")
        if warnings:
            LOG.warning("Prometheus warned about run %s: %s", run.id,
                        "; ".join(sorted(set(warnings)))[:500])
        document = {
            "format": FORMAT, "url": redact_url(base), "node": node,
            "selector": selector, "start": start.timestamp(), "end": end.timestamp(),
            "step": self.step, "queries": queries, "results": results,
            "warnings": sorted(set(warnings)),
        }
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return FetchedMetrics(name=FILE_NAME, data=data,
                              url=redact_url(base) + "/api/v1/query_range")

    def _query_range(self, base, query, start, end, warnings):
        """Every series of ``query`` over ``[start, end]``, pieces joined."""
        step = self.step
        t0, t1 = start.timestamp(), end.timestamp()
        series = {}
        piece_start = t0
        while piece_start <= t1:
            piece_end = min(t1, piece_start + step * (self.max_points - 1))
            params = {"query": query, "start": f"{piece_start:.3f}",
                      "end": f"{piece_end:.3f}", "step": f"{step:g}"}
            answer = self._get_json(f"{base}/api/v1/query_range", params)
            warnings.extend(str(w) for w in answer.get("warnings") or ())
            data = answer.get("data")
            if not isinstance(data, dict) or data.get("resultType") != "matrix" \
                    or not isinstance(data.get("result"), list):
                raise _Failure("not-prometheus",
                               f"query_range did not answer a matrix for {query!r}")
            for item in data["result"]:
                if not isinstance(item, dict) or not isinstance(item.get("values"), list):
                    raise _Failure("not-prometheus", "a query_range series without values")
                metric = item.get("metric") or {}
                key = json.dumps(metric, sort_keys=True)
                entry = series.setdefault(key, {"metric": metric, "values": []})
                entry["values"].extend(item["values"])
            piece_start = piece_end + step
        return list(series.values())

    def _headers(self):
        headers = {"Accept": "application/json"}
        if self.prometheus_token:
            headers["Authorization"] = f"Bearer {self.prometheus_token}"
        return headers

    def _get_json(self, url, params):
        """One API call: the decoded JSON envelope of a success, else :class:`_Failure`.

        The shared client retries connection errors, 5xx and 429 (after the
        ``Retry-After`` the server asks for, up to ``max_wait``); error
        bodies are read too, for Prometheus's own message.
        """
        safe = redact_url(url)
        try:
            resp = self._client.request(url, params=params, headers=self._headers(),
                                        max_bytes=self.max_bytes, read_body=lambda status: True)
        except FetchError as exc:
            raise _Failure(exc.reason, str(exc), exc.transient) from None
        return self._decode(resp, safe)

    def _decode(self, resp, safe):
        status, body = resp.status, resp.body or b""
        answer = None
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            pass
        if status >= 400 and isinstance(answer, dict) and answer.get("status") == "error":
            kind = answer.get("errorType") or f"HTTP {status}"
            text = str(answer.get("error") or "no message")[:500]
            if status in (400, 422):
                raise _Failure("query-error", f"Prometheus refused the query ({kind}): {text}")
            if status == 503:   # a query that timed out or was aborted
                raise _Failure("http-error", f"HTTP 503 from {safe} ({kind}): {text}", True)
        if status == 404:
            raise _Failure("not-prometheus", f"HTTP 404 from {safe}: no Prometheus API there "
                           "(check --prometheus-url)")
        if status >= 300:
            try:
                check_status(resp, safe, "Prometheus")
            except FetchError as exc:
                raise _Failure(exc.reason, str(exc), exc.transient) from None
            raise _Failure("http-error", f"HTTP {status} from {safe}")
        if looks_like_html(body[:8192]):
            raise _Failure("html", f"{safe} answered an HTML page, not Prometheus's JSON "
                           "(a proxy or login page?)")
        if answer is None:
            raise _Failure("not-json", f"{safe} answered {len(body)} bytes that are not whole "
                           "JSON (cut short?)", transient=True)
        if not isinstance(answer, dict) or answer.get("status") != "success":
            raise _Failure("not-prometheus", f"{safe} answered JSON that is not a Prometheus "
                           "API answer")
        return answer

    # -- parsing -------------------------------------------------------------

    def parse(self, data, run):
        return parse_prometheus(data, max_gap=self.max_gap)


def _float(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise MetricsUnavailable("malformed", f"sample value {str(text)[:40]!r} is not a "
                                 "number") from None
    return value if math.isfinite(value) else math.nan


def _counter_rate(stamps, values):
    """Per-second rate of a raw counter; a drop is a reset (the increase is the new value)."""
    rates = np.full(len(values), np.nan)
    if len(values) < 2:
        return rates
    delta = np.diff(values)
    reset = delta < 0
    delta[reset] = values[1:][reset]
    rates[1:] = delta / np.diff(stamps)
    return rates


def _column_names(name, series):
    if len(series) == 1:
        return [name]
    labels = sorted({k for s in series for k in s["metric"]})
    differing = [k for k in labels
                 if len({s["metric"].get(k) for s in series}) > 1 and k != "__name__"]
    names, seen = [], {}
    for s in series:
        suffix = "_".join(_SLUG.sub("_", str(s["metric"].get(k, "")).lower()).strip("_")
                          for k in differing) or "series"
        column = f"{name}_{suffix}"
        seen[column] = seen.get(column, 0) + 1
        names.append(column if seen[column] == 1 else f"{column}_{seen[column]}")
    return names


def parse_prometheus(data, max_gap=300.0):
    """The frame of a document :meth:`PrometheusMetricSource.fetch` wrote.

    :return: float64 columns (one per query and series) on the UTC grid
        ``start + k * step``, gaps up to ``max_gap`` seconds interpolated.
    :raises ciml.errors.MetricsUnavailable: ``empty``, ``html``,
        ``not-prometheus`` (not such a document), ``malformed``,
        ``unknown-node`` (no series at all), ``gap``.
    """
    import pandas as pd

    if not data or not bytes(data[:4096]).strip():
        raise MetricsUnavailable("empty", "the Prometheus document is empty")
    if looks_like_html(bytes(data[:8192])):
        raise MetricsUnavailable("html", "got an HTML page where ciml's Prometheus JSON "
                                 "was expected")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MetricsUnavailable("not-prometheus", "not ciml's Prometheus JSON document "
                                 "(cut short, or another file)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise MetricsUnavailable("not-prometheus", f"not a {FORMAT} document")
    try:
        start, end, step = float(doc["start"]), float(doc["end"]), float(doc["step"])
        results = doc["results"]
        assert isinstance(results, dict) and step > 0 and end >= start
    except (KeyError, TypeError, ValueError, AssertionError):
        raise MetricsUnavailable("malformed", "the Prometheus document lacks its window, "
                                 "step or results") from None
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    grid = start + step * np.arange(n)
    columns = {}
    for name in sorted(results):
        series = results[name]
        if not isinstance(series, list):
            raise MetricsUnavailable("malformed", f"results of {name!r} are not a list")
        if not series:
            LOG.info("Prometheus had no series for %s", name)
            continue
        for column, s in zip(_column_names(name, series), series):
            try:
                pairs = sorted((float(t), _float(v)) for t, v in s["values"])
            except (KeyError, TypeError, ValueError):
                raise MetricsUnavailable("malformed", f"a series of {name!r} has malformed "
                                         "values") from None
            stamps = np.array([p[0] for p in pairs])
            values = np.array([p[1] for p in pairs])
            if str((s.get("metric") or {}).get("__name__", "")).endswith("_total"):
                values = _counter_rate(stamps, values)
            k = np.rint((stamps - start) / step).astype(np.int64)
            on_grid = (k >= 0) & (k < n) & (np.abs(stamps - grid[np.clip(k, 0, n - 1)]) < step / 2)
            column_values = np.full(n, np.nan)
            column_values[k[on_grid]] = values[on_grid]
            columns[column] = column_values
    columns = {k: v for k, v in columns.items() if not np.isnan(v).all()}
    if not columns:
        raise MetricsUnavailable("unknown-node", "Prometheus had no samples of any query in "
                                 "the run's window")
    matrix = np.column_stack([columns[k] for k in columns])
    whole = ~np.isnan(matrix).any(axis=1)
    # Cut the steps before every column has begun and after any has ended.
    first = max(int(np.flatnonzero(~np.isnan(c))[0]) for c in matrix.T)
    last = min(int(np.flatnonzero(~np.isnan(c))[-1]) for c in matrix.T)
    if first > last:
        raise MetricsUnavailable("gap", "the queries' samples do not overlap in time")
    matrix = matrix[first:last + 1]
    grid = grid[first:last + 1]
    whole = whole[first:last + 1]
    if not whole.all():
        names = list(columns)
        for j in range(matrix.shape[1]):
            missing = np.isnan(matrix[:, j])
            if not missing.any():
                continue
            longest = _longest_run(missing) * step
            if longest > max_gap:
                raise MetricsUnavailable(
                    "gap", f"{names[j]} has no samples for {longest:.0f} s in the run's "
                    f"window (max_gap is {max_gap:.0f} s)")
            known = ~missing
            matrix[missing, j] = np.interp(grid[missing], grid[known], matrix[known, j])
    index = pd.DatetimeIndex((grid * 1e9).round().astype("int64").astype("datetime64[ns]"),
                             name="time").tz_localize("UTC")
    return pd.DataFrame(matrix, index=index, columns=list(columns), dtype=np.float64)


def _longest_run(mask):
    best = current = 0
    for flag in mask:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


@hookimpl
def ciml_register_metric_sources(register):
    register(PrometheusMetricSource)


__all__ = ["DEFAULT_QUERIES", "PrometheusMetricSource", "parse_prometheus"]
