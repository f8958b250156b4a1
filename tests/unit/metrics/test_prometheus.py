"""The prometheus metric source against the Prometheus-API test server: series, gaps, errors."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ciml.errors import MetricsUnavailable
from ciml.records import RunRecord
from ciml.testing import sources as kit
from ciml.testing.prometheus import PrometheusServer
from ciml_plugins.metrics.prometheus import (
    DEFAULT_QUERIES,
    FORMAT,
    PrometheusMetricSource,
    parse_prometheus,
)

UTC = dt.timezone.utc
START = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def _frame(seconds=900, **columns):
    index = pd.date_range(START - dt.timedelta(minutes=5), periods=seconds, freq="1s", tz="UTC")
    data = {name: np.linspace(lo, hi, seconds) for name, (lo, hi) in columns.items()}
    return pd.DataFrame(data, index=index)


def _run(node="runner-1", duration=300, key="runner_name", **extra):
    return RunRecord(id="run-1", build_name="build", status="passed", start=START,
                     duration=duration, metadata={key: node, **extra})


@pytest.fixture
def prom():
    frame = _frame(cpu_usr=(10, 70), cpu_sys=(5, 5), mem_used=(1e9, 3e9), load_1m=(0.5, 4),
                   net_recv=(100, 200))
    with PrometheusServer({"runner-1": frame, "runner-10": _frame(cpu_usr=(1, 1))}) as server:
        yield server


def _source(prom, **params):
    params.setdefault("retries", 0)
    return PrometheusMetricSource(prometheus_url=prom.url, **params)


def _reason(call):
    with pytest.raises(MetricsUnavailable) as info:
        call()
    return info.value


def test_window_of_the_runs_node_at_the_step(prom):
    fetched, frame = _source(prom, step=15).load(_run())
    assert fetched.name == "prometheus.json"
    # Only the series the node has; the others are absent, not zeros.
    assert sorted(frame.columns) == ["cpu_sys", "cpu_usr", "load_1m", "mem_used", "net_recv"]
    assert frame.index[0] == START and frame.index[-1] == START + dt.timedelta(seconds=300)
    assert (np.diff(frame.index.asi8) == 15 * 10**9).all()
    assert frame.dtypes.eq(np.float64).all()
    # runner-10 also matches a careless "runner-1.*"; the anchored default does not.
    assert frame["cpu_usr"].iloc[0] > 20
    doc = json.loads(fetched.data)
    assert doc["format"] == FORMAT and doc["node"] == "runner-1"
    assert doc["queries"]["cpu_usr"].startswith("100 * sum(rate(node_cpu_seconds_total{instance=~")


def test_node_keys_label_and_extra_selector(prom):
    source = _source(prom, node_keys=["build_node"], selector='job="node"')
    frame = source.load(_run(key="build_node"))[1]
    assert "mem_used" in frame.columns
    assert 'job="node"' in source.selector_for("x")


def test_unknown_node_is_unavailable_with_the_reason(prom):
    exc = _reason(lambda: _source(prom).fetch(_run(node="runner-7")))
    assert exc.reason == "unknown-node" and not exc.transient
    assert "runner" in str(exc) and "2026-03-02T06:00:00" in str(exc)


def test_run_without_node_or_window(prom):
    assert _reason(lambda: _source(prom).fetch(_run(key="other"))).reason == "no-node"
    assert _reason(lambda: _source(prom).fetch(_run(duration=None))).reason == "no-window"
    assert _reason(lambda: _source(prom).fetch(_run(duration=-5))).reason == "no-window"


def test_long_windows_are_asked_in_pieces(prom):
    source = _source(prom, step=1, max_points=100, default_queries=False,
                     queries=["load_1m=node_load1{$selector}"])
    frame = source.load(_run(duration=299))[1]
    assert len(frame) == 300 and frame.index.is_unique
    assert len(prom.requests) == 3   # 300 steps in pieces of 100


def test_queries_replace_and_add(prom):
    source = _source(prom, queries=["cpu_usr=100 - node_load1{$selector}",
                                    "load_1m=node_load1{$selector}"], default_queries=False)
    assert set(source.query_templates()) == {"cpu_usr", "load_1m"}
    assert set(source.load(_run())[1].columns) == {"load_1m"}
    with pytest.raises(Exception, match="NAME=PROMQL"):
        PrometheusMetricSource(prometheus_url=prom.url, queries=["no equals sign"])


def test_conformance(prom):
    kit.check_metric_source(_source(prom), _run())


# -- bad answers ---------------------------------------------------------------


def test_html_page(prom):
    prom.fault(html=True)
    exc = _reason(lambda: _source(prom).fetch(_run()))
    assert exc.reason == "html"


def test_token_is_sent_and_never_shown(prom):
    prom.token = "s3cr3t-token"
    exc = _reason(lambda: _source(prom).fetch(_run()))
    assert exc.reason == "auth" and exc.transient and "s3cr3t" not in str(exc)
    source = _source(prom, prometheus_token="s3cr3t-token")
    fetched, frame = source.load(_run())
    assert "s3cr3t" not in fetched.data.decode() and "s3cr3t" not in fetched.url
    assert "s3cr3t" not in repr(source) and source.get_params()["prometheus_token"] == "****"
    assert prom.authorizations[-1] == "Bearer s3cr3t-token"


def test_token_from_the_environment(prom, monkeypatch):
    prom.token = "env-token"
    monkeypatch.setenv("CIML_PROMETHEUS_TOKEN", "env-token")
    assert not _source(prom).load(_run())[1].empty


def test_url_credentials_never_shown(prom):
    url = prom.url.replace("http://", "http://alice:pa55word@")
    source = PrometheusMetricSource(prometheus_url=url, retries=0)
    fetched = source.fetch(_run())
    assert "pa55word" not in fetched.url and "pa55word" not in fetched.data.decode()
    prom.fault(status=500)
    exc = _reason(lambda: source.fetch(_run()))
    assert "pa55word" not in str(exc) and exc.transient


def test_404_is_not_prometheus(prom):
    source = PrometheusMetricSource(prometheus_url=prom.url + "/grafana", retries=0)
    exc = _reason(lambda: source.fetch(_run()))
    assert exc.reason == "not-prometheus" and "--prometheus-url" in str(exc)


def test_429_retry_after_is_respected(prom):
    prom.fault(status=429, retry_after=1, times=1)
    frame = _source(prom, retries=3).load(_run())[1]
    assert not frame.empty
    assert len(prom.requests) == len(DEFAULT_QUERIES) + 1   # the first one asked again


def test_429_asking_too_long_a_wait_gives_up(prom):
    prom.fault(status=429, retry_after=3600)
    exc = _reason(lambda: _source(prom, retries=3, max_wait=5).fetch(_run()))
    assert exc.reason == "rate-limited" and exc.transient and "3600" in str(exc)
    assert len(prom.requests) == 1   # no retry sooner than the server asked


def test_server_errors_are_retried_then_transient(prom):
    prom.fault(status=502)
    exc = _reason(lambda: _source(prom, retries=2, backoff=0).fetch(_run()))
    assert exc.reason == "http-error" and exc.transient and "502" in str(exc)
    assert len(prom.requests) == 3


def test_truncated_json(prom):
    prom.fault(truncate=True)
    exc = _reason(lambda: _source(prom).fetch(_run()))
    assert exc.reason == "not-json" and "not whole JSON" in str(exc)


def test_huge_answer(prom):
    prom.fault(huge=200_000)
    exc = _reason(lambda: _source(prom, max_bytes=100_000).fetch(_run()))
    assert exc.reason == "too-large"


def test_query_error_keeps_prometheus_message(prom):
    source = _source(prom, step=0.01)   # 30,000 points: over Prometheus's limit
    source.max_points = 50_000
    exc = _reason(lambda: source.fetch(_run()))
    assert exc.reason == "query-error" and "11,000 points" in str(exc)


def test_connection_refused_is_transient(prom):
    url = prom.url
    prom.stop()
    exc = _reason(lambda: PrometheusMetricSource(prometheus_url=url, retries=0).fetch(_run()))
    assert exc.reason == "connection-error" and exc.transient


# -- parsing -------------------------------------------------------------------


def _doc(results, start=0.0, end=100.0, step=10.0):
    return json.dumps({"format": FORMAT, "start": start, "end": end, "step": step,
                       "results": results, "queries": {}}).encode()


def _series(values, metric=None, start=0.0, step=10.0, skip=()):
    return {"metric": metric or {},
            "values": [[start + i * step, str(v)] for i, v in enumerate(values) if i not in skip]}


def test_gaps_are_interpolated_up_to_max_gap():
    doc = _doc({"a": [_series(range(11), skip={4, 5})], "b": [_series([1.0] * 11)]})
    frame = parse_prometheus(doc, max_gap=30)
    assert len(frame) == 11 and frame["a"].iloc[4] == 4.0 and frame["a"].iloc[5] == 5.0
    exc = _reason(lambda: parse_prometheus(doc, max_gap=10))
    assert exc.reason == "gap" and "20 s" in str(exc)


def test_edges_without_every_column_are_cut():
    doc = _doc({"a": [_series(range(11), skip={0, 1})], "b": [_series([1.0] * 11, skip={10})]})
    frame = parse_prometheus(doc)
    assert frame.index[0] == pd.Timestamp(20, unit="s", tz="UTC") and len(frame) == 8


def test_raw_counter_becomes_a_rate_across_a_reset():
    counter = [100, 110, 120, 130, 5, 15, 25, 35, 45, 55, 65]   # restart after 130
    doc = _doc({"rx": [_series(counter, {"__name__": "node_network_receive_bytes_total"})],
                "load": [_series([1.0] * 11, {"__name__": "node_load1"})]})
    frame = parse_prometheus(doc)
    assert (frame["rx"] >= 0).all()
    assert frame["rx"].tolist() == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert frame["load"].tolist() == [1.0] * 10   # a gauge is left alone


def test_several_series_get_one_column_each():
    doc = _doc({"rx": [_series([1] * 11, {"device": "eth0", "job": "node"}),
                       _series([2] * 11, {"device": "eth1", "job": "node"})]})
    assert list(parse_prometheus(doc).columns) == ["rx_eth0", "rx_eth1"]


def test_nan_and_infinite_samples_are_gaps():
    doc = _doc({"a": [_series([1, 2, "NaN", 4, "+Inf", 6, 7, 8, 9, 10, 11])]})
    assert parse_prometheus(doc)["a"].tolist() == [float(v) for v in range(1, 12)]


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (kit.HTML_PAGE, "html"),
    (b'{"format": "ciml-prometheus-1", "start": 0', "not-prometheus"),
    (b'{"status": "success"}', "not-prometheus"),
    (_doc({"a": []}), "unknown-node"),
    (_doc({"a": [{"metric": {}, "values": [[0, "x"]]}]}), "malformed"),
])
def test_bad_documents(data, reason):
    assert _reason(lambda: parse_prometheus(data)).reason == reason


def test_defaults_cover_the_common_vocabulary():
    from ciml.columns import COMMON_COLUMNS

    assert set(COMMON_COLUMNS) <= set(DEFAULT_QUERIES)
    for query in DEFAULT_QUERIES.values():
        assert "$selector" in query
