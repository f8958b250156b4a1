"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, one loopback port.

PostgreSQL refuses to run as root; as root the server runs as the
``postgres`` account the Debian package creates (``runuser``), in a folder
that account owns.  Trust authentication on 127.0.0.1 only, fsync off: it
holds test data for the length of a session.
"""

import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

from subprocesses import stop_process


def find(name):
    """A PostgreSQL program on PATH or in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def missing():
    """Why no private server can run here, or ``None``."""
    gone = [n for n in ("initdb", "postgres") if find(n) is None]
    if gone:
        return f"{', '.join(gone)} not installed (Debian: apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres account to run the server as"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """One ``postgres`` on 127.0.0.1 with a throwaway data folder; user postgres, trust."""

    def __init__(self):
        # Not under pytest's tmp folder: its parents are private to root.
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="ciml-pg-"))
        self.port = None
        self.proc = None
        self._as = []
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def start(self, timeout=60):
        import psycopg

        data = self.folder / "data"
        log = self.folder / "initdb.log"
        with open(log, "wb") as fh:
            rc = subprocess.run(self._as + [find("initdb"), "-D", str(data), "-A", "trust",
                                            "-U", "postgres", "-E", "UTF8", "--no-sync"],
                                stdout=fh, stderr=subprocess.STDOUT, timeout=300).returncode
        if rc != 0:
            raise RuntimeError(f"initdb failed ({rc}): {log.read_text()[-2000:]}")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            self._as + [find("postgres"), "-D", str(data), "-p", str(self.port),
                        "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1",
                        "-c", "fsync=off", "-c", "shared_buffers=16MB"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                                connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("the private PostgreSQL server did not start")

    def url(self, database="postgres"):
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def close(self):
        stop_process(self.proc, grace=30)
        shutil.rmtree(self.folder, ignore_errors=True)
