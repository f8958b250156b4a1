"""Load on ``ciml serve``: concurrent clients on the home page and the predictions API.

Fills a prediction store with ``--predictions`` rows (default 100,000: five
jobs, five classes, about 5% unusual, 2% not predicted, explanations,
spread over 30 days), starts the real ``ciml serve`` command in a process of
its own on a free loopback port, and runs ``--clients`` concurrent
keep-alive clients for ``--duration`` seconds.  Half of the requests ask
for the home page (``/``, sometimes filtered by job, class or unusual), half
for ``/api/v1/predictions`` (filtered the same way, a third of them
following a ``next_cursor`` a few pages deep).

Reported: requests, errors (any status but 200, or a broken connection),
latency p50/p90/p99/max per kind, throughput, the server's CPU time
(user+sys) and its resident memory sampled every second (first and last
tenth compared: "flat" means the last is within 10% of the first), and the
load average before and after (the machine is shared, so wall-clock
figures are pessimistic).

    python benchmarks/bench_serve.py [--predictions 100000] [--clients 50]
                                     [--duration 60] [--processes 1] [--keep DIR]
                                     [--cache-ttl S] [--only home|api]

Targets (issue 16): p99 <= 300 ms and zero errors at 50 clients on a
2-core machine; memory flat.
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

JOBS = ("tempest-full", "tempest-slow", "grenade", "nova-live-migration", "unit-py311")
CLASSES = ("passed", "test-failure", "oom", "timeout", "network")
FEATURES = ("mem_used", "cpu_usr", "load_1m", "net_recv", "dsk_writ")


def _record(i, rng, start):
    job = JOBS[i % len(JOBS)]
    when = start + dt.timedelta(seconds=i * 26)  # 100,000 rows: about 30 days
    record = {
        "run_id": f"run-{i:07d}", "build_uuid": f"{i:032x}", "build_name": job,
        "status": "failed" if rng.random() < 0.3 else "passed",
        "dataset": "demo-cause", "experiment": "gbdt", "model": "demo-cause/gbdt",
        "dataset_fingerprint": "f" * 16, "model_fingerprint": "e" * 16,
        "artifacts_url": f"https://logs.example.org/{i}/", "trigger": "mqtt",
        "metadata": {"node_provider": "rax-dfw", "project": "openstack/nova"},
        "time": when.isoformat(),
    }
    if rng.random() < 0.02:
        record.update(predicted=None, probabilities={}, unusual=None, explanation=None,
                      error="dstat log not found", reason="missing")
        return record
    p = rng.dirichlet([1.0] * len(CLASSES))
    record["probabilities"] = {c: float(v) for c, v in zip(CLASSES, p)}
    record["predicted"] = CLASSES[int(p.argmax())]
    unusual = rng.random() < 0.05
    record["unusual"] = {"score": float(rng.normal(3 if unusual else 0, 1)),
                         "percentile": 99.5 if unusual else 50.0, "unusual": unusual,
                         "features": []}
    record["explanation"] = {
        "method": "tree-contributions", "target": record["predicted"],
        "features": [{"feature": f, "value": float(rng.normal(5e9, 1e9)),
                      "typical": 3.1e9, "contribution": float(rng.random())}
                     for f in FEATURES[:3]],
        "windows": [{"start_s": 300.0 * k, "end_s": 300.0 * (k + 1),
                     "contribution": 0.1} for k in range(2)]}
    return record


def fill_store(data_path, n, batch=2000):
    import numpy as np

    from ciml.prediction_store import PredictionStore, default_uri

    rng = np.random.default_rng(0)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    t0 = time.perf_counter()
    with PredictionStore(default_uri(data_path)) as store:
        for lo in range(0, n, batch):
            store.add_many([_record(i, rng, start) for i in range(lo, min(n, lo + batch))])
        count = store.count()
        size = store.storage()
    return count, size, time.perf_counter() - t0


# -- a small keep-alive HTTP/1.1 client: light enough that fifty of them leave the
# -- cores to the server ----------------------------------------------------------


class Client:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path):
        if self.writer is None:
            await self._connect()
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          "Accept: text/html,application/json\r\n"
                          "Accept-Encoding: gzip\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        if length is None:
            raise RuntimeError("no content-length")
        body = await self.reader.readexactly(int(length.group(1)))
        if re.search(rb"(?i)connection: *close", head):
            self.close()
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _decoded(body):
    import gzip

    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


_CURSOR = re.compile(rb'"next_cursor": *(null|"([^"]*)")')


def _next_cursor(body, check=False):
    """The page's ``next_cursor`` (``None`` on the last page; ``False``: not a page).

    Found in the bytes rather than by parsing 30 KB of JSON per page: the
    client must cost the shared cores little.  One page in twenty (``check``)
    is parsed whole and must agree.
    """
    # The last one: the page's, after its items.
    matches = list(_CURSOR.finditer(body, max(0, len(body) - 400)))
    if not matches:
        return False
    found = matches[-1]
    cursor = found.group(2).decode() if found.group(2) is not None else None
    if check:
        try:
            if json.loads(body).get("next_cursor") != cursor:
                return False
        except ValueError:
            return False
    return cursor


def _paths(rng, kinds=("home", "api")):
    """One request: (kind, path)."""
    query = {}
    roll = rng.random()
    if roll < 0.3:
        query["job"] = rng.choice(JOBS)
    elif roll < 0.45:
        query["class"] = rng.choice(CLASSES)
    elif roll < 0.55:
        query["unusual"] = "true"
    if kinds == ("home",) or (kinds != ("api",) and rng.random() < 0.5):
        return "home", "/" + ("?" + urllib.parse.urlencode(query) if query else "")
    query["limit"] = "50"
    return "api", "/api/v1/predictions?" + urllib.parse.urlencode(query)


async def _client(host, port, deadline, results, seed, kinds):
    rng = random.Random(seed)
    client = Client(host, port)
    try:
        while time.monotonic() < deadline:
            kind, path = _paths(rng, kinds)
            pages = rng.choice((1, 1, 2, 4)) if kind == "api" else 1
            for _ in range(pages):
                t0 = time.perf_counter()
                try:
                    status, body = await client.get(path)
                    ok = status == 200
                except Exception as exc:
                    client.close()
                    status, body, ok = repr(exc)[:80], b"", False
                elapsed = time.perf_counter() - t0
                results.append((kind, elapsed, ok, status))
                if not ok or kind != "api":
                    break
                cursor = _next_cursor(_decoded(body), check=rng.random() < 0.05)
                if cursor is False:
                    results[-1] = (kind, elapsed, False, "not the JSON page expected")
                    break
                if not cursor:
                    break
                path = re.sub(r"&after=[^&]*", "", path) + "&after=" + cursor
    finally:
        client.close()


async def _load(host, port, clients, duration, kinds=("home", "api")):
    results = []
    deadline = time.monotonic() + duration
    await asyncio.gather(*[_client(host, port, deadline, results, seed, kinds)
                           for seed in range(clients)])
    return results


# -- the server process -----------------------------------------------------------


def _tree(pid):
    """The server's process and its descendants (``--processes`` workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return pids


def _proc_figures(pid):
    """``(RSS MiB, CPU s user+sys)`` of the server, its worker processes included."""
    rss = cpu = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                rss += int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            continue
        cpu += (int(fields[11]) + int(fields[12])) / ticks
    return rss, cpu


def start_server(data_path, processes=1, cache_ttl=None):
    env = {**os.environ, "CIML_SERVE_TOKEN": "bench-token"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
         "--data-path", str(data_path), "serve", "--port", "0", "--processes",
         str(processes)] + ([] if cache_ttl is None else ["--cache-ttl", str(cache_ttl)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        match = re.search(r"listening on http://([\d.]+):(\d+)/", line)
        if match:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, match.group(1), int(match.group(2))
    raise SystemExit(f"the server did not start (rc {proc.wait()})")


def _pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[k]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1,
                        help="ciml serve --processes (default: 1)")
    parser.add_argument("--cache-ttl", type=float, default=None,
                        help="ciml serve --cache-ttl (default: the server's; 0: no "
                             "shared copies, every request queried and rendered)")
    parser.add_argument("--only", choices=("home", "api"), default=None,
                        help="ask for one kind only (CPU per request of that endpoint)")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="data path to fill (reused if its store is already full)")
    args = parser.parse_args(argv)

    from ciml.paths import DataPath

    folder = args.keep or tempfile.mkdtemp(prefix="ciml-bench-serve-")
    os.makedirs(folder, exist_ok=True)
    data_path = DataPath(folder)
    from ciml.prediction_store import PredictionStore, default_uri

    with PredictionStore(default_uri(data_path)) as store:
        have = store.count()
    if have < args.predictions:
        count, size, took = fill_store(data_path, args.predictions)
        print(f"store: {count} predictions, {size['bytes'] / 2**20:.1f} MiB "
              f"({size['bytes_per_prediction']} B each), filled in {took:.1f} s")
    else:
        print(f"store: {have} predictions (reused)")

    kinds = (args.only,) if args.only else ("home", "api")
    try:
        # The server's event loop too (uvicorn picks it): the client's I/O costs less.
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    proc, host, port = start_server(folder, args.processes, args.cache_ttl)
    try:
        asyncio.run(_load(host, port, args.clients, args.warmup, kinds))
        load_before = open("/proc/loadavg").read().split()[:3]
        rss0, cpu0 = _proc_figures(proc.pid)
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.wait(1.0):
                samples.append(_proc_figures(proc.pid)[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        wall0 = time.perf_counter()
        client0 = os.times()
        results = asyncio.run(_load(host, port, args.clients, args.duration, kinds))
        client1 = os.times()
        wall = time.perf_counter() - wall0
        stop.set()
        sampler.join()
        rss1, cpu1 = _proc_figures(proc.pid)
        load_after = open("/proc/loadavg").read().split()[:3]
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"{args.clients} clients, {args.processes} server process(es), cache TTL "
          f"{'default' if args.cache_ttl is None else args.cache_ttl}, for {wall:.1f} s; "
          f"load average before "
          f"{' '.join(load_before)}, after {' '.join(load_after)} "
          f"({os.cpu_count()} CPUs)")
    errors = [r for r in results if not r[2]]
    for kind in ("home", "api", "all"):
        lat = [r[1] * 1000 for r in results if kind in ("all", r[0])]
        if not lat:
            continue  # --only the other kind
        print(f"  {kind:5s} {len(lat):6d} requests  p50 {_pct(lat, 50):7.1f} ms  "
              f"p90 {_pct(lat, 90):7.1f} ms  p99 {_pct(lat, 99):7.1f} ms  "
              f"max {max(lat):7.1f} ms  mean {statistics.fmean(lat):6.1f} ms")
    print(f"  throughput {len(results) / wall:.1f} requests/s; errors {len(errors)}"
          + (f" (e.g. {errors[0][3]})" if errors else ""))
    tenth = max(1, len(samples) // 10)
    first, last = statistics.fmean(samples[:tenth]), statistics.fmean(samples[-tenth:])
    tenths = [statistics.fmean(samples[i * tenth:(i + 1) * tenth]) for i in range(10)
              if samples[i * tenth:(i + 1) * tenth]]
    print("  server RSS per tenth of the run (MiB): " + " ".join(f"{r:.0f}" for r in tenths))
    print(f"  server CPU {cpu1 - cpu0:.1f} s (user+sys) in {wall:.1f} s "
          f"({(cpu1 - cpu0) / wall:.2f} cores, {(cpu1 - cpu0) / len(results) * 1000:.1f} ms "
          f"a request); RSS {rss0:.0f} MiB at start, first tenth "
          f"{first:.0f} MiB, last tenth {last:.0f} MiB, peak {max(samples):.0f} MiB: "
          f"{'flat' if last <= first * 1.10 else 'GROWING'}")
    client_cpu = (client1.user - client0.user) + (client1.system - client0.system)
    print(f"  client CPU {client_cpu:.1f} s (user+sys) in {wall:.1f} s "
          f"({client_cpu / wall:.2f} cores, {client_cpu / len(results) * 1000:.1f} ms a "
          "request)")
    p99 = _pct([r[1] * 1000 for r in results], 99)
    print(f"  target p99 <= 300 ms: {'met' if p99 <= 300 else 'NOT met'} ({p99:.0f} ms); "
          f"zero errors: {'met' if not errors else 'NOT met'}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
