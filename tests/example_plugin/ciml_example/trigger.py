"""A trigger that reads run ids from a file or standard input, one per line."""

import json
import logging
import sys
import threading

from ciml.base import Parameter, Trigger, parse_bool
from ciml.records import Event

LOG = logging.getLogger(__name__)


class LinesTrigger(Trigger):
    """Run ids read from a file or standard input, one per line

    A line is a run id (or build uuid), or a JSON object with ``run_id``,
    ``build_uuid``, ``build_name``, ``status`` or ``artifacts_url``.  Blank
    lines and ``#`` comments are skipped; a line that is not valid JSON but
    starts with ``{`` is logged and skipped.  ``path`` ``-`` is standard
    input.  With ``follow`` the file is watched for new lines (like
    ``tail -f``) until the watcher stops; otherwise the trigger ends at the
    end of the input.
    """

    name = "lines"
    parameters = (
        Parameter("path", default="-", help="File to read run ids from; - for stdin"),
        Parameter("follow", parse_bool, default=False,
                  help="Keep waiting for new lines at the end of the file"),
        Parameter("interval", float, default=1.0,
                  help="Seconds between checks for new lines when following"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        self._stop = threading.Event()

    def _event(self, line):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError as exc:
                LOG.warning("lines trigger: skipping a line that is not JSON: %s", exc)
                return None
            if not isinstance(data, dict) or not (data.get("run_id") or data.get("build_uuid")):
                LOG.warning("lines trigger: skipping a line without run_id or build_uuid")
                return None
            return Event(
                build_name=data.get("build_name") or getattr(self, "build_name", None),
                run_id=data.get("run_id"), build_uuid=data.get("build_uuid"),
                status=data.get("status"), artifacts_url=data.get("artifacts_url"),
                payload=data, trigger=self.name)
        return Event(build_name=getattr(self, "build_name", None), run_id=line,
                     payload=line, trigger=self.name)

    def run(self, on_event):
        if self.path == "-":
            self._read(sys.stdin, on_event)
            return
        with open(self.path, encoding="utf-8") as handle:
            self._read(handle, on_event)

    def _read(self, handle, on_event):
        pending = ""
        while not self._stop.is_set():
            chunk = handle.readline()
            if not chunk:
                if not self.follow:
                    break
                self._stop.wait(self.interval)
                continue
            pending += chunk
            if not pending.endswith("\n") and self.follow:
                continue  # a line still being written
            line, pending = pending.strip(), ""
            if not line or line.startswith("#"):
                continue
            event = self._event(line)
            if event is not None:
                on_event(event)
        if pending.strip() and not self._stop.is_set():
            event = self._event(pending.strip())
            if event is not None:
                on_event(event)

    def stop(self):
        self._stop.set()
