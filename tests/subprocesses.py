"""Stopping the servers that tests start (databases, brokers, SeaweedFS, ciml serve)."""

import contextlib
import os
import signal
import subprocess


def stop_process(proc, grace=10.0, group=False):
    """SIGTERM ``proc``, then SIGKILL it if it has not exited after ``grace`` seconds.

    Servers flush their state on SIGTERM (Mosquitto its persistence file,
    databases their logs), so they get the chance first; some (SeaweedFS)
    ignore it for a while, hence the kill.  ``group`` signals the process
    group, for servers that fork helpers of their own.  Returns at once if
    the process has already exited.
    """
    if proc is None or proc.poll() is not None:
        return

    def send(sig):
        # The process may exit between poll() and the signal.
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=30)
