"""Worker processes that never outlive the command that started them.

``cache-data`` and ``build-dataset`` start helper processes (a fork server,
parse or load workers).  When the command dies without cleaning up (``kill
-9``, the OOM killer), nothing tells them: a worker blocked on its task
queue waits for ever, and one in the middle of a task would go on to write
the raw cache's index for a command that is gone.  So every worker calls
:func:`die_with_parent` when it starts:

* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the kernel kill it the
  moment its parent (the fork server, which itself exits when the command
  does) dies;
* everywhere, a watchdog thread checks once a second that the command
  still runs, and ends the worker when it does not;
* :func:`owner_alive` lets a worker check, just before it commits work,
  that someone still wants it.
"""

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

from ciml import fileutil

LOG = logging.getLogger(__name__)

#: How often the watchdog looks for the command (seconds).
WATCH_INTERVAL_S = 1.0

_PR_SET_PDEATHSIG = 1
_OWNER = {}


def _set_parent_death_signal(sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` when the parent dies; ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return True


def _running(pid):
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    if not fileutil.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # The state follows the command name, which is in parentheses.
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_alive():
    """Whether the command this worker works for still runs (``True`` outside workers)."""
    owner = _OWNER.get("pid")
    if owner is None:
        return True
    return os.getppid() == _OWNER["ppid"] and _running(owner)


def _watch():
    stop = _OWNER["stop"]
    while not stop.wait(WATCH_INTERVAL_S):
        if not owner_alive():
            # Nothing to hand back to and no one to clean up for: a plain
            # exit could block on the queues' feeder threads.
            os._exit(1)


def die_with_parent(owner_pid):
    """Make this (worker) process end when the command ``owner_pid`` ends.

    Call it first thing in a worker's initializer.  If the owner is already
    gone, the worker ends at once.
    """
    _OWNER.update(pid=int(owner_pid), ppid=os.getppid(), stop=threading.Event())
    _set_parent_death_signal()
    if not owner_alive():
        os._exit(1)
    threading.Thread(target=_watch, name="ciml-owner-watch", daemon=True).start()


__all__ = ["die_with_parent", "owner_alive"]
