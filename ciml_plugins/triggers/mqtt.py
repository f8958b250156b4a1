"""The ``mqtt`` trigger: finished-run events from OpenStack firehose and Zuul MQTT messages.

Two payload formats are understood, told apart by their shape:

* the OpenStack firehose ``gearman-subunit/#`` message the subunit2sql
  gearman worker publishes once a run is in the database:
  ``{"build_uuid": ..., "source_url": ..., "status": ...}``; the topic is
  ``gearman-subunit/<worker>/<project...>/<change>``.  It names no job: the
  job is read from the log URL (``.../<job>/<build_uuid[:7]>/...``) when it
  has the usual layout, otherwise the watcher asks the result source.
* the Zuul MQTT reporter's buildset message (``action``, ``buildset`` with
  ``builds``): one event per finished build, carrying ``job_name``,
  ``result``, ``uuid`` and ``log_url``.  A Zuul event needs no database: its
  ``log_url`` is the run's artifacts URL.

Parsing is a pure function (:func:`parse_payload`) so that every sample and
every malformed case is tested without a broker.  Nothing a publisher sends
can end :meth:`MqttTrigger.run`: bad messages are logged with the reason,
counted and skipped.
"""

import datetime as dt
import hashlib
import json
import logging
import posixpath
import queue
import socket
import threading
import time
import urllib.parse

from ciml.base import Parameter, Trigger, parse_bool
from ciml.errors import CimlError, ConfigError
from ciml.hookspecs import hookimpl
from ciml.records import FAILED, PASSED, Event

LOG = logging.getLogger(__name__)

#: Largest payload accepted; a Zuul buildset of a few hundred builds is far below.
DEFAULT_MAX_PAYLOAD = 1024 * 1024

# Zuul build results that say the job ran to an outcome its logs describe.
_ZUUL_PASSED = {"SUCCESS"}
_ZUUL_FAILED = {"FAILURE", "POST_FAILURE", "TIMED_OUT", "RETRY_LIMIT", "NODE_FAILURE",
                "ERROR", "MERGER_FAILURE", "CONFIG_ERROR", "DISK_FULL", "LOST"}
_FIREHOSE_PASSED = {"success", "passed", "pass", "ok"}
_FIREHOSE_FAILED = {"failed", "failure", "fail", "error"}


class MalformedPayload(ValueError):
    """A message that cannot be understood; ``reason`` is a short stable code."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def _timestamp(value):
    """An epoch (number or numeric string) as an aware UTC datetime, else ``None``."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _artifacts_from_source_url(source_url):
    """The build's log folder from the URL of its subunit file (or ``None``)."""
    parsed = urllib.parse.urlsplit(source_url)
    if parsed.scheme not in ("http", "https", "file") or not parsed.path:
        return None
    folder = posixpath.dirname(parsed.path.rstrip("/")) if not parsed.path.endswith("/") \
        else parsed.path.rstrip("/")
    # Some layouts keep the subunit file under logs/; the build root is above it.
    if posixpath.basename(folder) == "logs":
        folder = posixpath.dirname(folder)
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, folder + "/", "", ""))


def _job_from_url(url, build_uuid):
    """The job name in a ``.../<job>/<uuid[:7]>/...`` log path, else ``None``."""
    if not url or not build_uuid:
        return None
    parts = [p for p in urllib.parse.urlsplit(url).path.split("/") if p]
    short = build_uuid[:7].lower()
    for i in range(1, len(parts)):
        if parts[i].lower() == short:
            return parts[i - 1]
    return None


def _require(obj, key, types, where):
    if key not in obj or obj[key] is None:
        raise MalformedPayload(f"missing-{key.replace('_', '-')}",
                               f"{where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise MalformedPayload(
            f"wrong-type-{key.replace('_', '-')}",
            f"{where}: {key!r} is a {type(value).__name__}, expected "
            + " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,))))
    if isinstance(value, str) and not value.strip():
        raise MalformedPayload(f"empty-{key.replace('_', '-')}", f"{where}: {key!r} is empty")
    return value


def _optional_str(obj, key, where):
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"wrong-type-{key.replace('_', '-')}",
                               f"{where}: {key!r} is a {type(value).__name__}, expected str")
    return value or None


def _parse_firehose(topic, data):
    build_uuid = _require(data, "build_uuid", str, "firehose payload").strip()
    source_url = _require(data, "source_url", str, "firehose payload").strip()
    raw_status = _require(data, "status", str, "firehose payload").strip()
    status = raw_status.lower()
    status = PASSED if status in _FIREHOSE_PASSED else (
        FAILED if status in _FIREHOSE_FAILED else None)
    metadata = {"result": raw_status, "source_url": source_url}
    parts = (topic or "").split("/")
    if len(parts) >= 2 and parts[1]:
        metadata["worker"] = parts[1]
    if len(parts) >= 4:
        metadata["project"] = "/".join(parts[2:-1])
        metadata["change"] = parts[-1]
    artifacts_url = _artifacts_from_source_url(source_url)
    return [Event(build_name=_job_from_url(source_url, build_uuid), build_uuid=build_uuid,
                  status=status, artifacts_url=artifacts_url, metadata=metadata,
                  payload=data, trigger="mqtt")]


def _zuul_status(result):
    upper = result.upper()
    if upper in _ZUUL_PASSED:
        return PASSED
    if upper in _ZUUL_FAILED:
        return FAILED
    return None


def _parse_zuul(data, problems):
    buildset = data["buildset"]
    if not isinstance(buildset, dict):
        raise MalformedPayload("wrong-type-buildset", "Zuul payload: 'buildset' is not an object")
    builds = buildset.get("builds")
    if builds is None:
        raise MalformedPayload("missing-builds", "Zuul payload: buildset has no 'builds'")
    if not isinstance(builds, list):
        raise MalformedPayload("wrong-type-builds", "Zuul payload: 'builds' is not a list")
    common = {}
    for key in ("tenant", "pipeline", "project", "branch", "change", "patchset", "ref",
                "change_url", "action"):
        value = data.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            common[key] = str(value)
    if isinstance(buildset.get("uuid"), str):
        common["buildset_uuid"] = buildset["uuid"]
    events = []
    for index, build in enumerate(builds):
        where = f"Zuul payload build {index}"
        try:
            if not isinstance(build, dict):
                raise MalformedPayload("wrong-type-build", f"{where} is not an object")
            job_name = _require(build, "job_name", str, where)
            result = build.get("result")
            if result is None:
                continue  # a start/enqueue report: nothing finished yet
            if not isinstance(result, str):
                raise MalformedPayload("wrong-type-result", f"{where}: 'result' is not a string")
            uuid = _require(build, "uuid", str, where)
            log_url = _optional_str(build, "log_url", where)
        except MalformedPayload as exc:
            problems.append(exc)
            continue
        status = _zuul_status(result)
        if status is None:
            # SKIPPED, CANCELED, ABORTED...: the job never ran to an outcome.
            LOG.debug("ignoring Zuul build %s of %s: result %s", uuid, job_name, result)
            continue
        metadata = dict(common)
        metadata["result"] = result
        change = build.get("change")
        if isinstance(change, dict):
            for key in ("project", "branch", "change", "patchset", "ref"):
                if change.get(key) is not None:
                    metadata[key] = str(change[key])
        for key in ("voting", "web_url", "job_uuid"):
            if build.get(key) is not None:
                metadata[key] = str(build[key])
        end = _timestamp(build.get("end_time"))
        if end is not None:
            metadata["end_time"] = end.isoformat()
        events.append(Event(build_name=job_name, run_id=uuid, build_uuid=uuid, status=status,
                            artifacts_url=log_url, start=_timestamp(build.get("start_time")),
                            metadata=metadata, payload=build, trigger="mqtt"))
    return events


def parse_payload(topic, payload, max_bytes=DEFAULT_MAX_PAYLOAD, problems=None):
    """Turn one MQTT message into the :class:`~ciml.records.Event` list it announces.

    :param topic: the message topic (firehose topics carry project and change).
    :param payload: the raw bytes (``str`` is accepted too).
    :param max_bytes: larger payloads are refused unread.
    :param problems: a list that receives a :class:`MalformedPayload` for each
        malformed build inside an otherwise valid Zuul message.
    :return: the events; empty for a valid message that announces no finished
        build (a Zuul ``start`` report).
    :raises MalformedPayload: the whole message is unusable.
    """
    if problems is None:
        problems = []
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise MalformedPayload("not-bytes", f"payload is a {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise MalformedPayload("too-large",
                               f"payload of {len(payload)} bytes exceeds {max_bytes} bytes")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload("not-utf8", f"payload is not UTF-8: {exc}") from None
    if not text.strip():
        raise MalformedPayload("empty", "payload is empty")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedPayload("not-json", f"payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedPayload("not-an-object",
                               f"payload is a JSON {type(data).__name__}, expected an object")
    if "buildset" in data:
        events = _parse_zuul(data, problems)
        if not events and problems:
            raise problems[0]
        return events
    if "build_uuid" in data or "source_url" in data:
        return _parse_firehose(topic, data)
    raise MalformedPayload(
        "unknown-format",
        "payload is neither a firehose subunit message (build_uuid, source_url, status) "
        "nor a Zuul buildset report; keys: " + ", ".join(sorted(map(str, data))[:10]))


def read_password(path):
    """The first line of a password file; the password itself is never logged."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the MQTT password file {path}: "
                          f"{exc.strerror or exc}") from None


def _configure(client, *, tls=False, ca_certs=None, username=None, password_file=None):
    if tls:
        client.tls_set(ca_certs=ca_certs or None)
    if username:
        password = read_password(password_file) if password_file else None
        client.username_pw_set(username, password)
    elif password_file:
        raise ConfigError("--password-file needs --username")


def connect_failure_cause(exc):
    """Why a connection attempt failed, in a few words an operator can act on."""
    import ssl

    if exc is None:
        return "no reason given"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running, and is this its port?)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or exc
        return f"TLS: the broker's certificate was not accepted ({detail})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer (timed out)"
    return f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)


class _Message:
    """One MQTT message whose events the watcher has in hand; acknowledged once all are done."""

    __slots__ = ("mid", "qos", "remaining", "refused")

    def __init__(self, mid, qos, remaining):
        self.mid = mid
        self.qos = qos
        self.remaining = remaining
        self.refused = False


class MqttTrigger(Trigger):
    """Subscribe to an MQTT broker for firehose subunit or Zuul build reports

    Subscribes (QoS 1, persistent session by default) and turns each message
    into events; reconnects with backoff and subscribes again after a
    broker restart, so reports published while briefly disconnected are
    still delivered.  A message is acknowledged only once the watcher has
    emitted the records of all its runs: one not yet handled when the
    watcher stops or dies is delivered again by the broker.  Malformed
    messages are logged, counted and skipped.
    """

    name = "mqtt"
    parameters = (
        Parameter("mqtt_host", default="localhost", help="MQTT broker host name"),
        Parameter("mqtt_port", type=int, default=1883, help="MQTT broker port"),
        Parameter("topic", default="gearman-subunit/#", multiple=True,
                  help="topic filter(s) to subscribe to"),
        Parameter("tls", type=parse_bool, default=False, help="connect with TLS"),
        Parameter("ca_certs", help="CA bundle for TLS (default: the system's)"),
        Parameter("username", help="MQTT user name"),
        Parameter("password_file", help="file whose first line is the MQTT password"),
        Parameter("client_id", help="MQTT client id (default: stable per host and data path, "
                                    "so that a restart resumes the persistent session)"),
        Parameter("qos", type=int, default=1, choices=(0, 1, 2),
                  help="subscription QoS"),
        Parameter("clean_session", type=parse_bool, default=False,
                  help="start a fresh session (messages sent while away are lost)"),
        Parameter("keepalive", type=int, default=60, help="MQTT keepalive, seconds"),
        Parameter("reconnect_max_delay", type=int, default=60,
                  help="longest wait between reconnection attempts, seconds"),
        Parameter("connect_timeout", type=float, default=60.0,
                  help="give up when the MQTT broker was not reached in this many seconds "
                       "(once connected, a lost broker is retried for ever); 0 never "
                       "gives up"),
        Parameter("max_payload_bytes", type=int, default=DEFAULT_MAX_PAYLOAD,
                  help="larger messages are skipped"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        self._stopping = False
        self._client = None
        self._connected = threading.Event()
        self._ever_connected = False
        self._failure = None  # why the latest connection attempt failed
        # Messages from paho's network thread, for run()'s thread: a put never
        # blocks, so keepalives go on while the watcher's queue is full.
        self._inbox = queue.SimpleQueue()
        self._ack_lock = threading.Lock()
        self._messages = {}   # id(event) -> _Message, while the watcher has it
        self._in_hand = {}    # mid -> _Message, for QoS > 0 messages being handled
        self.stats = {"messages": 0, "events": 0, "malformed": 0, "not_finished": 0,
                      "redelivered": 0}

    # -- pipeline interface --------------------------------------------------

    def default_client_id(self):
        """A client id stable across restarts of the same watcher."""
        key = f"{getattr(self, 'data_path', '')}|{getattr(self, 'build_name', '')}"
        host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
        return f"ciml-{host[:40]}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"

    def make_client(self):
        """A configured (not yet connected) paho client."""
        import paho.mqtt.client as mqtt

        client_id = self.client_id or self.default_client_id()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id, clean_session=bool(self.clean_session),
                             protocol=mqtt.MQTTv311, reconnect_on_failure=True,
                             manual_ack=True)
        _configure(client, tls=self.tls, ca_certs=self.ca_certs, username=self.username,
                   password_file=self.password_file)
        client.reconnect_delay_set(1, max(1, self.reconnect_max_delay))
        return client

    @property
    def connected(self):
        return self._connected.is_set()

    def wait_connected(self, timeout=None):
        """Block until subscribed (tests and benchmarks use this)."""
        return self._connected.wait(timeout)

    def run(self, on_event):
        self._stopping = False
        client = self.make_client()
        self._client = client
        where = f"{self.mqtt_host}:{self.mqtt_port}"
        topics = self.topic or ["gearman-subunit/#"]
        pending = [None]  # the mid of the latest SUBSCRIBE

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                # Bad credentials or a refused client id: say so each time.
                self._failure = f"the broker refused the connection: {reason_code}"
                LOG.error("MQTT broker %s refused the connection: %s", where, reason_code)
                return
            if not flags.session_present:
                self._forget_session()
            # Subscribing here restores the subscription after every reconnect.
            result, mid = client.subscribe([(t, self.qos) for t in topics])
            pending[0] = mid
            LOG.info("connected to MQTT broker %s (session present: %s), subscribing to %s",
                     where, flags.session_present, ", ".join(topics))

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            # Ready only once the broker has granted the subscription: a
            # message published between CONNACK and SUBACK may not reach us.
            if mid != pending[0]:
                return
            refused = [t for t, rc in zip(topics, reason_codes) if rc.is_failure]
            if refused:
                LOG.error("MQTT broker %s refused the subscription to %s",
                          where, ", ".join(refused))
                if len(refused) == len(topics):
                    return
            LOG.info("subscribed to %s on MQTT broker %s", ", ".join(topics), where)
            self._ever_connected = True
            self._connected.set()

        def on_disconnect(client, userdata, flags, reason_code, properties):
            self._connected.clear()
            if not self._stopping:
                LOG.warning("lost the MQTT broker %s (%s); reconnecting", where, reason_code)

        def on_connect_fail(client, userdata):
            # paho calls this from inside its "except OSError" block: the
            # exception being handled is the reason.
            import sys

            self._failure = connect_failure_cause(sys.exc_info()[1])
            if not self._stopping:
                LOG.warning("cannot reach the MQTT broker %s: %s; trying again", where,
                            self._failure)

        def on_message(client, userdata, message):
            # Never block nor raise here: this is paho's network thread.
            self._inbox.put(message)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_connect_fail = on_connect_fail
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect_async(self.mqtt_host, self.mqtt_port, keepalive=self.keepalive)
        client.loop_start()
        started = time.monotonic()
        try:
            # A plain flag and short waits: stop() may run in a signal handler,
            # where taking a lock the interrupted code holds would deadlock.
            while not self._stopping:
                try:
                    message = self._inbox.get(timeout=0.05)
                except queue.Empty:
                    self._check_connect_timeout(started, where)
                    continue
                try:
                    self._deliver(message, on_event)
                except Exception:
                    LOG.exception("unexpected error handling an MQTT message on %s",
                                  message.topic)
        except BaseException:
            self.close()
            raise

    def _check_connect_timeout(self, started, where):
        if self._ever_connected or not self.connect_timeout or self.connect_timeout <= 0:
            return
        waited = time.monotonic() - started
        if waited > self.connect_timeout:
            raise CimlError(
                f"cannot reach the MQTT broker {where} after {waited:.0f} s: "
                f"{self._failure or 'no answer'} (see --mqtt-host, --mqtt-port, --tls, "
                "--connect-timeout)")

    def stop(self):
        self._stopping = True

    def close(self):
        """Hang up, after the acknowledgements already given have been sent."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # DISCONNECT goes out after the PUBACKs queued before it.
            client.disconnect()
        finally:
            client.loop_stop()
            self._connected.clear()

    def _forget_session(self):
        """The broker has no session for us (a clean start): old message ids mean nothing.

        Acknowledging one would acknowledge whatever new message the broker
        gave that id, so the messages still in hand are never acknowledged;
        without a session, the broker would not send them again anyway.
        """
        with self._ack_lock:
            for message in self._in_hand.values():
                message.refused = True
            self._in_hand.clear()

    def acknowledge(self, event):
        with self._ack_lock:
            message = self._messages.pop(id(event), None)
            if message is None:
                return
            message.remaining -= 1
            if message.remaining > 0 or message.refused:
                return
            self._in_hand.pop(message.mid, None)
            client = self._client
        if client is not None and message.qos > 0:
            # Thread-safe in paho: the PUBACK is queued for its network thread.
            client.ack(message.mid, message.qos)

    # -- messages ------------------------------------------------------------

    def _deliver(self, message, on_event):
        """Hand one message's events to the watcher; acknowledged when they are settled."""
        qos = getattr(message, "qos", 0)
        if qos > 0:
            with self._ack_lock:
                redelivered = message.mid in self._in_hand
            if redelivered:
                # The broker sent it again after a reconnect while the watcher
                # still has the first copy: that one's acknowledgement covers both.
                self.stats["redelivered"] += 1
                return
        events = self._parse(message)
        state = _Message(message.mid, qos, len(events))
        if not events:
            if qos > 0 and self._client is not None:
                self._client.ack(message.mid, qos)  # nothing to predict: handled
            return
        with self._ack_lock:
            if qos > 0:
                self._in_hand[message.mid] = state
            # Registered before any is handed over: the watcher may settle
            # the first (another job) before the next is registered.
            for event in events:
                self._messages[id(event)] = state
        for index, event in enumerate(events):
            self.stats["events"] += 1
            if on_event(event) is False:
                # The watcher is stopping: the message stays unacknowledged,
                # so the broker delivers it again, all of its builds.
                with self._ack_lock:
                    state.refused = True
                    for rest in events[index:]:
                        self._messages.pop(id(rest), None)
                    self._in_hand.pop(message.mid, None)
                break

    def _parse(self, message):
        """The events of one message; malformed ones are logged and counted."""
        self.stats["messages"] += 1
        problems = []
        try:
            events = parse_payload(message.topic, message.payload,
                                   max_bytes=self.max_payload_bytes, problems=problems)
        except MalformedPayload as exc:
            self.stats["malformed"] += 1
            LOG.warning("skipping a malformed MQTT message on %s (%s): %s",
                        message.topic, exc.reason, exc)
            return []
        for exc in problems:
            self.stats["malformed"] += 1
            LOG.warning("skipping a malformed build in an MQTT message on %s (%s): %s",
                        message.topic, exc.reason, exc)
        if not events and not problems:
            self.stats["not_finished"] += 1
        for event in events:
            event.metadata.setdefault("topic", message.topic)
        return events

    def _handle_message(self, message, on_event):
        """Parse one message and hand its events on; False if one was refused.

        The synchronous form of :meth:`_deliver`, without acknowledgements
        (tests and tools that feed messages by hand).
        """
        accepted = True
        for event in self._parse(message):
            self.stats["events"] += 1
            if on_event(event) is False:
                accepted = False
        return accepted


class MqttPublisher:
    """Publishes prediction records as JSON to a topic (``watch --publish-topic``).

    A plugin on ``ciml_prediction_made``: ``ciml watch`` registers it for
    the run of the command when ``--publish-topic`` is given (see
    :func:`ciml_watch_reporters`), like any other reporter.
    """

    def __init__(self, topic, *, mqtt_host="localhost", mqtt_port=1883, tls=False,
                 ca_certs=None, username=None, password_file=None, client_id=None, qos=1,
                 keepalive=60, **_ignored):
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.qos = qos if qos is not None else 1
        self.where = f"{mqtt_host}:{mqtt_port}"
        client_id = (client_id + "-pub") if client_id else ""
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id, clean_session=True,
                                   protocol=mqtt.MQTTv311)
        _configure(self._client, tls=tls, ca_certs=ca_certs, username=username,
                   password_file=password_file)
        self._client.reconnect_delay_set(1, 30)
        # Messages published while the broker is away are queued by paho and
        # sent on reconnect; bound that queue.
        self._client.max_queued_messages_set(10000)
        self._client.connect_async(mqtt_host, mqtt_port or 1883, keepalive=keepalive or 60)
        self._client.loop_start()

    @classmethod
    def from_options(cls, topic, options):
        """A publisher on the broker the mqtt options name (``--mqtt-host``...)."""
        from ciml.commands.base import component_options

        settings = MqttTrigger.from_options(component_options(MqttTrigger, options)).get_params(
            include_secrets=True)
        settings.pop("topic", None)
        return cls(topic, **settings)

    @hookimpl
    def ciml_prediction_made(self, prediction):
        self.publish(prediction)

    def publish(self, record):
        info = self._client.publish(self.topic, json.dumps(record, sort_keys=True, default=str),
                                    qos=self.qos)
        if info.rc not in (0,):
            LOG.warning("could not publish a prediction to %s on %s: rc %s",
                        self.topic, self.where, info.rc)
        return info

    def close(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        # Let QoS 1 publications reach the broker before hanging up.
        while self._client.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()


@hookimpl
def ciml_watch_reporters(options):
    """``--publish-topic``: publish every prediction of this watch to MQTT."""
    topic = options.get("publish_topic")
    if not topic:
        return None
    return MqttPublisher.from_options(topic, options)


@hookimpl
def ciml_register_triggers(register):
    register(MqttTrigger)
