"""Benchmark: the prediction store's size per prediction and the dashboard's queries.

Fills a store (SQLite in a temporary folder, or any ``--uri``) with N
prediction records shaped as ``watch`` makes them (four jobs, three
classes, one run in twenty unusual, an explanation of three features and
three windows, Zuul metadata), then measures:

* writing: predictions stored per second, in batches of 500 and one by
  one (what ``watch`` does), wall and CPU time;
* size: bytes on disk per prediction (``PredictionStore.storage``);
* reading, single client, each query repeated: the first page (50 rows),
  a page deep in the history by keyset (``after=``) and by ``offset``,
  per job, per class, unusual only, since yesterday, a run's history,
  ``count`` and ``jobs`` (the home page's summary).  p50 and p99 in ms.

The concurrent, over-HTTP figures (50 clients on ``ciml serve``) are
``bench_serve.py``'s; this one says what the store itself costs.

Usage: ``python benchmarks/bench_prediction_store.py [--predictions 100000]
[--uri mysql+pymysql://root@127.0.0.1/ciml_bench]``.
"""

import argparse
import datetime as dt
import os
import random
import resource
import statistics
import sys
import tempfile
import time

JOBS = ("tempest-full", "nova-live-migration", "neutron-tempest", "grenade")
CLASSES = ("oom", "timeout", "test-failure")


def record(i, t0):
    rng = random.Random(i)
    predicted = CLASSES[i % 3]
    p = round(0.5 + rng.random() / 2, 4)
    others = [c for c in CLASSES if c != predicted]
    return {
        "run_id": f"{rng.getrandbits(128):032x}", "build_uuid": f"{rng.getrandbits(128):032x}",
        "build_name": JOBS[i % len(JOBS)], "status": "failed", "predicted": predicted,
        "probabilities": {predicted: p, others[0]: round((1 - p) / 2, 4),
                          others[1]: round((1 - p) / 2, 4)},
        "unusual": {"score": round(rng.random() * 5, 3),
                    "percentile": round(rng.random() * 100, 1), "unusual": i % 20 == 0,
                    "features": [{"feature": "mem_used", "z": 4.2},
                                 {"feature": "cpu_wai", "z": 3.1}]},
        "explanation": {
            "class": predicted, "method": "occlusion",
            "features": [{"feature": f, "contribution": 0.2, "value": 7.8e9, "typical": 3.1e9,
                          "typical_low": 2.5e9, "typical_high": 3.6e9}
                         for f in ("mem_used", "cpu_wai", "net_recv")],
            "windows": [{"start_s": 600 * k, "end_s": 600 * k + 300, "contribution": 0.1,
                         "features": ["mem_used", "cpu_wai"]} for k in range(3)]},
        "actual": None, "dataset": "tempest-1min", "experiment": "gbdt",
        "model": "tempest-1min/gbdt", "dataset_fingerprint": "a3f9c2d4e5b6a7c8",
        "model_fingerprint": "0b1c2d3e4f5a6b7c",
        "artifacts_url": f"https://logs.example.org/{i % 100:02d}/{700000 + i}/1/check/x/",
        "trigger": "mqtt",
        "metadata": {"change": str(700000 + i), "patchset": "1", "project": "openstack/nova",
                     "pipeline": "check", "node_provider": "rax-dfw"},
        "time": (t0 + dt.timedelta(seconds=30 * i)).isoformat(),
    }


def timed(func, repeat):
    """``(p50 ms, p99 ms, mean CPU ms)`` of ``repeat`` calls."""
    times = []
    c0 = cpu()
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    used = (cpu() - c0) / repeat * 1000
    times.sort()
    return (statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))],
            used)


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100000)
    parser.add_argument("--uri", default=None, help="a store URL (default: SQLite, temporary)")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)

    from ciml.prediction_store import PredictionStore

    tmp = tempfile.TemporaryDirectory(prefix="ciml-bench-store-")
    uri = args.uri or f"sqlite:///{os.path.join(tmp.name, 'predictions.sqlite')}"
    store = PredictionStore(uri)
    print(f"store: {store.url}; load average {open('/proc/loadavg').read().split()[:3]}")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    n = args.predictions
    single = min(1000, n // 10)
    wall, c0 = time.perf_counter(), cpu()
    for start in range(0, n - single, 500):
        store.add_many([record(i, t0) for i in range(start, min(start + 500, n - single))])
    wall, used = time.perf_counter() - wall, cpu() - c0
    print(f"write, batches of 500: {n - single} in {wall:.1f} s ({(n - single) / wall:.0f}/s; "
          f"CPU {used:.1f} s)")
    wall, c0 = time.perf_counter(), cpu()
    for i in range(n - single, n):
        store.add(record(i, t0))
    wall, used = time.perf_counter() - wall, cpu() - c0
    print(f"write, one by one (watch): {single} in {wall:.1f} s "
          f"({wall / single * 1000:.2f} ms each; CPU {used / single * 1000:.2f} ms each)")
    if store.dialect in ("mysql", "mariadb"):
        import sqlalchemy as sa

        # information_schema's sizes are InnoDB's statistics: bring them up to date.
        with store.engine.connect() as conn:
            conn.execute(sa.text("ANALYZE TABLE predictions, prediction_reports")).fetchall()
    size = store.storage()
    print(f"size: {size['predictions']} predictions, {size['bytes']} bytes, "
          f"{size['bytes_per_prediction']} bytes per prediction")

    deep = store.list(limit=50, offset=n // 2)
    cursor = deep.next_cursor
    run_id = deep.items[0]["run_id"]
    yesterday = t0 + dt.timedelta(seconds=30 * n) - dt.timedelta(days=1)
    queries = {
        "first page (50)": lambda: store.list(limit=50),
        "keyset page at half depth": lambda: store.list(limit=50, after=cursor),
        "offset page at half depth": lambda: store.list(limit=50, offset=n // 2),
        "per job, first page": lambda: store.list(build_name="grenade", limit=50),
        "per class, first page": lambda: store.list(predicted="oom", limit=50),
        "unusual, first page": lambda: store.list(unusual=True, limit=50),
        "since yesterday": lambda: store.list(since=yesterday, limit=50),
        "a run's history": lambda: store.for_run(run_id),
        "count, all": lambda: store.count(),
        "count, per job": lambda: store.count(build_name="grenade"),
        "jobs summary": lambda: store.jobs(),
        "recent per job (10 each)": lambda: store.recent_per_job(10),
    }
    print(f"{'query':32} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8}")
    for name, query in queries.items():
        query()  # warm
        p50, p99, used = timed(query, args.repeat)
        print(f"{name:32} {p50:8.2f} {p99:8.2f} {used:8.2f}")
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    if args.uri:
        store._metadata.drop_all(store.engine)
    store.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
