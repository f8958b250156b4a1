"""The original ciml's README, command by command, with the console scripts it names.

Each step quotes the original README (mtreinish/ciml, README.rst) and runs its
command as it is written there, in its order, through the installed console
scripts, from a working directory and data path that start empty.  What
differs is what must: the database URL (a subunit2sql database on the local
MariaDB, filled by ciml's history generator), the log server (ciml's test
server on 127.0.0.1, which the generated runs' artifacts URLs point at), the
MQTT broker (the local Mosquitto, on a topic of this test's own), and two
training epochs instead of the estimator's default.
"""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import skip_or_fail

pytestmark = [pytest.mark.mariadb, pytest.mark.mosquitto, pytest.mark.tensorflow,
              pytest.mark.slow]

SCRIPTS = ("ciml-cache-data", "ciml-build-dataset", "ciml-setup-experiment",
           "ciml-train-model", "ciml-plot-data", "ciml-db-predict", "ciml-mqtt-predict",
           "ciml-mqtt-trainer")
JOB = "tempest-full"
DATASET = "tempest"
USR_DATASET = "tempest-usr-used-1m"


def _script(name):
    path = pathlib.Path(sys.executable).parent / name
    if not path.exists():
        skip_or_fail(f"console script {name} is not installed next to {sys.executable} "
                     "(pip install -e . registers it)")
    return path


class Shell:
    """Runs the console scripts as a user would: own working directory, own data path."""

    def __init__(self, cwd, data_path):
        self.cwd = cwd
        self.env = dict(os.environ)
        # The default data path, as a fresh user has it: nothing on the command line.
        self.env["CIML_DATA_PATH"] = str(data_path)
        self.env.pop("CIML_DB_URI", None)
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def argv(self, name, args):
        return [str(_script(name)), *map(str, args)]

    def __call__(self, name, *args, ok=True, timeout=600):
        proc = subprocess.run(self.argv(name, args), cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if ok:
            assert proc.returncode == 0, (
                f"{name} {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def popen(self, name, *args):
        return subprocess.Popen(self.argv(name, args), cwd=self.cwd, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def subunit2sql_db(mariadb_url):
    """A database of this test's own on the local MariaDB (dropped at the end)."""
    import pymysql
    import sqlalchemy as sa

    url = sa.engine.make_url(mariadb_url)
    name = f"ciml_readme_{uuid.uuid4().hex[:10]}"

    def admin(statement):
        conn = pymysql.connect(host=url.host, port=url.port, user=url.username,
                               connect_timeout=5, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def log_server(tmp_path):
    from ciml.testing.servers import CIServer

    root = tmp_path / "ci" / "logs"
    root.mkdir(parents=True)
    server = CIServer(root=root).start()
    yield server
    server.stop()


def _new_runs(tmp_path, server, db_uri, runs, seed, day):
    """Runs that finish in CI: their rows in the database, their logs on the server."""
    import datetime as dt

    from ciml.generator import generate_history

    return generate_history(tmp_path / "ci", runs=runs, seed=seed, jobs=(JOB,),
                            duration=(60, 120), base_url=server.url, db_uri=db_uri,
                            bad_fraction=0.0, tests=False, new_year=False,
                            start=dt.datetime(2026, 3, day, 6, 0, tzinfo=dt.timezone.utc))


def _cached(data_path):
    from ciml.cache import RawCache

    with RawCache(data_path) as cache:
        return {run.id for run in cache.runs(JOB)}


def _logdir(stderr):
    found = re.findall(r"tensorboard --logdir ([^\s)]+)", stderr)
    assert found, f"no tensorboard --logdir line in:\n{stderr}"
    return pathlib.Path(found[-1])


def _tensorboard_scalars(logdir):
    """What TensorBoard shows for ``--logdir``: ``{run: {tag: [steps]}}`` of scalar curves.

    TensorBoard's own reader, finding runs under the folder as
    ``tensorboard --logdir`` does.
    """
    from tensorboard.backend.event_processing import event_multiplexer

    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    curves = {}
    for run, tags in mux.Runs().items():
        for tag in tags.get("tensors", []):
            if mux.SummaryMetadata(run, tag).plugin_data.plugin_name == "scalars":
                curves.setdefault(run, {})[tag] = [e.step for e in mux.Tensors(run, tag)]
    return curves


def _firehose_event(sample_data, run):
    """The firehose's gearman-subunit message for ``run``, shaped as the sample message."""
    sample = json.loads((sample_data / "mqtt" / "firehose-gearman-subunit.messages.json")
                        .read_text())[0]
    payload = dict(sample["payload"], build_uuid=run["build_uuid"],
                   source_url=run["artifacts_url"] + "testrepository.subunit",
                   status="failed" if run["status"] == "failed" else "success")
    assert set(payload) == set(sample["payload"])
    return sample["topic"], payload


def _publish_until_exit(host, port, topic, payload, proc, deadline):
    """Publish the event until the trainer exits: it may not have subscribed yet.

    The trainer takes a run once however often it is announced (QoS 1
    redeliveries look the same).
    """
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, port)
    client.loop_start()
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
            time.sleep(0.5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_original_readme_in_order(tmp_path, subunit2sql_db, log_server, mosquitto,
                                      sample_data):
    for module, why in (("tensorflow", "ciml's estimators need it"),
                        ("tensorboard", "the test extra installs it")):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed ({why})")
    from ciml.dataset import Dataset
    from ciml.experiment import Experiment
    from ciml.paths import DataPath

    workdir = tmp_path / "work"
    workdir.mkdir()
    data = DataPath(tmp_path / "ciml-data")
    sh = Shell(workdir, data.root)
    first = _new_runs(tmp_path, log_server, subunit2sql_db, runs=16, seed=31, day=2)

    # "To cache raw data locally, use `ciml-cache-data`:
    #    ciml-cache-data --build-name <build-name> --db-uri <db-uri>"
    proc = sh("ciml-cache-data", "--build-name", JOB, "--db-uri", subunit2sql_db)
    assert _cached(data) == {r["run_id"] for r in first.runs}
    # Where the data went is said once, when the data path is made.
    assert f"ciml keeps its data in {data.root}" in proc.stderr
    assert "password" not in proc.stderr.lower()

    # "Running ciml-cache-data with the same build name again extends the cache."
    second = _new_runs(tmp_path, log_server, subunit2sql_db, runs=8, seed=32, day=9)
    proc = sh("ciml-cache-data", "--build-name", JOB, "--db-uri", subunit2sql_db)
    assert _cached(data) == {r["run_id"] for r in first.runs + second.runs}
    assert "ciml keeps its data in" not in proc.stderr

    # "For more help run:  ciml-cache-data --help"
    proc = sh("ciml-cache-data", "--help")
    assert proc.stdout.startswith("usage: ciml-cache-data")
    assert "--build-name" in proc.stdout and "--db-uri" in proc.stdout

    # "To create a normalized dataset, use `ciml-build-dataset`:
    #    ciml-build-dataset --dataset <dataset-name> --build-name <build-name>"
    sh("ciml-build-dataset", "--dataset", DATASET, "--build-name", JOB)
    built = Dataset.open(data, DATASET)
    assert sum(built.attrs["counts"].values()) == 24
    # ... and with the feature selection the original's users made (dstat's
    # usr CPU, used memory and the 1-minute load):
    sh("ciml-build-dataset", "--dataset", USR_DATASET, "--build-name", JOB,
       "--features-regex", "(usr|used|1m)")
    usr = Dataset.open(data, USR_DATASET)
    assert usr.features and all(re.search("(usr|used|1m)", f) for f in usr.features)
    assert "load_1m" in usr.features and "cpu_usr" in usr.features

    # "There are several extra options ... For more help run:  ciml-build-dataset --help"
    proc = sh("ciml-build-dataset", "--help")
    assert proc.stdout.startswith("usage: ciml-build-dataset")
    assert "--features-regex" in proc.stdout and "--data-plots-folder" in proc.stdout

    # "It is also possible to visualize the lenght of example prior to
    #  normalization, and how it maps to the example class ...
    #    ciml-build-dataset --dataset <dataset-name> --visualize"
    before = (built.fingerprint, built.provenance.get("created"))
    proc = sh("ciml-build-dataset", "--dataset", DATASET, "--visualize")
    plots = data.root / "plots" / "datasets" / DATASET
    sizes = plots / "sizes_by_result.png"
    assert sizes.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(sizes) in proc.stdout
    assert {"class_balance.png", "feature_distributions.png"} <= {
        p.name for p in plots.iterdir()}
    again = Dataset.open(data, DATASET)
    assert (again.fingerprint, again.provenance.get("created")) == before  # not rebuilt

    # "To define an experiment, use `ciml-setup-experiment`:
    #    ciml-setup-experiment --dataset <dataset-name> --experiment <exp-name> \
    #      --estimator (tf.contrib.learn.SVM|tf.estimator.DNNClassifier)"
    sh("ciml-setup-experiment", "--dataset", USR_DATASET, "--experiment", "dnn-3x10",
       "--estimator", "tf.estimator.DNNClassifier", "--hidden-layers", "10/10/10",
       "--epochs", "2")
    sh("ciml-setup-experiment", "--dataset", USR_DATASET, "--experiment", "svm",
       "--estimator", "tf.contrib.learn.SVM", "--epochs", "2")
    dnn, svm = Experiment.load(data, "dnn-3x10"), Experiment.load(data, "svm")
    assert (dnn.estimator, dnn.dataset) == ("dnn", USR_DATASET)
    assert (svm.estimator, svm.dataset) == ("linear-svm", USR_DATASET)

    # "Full more help run:  ciml-setup-experiment --help"
    proc = sh("ciml-setup-experiment", "--help")
    assert proc.stdout.startswith("usage: ciml-setup-experiment")
    assert "--dataset" in proc.stdout and "tf.contrib.learn.SVM" in proc.stdout

    # "To run training, use `ciml-train-model`:
    #    ciml-train-model --dataset <dataset-name> --experiment <exp-name>"
    proc = sh("ciml-train-model", "--dataset", USR_DATASET, "--experiment", "dnn-3x10")
    model = data.model(USR_DATASET, "dnn-3x10")
    assert json.loads((model / "metadata.json").read_text())["estimator"] == "dnn"

    # "To use TensorBoard for a specific experiment, run:
    #    tensorboard --logdir <ciml_base_path>/data/<dataset-name>/<experiment-name>"
    # The folder ciml names is one TensorBoard reads: a curve per run (train,
    # validation), one point per epoch.
    logdir = _logdir(proc.stderr)
    assert model in [logdir, *logdir.parents]
    curves = _tensorboard_scalars(logdir)
    assert curves["train"]["epoch_loss"] == [0, 1]
    assert "epoch_loss" in curves["validation"]

    # "To start the MQTT triggered pipeline, and make predictions on new data, use:
    #    ciml-mqtt-trainer"
    # A run finishes in CI after the cache was made; the firehose announces it.
    third = _new_runs(tmp_path, log_server, subunit2sql_db, runs=4, seed=33, day=16)
    new_run = third.runs[0]["run_id"]
    topic, payload = _firehose_event(sample_data, third.runs[0])
    host, port = mosquitto
    root = f"ciml-readme-{uuid.uuid4().hex[:12]}"
    # A topic of its own on the shared broker, no session left behind there,
    # and an end after the one run instead of a Ctrl-C.
    trainer = sh.popen("ciml-mqtt-trainer", "--db-uri", subunit2sql_db,
                       "--mqtt-hostname", host, "--mqtt-port", port,
                       "--topic", f"{root}/gearman-subunit/#", "--clean-session",
                       "--max-events", "1")
    out = {}
    reader = threading.Thread(target=lambda: out.update(zip(
        ("stdout", "stderr"), trainer.communicate())), daemon=True)
    reader.start()
    try:
        _publish_until_exit(host, port, f"{root}/{topic}", payload, trainer,
                            time.monotonic() + 180)
        reader.join(60)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            reader.join(10)
    assert trainer.returncode == 0, out.get("stderr")
    records = [json.loads(line) for line in out["stdout"].splitlines() if line.strip()]
    assert len(records) == 1
    assert records[0]["run_id"] == new_run and not records[0].get("error")
    assert records[0]["predicted"] in ("passed", "failed")
    # The trainer learned the run: the next ciml-build-dataset includes it.
    assert new_run in _cached(data)

    # The other estimator of the README trains as well.
    proc = sh("ciml-train-model", "--dataset", USR_DATASET, "--experiment", "svm")
    curves = _tensorboard_scalars(_logdir(proc.stderr))
    assert curves["train"]["epoch_loss"] == [0, 1]
    # Nothing was written outside the data path (the original wrote ./data).
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_describes_the_script(tmp_path, script, flag):
    """``--help`` of every script: its own name and options, never ``ciml help``."""
    sh = Shell(tmp_path, tmp_path / "data")
    proc = sh(script, flag)
    assert proc.stdout.startswith(f"usage: {script} ")
    assert "ciml help:" not in proc.stdout + proc.stderr
    assert "error" not in proc.stderr.lower()
    assert "options of the original ciml" in proc.stdout
    # The original's spellings, each where the original had it.
    original = {
        "ciml-cache-data": ["--build-name", "--db-uri", "--limit"],
        "ciml-build-dataset": ["--dataset", "--build-name", "--slicer", "--sample-interval",
                               "--features-regex", "--class-label", "--tdt-split",
                               "--no-force", "--no-visualize", "--target-data-path",
                               "--data-plots-folder", "--aggregation-functions"],
        "ciml-setup-experiment": ["--dataset", "--experiment", "--estimator",
                                  "--hidden-layers", "--steps", "--batch-size", "--epochs",
                                  "--optimizer", "--learning-rate", "--no-force"],
        "ciml-train-model": ["--dataset", "--experiment", "--eval-dataset", "--gpu",
                             "--no-debug"],
        "ciml-db-predict": ["--db-uri", "--dataset", "--sample-interval", "--build-name"],
        "ciml-mqtt-predict": ["--db-uri", "--mqtt-hostname", "--topic", "--dataset",
                              "--sample-interval", "--build-name"],
        "ciml-mqtt-trainer": ["--db-uri", "--mqtt-hostname", "--topic"],
        "ciml-plot-data": ["--data-path"],
    }[script]
    for option in original + ["--data-path", "--debug", "--s3-profile", "--s3-url"]:
        assert re.search(rf"^\s+{re.escape(option)}\b", proc.stdout, re.M), option
    # What a script sets itself is not offered.
    if script in ("ciml-mqtt-predict", "ciml-mqtt-trainer"):
        assert "--trigger" not in proc.stdout and "[poll]" not in proc.stdout
    if script == "ciml-mqtt-trainer":
        assert not re.search(r"^\s+--learn\b", proc.stdout, re.M)
    # Asking for help writes nothing.
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", ["ciml-build-dataset", "ciml-setup-experiment",
                                    "ciml-train-model"])
def test_the_original_s3_options_reach_the_object_store(tmp_path, script):
    """``--s3-profile``/``--s3-url`` are the s3:// data path's AWS profile and endpoint.

    The profile here does not exist: the store says so in one line, before
    anything is written anywhere.
    """
    sh = Shell(tmp_path, tmp_path / "data")
    sh.env.pop("AWS_PROFILE", None)
    proc = sh(script, "--dataset", "d", "--data-path", "s3://cimldatasets",
              "--s3-profile", "ibmcloud", "--s3-url", "http://127.0.0.1:9", ok=False)
    assert proc.returncode == 1
    assert "data path s3://cimldatasets cannot be reached" in proc.stderr
    assert "(ibmcloud) could not be found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", ["ciml-build-dataset", "ciml-train-model"])
def test_the_original_s3_options_are_ignored_with_a_local_data_path(tmp_path, script):
    """As in the original, the S3 options mean nothing when the data is not on S3."""
    sh = Shell(tmp_path, tmp_path / "data")
    proc = sh(script, "--dataset", "d", "--s3-profile", "ibmcloud",
              "--s3-url", "https://s3.example.com", ok=False)
    assert proc.returncode == 1
    assert f"data path {tmp_path / 'data'} does not exist" in proc.stderr
    assert "ibmcloud" not in proc.stderr and "s3.example.com" not in proc.stderr
    assert "Traceback" not in proc.stderr
