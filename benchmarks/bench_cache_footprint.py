"""Benchmark: the raw cache's bytes on disk against the bytes fetched.

The issue's target: at most 1.25 times the bytes fetched (the file as
fetched, the parsed series and the record).  Measured

* on the real dstat samples in ``tests/data/dstat``, stored as fetched
  (plain text) and gzipped (how CI log servers keep them), and
* with ``--dir D``, on an existing data path (e.g. the cache
  ``bench_build_dataset.py --dir D`` made), summed over its runs.

Also the time to write and read one series (CPU, this process).

Usage: ``python benchmarks/bench_cache_footprint.py [--dir D]``.
"""

import argparse
import datetime as dt
import gzip
import pathlib
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
SAMPLES = HERE.parent / "tests" / "data" / "dstat"


def footprint(cache):
    total = {"fetched": 0, "series": 0, "record": 0, "total": 0, "runs": 0}
    for run in cache.runs():
        for key, value in cache.sizes(run.id).items():
            total[key] += value
        total["runs"] += 1
    return total


def line(label, sizes):
    return (f"{label:58} fetched {sizes['fetched']:>11,}  series {sizes['series']:>11,}  "
            f"record {sizes['record']:>9,}  on disk {sizes['total'] / sizes['fetched']:5.3f}x "
            f"fetched (series alone {sizes['series'] / sizes['fetched']:5.3f}x)")


def samples():
    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache
    from ciml.paths import DataPath
    from ciml.records import RunRecord
    from ciml.series import decode, encode
    from ciml_plugins.metrics.dstat import parse_dstat

    with tempfile.TemporaryDirectory(prefix="ciml-footprint-") as tmp:
        cache = RawCache(DataPath(tmp))
        for i, path in enumerate(sorted(SAMPLES.iterdir())):
            plain = path.read_bytes()
            frame = parse_dstat(plain)
            started = time.process_time()
            data = encode(frame.index.asi8, frame.to_numpy(), list(frame.columns))
            wrote = time.process_time() - started
            started = time.process_time()
            for _ in range(20):
                decode(data)
            read = (time.process_time() - started) / 20
            for kind, fetched in (("plain", plain), ("gzip", gzip.compress(plain, 6))):
                run = RunRecord(id=f"{kind}-{i}", build_name=kind, status="passed",
                                start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
                cache.store(run, FetchedMetrics(f"{path.name}", fetched, "file:///x"), frame)
                print(line(f"{path.name[15:50]} ({kind}, {len(frame)} rows)",
                           cache.sizes(run.id)))
            print(f"{'':58} write {1000 * wrote:6.2f} ms  read {1000 * read:6.2f} ms CPU")
        cache.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="a data path whose raw cache to measure")
    args = parser.parse_args()
    samples()
    if args.dir:
        from ciml.cache import RawCache
        from ciml.paths import DataPath

        with RawCache(DataPath(args.dir)) as cache:
            sizes = footprint(cache)
        print(line(f"{args.dir} ({sizes['runs']} runs)", sizes))


if __name__ == "__main__":
    main()
