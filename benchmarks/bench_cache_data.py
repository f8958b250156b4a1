"""Benchmark ``cache-data``: runs/s against the latency bound (log server adding 50 ms a request).

Usage::

    python benchmarks/bench_cache_data.py    # 235 and 2000 runs, the default workers (8)
    python benchmarks/bench_cache_data.py --runs 500 --workers 1 16 --latency 0.05
    python benchmarks/bench_cache_data.py --source zuul --runs 500   # Zuul's API instead
    python benchmarks/bench_cache_data.py --as-fetched   # files kept as fetched, not packed

A generated CI history (``ciml.generator``, one job, realistic 10-30 minute
dstat files in every layout, gzipped or not, at the real artifact paths) is
served by ``ciml.testing.servers.CIServer`` with ``--latency`` added to every
request.  Each measurement runs ``ciml.collect.cache_data`` in a fresh
subprocess on an empty data path and reports:

* runs/s, and the **latency bound**: the rate at which the workers would
  cache runs if every request cost exactly the server's latency and nothing
  else, ``workers / (requests per run x latency)``; equivalently a job needs
  at least ``runs x requests per run x latency / workers`` seconds.  The
  requests per run are counted at the server (the dstat source tries its
  paths in order, so a file at the third path costs three requests; with
  ``--source zuul`` each run also costs its ``zuul-info/inventory.yaml``,
  and the API, served with the same latency, is paged on the main thread
  while the workers fetch).  "of bound" is runs/s over that bound; the
  target is 70%.  The wall time is the ``cache_data`` call's (the history's
  listing and the parse processes' start included; the interpreter's start
  and imports, which a ``ciml cache-data`` command pays too, are not);
* CPU per run: the subprocess and its parse processes (which are the
  fork server's children, so they are read from ``/proc`` before they
  exit), the parse processes alone, and the whole machine (the log server
  and the subprocess's start included);
* peak RSS of the subprocess (``ru_maxrss``) and its growth over the RSS
  after imports, and the largest peak RSS of a parse process: none may
  grow with the number of runs.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

JOB = "tempest-full"


def child(args):
    """Run cache_data once in this (fresh) process and print a JSON line."""
    import resource

    from ciml import collect
    from ciml.cache import RawCache
    from ciml.collect import cache_data
    from ciml.paths import DataPath
    from ciml.plugins import get_manager

    # The parse processes are the forkserver's children, not ours: neither
    # RUSAGE_CHILDREN nor our ru_maxrss sees them.  Read their peak RSS
    # (VmHWM) and CPU from /proc just before the pool shuts down.
    pool_stats = {"peak_rss_kib": [], "cpu_s": 0.0}
    make_pool = collect._process_pool

    def watched_pool(*a, **kw):
        pool = make_pool(*a, **kw)
        shutdown = pool.shutdown

        def read_then_shutdown(*sa, **skw):
            for pid in list((getattr(pool, "_processes", None) or {}).keys()):
                try:
                    status = pathlib.Path(f"/proc/{pid}/status").read_text()
                    stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        pool_stats["peak_rss_kib"].append(int(line.split()[1]))
                ticks = stat.split()
                pool_stats["cpu_s"] += (int(ticks[11]) + int(ticks[12])) / os.sysconf(
                    "SC_CLK_TCK")
            return shutdown(*sa, **skw)

        pool.shutdown = read_then_shutdown
        return pool

    collect._process_pool = watched_pool
    RawCache.pack_raw = not args.as_fetched

    manager = get_manager()
    if args.zuul_url:
        source = manager.get("result_source", "zuul")(zuul_url=args.zuul_url,
                                                      tenant="openstack")
    else:
        source = manager.get("result_source", "subunit2sql")(db_uri=args.db_uri)
    metrics = manager.get("metric_source", "dstat")(retries=0)
    import pandas  # noqa: F401  (imported by the first parse anyway: count it in the baseline)

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    summary = cache_data(DataPath(args.data_path), source, metrics, JOB,
                         workers=args.workers, progress=False, processes=args.processes)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = after.ru_maxrss
    fetched = max(summary["cached"] + summary["unavailable"] + summary["transient"], 1)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
           + children.ru_utime + children.ru_stime + pool_stats["cpu_s"])
    summary["cpu_ms_per_run"] = round(cpu / fetched * 1000, 1)
    summary["parser_cpu_ms_per_run"] = round(pool_stats["cpu_s"] / fetched * 1000, 1)
    summary.update(wall_s=round(elapsed, 3), peak_rss_mib=round(peak / 1024, 1),
                   base_rss_mib=round(base_rss / 1024, 1),
                   growth_mib=round((peak - base_rss) / 1024, 1),
                   process_peak_rss_mib=round(max(pool_stats["peak_rss_kib"], default=0)
                                              / 1024, 1))
    print(json.dumps(summary))


def _machine_cpu_s():
    """CPU seconds used on the whole machine so far (every process: the log
    server, the parse processes of the forkserver, which ``RUSAGE_CHILDREN``
    does not see, and anything else running)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


#: The log-server requests a run costs: its dstat paths and its inventory.
_RUN_FILES = ("*dstat-csv_log*", "*/zuul-info/inventory.yaml")


def _run_requests(server):
    return sum(server.hits(pattern) for pattern in _RUN_FILES)


def measure(db_uri, workers, server, workdir, processes=None, zuul_url=None,
            as_fetched=False):
    data_path = tempfile.mkdtemp(prefix=f"data-w{workers}-", dir=workdir)
    before = _run_requests(server)
    machine_before = _machine_cpu_s()
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--db-uri", db_uri, "--data-path", data_path,
         "--workers", str(workers),
         *([] if processes is None else ["--processes", str(processes)]),
         *([] if zuul_url is None else ["--zuul-url", zuul_url]),
         *(["--as-fetched"] if as_fetched else [])],
        capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"child failed:\n{proc.stderr}")
    machine_cpu = _machine_cpu_s() - machine_before
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["requests"] = _run_requests(server) - before
    # Other work on the machine slows the wall clock, not the CPU per run.
    result["load_avg"] = round((load_before + os.getloadavg()[0]) / 2, 1)
    fetched = result["cached"] + result["unavailable"] + result["transient"]
    per_run = result["requests"] / max(fetched, 1) * server.latency
    result["per_run_request_s"] = round(per_run, 4)
    result["limit_runs_per_s"] = round(workers / per_run, 1) if per_run else None
    result["runs_per_s_wall"] = round(fetched / result["wall_s"], 1)
    # Includes the child's start and imports: an upper bound per run.
    result["machine_cpu_ms_per_run"] = round(machine_cpu / max(fetched, 1) * 1000, 1)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from ciml.collect import DEFAULT_WORKERS

    parser.add_argument("--runs", type=int, nargs="+", default=[235, 2000])
    parser.add_argument("--workers", type=int, nargs="+", default=[DEFAULT_WORKERS])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--duration", type=int, nargs=2, default=[600, 1800],
                        help="run length range in seconds (dstat rows)")
    parser.add_argument("--processes", type=int, default=None,
                        help="cache_data's processes (default: its automatic choice)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--source", choices=("subunit2sql", "zuul"), default="subunit2sql",
                        help="result source: the generated subunit2sql database, or the "
                             "same runs from a Zuul API server")
    parser.add_argument("--as-fetched", action="store_true",
                        help="keep fetched files as they came (no ciml.rawpack packing)")
    parser.add_argument("--zuul-url", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db-uri", help=argparse.SUPPRESS)
    parser.add_argument("--data-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.workers = args.workers[0]
        child(args)
        return

    from ciml.generator import generate_history
    from ciml.testing.servers import CIServer

    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="ciml-bench-"))
    print(f"# work dir {workdir}; latency {args.latency * 1000:.0f} ms a request; "
          f"{os.cpu_count()} CPUs; result source {args.source}")
    rows = []
    for n_runs in args.runs:
        root = workdir / f"hist-{n_runs}"
        server = CIServer(root=root / "logs", latency=args.latency).start()
        api = None
        try:
            t0 = time.monotonic()
            history = generate_history(root, runs=n_runs, seed=1, jobs=(JOB,),
                                       duration=tuple(args.duration), base_url=server.url,
                                       bad_fraction=0.01, tests=False)
            print(f"# generated {n_runs} runs in {time.monotonic() - t0:.1f} s")
            if args.source == "zuul":
                api = CIServer(builds=history.zuul_builds, latency=args.latency).start()
            # Memory is compared at the highest worker count only for the big history.
            counts = args.workers if n_runs == min(args.runs) else [max(args.workers)]
            for workers in counts:
                result = measure(history.db_uri, workers, server, workdir, args.processes,
                                 zuul_url=api.zuul_url if api else None,
                                 as_fetched=args.as_fetched)
                result["runs"] = n_runs
                rows.append(result)
                print(json.dumps({k: result[k] for k in (
                    "runs", "workers", "processes", "cached", "unavailable", "wall_s",
                    "runs_per_s_wall", "per_run_request_s", "limit_runs_per_s",
                    "cpu_ms_per_run", "parser_cpu_ms_per_run", "machine_cpu_ms_per_run",
                    "peak_rss_mib", "base_rss_mib", "growth_mib", "process_peak_rss_mib",
                    "load_avg")}),
                    flush=True)
        finally:
            server.stop()
            if api is not None:
                api.stop()
    print()
    print(f"{'runs':>5} {'workers':>7} {'runs/s':>8} {'bound':>7} {'of bound':>8} "
          f"{'CPU/run':>8} {'machine':>8} {'peak RSS':>9} {'growth':>7} {'parser RSS':>10} "
          f"{'load':>5}")
    for r in rows:
        share = r["runs_per_s_wall"] / r["limit_runs_per_s"] if r["limit_runs_per_s"] else 0
        print(f"{r['runs']:>5} {r['workers']:>7} {r['runs_per_s_wall']:>8.1f} "
              f"{r['limit_runs_per_s']:>7.1f} {share:>8.0%} {r['cpu_ms_per_run']:>6.1f}ms "
              f"{r['machine_cpu_ms_per_run']:>6.1f}ms "
              f"{r['peak_rss_mib']:>7.0f}Mi "
              f"{r['growth_mib']:>5.0f}Mi {r['process_peak_rss_mib']:>8.0f}Mi "
              f"{r['load_avg']:>5.1f}")
    small = [r for r in rows if r["runs"] == min(args.runs)]
    one = next((r for r in small if r["workers"] == 1), None)
    many = max(small, key=lambda r: r["workers"])
    if one and many is not one:
        print(f"speed-up {many['workers']} vs 1 worker: "
              f"{many['runs_per_s_wall'] / one['runs_per_s_wall']:.1f}x")


if __name__ == "__main__":
    main()
