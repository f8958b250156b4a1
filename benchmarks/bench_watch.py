"""Benchmark: ``ciml watch`` latency and throughput on a stream of firehose reports.

Set-up: a generated CI history of one job served by the local log server
(:class:`ciml.testing.servers.CIServer`), cached, a dataset built and a
small model trained on it.  Then N build reports are made, each a fresh
build uuid whose log folder (``.../<job>/<uuid[:7]>/``) holds a hard link
to one of the history's dstat files, so every report is a distinct run
with real metrics to fetch over HTTP and parse.

``ciml watch --trigger mqtt --publish-topic T --max-events N`` runs as a
separate process (as in production).  This process publishes the firehose
``gearman-subunit`` reports to Mosquitto at a fixed rate (QoS 1) and
subscribes to ``T``: the latency of a run is from just before its report
is published to when its prediction arrives on ``T`` (both clocks are this
process's).  A few warm-up reports go first and are not counted.

Targets: no report lost, p99 under 250 ms, keeping up with 20 reports/s on
2 cores, also with ``--busy``: a CPU-bound process (a Python busy loop, as
many as given) runs beside the watcher from before it starts until the
stream ends, so the model loads and predicts on a machine that is doing
something else.  The first reports after the subscription are reported
apart (``first``): they are the ones that would wait behind a model not
warmed up before subscribing.

Usage: ``python benchmarks/bench_watch.py [--events 500] [--rate 20]
[--workers 4] [--busy [N]] [--mqtt-host 127.0.0.1 --mqtt-port 1883] [--dir D]``.
"""

import argparse
import atexit
import json
import os
import pathlib
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

#: dstat columns every real variant has (0.7.2, 0.7.3, Debian 0.7.4).
FEATURES = r"^(cpu_(usr|sys|idl|wai)|mem_(used|free|buff|cach)|load_\w+|procs_(run|blk))$"


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(root, history_runs, estimator, params):
    """History served over HTTP, cached, dataset built, model trained."""
    from ciml import collect
    from ciml.dataset import Dataset, build_dataset
    from ciml.experiment import Experiment
    from ciml.generator import generate_history
    from ciml.model import train_model
    from ciml.paths import DataPath
    from ciml.plugins import get_manager
    from ciml.testing.servers import CIServer

    out = root / "history"
    server = CIServer(root=out / "logs").start()
    t = time.monotonic()
    history = generate_history(out, runs=history_runs, seed=11, jobs=["tempest-full"],
                               base_url=server.url, bad_fraction=0.0)
    _log(f"generated {history_runs} runs in {time.monotonic() - t:.1f} s")
    data_path = DataPath(root / "data")
    manager = get_manager()
    t = time.monotonic()
    collect.cache_data(data_path, manager.get("result_source", "subunit2sql")(
        db_uri=history.db_uri), manager.get("metric_source", "dstat")(), "tempest-full",
        progress=False)
    build_dataset(data_path, "bench", "tempest-full", features_regex=FEATURES,
                  aggregation_functions=["mean", "max", "std"], progress=False)
    Experiment.create("bench", estimator, params).save(data_path, force=True)
    train_model(data_path, Dataset.open(data_path, "bench"),
                Experiment.load(data_path, "bench"), progress=False)
    _log(f"cached, built and trained in {time.monotonic() - t:.1f} s")
    return data_path, history, server


def make_reports(history, count, tag):
    """``count`` firehose payloads for fresh builds that link to real dstat files."""
    logs = history.logs_dir
    good = [r for r in history.good_runs("tempest-full") if r["dstat_path"]]
    reports = []
    for i in range(count):
        build_uuid = uuid.uuid4().hex
        run = good[i % len(good)]
        source = pathlib.Path(run["artifacts_url"].split("/", 3)[3])  # path on the server
        folder = pathlib.Path("bench", tag, "tempest-full", build_uuid[:7])
        # dstat_path is relative to the artifacts folder; keep the file's layout.
        target = logs / folder / run["dstat_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(logs / source / run["dstat_path"], target)
        reports.append({"build_uuid": build_uuid,
                        "source_url": f"{history_base(history)}{folder.as_posix()}/"
                                      "testrepository.subunit",
                        "status": "failed" if run["status"] == "failed" else "success"})
    return reports


def history_base(history):
    url = history.runs[0]["artifacts_url"]
    return url[:url.index("/", len("http://")) + 1]


def cpu_seconds(pid):
    """User + system CPU seconds of a live process, from /proc."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop_all(processes):
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="reports per second")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--history-runs", type=int, default=40)
    parser.add_argument("--estimator", default="dnn")
    parser.add_argument("--params", default='{"hidden_layers": "32/32", "epochs": 5}')
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--dir", type=pathlib.Path, default=None)
    parser.add_argument("--busy", type=int, nargs="?", const=1, default=0, metavar="N",
                        help="run N CPU-bound processes beside the watcher (default "
                             "without the option: none; with it: 1)")
    parser.add_argument("--thread-cpu", action="store_true",
                        help="also report the watcher's CPU seconds per thread "
                             "(benchmarks/thread_cpu.py)")
    args = parser.parse_args()

    import paho.mqtt.client as mqtt

    root = args.dir or pathlib.Path(tempfile.mkdtemp(prefix="ciml-bench-watch-"))
    root.mkdir(parents=True, exist_ok=True)
    data_path, history, server = prepare(root, args.history_runs, args.estimator,
                                         json.loads(args.params))
    tag = uuid.uuid4().hex[:8]
    warmup = make_reports(history, args.warmup, tag + "w")
    reports = make_reports(history, args.events, tag)
    topic_root = f"ciml-bench-{tag}"
    out_topic = f"{topic_root}-predictions"

    received = {}
    cond = threading.Condition()
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(out_topic, qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()

    def on_prediction(client, userdata, message):
        now = time.monotonic()
        record = json.loads(message.payload)
        with cond:
            received.setdefault(record.get("build_uuid"), (now, record))
            cond.notify_all()

    sub.on_message = on_prediction
    sub.connect(args.mqtt_host, args.mqtt_port)
    sub.loop_start()
    subscribed.wait(10)

    threads_path = root / "watch-threads.json"
    runner = [str(pathlib.Path(__file__).with_name("thread_cpu.py")), str(threads_path)] \
        if args.thread_cpu else ["-c", "import sys; from ciml.shell import main; sys.exit(main())"]
    watch_cmd = [
        sys.executable, *runner,
        "--data-path", str(data_path.root), "watch", "--dataset", "bench",
        "--experiment", "bench", "--trigger", "mqtt", "--mqtt-host", args.mqtt_host,
        "--mqtt-port", str(args.mqtt_port), "--topic", f"{topic_root}/gearman-subunit/#",
        "--client-id", f"ciml-bench-{tag}", "--clean-session",
        "--publish-topic", out_topic, "--max-events", str(args.events + args.warmup),
        "--workers", str(args.workers), "--status-interval", "5", "--fetch-delay", "0.5"]
    err_path = root / "watch.stderr"
    out_path = root / "watch.stdout"
    # Started before the watcher: it loads and warms its model on a busy machine.
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    atexit.register(_stop_all, hogs)  # also when the benchmark gives up half way
    if hogs:
        _log(f"{len(hogs)} CPU-bound process(es) running beside the watcher")
    t_start = time.monotonic()
    with open(err_path, "w") as err_fh, open(out_path, "w") as out_fh:
        proc = subprocess.Popen(watch_cmd, stdout=out_fh, stderr=err_fh)
    deadline = time.monotonic() + 120
    while "connected to MQTT broker" not in err_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"ciml watch did not start:\n{err_path.read_text()}")
        time.sleep(0.1)
    _log(f"ciml watch subscribed after {time.monotonic() - t_start:.1f} s")

    pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(args.mqtt_host, args.mqtt_port)
    pub.loop_start()
    topic = f"{topic_root}/gearman-subunit/bench-worker/openstack/nova/1"

    def send(payloads, rate):
        sent = {}
        t0 = time.monotonic()
        for i, payload in enumerate(payloads):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[payload["build_uuid"]] = time.monotonic()
            pub.publish(topic, json.dumps(payload), qos=1)
        return sent

    def wait_for(keys, timeout):
        end = time.monotonic() + timeout
        with cond:
            while not all(k in received for k in keys) and time.monotonic() < end:
                cond.wait(0.2)

    send(warmup, 5)
    wait_for([p["build_uuid"] for p in warmup], 120)
    _log(f"warm-up: {sum(p['build_uuid'] in received for p in warmup)}/{len(warmup)} "
         "predictions")

    _log(f"publishing {args.events} reports at {args.rate:g}/s")
    cpu_before = cpu_seconds(proc.pid)
    cpu_last = [cpu_before]
    sampling = threading.Event()

    def sample():
        # The watcher exits by itself after --max-events: keep the last reading.
        while not sampling.wait(0.1):
            value = cpu_seconds(proc.pid)
            if value == value:  # not NaN
                cpu_last[0] = value

    threading.Thread(target=sample, daemon=True).start()
    load_before = os.getloadavg()[0]
    if args.thread_cpu:
        os.kill(proc.pid, signal.SIGUSR1)  # thread_cpu.py: the stream starts now
    t_first = time.monotonic()
    sent = send(reports, args.rate)
    t_sent = time.monotonic()
    wait_for(list(sent), 60)
    sampling.set()
    cpu_stream = cpu_last[0] - cpu_before
    t_stream = time.monotonic() - t_first
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        # Overloaded: what arrived so far is still worth a report.
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            _stop_all([proc])
    _stop_all(hogs)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    pub.disconnect()
    pub.loop_stop()
    sub.disconnect()
    sub.loop_stop()
    server.stop()

    latencies, errors = [], 0
    for key, t_pub in sent.items():  # in publishing order
        if key in received:
            t_recv, record = received[key]
            latencies.append((t_recv - t_pub) * 1000)
            errors += bool(record.get("error"))
    first = latencies[:20]
    lost = len(sent) - len(latencies)
    last = max((received[k][0] for k in sent if k in received), default=t_sent)
    stdout_lines = sum(1 for _ in open(out_path))
    print(f"ciml watch benchmark: {args.events} firehose reports at {args.rate:g}/s, "
          f"{args.workers} workers, model {args.estimator}, {os.cpu_count()} CPUs, "
          f"{args.busy} CPU-bound process(es) beside it")
    print(f"  received {len(latencies)}/{len(sent)} predictions (lost {lost}, "
          f"errors {errors}); watch printed {stdout_lines} lines; exit code {proc.returncode}")
    if latencies:
        print(f"  latency ms: p50 {percentile(latencies, 0.5):.1f}  "
              f"p90 {percentile(latencies, 0.9):.1f}  p99 {percentile(latencies, 0.99):.1f}  "
              f"max {max(latencies):.1f}  mean {statistics.mean(latencies):.1f}")
        print(f"  first {len(first)} reports after the warm-up: p50 "
              f"{percentile(first, 0.5):.1f}  max {max(first):.1f} ms")
    print(f"  publish rate achieved {len(sent) / (t_sent - t_first):.1f}/s; "
          f"throughput {len(latencies) / (last - t_first):.1f} predictions/s "
          f"(first report to last prediction)")
    print(f"  watch process CPU during the stream: {cpu_stream:.1f} s over {t_stream:.1f} s "
          f"({1000 * cpu_stream / max(1, len(latencies)):.1f} ms per report, "
          f"{100 * cpu_stream / t_stream:.0f}% of one core); in all "
          f"{usage.ru_utime + usage.ru_stime:.1f} s incl. start-up; "
          f"max RSS {usage.ru_maxrss / 1024:.0f} MiB")
    print(f"  machine load average at the start of the stream: {load_before:.1f} "
          f"(other processes share the {os.cpu_count()} CPUs)")
    if args.thread_cpu and threads_path.is_file():
        threads = json.loads(threads_path.read_text())["since_signal"]
        print("  watch CPU ms per report by thread (stream and drain): " + ", ".join(
            f"{k} {1000 * v / max(1, len(latencies)):.1f}" for k, v in threads.items()
            if v >= 0.01))
    tail = [line for line in err_path.read_text().splitlines() if line.startswith("ciml watch:")]
    if tail:
        print(f"  last status line: {tail[-1]}")
    ok = lost == 0 and errors == 0 and latencies and percentile(latencies, 0.99) < 250
    print("  targets (no loss, p99 < 250 ms): " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
