"""Benchmark: the raw cache's bytes on disk against the bytes fetched.

The issue's target: at most 1.25 times the bytes fetched (the fetched
file, packed or as fetched, the parsed series and the record).  Measured

* on the real dstat samples in ``tests/data/dstat``, stored as fetched
  (plain text) and gzipped (how CI log servers keep them);
* with ``--generated N``, on N generated one-hour dstat 0.7.2 runs, gzipped
  as CI keeps them (the runs ``bench_build_dataset.py`` caches: that cache
  stores these few dozen files under many run ids, so their sum gives the
  same ratio as its 1,000 runs);
* with ``--dir D``, on an existing data path, summed over its runs.

``--as-fetched`` stores the fetched files as they came (the cache before
``ciml.rawpack``).  Also the CPU time (this process) to pack a fetched file,
to encode and decode its series, and to unpack the file.

Usage: ``python benchmarks/bench_cache_footprint.py [--generated 40] [--dir D] [--as-fetched]``.
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
    return footprint_of(cache, [run.id for run in cache.runs()])


def footprint_of(cache, ids):
    total = {"fetched": 0, "raw": 0, "series": 0, "record": 0, "total": 0, "runs": 0}
    for run_id in ids:
        for key, value in cache.sizes(run_id).items():
            total[key] += value
        total["runs"] += 1
    return total


def line(label, sizes):
    f = sizes["fetched"]
    return (f"{label:50} fetched {f:>11,}  raw {sizes['raw']:>11,} ({sizes['raw'] / f:5.3f}x)  "
            f"series {sizes['series']:>11,} ({sizes['series'] / f:5.3f}x)  "
            f"record {sizes['record']:>9,}  on disk {sizes['total'] / f:5.3f}x fetched")


def _cpu_ms(fn, *args, repeat=5):
    best = None
    for _ in range(repeat):
        started = time.process_time()
        fn(*args)
        spent = time.process_time() - started
        best = spent if best is None else min(best, spent)
    return 1000 * best


def store_all(cache, files, label):
    """Store each ``(name, fetched bytes)``; print per file and return the sum."""
    from ciml import rawpack
    from ciml.base import FetchedMetrics
    from ciml.records import RunRecord
    from ciml.series import decode, encode
    from ciml_plugins.metrics.dstat import parse_dstat_arrays

    ids, cpu = [], {"pack": 0.0, "unpack": 0.0, "encode": 0.0, "decode": 0.0}
    for i, (name, fetched) in enumerate(files):
        arrays = parse_dstat_arrays(fetched)
        run = RunRecord(id=f"{label}-{i}", build_name=label, status="passed",
                        start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
        cache.store(run, FetchedMetrics(name, fetched, "file:///x"), arrays)
        ids.append(run.id)
        data = encode(*arrays)
        packed, _ = rawpack.pack(fetched)
        cpu["encode"] += _cpu_ms(encode, *arrays)
        cpu["decode"] += _cpu_ms(decode, data)
        cpu["pack"] += _cpu_ms(rawpack.pack, fetched)
        if rawpack.is_packed(packed):
            cpu["unpack"] += _cpu_ms(rawpack.unpack, packed)
        print(line(f"{name[:36]} ({label}, {len(arrays[0])} rows)",
                   footprint_of(cache, [run.id])))
    total = footprint_of(cache, ids)
    print(line(f"== {label}: {len(ids)} files", total))
    print(f"   CPU per file: pack {cpu['pack'] / len(ids):.2f} ms, unpack "
          f"{cpu['unpack'] / len(ids):.2f} ms, series encode {cpu['encode'] / len(ids):.2f} ms, "
          f"decode {cpu['decode'] / len(ids):.2f} ms (best of 5 each, this process)")
    return total


def samples(cache):
    files = [(p.name, p.read_bytes()) for p in sorted(SAMPLES.iterdir())]
    store_all(cache, files, "plain")
    store_all(cache, [(n + ".gz", gzip.compress(d, 6)) for n, d in files], "gzip")


def generated(cache, n, workdir):
    """N generated one-hour dstat 0.7.2 runs, gzipped (bench_build_dataset's templates)."""
    from ciml.generator import generate_history

    history = generate_history(pathlib.Path(workdir) / "history", runs=n * 3, seed=1,
                               jobs=["bench"], duration=(3600, 3601), bad_fraction=0.0,
                               tests=False, new_year=False)
    files = []
    for run in history.runs:
        if run["variant"] != "0.7.2" or len(files) == n:
            continue
        logs = pathlib.Path(run["artifacts_url"].removeprefix("file://"))
        path = sorted(logs.rglob("dstat-csv_log.txt*"))[0]
        data = path.read_bytes()
        files.append(("dstat-csv_log.txt.gz",
                      data if data[:2] == b"\x1f\x8b" else gzip.compress(data, 6)))
    store_all(cache, files, "generated")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="a data path whose raw cache to measure")
    parser.add_argument("--generated", type=int, default=0, metavar="N",
                        help="also N generated one-hour runs, gzipped")
    parser.add_argument("--as-fetched", action="store_true",
                        help="store fetched files as they came (no ciml.rawpack)")
    args = parser.parse_args()
    from ciml.cache import RawCache
    from ciml.paths import DataPath

    RawCache.pack_raw = not args.as_fetched
    with tempfile.TemporaryDirectory(prefix="ciml-footprint-") as tmp:
        with RawCache(DataPath(pathlib.Path(tmp) / "data")) as cache:
            samples(cache)
            if args.generated:
                generated(cache, args.generated, tmp)
    if args.dir:
        with RawCache(DataPath(args.dir)) as cache:
            sizes = footprint(cache)
        print(line(f"{args.dir} ({sizes['runs']} runs)", sizes))


if __name__ == "__main__":
    main()
