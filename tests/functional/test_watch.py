"""``ciml watch`` on a real Mosquitto: firehose and Zuul reports, bad input, broker restarts."""

import io
import json
import threading
import time
import uuid

import pytest
from mqtt_helpers import (
    PrivateBroker,
    Subscriber,
    fake_predictor,
    make_tls_files,
    publish,
    use_fake_predictor,
)

pytestmark = pytest.mark.mosquitto


def _firehose(build_uuid, status="success", job="tempest-full"):
    return {"build_uuid": build_uuid, "status": status,
            "source_url": f"http://127.0.0.1:9/logs/1/2/3/gate/{job}/{build_uuid[:7]}/"
                          "testrepository.subunit"}


def _uid():
    return uuid.uuid4().hex


class Running:
    """A Watcher on its own thread (signals are the main thread's)."""

    def __init__(self, trigger, **kwargs):
        from ciml.online import Watcher

        self.out = io.StringIO()
        kwargs.setdefault("fetch_delay", 0.0)
        kwargs.setdefault("status_interval", 0)
        kwargs.setdefault("call_hook", False)
        self.watcher = Watcher(kwargs.pop("predictor", None) or fake_predictor(), trigger,
                               stdout=self.out, stderr=io.StringIO(), handle_signals=False,
                               **kwargs)
        self.trigger = trigger
        self.stats = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.stats = self.watcher.run()

    def records(self):
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def wait_records(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.records()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.records()

    def stop(self):
        self.watcher.stop(drain=True)
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.stats


def _trigger(host, port, topic, data_path, **params):
    from ciml_plugins.triggers.mqtt import MqttTrigger

    params.setdefault("client_id", "ciml-test-" + _uid()[:12])
    trigger = MqttTrigger(mqtt_host=host, mqtt_port=port, topic=[topic], **params)
    trigger.setup(data_path=data_path, build_name="tempest-full")
    return trigger


def test_firehose_zuul_and_bad_messages(mosquitto, data_path, sample_data):
    host, port = mosquitto
    root = "ciml-test-" + _uid()
    trigger = _trigger(host, port, f"{root}/#", data_path, clean_session=True)
    sub = Subscriber(host, port, f"{root}-predictions")
    from ciml.plugins import get_manager

    # The publisher is a reporter plugin, offered for --publish-topic.
    [publisher] = [r for r in get_manager().hook.ciml_watch_reporters(options={
        "publish_topic": f"{root}-predictions", "mqtt_host": host, "mqtt_port": port})
        if r is not None]
    get_manager().add_plugin(publisher, "test-publisher")
    running = Running(trigger, call_hook=True)
    try:
        assert trigger.wait_connected(10)
        zuul = json.loads((sample_data / "mqtt" /
                           "zuul-mqtt.success.zuul3-2019-code.constructed.json").read_text())
        zuul["buildset"]["builds"][0]["uuid"] = zuul_uuid = _uid()
        zuul["buildset"]["builds"][0]["result"] = "FAILURE"
        passed, failed = _uid(), _uid()
        publish(host, port, [
            (f"{root}/gearman-subunit/w1/openstack/nova/1", _firehose(passed)),
            (f"{root}/gearman-subunit/w1/openstack/nova/1", b"{not json"),
            (f"{root}/gearman-subunit/w1/openstack/nova/1", b"\xff\xfe"),
            (f"{root}/gearman-subunit/w1/openstack/nova/1", {"build_uuid": 3}),
            (f"{root}/gearman-subunit/w1/openstack/nova/1", b"x" * 2_000_000),
            (f"{root}/gearman-subunit/w1/openstack/nova/1", _firehose(_uid(), job="grenade")),
            (f"{root}/zuul/gate", zuul),  # tempest-full FAILURE + a pep8 job
            (f"{root}/gearman-subunit/w1/openstack/nova/2", _firehose(failed, "failed")),
        ])
        records = running.wait_records(3)
        published = sub.wait_for(3)
    finally:
        stats = running.stop()
        publisher.close()
        sub.close()
    by_id = {r["run_id"]: r for r in records}
    assert set(by_id) == {passed, failed, zuul_uuid}
    assert by_id[passed]["predicted"] == "passed"
    assert by_id[failed]["predicted"] == "failed"
    assert by_id[zuul_uuid]["predicted"] == "failed"
    assert by_id[zuul_uuid]["artifacts_url"].endswith("/tempest-full/5f3c0b2/")
    assert sorted(p["run_id"] for p in published) == sorted(by_id)
    assert trigger.stats["malformed"] == 4
    assert stats["ignored"] == 2 and stats["predicted"] == 3


def test_persistent_session_delivers_what_was_sent_while_away(mosquitto, data_path):
    """QoS 1 + a persistent session: a watcher restart loses no report."""
    host, port = mosquitto
    root = "ciml-test-" + _uid()
    client_id = "ciml-test-" + _uid()[:12]
    first = Running(_trigger(host, port, f"{root}/#", data_path, client_id=client_id))
    assert first.trigger.wait_connected(10)
    first.stop()
    away = [_uid() for _ in range(3)]
    publish(host, port, [(f"{root}/gearman-subunit/w", _firehose(u)) for u in away])
    second = Running(_trigger(host, port, f"{root}/#", data_path, client_id=client_id))
    try:
        records = second.wait_records(3)
    finally:
        second.stop()
        # Leave no session behind on the shared broker.
        _trigger(host, port, f"{root}/#", data_path, client_id=client_id,
                 clean_session=True)
    assert sorted(r["run_id"] for r in records) == sorted(away)


@pytest.fixture
def private_broker(tmp_path):
    if not PrivateBroker.available():
        from conftest import skip_or_fail

        skip_or_fail("mosquitto binary not found at /usr/sbin/mosquitto")
    broker = PrivateBroker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


def test_broker_restart_reconnects_and_keeps_reports(private_broker, data_path):
    host, port = "127.0.0.1", private_broker.port
    root = "ciml-test-" + _uid()
    trigger = _trigger(host, port, f"{root}/#", data_path, reconnect_max_delay=8)
    running = Running(trigger)
    try:
        assert trigger.wait_connected(10)
        before = _uid()
        publish(host, port, [(f"{root}/gearman-subunit/w", _firehose(before))])
        assert len(running.wait_records(1)) == 1
        time.sleep(1.5)  # the broker's autosave has the session
        private_broker.stop()
        deadline = time.monotonic() + 10
        while trigger.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        # The watcher's attempts back off 1 s, 2 s, 4 s: about 1 s and 3 s
        # after the disconnect, then 7 s.  Restart the broker mid-way between
        # the last two, so that a busy machine's delays cannot make an attempt
        # land on the restart and reconnect before the next publish.
        time.sleep(4.8)
        private_broker.start()
        while_away = _uid()
        publish(host, port, [(f"{root}/gearman-subunit/w", _firehose(while_away))])
        # Published while the watcher was still disconnected: the persistent
        # session queues it, and the reconnected watcher gets it.
        disconnected_when_published = not trigger.connected
        after_reconnect = _uid()
        assert trigger.wait_connected(20)
        publish(host, port, [(f"{root}/gearman-subunit/w", _firehose(after_reconnect))])
        records = running.wait_records(3, timeout=30)
    finally:
        running.stop()
    assert disconnected_when_published
    assert [r["run_id"] for r in records] == [before, while_away, after_reconnect]


# -- the command line ------------------------------------------------------------


@pytest.fixture
def fake_model(monkeypatch, data_path):
    """``ciml predict``/``watch`` load this fake instead of a trained model."""
    use_fake_predictor(monkeypatch, data_path)


def _queue_for(host, port, client_id, topic):
    """Create a persistent session subscribed to ``topic`` (reports queue for it)."""
    import paho.mqtt.client as mqtt

    done = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                         client_id=client_id, clean_session=False)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: done.set()
    client.connect(host, port)
    client.loop_start()
    assert done.wait(10)
    client.disconnect()
    client.loop_stop()


def test_cli_watch_max_events_and_publish(mosquitto, data_path, fake_model, run_ciml):
    host, port = mosquitto
    root = "ciml-test-" + _uid()
    client_id = "ciml-test-" + _uid()[:12]
    _queue_for(host, port, client_id, f"{root}/#")
    runs = [_uid() for _ in range(3)]
    publish(host, port, [(f"{root}/gearman-subunit/w", b"not json")]
            + [(f"{root}/gearman-subunit/w", _firehose(u, "failed")) for u in runs])
    sub = Subscriber(host, port, f"{root}-out")
    try:
        rc, out, err = run_ciml([
            "--data-path", data_path.root, "watch", "--dataset", "ds", "--experiment", "exp",
            "--trigger", "mqtt", "--mqtt-host", host, "--mqtt-port", str(port),
            "--topic", f"{root}/#", "--client-id", client_id, "--max-events", "2",
            "--status-interval", "0.5", "--publish-topic", f"{root}-out"])
        published = sub.wait_for(2, timeout=10)
    finally:
        sub.close()
        _trigger(host, port, f"{root}/#", data_path, client_id=client_id, clean_session=True)
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["run_id"] for r in records] == runs[:2] or \
        sorted(r["run_id"] for r in records) == sorted(runs[:2])
    assert all(r["predicted"] == "failed" and r["model"] == "ds/exp" for r in records)
    assert sorted(p["run_id"] for p in published) == sorted(runs[:2])
    assert "ciml watch: seen 2, predicted 2" in err
    assert "malformed 1" in err
    assert "not-json" in err


def test_cli_predict_local_file(data_path, fake_model, run_ciml, tmp_path):
    path = tmp_path / "dstat-csv_log.txt"
    path.write_bytes(b"90")
    rc, out, err = run_ciml(["--data-path", data_path.root, "predict", "--dataset", "ds",
                             "--experiment", "exp", str(path), "-f", "json"])
    assert rc == 0, err
    [row] = json.loads(out)
    assert row == {"run": str(path), "predicted": "failed", "p_passed": 0.1,
                   "p_failed": 0.9, "model": "ds/exp"}


def test_cli_predict_unknown_run_fails_with_reason(data_path, fake_model, run_ciml, tmp_path):
    path = tmp_path / "good.csv"
    path.write_bytes(b"10")
    rc, out, err = run_ciml(["--data-path", data_path.root, "predict", "--dataset", "ds",
                             "--experiment", "exp", str(path), "no-such-run", "-f", "json"])
    assert rc == 1
    rows = json.loads(out)
    assert rows[0]["predicted"] == "passed" and rows[0]["error"] == ""
    assert rows[1]["run"] == "no-such-run" and "--source" in rows[1]["error"]
    assert "cannot predict no-such-run" in err


def test_legacy_option_translation():
    from ciml.legacy import _seed_online_args

    front, args = _seed_online_args("ciml-mqtt-predict", [
        "--db-uri", "sqlite:///x.db", "--mqtt-hostname=broker", "--sample-interval", "1s",
        "--debug", "--dataset", "d", "--build-name", "tempest-full"])
    assert front == ["--debug"]
    assert args == ["--source", "subunit2sql", "--db-uri", "sqlite:///x.db",
                    "--mqtt-host", "broker", "--dataset", "d", "--build-name", "tempest-full"]


# -- end to end: generated history -> cache -> dataset -> model -> watch ---------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pytest.importorskip("ciml.model")
    from mqtt_helpers import trained_history

    data_path, history, server = trained_history(tmp_path_factory.mktemp("pipeline"))
    yield data_path, history, server
    server.stop()


@pytest.mark.slow
@pytest.mark.tensorflow
def test_end_to_end_zuul_reports_learn(pipeline, mosquitto, run_ciml):
    from ciml.cache import RawCache

    data_path, history, server = pipeline
    host, port = mosquitto
    cached = {r.id for r in RawCache(data_path).runs()}
    new_runs = [r for r in history.runs if r["run_id"] not in cached]
    assert len(new_runs) >= 3
    zuul = [e for e in json.loads(history.mqtt_events.read_text())
            if e["topic"].startswith("zuul/")
            and e["payload"]["buildset"]["builds"][0]["uuid"] in
            {r["build_uuid"] for r in new_runs[:3]}]
    root = "ciml-test-" + _uid()
    client_id = "ciml-test-" + _uid()[:12]
    _queue_for(host, port, client_id, f"{root}/#")
    # Logs are uploaded after the report: the first tries find nothing.
    server.fault("*dstat-csv_log*", status=404, times=3)
    publish(host, port, [(f"{root}/{e['topic']}", e["payload"]) for e in zuul])
    try:
        rc, out, err = run_ciml([
            "--data-path", data_path.root, "watch", "--dataset", "ds", "--experiment", "exp",
            "--mqtt-host", host, "--mqtt-port", str(port), "--topic", f"{root}/#",
            "--client-id", client_id, "--max-events", "3", "--learn", "--fetch-delay", "0.1",
            "--status-interval", "0"])
    finally:
        server.clear_faults()
        _trigger(host, port, f"{root}/#", data_path, client_id=client_id, clean_session=True)
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3, err
    for record in records:
        assert "error" not in record, record
        assert record["predicted"] in ("passed", "failed")
        assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert record["model"] == "ds/exp"
    # --learn: the finished, labelled runs are in the raw cache now (by build uuid:
    # a Zuul report needs no database).
    cache = RawCache(data_path)
    for record in records:
        assert cache.state(record["run_id"]) == "cached"
    assert cache.frame(records[0]["run_id"]).shape[0] > 0


@pytest.mark.slow
@pytest.mark.tensorflow
def test_end_to_end_firehose_with_subunit2sql_and_predict(pipeline, mosquitto, run_ciml):
    data_path, history, server = pipeline
    host, port = mosquitto
    runs = history.runs[-2:]
    firehose = [e for e in json.loads(history.mqtt_events.read_text())
                if e["topic"].startswith("gearman-subunit/")
                and e["payload"]["build_uuid"] in {r["build_uuid"] for r in runs}]
    root = "ciml-test-" + _uid()
    client_id = "ciml-test-" + _uid()[:12]
    _queue_for(host, port, client_id, f"{root}/#")
    publish(host, port, [(f"{root}/{e['topic']}", e["payload"]) for e in firehose])
    try:
        rc, out, err = run_ciml([
            "--data-path", data_path.root, "watch", "--dataset", "ds",
            "--source", "subunit2sql", "--db-uri", history.db_uri,
            "--mqtt-host", host, "--mqtt-port", str(port), "--topic", f"{root}/#",
            "--client-id", client_id, "--max-events", "2", "--status-interval", "0"])
    finally:
        _trigger(host, port, f"{root}/#", data_path, client_id=client_id, clean_session=True)
    assert rc == 0, err
    records = {json.loads(line)["run_id"]: json.loads(line) for line in out.splitlines()}
    # Resolved through the database: the subunit2sql run id, not the build uuid.
    assert set(records) == {r["run_id"] for r in runs}
    for run in runs:
        assert records[run["run_id"]]["status"] == run["status"]
        assert records[run["run_id"]]["build_uuid"] == run["build_uuid"]

    # ciml predict: a build uuid through the source, a cached run, a local dstat file.
    from ciml.cache import RawCache

    cached_id = RawCache(data_path).runs()[0].id
    # The cached file's content, as a local file (the cache keeps it packed).
    local = data_path.root.parent / "local-dstat-csv_log.txt"
    local.write_bytes(RawCache(data_path).fetched_content(cached_id))
    rc, out, err = run_ciml([
        "--data-path", data_path.root, "predict", "--dataset", "ds",
        "--source", "subunit2sql", "--db-uri", history.db_uri,
        runs[0]["build_uuid"], cached_id, str(local), "-f", "json"])
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["run"] for r in rows] == [runs[0]["run_id"], cached_id, str(local)]
    assert rows[0]["predicted"] == records[runs[0]["run_id"]]["predicted"]
    assert rows[0]["p_passed"] == pytest.approx(
        records[runs[0]["run_id"]]["probabilities"]["passed"], abs=1e-5)
    # The cached run and its fetched file give the same prediction.
    assert rows[1]["p_failed"] == pytest.approx(rows[2]["p_failed"], abs=1e-5)


def test_cli_watch_poll_resumes_across_restarts(tmp_path, data_path, fake_model, run_ciml):
    """``--trigger poll`` on a real subunit2sql database: each run predicted once."""
    from ciml.generator import generate_history

    history = generate_history(tmp_path / "h", runs=8, seed=4, jobs=["tempest-full"],
                               duration=(60, 120), tests=False)
    args = ["--data-path", data_path.root, "watch", "--dataset", "ds", "--experiment", "exp",
            "--trigger", "poll", "--source", "subunit2sql", "--db-uri", history.db_uri,
            "--once", "--status-interval", "0"]
    first_start = min(r["start"] for r in history.runs).isoformat()
    rc, out, err = run_ciml(args + ["--since", first_start])
    assert rc == 0, err
    ids = [json.loads(line)["run_id"] for line in out.splitlines()]
    assert sorted(ids) == sorted(r["run_id"] for r in history.runs)
    rc, out, err = run_ciml(args)
    assert rc == 0, err
    assert out == ""  # nothing new: nothing repeated
    assert list((data_path.root / "state").glob("poll-*.json"))


@pytest.mark.slow
@pytest.mark.tensorflow
def test_cli_watch_sigterm_exits_cleanly(pipeline, mosquitto, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    data_path, history, server = pipeline
    host, port = mosquitto
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
             "--data-path", str(data_path.root), "watch", "--dataset", "ds",
             "--mqtt-host", host, "--mqtt-port", str(port), "--topic", f"ciml-test-{_uid()}/#",
             "--clean-session", "--status-interval", "0.5"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while "connected to MQTT broker" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err_path.read_text()
    assert "received SIGTERM" in err_path.read_text()
    assert "ciml watch: seen 0" in err_path.read_text()
    assert out == ""
    # The model was warmed up before the subscription, not on the first event.
    text = err_path.read_text()
    assert " ready in " in text
    assert text.index(" ready in ") < text.index("connected to MQTT broker")


def test_tls_with_user_and_password_file(tmp_path, data_path, caplog):
    import subprocess

    import paho.mqtt.client as mqtt

    if not PrivateBroker.available():
        from conftest import skip_or_fail

        skip_or_fail("mosquitto binary not found at /usr/sbin/mosquitto")
    files = make_tls_files(tmp_path / "tls")
    secret = "s3cret-Pw-" + _uid()[:6]
    passwd = tmp_path / "broker-passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "ciml", secret], check=True,
                   capture_output=True)
    broker = PrivateBroker(tmp_path / "broker", extra=(
        f"allow_anonymous false\npassword_file {passwd}\ncafile {files['ca']}\n"
        f"certfile {files['cert']}\nkeyfile {files['key']}\n"))
    broker.start()
    good, bad = tmp_path / "password", tmp_path / "wrong-password"
    good.write_text(secret + "\n")
    bad.write_text("not-the-password\n")
    try:
        trigger = _trigger("127.0.0.1", broker.port, "t/#", data_path, tls=True,
                           ca_certs=str(files["ca"]), username="ciml", password_file=str(good),
                           clean_session=True)
        running = Running(trigger)
        try:
            assert trigger.wait_connected(10), broker.log.read_text()
            client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
            client.tls_set(ca_certs=str(files["ca"]))
            client.username_pw_set("ciml", secret)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            build = _uid()
            client.publish("t/gearman-subunit/w", json.dumps(_firehose(build)),
                           qos=1).wait_for_publish(10)
            client.disconnect()
            client.loop_stop()
            records = running.wait_records(1)
        finally:
            running.stop()
        assert [r["run_id"] for r in records] == [build]

        from ciml.errors import CimlError

        # Refused logins and a certificate from another CA: given up with the cause.
        refused = _trigger("127.0.0.1", broker.port, "t/#", data_path, tls=True,
                           ca_certs=str(files["ca"]), username="ciml",
                           password_file=str(bad), clean_session=True, connect_timeout=2)
        with pytest.raises(CimlError, match="refused the connection: Not authorized"):
            refused.run(lambda e: True)
        assert not refused.connected
        other_ca = make_tls_files(tmp_path / "other-ca")["ca"]
        untrusted = _trigger("127.0.0.1", broker.port, "t/#", data_path, tls=True,
                             ca_certs=str(other_ca), username="ciml",
                             password_file=str(good), clean_session=True, connect_timeout=2)
        with pytest.raises(CimlError, match="TLS: the broker's certificate was not accepted"):
            untrusted.run(lambda e: True)
        assert "refused the connection" in caplog.text
        assert secret not in caplog.text and "not-the-password" not in caplog.text
    finally:
        broker.stop()


# -- stop and restart: nothing lost, nothing predicted twice ----------------------------


class Child:
    """``watch_child.py`` in a process of its own: the real signal handling."""

    def __init__(self, tmp_path, name, *args):
        import pathlib
        import subprocess
        import sys

        script = pathlib.Path(__file__).resolve().parent / "watch_child.py"
        self.err_path = tmp_path / f"{name}.stderr"
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(script), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def stderr(self):
        return self.err_path.read_text()

    def wait_for(self, predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, self.stderr()[-3000:]
            assert time.monotonic() < deadline, self.stderr()[-3000:]
            time.sleep(0.02)

    def signal(self, sig, timeout=60):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        self._err.close()
        return rc


def _predicted(children):
    ids = [r["run_id"] for child in children for r in child.lines]
    assert all(r.get("predicted") for child in children for r in child.lines)
    return ids


@pytest.mark.parametrize("drain_timeout", [1, 0])
def test_sigterm_and_restart_lose_no_mqtt_report(private_broker, tmp_path, data_path,
                                                 drain_timeout):
    """60 reports at once, SIGTERM after the first prediction, broker restart, restart.

    Each of the 50 valid reports is predicted exactly once: the runs in hand
    are finished within --drain-timeout (1 s: about 10 of 50 at 0.1 s each;
    0: none), the rest left unacknowledged, and the broker delivers those
    to the restarted watcher.
    """
    import signal

    host, port = "127.0.0.1", private_broker.port
    root = "ciml-test-" + _uid()
    client_id = "ciml-test-" + _uid()[:12]
    _queue_for(host, port, client_id, f"{root}/#")
    valid = [_uid() for _ in range(50)]
    messages = [(f"{root}/gearman-subunit/w", _firehose(u, "failed" if i % 3 else "success"))
                for i, u in enumerate(valid)]
    for i in range(10):  # the rest of the burst: other jobs and junk, settled at once
        messages.insert(i * 5, (f"{root}/gearman-subunit/w",
                                _firehose(_uid(), job="grenade") if i % 2 else b"{junk"))
    publish(host, port, messages)
    args = ["--trigger", "mqtt", "--port", port, "--topic", f"{root}/#", "--client-id",
            client_id, "--data-path", data_path.root, "--drain-timeout", drain_timeout,
            "--fetch-seconds", "0.1"]
    first = Child(tmp_path, "first", *args)
    first.wait_for(lambda: first.lines)
    assert first.signal(signal.SIGTERM) == 0, first.stderr()[-3000:]
    assert "received SIGTERM" in first.stderr()
    assert len(first.lines) < 50  # the test stopped it in the middle of the burst
    # The broker restarts too: what it holds for the session survives on disk.
    time.sleep(1.5)  # mosquitto's autosave interval is 1 s
    private_broker.stop()
    private_broker.start()
    second = Child(tmp_path, "second", *args)
    second.wait_for(lambda: len(set(_predicted([first, second]))) >= 50)
    assert second.signal(signal.SIGTERM) == 0, second.stderr()[-3000:]
    ids = _predicted([first, second])
    assert sorted(ids) == sorted(valid), "lost or repeated: " + repr(
        (set(valid) - set(ids), [i for i in set(ids) if ids.count(i) > 1]))


def test_sigterm_in_a_poll_burst_and_restart_predict_each_run_once(tmp_path, data_path):
    """Issue 20.3: 150 runs inserted at once, SIGTERM after the first prediction, restart."""
    import signal

    from ciml.generator import generate_history

    history = generate_history(tmp_path / "h", runs=150, seed=4, jobs=["tempest-full"],
                               duration=(60, 120), tests=False,
                               base_url="http://127.0.0.1:9/")
    since = min(r["start"] for r in history.runs).isoformat()
    args = ["--trigger", "poll", "--db-uri", history.db_uri, "--since", since,
            "--data-path", data_path.root, "--workers", "2", "--queue-size", "20"]
    first = Child(tmp_path, "first", *args)
    first.wait_for(lambda: first.lines)
    assert first.signal(signal.SIGTERM) == 0, first.stderr()[-3000:]
    assert len(first.lines) < 150
    second = Child(tmp_path, "second", *args)
    second.wait_for(lambda: len(set(_predicted([first, second]))) >= 150)
    # One more poll: nothing is announced again.
    time.sleep(0.5)
    assert second.signal(signal.SIGTERM) == 0, second.stderr()[-3000:]
    ids = _predicted([first, second])
    assert sorted(ids) == sorted(r["run_id"] for r in history.runs)


def test_a_full_queue_does_not_starve_the_keepalive(mosquitto, data_path, caplog):
    """Issue 12.3: with the queue full for several keepalive periods, the broker keeps us."""
    from mqtt_helpers import fake_metric_source

    class Slow:
        """The fake metric source, one second per run."""

        def __init__(self):
            self.inner = fake_metric_source()

        def load(self, run):
            time.sleep(1.0)
            return self.inner.load(run)

    host, port = mosquitto
    root = "ciml-test-" + _uid()
    trigger = _trigger(host, port, f"{root}/#", data_path, clean_session=True, keepalive=1)
    predictor = fake_predictor(metric_source=Slow())
    running = Running(trigger, predictor=predictor, workers=1, queue_size=1)
    try:
        assert trigger.wait_connected(10)
        runs = [_uid() for _ in range(6)]
        publish(host, port, [(f"{root}/gearman-subunit/w", _firehose(u)) for u in runs])
        # Six seconds of work behind a queue of one: paho's thread must keep
        # answering the broker (keepalive 1 s: it gives up after 1.5 s of silence).
        records = running.wait_records(6, timeout=60)
    finally:
        running.stop()
    assert sorted(r["run_id"] for r in records) == sorted(runs)
    assert "lost the MQTT broker" not in caplog.text
