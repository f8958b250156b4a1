"""Helpers for the watch tests: a private Mosquitto, a subscriber, a fake model."""

import contextlib
import getpass
import json
import pathlib
import shutil
import socket
import subprocess
import threading
import time

import pandas as pd
from subprocesses import stop_process

MOSQUITTO = "/usr/sbin/mosquitto"

#: dstat columns every real variant has (0.7.2, 0.7.3, Debian 0.7.4).
FEATURES = r"^(cpu_(usr|sys|idl|wai)|mem_(used|free|buff|cach)|load_\w+|procs_(run|blk))$"


def free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, timeout=10.0, up=True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.05)
    return False


class PrivateBroker:
    """A Mosquitto of the test's own, with persistence, that it can stop and restart."""

    def __init__(self, folder, extra=""):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + (extra or "allow_anonymous true\n") +
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "persistence_file ciml-test.db\n"
            "autosave_interval 1\n"
            # Run as root, mosquitto would switch to its own user, who cannot
            # write the persistence file here.
            f"user {getpass.getuser()}\n"
            "log_dest stderr\n")
        self.proc = None
        self.log = self.folder / "mosquitto.log"

    @staticmethod
    def available():
        return shutil.which(MOSQUITTO) is not None or pathlib.Path(MOSQUITTO).exists()

    def start(self):
        self._log_fh = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                     stdout=self._log_fh, stderr=subprocess.STDOUT)
        if not wait_port(self.port):
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)  # SIGTERM first: mosquitto saves its persistence file
            self.proc = None
            self._log_fh.close()
            wait_port(self.port, up=False)


class Subscriber:
    """Collects JSON messages on a topic."""

    def __init__(self, host, port, topic):
        import paho.mqtt.client as mqtt

        self.messages = []
        self.times = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(topic, qos=1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self._subscribed.set()

        def on_message(client, userdata, message):
            with self._cond:
                self.messages.append(json.loads(message.payload))
                self.times.append(time.monotonic())
                self._cond.notify_all()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(host, port)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(10):
            raise RuntimeError("could not subscribe")

    def wait_for(self, count, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def publish(host, port, messages, qos=1):
    """Publish ``(topic, payload)`` pairs, waiting until each is acknowledged."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, port)
    client.loop_start()
    try:
        for topic, payload in messages:
            if not isinstance(payload, (bytes, str)):
                payload = json.dumps(payload)
            info = client.publish(topic, payload, qos=qos)
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


class FakeModel:
    classes = ["passed", "failed"]

    def predict_frame(self, frame):
        p = 0.9 if float(frame.iloc[0, 0]) > 50 else 0.2
        return {"predicted": "failed" if p > 0.5 else "passed",
                "probabilities": {"passed": 1 - p, "failed": p}}


def fake_metric_source():
    from ciml.base import FetchedMetrics, MetricSource

    class FakeMetrics(MetricSource):
        name = "fake-metrics"

        def fetch(self, run):
            value = b"90" if run.status == "failed" else b"10"
            return FetchedMetrics("dstat.csv", value, run.artifacts_url or "")

        def parse(self, data, run):
            index = pd.date_range("2026-11-27", periods=3, freq="s", tz="UTC")
            return pd.DataFrame({"cpu_usr": [float(data)] * 3}, index=index)

    return FakeMetrics()


def fake_predictor(build_name="tempest-full", metric_source=None):
    from ciml.online import Predictor

    return Predictor(FakeModel(), dataset_name="ds", experiment_name="exp",
                     build_name=build_name, metric_source=metric_source or fake_metric_source())


def use_fake_predictor(monkeypatch, data_path, **attributes):
    """Make ``ciml predict``/``watch`` load :func:`fake_predictor` (with ``attributes``)."""
    from ciml import online

    # A data path holding a model exists; the commands check that it does.
    data_path.root.mkdir(parents=True, exist_ok=True)

    def load(cls, data_path, dataset, experiment, **kwargs):
        predictor = fake_predictor()
        predictor.dataset_name, predictor.experiment_name = dataset, experiment
        for name, value in attributes.items():
            setattr(predictor, name, value)
        return predictor

    monkeypatch.setattr(online.Predictor, "load", classmethod(load))


def trained_history(tmp_path, *, runs=30, cached=24, seed=5, estimator="linear-svm",
                    params=None, duration=(300, 600)):
    """A generated CI history served over HTTP, its first ``cached`` runs cached,
    a dataset built from them and a tiny model trained on it.

    Returns ``(data_path, history, server)``; the caller stops the server.
    """
    from ciml import collect
    from ciml.dataset import Dataset, build_dataset
    from ciml.experiment import Experiment
    from ciml.generator import generate_history
    from ciml.model import train_model
    from ciml.paths import DataPath
    from ciml.plugins import get_manager
    from ciml.testing.servers import CIServer

    out = pathlib.Path(tmp_path) / "history"
    server = CIServer(root=out / "logs").start()
    history = generate_history(out, runs=runs, seed=seed, jobs=["tempest-full"],
                               base_url=server.url, bad_fraction=0.0, duration=duration)
    data_path = DataPath(pathlib.Path(tmp_path) / "data")
    manager = get_manager()
    source = manager.get("result_source", "subunit2sql")(db_uri=history.db_uri)
    until = history.runs[cached]["start"] if cached < len(history.runs) else None
    collect.cache_data(data_path, source, manager.get("metric_source", "dstat")(),
                       "tempest-full", until=until, progress=False)
    build_dataset(data_path, "ds", "tempest-full", features_regex=FEATURES,
                  aggregation_functions=["mean", "max", "std"], progress=False,
                  tdt_split=(6, 2, 2))
    Experiment.create("exp", estimator, params or {"epochs": 3}).save(data_path)
    train_model(data_path, Dataset.open(data_path, "ds"), Experiment.load(data_path, "exp"),
                progress=False)
    return data_path, history, server


def make_tls_files(folder):
    """A throwaway CA and a server certificate for 127.0.0.1; returns their paths."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=ciml-test-ca", "-keyout", ca_key, "-out", ca_crt)
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key,
        "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "2", "-extfile", ext, "-out", crt)
    return {"ca": ca_crt, "cert": crt, "key": key}
