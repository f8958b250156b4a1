"""A MariaDB server of a test's own: its datadir in a temporary folder, its own port.

Tests that pause (SIGSTOP), stop and restart a database use this, never the
shared server on 3306 that other tests (and other sessions) rely on.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

from subprocesses import stop_process

#: Where Debian puts the server, which is not on a normal user's PATH.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin")


def find(name):
    return shutil.which(name) or next(
        (str(pathlib.Path(d, name)) for d in _SBIN if pathlib.Path(d, name).is_file()), None)


def missing_binaries():
    """The server binaries this machine lacks (empty when it can run one)."""
    return [b for b in ("mariadb-install-db", "mariadbd") if find(b) is None]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateMariaDB:
    """One mariadbd on 127.0.0.1 with a throwaway datadir; user root, no password."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.datadir = self.folder / "data"
        self.port = None
        self.proc = None
        self._install()

    def _install(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [find("mariadb-install-db"), "--no-defaults", f"--datadir={self.datadir}",
               "--auth-root-authentication-method=normal", "--skip-test-db",
               "--skip-name-resolve"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        log = self.folder / "install.log"
        with open(log, "wb") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=300,
                                cwd=self.folder).returncode
        if rc != 0:
            raise RuntimeError(f"mariadb-install-db failed ({rc}): {log.read_text()[-2000:]}")

    def start(self, timeout=120):
        """Start (or restart) the server, on the same port when it had one."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        for _attempt in range(5):
            port = self.port or _free_port()
            log = self.folder / "server.log"
            cmd = [find("mariadbd"), "--no-defaults", f"--datadir={self.datadir}",
                   f"--port={port}", "--bind-address=127.0.0.1",
                   f"--socket={self.folder / 'mysqld.sock'}",
                   f"--pid-file={self.folder / 'mysqld.pid'}", f"--log-error={log}",
                   # Small: the test machine is shared.
                   "--innodb-buffer-pool-size=8M", "--innodb-log-file-size=4M",
                   "--performance-schema=OFF", "--skip-name-resolve", "--skip-log-bin"]
            if os.geteuid() == 0:
                cmd.append("--user=root")
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if self._wait_ready(port, timeout):
                self.port = port
                return self
            self.proc.kill()
            self.proc.wait()
            if "Address already in use" not in log.read_text(errors="replace") or self.port:
                raise RuntimeError(f"mariadbd did not start: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
        raise RuntimeError("mariadbd found no free port")

    def _wait_ready(self, port, timeout):
        import pymysql

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                pymysql.connect(host="127.0.0.1", port=port, user="root",
                                connect_timeout=2, read_timeout=5).close()
                return True
            except pymysql.err.MySQLError:
                time.sleep(0.1)
        return False

    def url(self, database):
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def create_database(self, name):
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                               connect_timeout=5, read_timeout=30, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return self.url(name)

    def pause(self):
        """SIGSTOP: the server keeps its connections open and answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        """Stop the server (connections refused until :meth:`start`)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        stop_process(self.proc, grace=60)

    def close(self):
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
