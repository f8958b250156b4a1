"""Benchmark: parsing a three-hour run with each metric source, and fetching from Prometheus.

* ``dstat``: a generated dstat 0.7.3 file of 10,800 rows (1 s samples);
* ``pcp``: a pcp-dstat file of 10,800 rows made from the real sample in
  ``tests/data/pcp`` (its rows repeated with increasing time stamps);
* ``prometheus``: the document the source keeps for a three-hour window at
  a 10 s step (19 default queries, 1,081 points each), parsed; and the
  fetch of it from the Prometheus-API test server (local HTTP, 19
  requests).

Each figure is the best of ``--repeat`` runs, in one process.

Usage: ``python benchmarks/bench_metric_sources.py [--repeat 5]``.
"""

import argparse
import datetime as dt
import pathlib
import time

import numpy as np
import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROWS = 3 * 3600


def best(call, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def pcp_file():
    lines = (ROOT / "tests" / "data" / "pcp" / "pcp-dstat-devstack.csv").read_text().splitlines()
    head, rows = lines[:7], lines[7:]
    t0 = dt.datetime(2026, 12, 2)
    out = []
    for i in range(ROWS):
        cells = rows[i % len(rows)].split(",", 1)[1]
        out.append((t0 + dt.timedelta(seconds=i)).strftime("%d-%m %H:%M:%S") + "," + cells)
    return ("\n".join(head + out) + "\n").encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from ciml.generator import synthetic_dstat
    from ciml.records import RunRecord
    from ciml.testing.prometheus import PrometheusServer
    from ciml_plugins.metrics.dstat import parse_dstat
    from ciml_plugins.metrics.pcp import parse_pcp
    from ciml_plugins.metrics.prometheus import DEFAULT_QUERIES, PrometheusMetricSource

    dstat_data = synthetic_dstat("0.7.3", rows=ROWS).encode()
    pcp_data = pcp_file()
    print(f"dstat  parse {best(lambda: parse_dstat(dstat_data), args.repeat) * 1000:7.1f} ms"
          f"  ({len(dstat_data) / 1e6:.1f} MB, {ROWS} rows)")
    print(f"pcp    parse {best(lambda: parse_pcp(pcp_data), args.repeat) * 1000:7.1f} ms"
          f"  ({len(pcp_data) / 1e6:.1f} MB, {ROWS} rows)")

    start = dt.datetime(2026, 3, 2, 6, tzinfo=dt.timezone.utc)
    index = pd.date_range(start - dt.timedelta(minutes=5), periods=ROWS + 600, freq="1s",
                          tz="UTC")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({name: rng.random(len(index)) for name in DEFAULT_QUERIES},
                         index=index)
    run = RunRecord(id="bench", build_name="b", status="passed", start=start,
                    duration=ROWS, metadata={"node": "runner-1"})
    with PrometheusServer({"runner-1": frame}) as server:
        source = PrometheusMetricSource(prometheus_url=server.url, step=10)
        fetched = source.fetch(run)
        fetch_s = best(lambda: source.fetch(run), args.repeat)
        parse_s = best(lambda: source.parse(fetched.data, run), args.repeat)
        source.close()
    print(f"prom   parse {parse_s * 1000:7.1f} ms  ({len(fetched.data) / 1e6:.1f} MB, "
          f"{len(DEFAULT_QUERIES)} queries x {ROWS // 10 + 1} steps)")
    print(f"prom   fetch {fetch_s * 1000:7.1f} ms  (19 requests to the local test server)")


if __name__ == "__main__":
    main()
