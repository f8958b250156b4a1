"""A demo-sized watched CI history for ``ciml serve``'s tests, and a server to browse it.

:func:`watched_history` does what an operator does, with the project's own
parts: the generator's CI history (a subunit2sql database and dstat logs),
``cache-data`` of all but the newest runs, a time-series dataset of their
status, a gbdt model (no TensorFlow), then ``ciml watch --trigger poll
--once`` in a fresh interpreter over the newest runs, which stores its
predictions where ``ciml serve`` reads them.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from subprocesses import stop_process

BUILD = "tempest-full"
DATASET = "demo-status"
EXPERIMENT = "demo-gbdt"
#: The newest runs, left out of the cache: the watcher predicts them.
WATCHED = 8
#: What one watched run's metadata says: it must show as text, never run.
SCRIPT = '<script>window.__ciml_xss = 1; alert("xss")</script>'
SCRIPT_KEY = "build_branch"


@dataclasses.dataclass
class Watched:
    data_path: object
    history: object
    #: The watcher's records, one per watched run, in its order.
    records: list
    #: The run whose metadata holds :data:`SCRIPT`.
    script_run: str
    watch_stderr: str


def _ciml_argv(*args):
    return [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
            *[str(a) for a in args]]


def run_ciml(*args, timeout=600, env=None):
    """``ciml ARGS`` in a fresh interpreter; ``(rc, stdout, stderr)``."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(_ciml_argv(*args), capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    return proc.returncode, proc.stdout, proc.stderr


def _put_script_in_metadata(db_uri, run_uuid):
    import sqlalchemy as sa

    from ciml_plugins.sources import subunit2sql_schema as schema

    engine = sa.create_engine(db_uri)
    try:
        with engine.begin() as conn:
            pk = conn.execute(sa.select(schema.runs.c.id)
                              .where(schema.runs.c.uuid == run_uuid)).scalar_one()
            conn.execute(schema.run_metadata.update()
                         .where(schema.run_metadata.c.run_id == pk)
                         .where(schema.run_metadata.c.key == SCRIPT_KEY)
                         .values(value=SCRIPT))
    finally:
        engine.dispose()


def watched_history(root, *, runs=60, seed=31, learn=True):
    """Build the history, the model and the watcher's predictions under ``root``.

    ``learn`` runs the watcher with ``--learn``, so the watched runs join the
    raw cache (their series are then drawn without fetching them again).
    """
    from ciml.collect import cache_data
    from ciml.dataset import build_dataset
    from ciml.experiment import Experiment
    from ciml.generator import generate_history
    from ciml.model import train_model
    from ciml.paths import DataPath
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

    root = pathlib.Path(root)
    data_path = DataPath(root / "ciml-data")
    history = generate_history(root / "history", runs=runs, seed=seed, jobs=(BUILD,),
                               tests=False, bad_fraction=0.0)
    starts = sorted(r["start"] for r in history.runs)
    since = starts[-WATCHED]
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(data_path, source, DstatMetricSource(), BUILD, until=since, progress=False)
    build_dataset(data_path, DATASET, BUILD, sample_interval="1min", class_label="status",
                  seed=0, progress=False)
    Experiment.create(EXPERIMENT, "gbdt", {"trees": 40, "min_data_in_leaf": 3}).save(data_path)
    train_model(data_path, DATASET, EXPERIMENT, progress=False)

    newest = max(history.runs, key=lambda r: r["start"])
    _put_script_in_metadata(history.db_uri, newest["run_id"])
    rc, out, err = run_ciml(
        "--data-path", data_path.root, "watch", "--trigger", "poll", "--once",
        "--since", since.isoformat(), "--dataset", DATASET, "--experiment", EXPERIMENT,
        "--source", "subunit2sql", "--db-uri", history.db_uri, "--allow-scheme", "file",
        "--status-interval", "0", "--fetch-attempts", "1", *(["--learn"] if learn else []))
    if rc != 0:
        raise RuntimeError(f"ciml watch failed (exit {rc}): {err[-3000:]}")
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Watched(data_path=data_path, history=history, records=records,
                   script_run=newest["run_id"], watch_stderr=err)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(data_path, *extra, env=None, log=None, timeout=120):
    """``ciml serve`` on a free loopback port, in its own process; yields its base URL.

    Waits until the home page answers; the process is stopped (SIGTERM,
    then SIGKILL) on exit, and its output goes to ``log`` (a path).
    """
    port = free_port()
    log = pathlib.Path(log or os.devnull)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _ciml_argv("--data-path", data_path.root, "serve", "--host", "127.0.0.1",
                       "--port", port, *extra),
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ciml serve exited with {proc.returncode}: "
                                   + _tail(log))
            try:
                with urllib.request.urlopen(url + "/", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ciml serve did not answer on {url} within {timeout} s: "
                                   + _tail(log))
            time.sleep(0.3)
        yield url
    finally:
        stop_process(proc, grace=20)


def _tail(log):
    try:
        return pathlib.Path(log).read_text(errors="replace")[-3000:]
    except OSError:
        return "(no output)"
