"""Keep native libraries' log chatter off a successful command's stderr.

TensorFlow's C++ runtime logs through absl straight to file descriptor 2
(``I0000 ... oneDNN custom operations are on``, ``E0000 ... NodeDef mentions
attribute use_unbounded_threadpool``): harmless lines that
``TF_CPP_MIN_LOG_LEVEL`` does not always hide and that read like failures.
While ciml runs as the ``ciml`` command, descriptor 2 goes through a pipe:
lines in the native log format go to this module's logger at DEBUG
(``-vv`` or ``--log-file`` shows them), fatal ones (``F...``) and everything
else (Python's own output, tracebacks, progress bars) pass through
unchanged.  ``CIML_NATIVE_STDERR=1`` turns the filter off.
"""

import atexit
import logging
import os
import queue
import re
import sys
import threading

LOG = logging.getLogger(__name__)

#: absl/glog lines (``E0000 00:00:1796186307.182601   20379 file.cc:682] ...``), the
#: older TensorFlow format (``2024-01-01 12:00:00.000000: I tensorflow/...``) and
#: absl's pre-initialization notice.  Fatal (``F``) lines are not matched.
NATIVE_LINE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written "
    rb"to STDERR\r?\n?$)")

_state = {"enabled": False, "installed": False, "tty": False}


def enable():
    """Allow :func:`install` in this process: only the CLI on a real stderr asks."""
    try:
        real = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    _state["enabled"] = real and os.environ.get("CIML_NATIVE_STDERR") != "1"


def is_terminal(stream):
    """``stream.isatty()``, answered for the real stderr also while fd 2 is the filter's pipe."""
    try:
        if _state["installed"] and stream.fileno() == 2:
            return _state["tty"]
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def is_native(line):
    """Whether a line (bytes) is native log chatter to keep off the terminal."""
    return bool(NATIVE_LINE.match(line))


class _Filter:
    def __init__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.read = read
        self.records = queue.SimpleQueue()
        self.pump = threading.Thread(target=self._pump, name="ciml-native-stderr",
                                     daemon=True)
        # Logging happens off the pump: a handler writing to stderr writes
        # into the very pipe the pump must keep draining.
        self.logger = threading.Thread(target=self._log, name="ciml-native-log",
                                       daemon=True)
        self.pump.start()
        self.logger.start()

    def _forward(self, data):
        while data:
            try:
                data = data[os.write(self.saved, data):]
            except InterruptedError:
                continue
            except OSError:
                return

    def _pump(self):
        try:
            self._filter_lines()
        except Exception:
            # Never leave fd 2 on a pipe nobody drains (writers would block):
            # give stderr back and pass the rest through unfiltered.
            try:
                os.dup2(self.saved, 2)
            except OSError:
                pass
            while True:
                try:
                    chunk = os.read(self.read, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self._forward(chunk)
            self.records.put(None)

    def _filter_lines(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.read, 65536)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            out = []
            for line in lines:
                if is_native(line):
                    self.records.put(line)
                else:
                    out.append(line + b"\n")
            # A partial line that cannot be a native log line (a progress bar
            # redrawn with \r) is shown now, not when its line ends.
            if pending and not pending[:1].isdigit() and pending[:1] not in b"IWEF":
                out.append(pending)
                pending = b""
            if out:
                self._forward(b"".join(out))
        if pending:
            if is_native(pending):
                self.records.put(pending)
            else:
                self._forward(pending)
        self.records.put(None)

    def _log(self):
        while True:
            line = self.records.get()
            if line is None:
                return
            # "native: " first, so that a console handler's copy of this
            # record never reads as a native line again.
            LOG.debug("native: %s", line.decode("utf-8", "replace").rstrip())

    def close(self):
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        # Restoring fd 2 closes the pipe's only write end: the pump drains
        # what is left and stops.
        os.dup2(self.saved, 2)
        self.pump.join(timeout=5)
        self.logger.join(timeout=5)
        os.close(self.read)


def install():
    """Route fd 2 through the filter, once, if ``enable()`` allowed it."""
    if not _state["enabled"] or _state["installed"]:
        return False
    _state["installed"] = True
    _state["tty"] = os.isatty(2)
    atexit.register(_Filter().close)
    return True
