"""Benchmark: does ``ciml watch`` lose or repeat runs when it is stopped at random moments?

Issue 12's acceptance check.  Set-up as in ``bench_watch.py``: a generated
history served over HTTP by :class:`ciml.testing.servers.CIServer`, its
first runs cached, a dataset built and a small model trained (the real
pipeline, TensorFlow included).  Every metrics request then takes
``--latency`` seconds, so that a burst takes a while to work through.

Four scenarios -- trigger ``mqtt`` or ``poll``, stopped by ``SIGTERM`` or
``SIGKILL`` -- each with ``--events`` fresh events (MQTT: that many
messages, one in six malformed or about another job; poll: that many new
runs in the subunit2sql database, announced from ``--since``).  The real
``ciml watch`` command is started, and once it is ready it is signalled
after a random 0 to ``--max-wait`` seconds; this is repeated ``--stops``
times (a private Mosquitto with persistence is restarted every fifth time
too), then one last watcher runs until every run is predicted or nothing
happens for ``--settle`` seconds.  The report counts, per scenario, the runs
never predicted (lost) and the runs predicted more than once (repeated:
expected only after SIGKILL, which cannot acknowledge what it printed).

Usage: ``python benchmarks/bench_watch_restarts.py [--stops 10] [--events 60]
[--latency 0.3] [--scenarios mqtt-TERM,mqtt-KILL,poll-TERM,poll-KILL] [--dir D]``.
"""

import argparse
import collections
import getpass
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_watch import FEATURES, _log  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    """A Mosquitto of the benchmark's own, persistent, that it restarts."""

    def __init__(self, folder):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\n"
            f"user {getpass.getuser()}\nlog_dest stderr\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: it saves its persistence file
            self.proc.wait(10)
            self.proc = None

    def restart(self):
        time.sleep(1.2)  # past the autosave interval
        self.stop()
        self.start()


def prepare(root, trained, total, latency):
    """History (``trained`` cached and trained on, ``total`` in all), served over HTTP."""
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
    history = generate_history(out, runs=total, seed=12, jobs=["tempest-full"],
                               base_url=server.url, bad_fraction=0.0, duration=(300, 600))
    data_path = DataPath(root / "data")
    manager = get_manager()
    until = history.runs[trained]["start"]
    collect.cache_data(data_path, manager.get("result_source", "subunit2sql")(
        db_uri=history.db_uri), manager.get("metric_source", "dstat")(), "tempest-full",
        until=until, progress=False)
    build_dataset(data_path, "bench", "tempest-full", features_regex=FEATURES,
                  aggregation_functions=["mean", "max", "std"], progress=False)
    Experiment.create("bench", "linear-svm", {"epochs": 3}).save(data_path, force=True)
    train_model(data_path, Dataset.open(data_path, "bench"),
                Experiment.load(data_path, "bench"), progress=False)
    server.fault("*", latency=latency)
    return data_path, history, server


def publish(port, messages):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload if isinstance(payload, bytes) else json.dumps(payload),
                           qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def open_session(port, client_id, topic):
    """A persistent session subscribed to ``topic``, so that reports queue for it."""
    import threading

    import paho.mqtt.client as mqtt

    done = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                         client_id=client_id, clean_session=False)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: done.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not done.wait(10):
        raise RuntimeError("could not subscribe")
    client.disconnect()
    client.loop_stop()


class Watch:
    """One ``ciml watch`` process, its output in files."""

    def __init__(self, folder, name, argv):
        self.out_path = folder / f"{name}.out"
        self.err_path = folder / f"{name}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from ciml.shell import main; "
                 "sys.exit(main())", *argv], stdout=out, stderr=err)

    def ready(self):
        return "watching for runs of" in self.err_path.read_text(errors="replace")

    def records(self):
        out = []
        for line in self.out_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut by SIGKILL: not a record
        return out

    def wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(self.err_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError("watch did not start: " + self.err_path.read_text()[-3000:])
            time.sleep(0.1)

    def signal(self, sig):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def scenario(name, args, data_path, history, broker, folder, rng):
    trigger, sig_name = name.split("-")
    sig = getattr(signal, f"SIG{sig_name}")
    tag = uuid.uuid4().hex[:8]
    new_runs = history.runs[args.trained:args.trained + args.events]
    base = ["--data-path", str(data_path.root), "watch", "--dataset", "bench",
            "--experiment", "bench", "--status-interval", "0", "--workers",
            str(args.workers), "--fetch-attempts", "2", "--fetch-delay", "0.5",
            "--drain-timeout", str(args.drain_timeout)]
    if trigger == "mqtt":
        topic = f"bench-{tag}"
        client_id = f"ciml-bench-{tag}"
        open_session(broker.port, client_id, f"{topic}/#")
        by_uuid = {r["build_uuid"]: r for r in new_runs}
        reports = [m for m in json.loads(history.mqtt_events.read_text())
                   if m["topic"].startswith("gearman-subunit/")
                   and m["payload"]["build_uuid"] in by_uuid]
        # One in six of the burst is junk or another job's: settled at once.
        expected = {m["payload"]["build_uuid"] for m in reports[:args.events * 5 // 6]}
        messages = [(f"{topic}/{m['topic']}", m["payload"])
                    for m in reports[:args.events * 5 // 6]]
        for i in range(args.events - len(messages)):
            junk = b"{not json" if i % 2 else {"build_uuid": uuid.uuid4().hex,
                                                "status": "success",
                                                "source_url": "http://x/g/grenade/a/t"}
            messages.insert(rng.randrange(len(messages) + 1), (f"{topic}/gearman-subunit/w",
                                                                junk))
        publish(broker.port, messages)
        argv = base + ["--trigger", "mqtt", "--mqtt-port", str(broker.port), "--topic",
                       f"{topic}/#", "--client-id", client_id]
        key = "build_uuid"
    else:
        expected = {r["run_id"] for r in new_runs}
        since = min(r["start"] for r in new_runs).isoformat()
        argv = base + ["--trigger", "poll", "--interval", "1", "--since", since,
                       "--state-name", f"bench-{tag}", "--source", "subunit2sql",
                       "--db-uri", history.db_uri]
        key = "run_id"

    watches = []
    started = time.monotonic()
    for stop in range(args.stops):
        watch = Watch(folder, f"{name}-{stop}", argv)
        watches.append(watch)
        watch.wait_ready()
        time.sleep(rng.uniform(0, args.max_wait))
        rc = watch.signal(sig)
        done = {r[key] for w in watches for r in w.records()}
        _log(f"{name}: stop {stop + 1}/{args.stops} (rc {rc}): "
             f"{len(done & expected)}/{len(expected)} predicted so far")
        if trigger == "mqtt" and stop % 5 == 4:
            broker.restart()
    final = Watch(folder, f"{name}-final", argv)
    watches.append(final)
    final.wait_ready()
    last, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < args.settle:
        count = len(final.records())
        if count != last:
            last, last_change = count, time.monotonic()
        if expected <= {r[key] for w in watches for r in w.records()}:
            time.sleep(2)  # a repeat would show up now
            break
        time.sleep(0.2)
    final.signal(signal.SIGTERM)
    records = [r for w in watches for r in w.records()]
    counts = collections.Counter(r[key] for r in records if r.get(key) in expected)
    errors = [r for r in records if r.get("error")]
    return {"scenario": name, "events": args.events, "expected_runs": len(expected),
            "stops": args.stops, "predicted": len(counts),
            "lost": len(expected - set(counts)),
            "repeated": sum(1 for c in counts.values() if c > 1),
            "extra_records": sum(c - 1 for c in counts.values() if c > 1),
            "error_records": len(errors),
            "seconds": round(time.monotonic() - started, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stops", type=int, default=10)
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--trained", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.3,
                        help="seconds added to every log request")
    parser.add_argument("--max-wait", type=float, default=6.0,
                        help="longest wait after a watcher is ready before signalling it")
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--drain-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default="mqtt-TERM,mqtt-KILL,poll-TERM,poll-KILL")
    parser.add_argument("--dir", type=pathlib.Path, default=None)
    args = parser.parse_args()

    root = args.dir or pathlib.Path(tempfile.mkdtemp(prefix="ciml-bench-restarts-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t = time.monotonic()
    scenarios = args.scenarios.split(",")
    # Fresh runs for every scenario of a trigger would need more history; the
    # mqtt and poll scenarios each use the same new runs, with their own state.
    data_path, history, server = prepare(root, args.trained, args.trained + args.events,
                                         args.latency)
    _log(f"prepared in {time.monotonic() - t:.0f} s under {root}")
    broker = Broker(root / "broker")
    broker.start()
    results = []
    try:
        for name in scenarios:
            result = scenario(name, args, data_path, history, broker, root, rng)
            _log(json.dumps(result))
            results.append(result)
    finally:
        broker.stop()
        server.stop()
    print(json.dumps(results, indent=2))
    return 0 if all(r["lost"] == 0 for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
