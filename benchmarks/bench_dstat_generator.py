"""Benchmark: dstat parsing (ms per 3600-row file, gz and plain) and the history generator.

Run alone: ``python benchmarks/bench_dstat_generator.py [--repeat N]``.
"""

import argparse
import datetime as dt
import gzip
import statistics
import tempfile
import time
from pathlib import Path

from ciml.generator import generate_history, synthetic_dstat
from ciml_plugins.metrics.dstat import parse_dstat


def bench_parse(repeat):
    start = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.timezone.utc)
    print("parse_dstat, one 3600-row file (1 s samples, one hour):")
    for variant in ("0.7.2", "0.7.3", "0.7.4"):
        plain = synthetic_dstat(variant, 3600, start=start).encode()
        packed = gzip.compress(plain, compresslevel=6)
        for label, blob in (("gz", packed), ("plain", plain)):
            parse_dstat(blob, start=start)
            times, cpu = [], []
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                frame = parse_dstat(blob, start=start)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            # CPU time as well as wall time: on a shared machine the wall
            # clock mostly measures the neighbours.
            print(f"  dstat {variant} {label:5s} {len(blob) / 1024:7.0f} KiB  "
                  f"{frame.shape[0]} rows x {frame.shape[1]} cols  "
                  f"wall median {statistics.median(times) * 1000:6.1f} ms "
                  f"min {min(times) * 1000:6.1f} ms  "
                  f"cpu median {statistics.median(cpu) * 1000:6.1f} ms")


def bench_generator(tmp):
    t0, c0 = time.perf_counter(), time.process_time()
    hist = generate_history(tmp / "gen", runs=120, seed=0)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rows = sum(r["rows"] for r in hist.runs)
    size = sum(p.stat().st_size for p in hist.logs_dir.rglob("*") if p.is_file())
    print(f"generate_history(runs=120, duration=(600, 1800), 1 s samples): {elapsed:.2f} s, "
          f"{rows} dstat rows, {size / 2 ** 20:.1f} MiB of logs, "
          f"{rows / elapsed:,.0f} rows/s (cpu {cpu:.2f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench_parse(args.repeat)
        bench_generator(tmp)


if __name__ == "__main__":
    main()
