"""The mqtt trigger: every sample payload, every malformed case, and the message handler."""

import json
import types

import pytest

from ciml.errors import ConfigError
from ciml_plugins.triggers import mqtt
from ciml_plugins.triggers.mqtt import MalformedPayload, MqttTrigger, parse_payload


def _sample(sample_data, name):
    return (sample_data / "mqtt" / name).read_bytes()


# -- the samples ---------------------------------------------------------------


def test_firehose_messages_sample(sample_data):
    messages = json.loads(_sample(sample_data, "firehose-gearman-subunit.messages.json"))
    events = [e for m in messages
              for e in parse_payload(m["topic"], json.dumps(m["payload"]).encode())]
    assert [e.build_uuid for e in events] == [
        "5f3c0b2a9e4d4c7a8b1e2d3f4a5b6c7d", "0a1b2c3d4e5f46078899aabbccddeeff"]
    first, second = events
    assert first.build_name == "tempest-full"
    assert first.status == "passed"
    assert first.run_id is None  # the source resolves build uuids
    assert first.artifacts_url == "http://logs.openstack.org/45/640845/2/gate/tempest-full/5f3c0b2/"
    assert first.metadata["project"] == "openstack/nova"
    assert first.metadata["change"] == "640845"
    assert first.metadata["worker"] == "subunit-worker01"
    assert first.trigger == "mqtt"
    assert second.build_name == "tempest-full-py3"
    assert second.status == "failed"


def test_firehose_payload_success_sample(sample_data):
    [event] = parse_payload("gearman-subunit/w1",
                            _sample(sample_data, "firehose-gearman-subunit.payload.success.json"))
    assert event.build_uuid == "5f3c0b2a9e4d4c7a8b1e2d3f4a5b6c7d"
    assert event.build_name == "tempest-full"
    assert event.payload["source_url"].endswith("testrepository.subunit")


def test_firehose_docs_example_without_url(sample_data):
    # The documented example's source_url is "A url": usable only through a source.
    [event] = parse_payload(
        "gearman-subunit/w1", _sample(sample_data,
                                      "firehose-gearman-subunit.payload.docs-example.json"))
    assert event.build_uuid == "45f7c1ddbfd74c6aba94662623bd61b8"
    assert event.build_name is None
    assert event.artifacts_url is None
    assert event.status == "passed"


def test_zuul_start_message_announces_nothing(sample_data):
    assert parse_payload("zuul/check", _sample(sample_data,
                                               "zuul-mqtt.start.docs-example.json")) == []


@pytest.mark.parametrize("name,job,uuid,log_url", [
    ("zuul-mqtt.success.docs-example.json", "linters", "16e3e55aca984c6c9a50cc3c5b21bb83",
     "https://logs.example.com/logs/3/3/1/check/linters/16e3e55/"),
    ("zuul-mqtt.success.current-code.constructed.json", "tempest-full-py3",
     "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6",
     "https://example-logs.opendev.org/01/940001/3/gate/tempest-full-py3/1a2b3c4/"),
])
def test_zuul_success_samples(sample_data, name, job, uuid, log_url):
    [event] = parse_payload("zuul/gate", _sample(sample_data, name))
    assert event.build_name == job
    assert event.run_id == event.build_uuid == uuid
    assert event.artifacts_url == log_url
    assert event.status == "passed"
    assert event.metadata["result"] == "SUCCESS"
    assert event.start is not None and event.start.tzinfo is not None


def test_zuul_2019_sample_gives_one_event_per_build(sample_data):
    events = parse_payload("zuul/gate", _sample(
        sample_data, "zuul-mqtt.success.zuul3-2019-code.constructed.json"))
    assert [e.build_name for e in events] == ["tempest-full", "openstack-tox-pep8"]
    assert events[0].metadata["pipeline"] == "gate"
    assert events[0].metadata["change"] == "640845"
    assert events[0].metadata["buildset_uuid"] == "3c7e5a1b9d2f4e6a8c0b1d2e3f4a5b6c"


def _zuul(*builds, **top):
    data = {"action": "failure", "pipeline": "check", "buildset": {"uuid": "b", "builds":
                                                                   list(builds)}}
    data.update(top)
    return json.dumps(data).encode()


def _build(**kw):
    build = {"job_name": "tempest-full", "uuid": "u1", "result": "FAILURE",
             "log_url": "http://l/x/", "start_time": 1551794531.2}
    build.update(kw)
    return {k: v for k, v in build.items() if v is not ...}


@pytest.mark.parametrize("result,status", [
    ("SUCCESS", "passed"), ("FAILURE", "failed"), ("TIMED_OUT", "failed"),
    ("POST_FAILURE", "failed"), ("NODE_FAILURE", "failed")])
def test_zuul_results(result, status):
    [event] = parse_payload("t", _zuul(_build(result=result)))
    assert event.status == status


@pytest.mark.parametrize("result", ["SKIPPED", "CANCELED", "ABORTED", "RETRY"])
def test_zuul_builds_without_outcome_are_not_events(result):
    assert parse_payload("t", _zuul(_build(result=result))) == []


def test_zuul_build_without_log_url_still_an_event():
    [event] = parse_payload("t", _zuul(_build(log_url=None)))
    assert event.artifacts_url is None


def test_zuul_malformed_build_skipped_others_kept():
    problems = []
    events = parse_payload("t", _zuul(_build(job_name=None), _build(uuid="u2")),
                           problems=problems)
    assert [e.run_id for e in events] == ["u2"]
    assert [p.reason for p in problems] == ["missing-job-name"]


# -- malformed messages -----------------------------------------------------------


@pytest.mark.parametrize("payload,reason", [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"\xff\xfe{}", "not-utf8"),
    (b"{not json", "not-json"),
    (b"{'status': 'success'}", "not-json"),
    (b"[1, 2]", "not-an-object"),
    (b"42", "not-an-object"),
    (b'"text"', "not-an-object"),
    (b"null", "not-an-object"),
    (b'{"hello": "world"}', "unknown-format"),
    (b'{"source_url": "http://x/y", "status": "success"}', "missing-build-uuid"),
    (b'{"build_uuid": "abc", "status": "success"}', "missing-source-url"),
    (b'{"build_uuid": "abc", "source_url": "http://x/y"}', "missing-status"),
    (b'{"build_uuid": null, "source_url": "http://x/y", "status": "success"}',
     "missing-build-uuid"),
    (b'{"build_uuid": 12, "source_url": "http://x/y", "status": "success"}',
     "wrong-type-build-uuid"),
    (b'{"build_uuid": true, "source_url": "http://x/y", "status": "success"}',
     "wrong-type-build-uuid"),
    (b'{"build_uuid": "abc", "source_url": ["u"], "status": "success"}',
     "wrong-type-source-url"),
    (b'{"build_uuid": "abc", "source_url": "http://x/y", "status": {}}', "wrong-type-status"),
    (b'{"build_uuid": "", "source_url": "http://x/y", "status": "success"}',
     "empty-build-uuid"),
    (b'{"buildset": []}', "wrong-type-buildset"),
    (b'{"buildset": {}}', "missing-builds"),
    (b'{"buildset": {"builds": {}}}', "wrong-type-builds"),
    (b'{"buildset": {"builds": [7]}}', "wrong-type-build"),
    (b'{"buildset": {"builds": [{"uuid": "u", "result": "SUCCESS"}]}}', "missing-job-name"),
    (b'{"buildset": {"builds": [{"job_name": "j", "result": "SUCCESS"}]}}', "missing-uuid"),
    (b'{"buildset": {"builds": [{"job_name": "j", "uuid": "u", "result": 1}]}}',
     "wrong-type-result"),
    (b'{"buildset": {"builds": [{"job_name": "j", "uuid": "u", "result": "SUCCESS", '
     b'"log_url": 5}]}}', "wrong-type-log-url"),
    (b"[" * 100000 + b"]" * 100000, "not-json"),
])
def test_malformed(payload, reason):
    with pytest.raises(MalformedPayload) as info:
        parse_payload("gearman-subunit/x", payload, max_bytes=10**6)
    assert info.value.reason == reason
    assert str(info.value)


def test_oversized_payload_refused_unread():
    payload = json.dumps({"build_uuid": "a", "source_url": "http://x/" + "y" * 2000,
                          "status": "success"}).encode()
    with pytest.raises(MalformedPayload) as info:
        parse_payload("t", payload, max_bytes=1000)
    assert info.value.reason == "too-large"
    assert parse_payload("t", payload, max_bytes=10000)


def test_str_payload_accepted():
    [event] = parse_payload("t", '{"build_uuid": "abc", "source_url": "u", "status": "x"}')
    assert event.status is None  # an unknown status is not guessed
    assert event.metadata["result"] == "x"


def test_source_url_under_logs_folder():
    [event] = parse_payload("t", json.dumps({
        "build_uuid": "abcdef0123", "status": "failure",
        "source_url": "https://logs.example.org/12/34/1/check/grenade/abcdef0/logs/"
                      "testrepository.subunit.gz"}))
    assert event.artifacts_url == "https://logs.example.org/12/34/1/check/grenade/abcdef0/"
    assert event.build_name == "grenade"
    assert event.status == "failed"


# -- the message handler ----------------------------------------------------------


def _message(payload, topic="gearman-subunit/w1/openstack/nova/1", qos=1):
    return types.SimpleNamespace(topic=topic, payload=payload, qos=qos, mid=1)


def test_handler_counts_and_never_raises(sample_data, caplog):
    trigger = MqttTrigger()
    seen = []
    good = _sample(sample_data, "firehose-gearman-subunit.payload.success.json")
    for payload in (good, b"{bad", b"\xff", b"[]", good):
        assert trigger._handle_message(_message(payload), seen.append) is True
    assert len(seen) == 2
    assert trigger.stats == {"messages": 5, "events": 2, "malformed": 3, "not_finished": 0,
                             "redelivered": 0}
    assert "not-json" in caplog.text and "not-utf8" in caplog.text
    assert seen[0].metadata["topic"] == "gearman-subunit/w1/openstack/nova/1"


def test_handler_reports_refusal():
    trigger = MqttTrigger()
    payload = b'{"build_uuid": "abc", "source_url": "u", "status": "success"}'
    assert trigger._handle_message(_message(payload), lambda e: False) is False


def test_parameters_and_defaults():
    trigger = MqttTrigger()
    assert trigger.topic == ["gearman-subunit/#"]
    assert trigger.qos == 1 and trigger.clean_session is False and trigger.mqtt_port == 1883
    trigger = MqttTrigger.from_options({"mqtt-port": "8883", "tls": "true", "qos": "0",
                                        "topic": "a/#,b/#"})
    assert trigger.mqtt_port == 8883 and trigger.tls is True and trigger.qos == 0
    assert trigger.topic == ["a/#", "b/#"]
    with pytest.raises(ConfigError):
        MqttTrigger(qos=3)


def test_default_client_id_is_stable(tmp_path):
    from ciml.paths import DataPath

    a, b = MqttTrigger(), MqttTrigger()
    a.setup(data_path=DataPath(tmp_path), build_name="tempest-full")
    b.setup(data_path=DataPath(tmp_path), build_name="tempest-full")
    assert a.default_client_id() == b.default_client_id()
    assert a.default_client_id().startswith("ciml-")
    b.setup(data_path=DataPath(tmp_path), build_name="grenade")
    assert a.default_client_id() != b.default_client_id()


def test_password_read_from_file_and_never_logged(tmp_path, caplog):
    secret = "s3cr3t-pw"
    pw = tmp_path / "pw"
    pw.write_text(secret + "\n")
    assert mqtt.read_password(pw) == secret
    trigger = MqttTrigger(username="ciml", password_file=str(pw), client_id="t")
    client = trigger.make_client()
    assert client._password == secret.encode()
    assert secret not in repr(trigger) and secret not in caplog.text
    with pytest.raises(ConfigError, match="password file"):
        mqtt.read_password(tmp_path / "missing")


def test_registered_as_mqtt():
    from ciml.plugins import get_manager

    assert get_manager().get("trigger", "mqtt").__name__ == "MqttTrigger"
    assert get_manager().get("trigger", "poll").__name__ == "PollTrigger"


def test_every_generated_event_parses(tmp_path):
    """The generator's firehose and Zuul messages give the runs it wrote."""
    from ciml.generator import generate_history

    history = generate_history(tmp_path, runs=8, seed=2, base_url="http://127.0.0.1:8000/",
                               duration=(60, 120), tests=False)
    by_uuid = {r["build_uuid"]: r for r in history.runs}
    firehose, zuul = {}, {}
    for message in json.loads(history.mqtt_events.read_text()):
        [event] = parse_payload(message["topic"], json.dumps(message["payload"]))
        (zuul if event.run_id else firehose)[event.build_uuid] = event
    assert set(firehose) == set(zuul) == set(by_uuid)
    for build_uuid, run in by_uuid.items():
        for event in (firehose[build_uuid], zuul[build_uuid]):
            assert event.build_name == run["build_name"]
            assert event.artifacts_url == run["artifacts_url"]
            assert event.status == run["status"]


class FakeClient:
    """Records the acknowledgements a trigger sends."""

    def __init__(self):
        self.acks = []

    def ack(self, mid, qos):
        self.acks.append(mid)


def _delivering(trigger):
    client = FakeClient()
    trigger._client = client
    return client


def _buildset(*builds):
    return json.dumps({"action": "success", "buildset": {"uuid": "bs", "builds": [
        {"job_name": job, "uuid": uuid, "result": "SUCCESS", "log_url": f"http://l/{uuid}/"}
        for job, uuid in builds]}}).encode()


def test_a_message_is_acknowledged_once_all_its_runs_are_settled():
    trigger = MqttTrigger()
    client = _delivering(trigger)
    taken = []
    trigger._deliver(_message(_buildset(("tempest-full", "u1"), ("pep8", "u2")), qos=1),
                     taken.append)
    assert [e.run_id for e in taken] == ["u1", "u2"] and client.acks == []
    trigger.acknowledge(taken[1])
    assert client.acks == []  # u1 is still being predicted
    trigger.acknowledge(taken[0])
    assert client.acks == [1]
    trigger.acknowledge(taken[0])  # twice is harmless
    assert client.acks == [1]


def test_malformed_and_unfinished_messages_are_acknowledged_at_once():
    trigger = MqttTrigger()
    client = _delivering(trigger)
    trigger._deliver(_message(b"{bad", qos=1), lambda e: pytest.fail("no event"))
    start = json.dumps({"buildset": {"builds": [{"job_name": "j", "uuid": "u"}]}}).encode()
    trigger._deliver(types.SimpleNamespace(topic="zuul/x", payload=start, qos=1, mid=2),
                     lambda e: pytest.fail("no event"))
    assert client.acks == [1, 2]


def test_a_refused_message_is_never_acknowledged():
    trigger = MqttTrigger()
    client = _delivering(trigger)
    taken = []

    def on_event(event):
        if taken:
            return False  # the watcher is stopping
        taken.append(event)
        return True

    trigger._deliver(_message(_buildset(("tempest-full", "u1"), ("tempest-full", "u2")), qos=1),
                     on_event)
    trigger.acknowledge(taken[0])
    assert client.acks == []  # u2 was not taken: the broker must send the message again


def test_a_redelivered_message_still_in_hand_is_not_handed_over_twice():
    trigger = MqttTrigger()
    client = _delivering(trigger)
    taken = []
    payload = _buildset(("tempest-full", "u1"))
    trigger._deliver(_message(payload, qos=1), taken.append)
    trigger._deliver(_message(payload, qos=1), taken.append)  # after a reconnect, DUP
    assert len(taken) == 1 and trigger.stats["redelivered"] == 1
    trigger.acknowledge(taken[0])
    assert client.acks == [1]
    trigger._deliver(_message(payload, qos=1), taken.append)  # a new message, mid reused
    assert len(taken) == 2


def test_message_ids_of_a_lost_session_are_never_acknowledged():
    """A new session reuses message ids: a PUBACK for an old one would ack a new message."""
    trigger = MqttTrigger()
    client = _delivering(trigger)
    taken = []
    trigger._deliver(_message(_buildset(("tempest-full", "u1")), qos=1), taken.append)
    trigger._forget_session()  # reconnected, "session present" false
    trigger._deliver(_message(_buildset(("tempest-full", "u2")), qos=1), taken.append)
    assert [e.run_id for e in taken] == ["u1", "u2"]  # mid 1 again, a different message
    trigger.acknowledge(taken[0])
    assert client.acks == []
    trigger.acknowledge(taken[1])
    assert client.acks == [1]


def test_message_callback_never_blocks_the_network_thread():
    """paho's thread only queues the message; the trigger's own thread hands it over."""
    import threading

    trigger = MqttTrigger(mqtt_host="127.0.0.1", mqtt_port=1, connect_timeout=0)
    blocked = threading.Event()
    release = threading.Event()

    def on_event(event):
        blocked.set()
        release.wait(30)  # a full watcher queue
        return True

    client = trigger.make_client()
    trigger.make_client = lambda: client
    thread = threading.Thread(target=trigger.run, args=(on_event,), daemon=True)
    thread.start()
    try:
        _wait_for(lambda: client.on_message is not None)
        payload = _buildset(("tempest-full", "u1"))
        for mid in (1, 2, 3):
            # What paho's network thread does: it must return at once each time.
            client.on_message(client, None, types.SimpleNamespace(
                topic="zuul/t", payload=payload.replace(b"u1", f"u{mid}".encode()), qos=1,
                mid=mid))
        assert blocked.wait(10)
        # Three messages taken by the network side while the first is stuck.
        assert trigger._inbox.qsize() == 2
    finally:
        release.set()
        trigger.stop()
        thread.join(10)
        trigger.close()
    assert not thread.is_alive()


def _closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once closed


def _wait_for(predicate, timeout=20.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_unreachable_broker_is_retried_and_stop_returns(caplog):
    """No broker: run() keeps trying (saying why) and returns promptly on stop()."""
    import threading
    import time

    trigger = MqttTrigger(mqtt_host="127.0.0.1", mqtt_port=_closed_port(),
                          client_id="t-unreachable", clean_session=True, connect_timeout=0)
    thread = threading.Thread(target=trigger.run, args=(lambda e: True,), daemon=True)
    thread.start()
    try:
        # Two failed attempts: it goes on trying (connect_timeout 0 never gives up).
        _wait_for(lambda: caplog.text.count("cannot reach the MQTT broker") >= 2)
        assert not trigger.connected and thread.is_alive()
    finally:
        started = time.monotonic()
        trigger.stop()
        thread.join(10)
        trigger.close()
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert "connection refused" in caplog.text


@pytest.mark.parametrize("host, cause", [
    ("nohost.invalid", "host name not found"),
    ("127.0.0.1", "connection refused"),
])
def test_a_broker_never_reached_is_given_up_with_the_cause(host, cause):
    from ciml.errors import CimlError

    trigger = MqttTrigger(mqtt_host=host, mqtt_port=_closed_port(), client_id="t-never",
                          clean_session=True, connect_timeout=1.5)
    with pytest.raises(CimlError) as info:
        trigger.run(lambda e: True)
    message = str(info.value)
    assert message.startswith(f"cannot reach the MQTT broker {host}:")
    assert cause in message and "--connect-timeout" in message
    assert trigger._client is None  # closed


def test_connect_failure_causes():
    import socket
    import ssl

    cause = mqtt.connect_failure_cause
    assert "host name not found" in cause(socket.gaierror(-2, "Name or service not known"))
    assert "connection refused" in cause(ConnectionRefusedError(111, "Connection refused"))
    assert cause(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]")).startswith("TLS:")
    assert "timed out" in cause(TimeoutError())
