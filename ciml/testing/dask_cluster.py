"""A real Dask cluster on loopback: a ``dask scheduler`` and ``dask worker`` processes.

For tests and benchmarks of ``--scheduler``: the scheduler and each worker
are separate processes started with Dask's own command line, as an
operator would start them, so what a task needs travels through Dask's
real network and pickling (an in-process ``LocalCluster`` would share
modules and memory with the test and hide what a remote worker lacks).

Dask is imported only by :meth:`LoopbackDaskCluster.client`; starting the
processes needs only ``dask`` and ``distributed`` installed.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackDaskCluster:
    """A scheduler and ``workers`` worker processes on 127.0.0.1.

    Each worker is ``dask worker --nworkers 1 --nthreads THREADS`` under a
    nanny, which starts a new worker process when one dies (as a real
    deployment's would).  Use as a context manager, or :meth:`start` then
    :meth:`close`.

    :param workers: how many worker processes (each its own ``dask worker``).
    :param threads: threads per worker process.
    :param directory: where the processes keep their files and logs
        (default: a new temporary folder).
    :param env: extra environment variables for the processes.
    """

    def __init__(self, workers: int = 2, threads: int = 1, *,
                 directory: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workers = int(workers)
        self.threads = int(threads)
        self._own_dir = directory is None
        self.directory = pathlib.Path(directory or tempfile.mkdtemp(prefix="ciml-dask-"))
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.dashboard_port = 0
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.worker_processes: list[subprocess.Popen[bytes]] = []
        self._client: Any = None

    @property
    def address(self) -> str:
        """The scheduler's address, ``tcp://127.0.0.1:PORT``."""
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 -- the child's
        try:
            # A session of its own: Ctrl-C in a test run reaches the test, and
            # close() stops the whole group (the nanny and its worker).
            return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.directory, start_new_session=True)
        finally:
            log.close()

    def start(self, timeout: float = 120.0) -> LoopbackDaskCluster:
        """Start the processes and wait until every worker has joined."""
        if self.scheduler is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port, self.dashboard_port = _free_port(), _free_port()
        self.scheduler = self._spawn("scheduler", [
            "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--dashboard-address", f"127.0.0.1:{self.dashboard_port}", "--no-show"])
        for i in range(self.workers):
            self.worker_processes.append(self._spawn(f"worker-{i}", [
                "worker", self.address, "--nworkers", "1", "--nthreads", str(self.threads),
                "--host", "127.0.0.1", "--no-dashboard", "--name", f"ciml-worker-{i}",
                "--local-directory", str(self.directory / f"worker-{i}")]))
        try:
            self.wait_for_workers(self.workers, timeout)
        except BaseException:
            self.close()
            raise
        return self

    def client(self) -> Any:
        """A ``distributed.Client`` of this cluster, for the test's own checks."""
        if self._client is None:
            from distributed import Client

            self._client = Client(self.address, timeout=30, set_as_default=False)
        return self._client

    def wait_for_workers(self, n: int | None = None, timeout: float = 120.0) -> None:
        """Wait until ``n`` (default: all) workers are connected to the scheduler."""
        deadline = time.monotonic() + timeout
        while True:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited ({self.scheduler.returncode}); "
                                   f"see {self.directory / 'scheduler.log'}")
            try:
                self.client().wait_for_workers(n or self.workers,
                                               timeout=max(1.0, deadline - time.monotonic()))
                return
            except OSError:
                # The scheduler is not listening yet: the client cannot connect.
                if time.monotonic() > deadline:
                    raise
                self._client = None
                time.sleep(0.5)

    def worker_pids(self) -> dict[str, int]:
        """``{worker address: pid}`` of the worker processes (not their nannies)."""
        return dict(self.client().run(os.getpid))

    def kill_worker(self, address: str | None = None) -> int:
        """SIGKILL one worker process (the first, or the one at ``address``); its
        nanny starts a new one.  Returns the pid killed."""
        pids = self.worker_pids()
        pid = pids[address] if address else pids[sorted(pids)[0]]
        os.kill(pid, signal.SIGKILL)
        return pid

    def logs(self) -> str:
        """The processes' output so far (for a failing test's message)."""
        parts = []
        for path in sorted(self.directory.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def close(self, grace: float = 10.0) -> None:
        """Stop the workers, then the scheduler; killed after ``grace`` seconds."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        procs = [*self.worker_processes, *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.worker_processes = []
        self.scheduler = None
        if self._own_dir:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LoopbackDaskCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
