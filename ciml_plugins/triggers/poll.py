"""The ``poll`` trigger: ask the result source for new runs, with a cursor that survives restarts.

A result source can only be asked for runs that *started* after some time,
but runs appear in it when they *finish*: a run that started before the
last poll may show up only later.  So each poll looks back ``lookback``
seconds before the cursor (the latest start seen) and remembers the ids
of the runs it already announced inside that window.  Runs that share a
timestamp with the cursor are told apart by these ids too.  The cursor and
the ids are written atomically to ``<data path>/state/`` each time the
watcher *acknowledges* a run (its record was emitted), never when it is
merely announced: a run queued when the watcher stops or dies is announced
again at the next start.  The cursor never moves past a run still in hand,
so the next query window always reaches back to it.

On its very first poll (no state yet) the trigger records the runs already
in the source without announcing them, unless ``since`` is given: watching
starts *now*, not at the beginning of history.
"""

import datetime as dt
import logging
import threading
import time

from ciml.base import Parameter, Trigger, parse_bool
from ciml.errors import CimlError, ConfigError
from ciml.fileutil import atomic_write_json, read_json, safe_filename
from ciml.hookspecs import hookimpl
from ciml.records import Event

LOG = logging.getLogger(__name__)

STATE_VERSION = 1


def _utcnow():
    return dt.datetime.now(dt.timezone.utc)


def _aware(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _parse_since(value):
    try:
        return _aware(value)
    except ValueError as exc:
        raise ValueError(f"expected an ISO 8601 date and time: {exc}") from None


_parse_since.type_name = "ISO time"  # type: ignore[attr-defined]  # what plugin show prints


class PollCursor:
    """The persisted position of one poll trigger: latest start seen, ids near it."""

    def __init__(self, path):
        self.path = path
        self.cursor = None          # aware datetime: latest run start announced
        self.seen = {}              # run id -> start (ISO) or first-seen time
        self.exists = False
        self.load()

    def load(self):
        try:
            state = read_json(self.path)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise CimlError(f"the poll state {self.path} is unreadable ({exc}); "
                            "remove it to start watching from now") from None
        self.cursor = _aware(state.get("cursor"))
        self.seen = dict(state.get("seen") or {})
        self.exists = True

    def save(self):
        atomic_write_json(self.path, {
            "version": STATE_VERSION,
            "cursor": self.cursor.isoformat() if self.cursor else None,
            "seen": self.seen,
        })
        self.exists = True

    def add(self, run_id, start, limit=None):
        """Record ``run_id`` as done; the cursor moves to its start, but not past ``limit``.

        ``limit`` is the earliest start of the runs still in hand: the next
        window (cursor - lookback) must still reach them after a restart.
        """
        self.seen[run_id] = (start or _utcnow()).isoformat()
        if start is not None and limit is not None:
            start = min(start, limit)
        if start is not None and (self.cursor is None or start > self.cursor):
            self.cursor = start

    def prune(self, lookback):
        """Forget ids that are older than any future query window."""
        if self.cursor is None:
            return
        limit = self.cursor - dt.timedelta(seconds=lookback)
        self.seen = {k: v for k, v in self.seen.items() if _aware(v) >= limit}


class PollTrigger(Trigger):
    """Poll the result source for new runs of the build name, resuming where it stopped

    Every ``interval`` seconds, asks the configured result source for runs
    newer than a cursor kept in the data path (plus a look-back window for
    runs that finish late), and announces each run once, across restarts.
    """

    name = "poll"
    parameters = (
        Parameter("interval", type=float, default=60.0, help="seconds between polls"),
        Parameter("once", type=parse_bool, default=False,
                  help="poll once and return (for scripts and cron)"),
        Parameter("lookback", type=float, default=6 * 3600.0,
                  help="seconds before the cursor to look again for runs that "
                       "finished late"),
        Parameter("since", type=_parse_since,
                  help="on the first poll, announce runs that started at or after this "
                       "ISO time (default: only runs that appear after watching starts)"),
        Parameter("state_name", help="name of the cursor file (default: from the source "
                                     "and build name)"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        self._stopping = False
        self.stats = {"polls": 0, "events": 0, "errors": 0}
        self.cursor = None
        # Runs announced and not yet acknowledged (id -> start); acknowledged
        # from the watcher's threads while run() polls.
        self._in_hand = {}
        self._done_starts = []  # starts acknowledged while an earlier run was in hand
        self._lock = threading.Lock()

    def setup(self, *, data_path, build_name=None, result_source=None):
        super().setup(data_path=data_path, build_name=build_name, result_source=result_source)
        if result_source is None:
            raise ConfigError("the poll trigger needs a result source (--source)")
        if not build_name:
            raise ConfigError("the poll trigger needs a build name")
        name = self.state_name or f"poll-{result_source.name or 'source'}-{build_name}"
        self.state_path = data_path.state / (safe_filename(name) + ".json")
        self.cursor = PollCursor(self.state_path)

    def poll(self, on_event):
        """One poll: announce the new runs; returns how many were announced."""
        cursor = self.cursor
        self.stats["polls"] += 1
        with self._lock:
            baseline = not cursor.exists and self.since is None
            if cursor.exists and cursor.cursor is not None:
                window = cursor.cursor - dt.timedelta(seconds=self.lookback)
            elif cursor.exists:
                window = None
            elif self.since is not None:
                window = self.since
            else:
                window = _utcnow() - dt.timedelta(seconds=self.lookback)
        announced = 0
        runs = self.result_source.list_runs(self.build_name, since=window)
        try:
            for run in runs:
                if self._stopping:
                    break
                with self._lock:
                    known = run.id in cursor.seen or run.id in self._in_hand
                    if not known and baseline:
                        cursor.add(run.id, _aware(run.start))
                if known or baseline:
                    continue
                event = Event(build_name=run.build_name, run_id=run.id,
                              build_uuid=run.build_uuid, status=run.status,
                              artifacts_url=run.artifacts_url, start=_aware(run.start),
                              metadata=dict(run.metadata or {}), payload=run, trigger="poll")
                with self._lock:
                    # In hand before it is handed over: the watcher may
                    # acknowledge it (another job) before on_event returns.
                    self._in_hand[run.id] = _aware(run.start)
                if on_event(event) is False:
                    # Refused while stopping: left unrecorded, so announced next time.
                    with self._lock:
                        self._in_hand.pop(run.id, None)
                    break
                announced += 1
                self.stats["events"] += 1
        finally:
            close = getattr(runs, "close", None)
            if close is not None:
                close()
        with self._lock:
            if baseline:
                # The cursor starts at now, not at the newest run recorded: the
                # next window (cursor - lookback) must not reach back past this
                # one, or older runs this poll never listed would be announced.
                now = _utcnow()
                if cursor.cursor is None or cursor.cursor < now:
                    cursor.cursor = now
                LOG.info("poll: first run for %s; %d existing runs recorded, watching from "
                         "now", self.build_name, len(cursor.seen))
            cursor.prune(self.lookback)
            cursor.save()
        return announced

    def acknowledge(self, event):
        """The run's record was emitted: remember it, and move the cursor if it may."""
        with self._lock:
            if event.run_id not in self._in_hand:
                return
            start = self._in_hand.pop(event.run_id)
            limit = min((s for s in self._in_hand.values() if s is not None), default=None)
            self.cursor.add(event.run_id, start, limit)
            if limit is not None and start is not None and start > limit:
                self._done_starts.append(start)
            # Starts acknowledged while an earlier run was in hand move the
            # cursor once nothing earlier is left.
            waiting, self._done_starts = self._done_starts, []
            for done in waiting:
                if limit is not None and done > limit:
                    self._done_starts.append(done)
                elif self.cursor.cursor is None or done > self.cursor.cursor:
                    self.cursor.cursor = done
            self.cursor.save()

    def run(self, on_event):
        self._stopping = False
        while not self._stopping:
            try:
                self.poll(on_event)
            except CimlError as exc:
                # A database restart must not end a watcher: try again later.
                self.stats["errors"] += 1
                if self.once:
                    raise
                LOG.warning("poll of %s failed: %s; trying again in %.0f s",
                            self.build_name, exc, self.interval)
            except Exception:
                self.stats["errors"] += 1
                LOG.exception("poll of %s failed unexpectedly; trying again in %.0f s",
                              self.build_name, self.interval)
            if self.once:
                return
            deadline = time.monotonic() + self.interval
            while not self._stopping and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def stop(self):
        self._stopping = True


@hookimpl
def ciml_register_triggers(register):
    register(PollTrigger)
