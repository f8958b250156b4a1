"""The ``gerrit`` reporter: a review comment on the change a failed run belongs to.

``ciml watch`` offers it (through ``ciml_watch_reporters``) when the
configuration file has a ``[gerrit]`` table with a ``url``::

    [gerrit]
    url = "https://review.example.org"
    credentials_file = "/etc/ciml/gerrit-credentials"   # one line: USER:HTTP-PASSWORD
    min_confidence = 0.8
    run_url = "https://ciml.example.org/runs/{run_id}"
    dry_run = false

For a prediction of a run that *failed*, predicted with at least
``min_confidence`` as a class other than ``passed``, on a change whose
Zuul metadata names its ``change`` and ``patchset``, it posts one comment
(Gerrit's ``POST /a/changes/{id}/revisions/{rev}/review``) with the
predicted cause, the explanation's top line and the run page's link.  At
most one comment per patchset and job: the reporter claims
``project~change,patchset,job`` in the prediction store before it posts
(atomically, so watchers sharing a store never both comment), and gives
the claim back when the post certainly failed (401, 500, refused
connection), so a later run of the job may comment.  A timed-out post
keeps its claim: it may have reached Gerrit, and a second comment is worse
than none.

Posts go out from a thread of the reporter's own, so that a slow Gerrit
never holds up predicting; every outcome is logged and counted, and
nothing a Gerrit server answers stops the watch.  ``dry_run`` logs the
comment it would post, and claims under another name, so that turning
dry-run off later still comments.
"""

import logging
import os
import queue
import stat
import threading
import urllib.parse

from ciml.base import parse_bool, positive_float, settings
from ciml.errors import ConfigError
from ciml.hookspecs import hookimpl

LOG = logging.getLogger(__name__)

#: The configuration table this plugin reads.
SECTION = "gerrit"
#: Gerrit's guard against cross-site script inclusion, before every JSON body.
XSSI_PREFIX = ")]}'"
#: The reporter name claims are kept under (``-dry-run`` appended in dry-run mode).
REPORTER = "gerrit"
#: Predicted classes that name no cause, not commented unless ``classes`` lists them.
NO_CAUSE = ("passed", "failed", "uncertain")
#: Posts waiting for the poster thread at most; more are dropped, and logged.
QUEUE_SIZE = 1000


def parse_gerrit_json(text):
    """Gerrit's JSON: the body without its ``)]}'`` first line, parsed."""
    import json

    body = text.lstrip("\ufeff")
    if body.startswith(XSSI_PREFIX):
        body = body[len(XSSI_PREFIX):]
    return json.loads(body) if body.strip() else {}


def read_credentials(path):
    """``(user, password)`` from a file whose first line is ``USER:HTTP-PASSWORD``.

    A file others can read is used, with a warning; the password is never
    part of a message.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh if line.strip() and
                     not line.lstrip().startswith("#")]
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Gerrit credentials file {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if not lines or ":" not in lines[0]:
        raise ConfigError(f"Gerrit credentials file {path}: expected one line "
                          "USER:HTTP-PASSWORD (the HTTP password of Gerrit's settings page)")
    user, _, password = lines[0].partition(":")
    if not user or not password:
        raise ConfigError(f"Gerrit credentials file {path}: the user or the password is "
                          "empty; expected USER:HTTP-PASSWORD")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        LOG.warning("the Gerrit credentials file %s can be read by others; "
                    "chmod 600 it", path)
    return user, password


def _classes(value):
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of class names, got {value!r}")
    return [str(v) for v in value]


class GerritReporter:
    """Comments the predicted cause of a failed run on its Gerrit change.

    A plugin object on ``ciml_prediction_made``, registered by ``ciml
    watch`` for its run.  :meth:`decide` is the pure part (what to post,
    or why not); :meth:`post` talks to Gerrit.
    """

    def __init__(self, url, *, credentials=None, min_confidence=0.8, run_url=None,
                 dry_run=False, timeout=30.0, classes=None, jobs=None, notify=None,
                 store=None):
        if not url:
            raise ConfigError("[gerrit] url is not set: the Gerrit server to comment on")
        if not 0 <= min_confidence <= 1:
            raise ConfigError(f"[gerrit] min_confidence is a probability between 0 and 1, "
                              f"not {min_confidence}")
        if credentials is None and not dry_run:
            raise ConfigError("[gerrit] credentials_file is not set: Gerrit needs an HTTP "
                              "user and password to comment (or set dry_run = true)")
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"[gerrit] url {url!r} is not an http(s) URL of a Gerrit server")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1") \
                and credentials is not None:
            LOG.warning("[gerrit] url %s is not https: the HTTP password travels in clear",
                        self.url)
        self._credentials = credentials
        self.min_confidence = float(min_confidence)
        self.run_url = run_url
        self.dry_run = dry_run
        self.timeout = timeout
        self.classes = list(classes) if classes else None
        self.jobs = list(jobs) if jobs else None
        self.notify = notify
        self.store = store
        self._own_store = None
        self.reporter = REPORTER + ("-dry-run" if dry_run else "")
        self.stats = {"posted": 0, "dry_run": 0, "skipped": 0, "duplicate": 0, "failed": 0}
        self._stats_lock = threading.Lock()
        self._queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._session = None
        self._thread = threading.Thread(target=self._poster, name="ciml-gerrit", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, conf, *, store=None, data_path=None):
        """The reporter the ``[gerrit]`` table describes."""
        dry_run = conf.get("dry_run", parse_bool, False)
        path = conf.get("credentials_file", str)
        credentials = read_credentials(os.path.expanduser(path)) if path else None
        run_url = conf.get("run_url", str)
        if not run_url:
            base = settings("serve").get("base_url", str)
            run_url = base.rstrip("/") + "/runs/{run_id}" if base else None
        own = None
        if store is None and data_path is not None:
            from ciml.prediction_store import PredictionStore, default_uri

            # Without a prediction store, the claims still need a durable home.
            store = own = PredictionStore(default_uri(data_path))
        reporter = cls(conf.get("url", str, required=True), credentials=credentials,
                   min_confidence=conf.get("min_confidence", positive_float, 0.8),
                   run_url=run_url, dry_run=dry_run,
                   timeout=conf.get("timeout", positive_float, 30.0),
                   classes=conf.get("classes", _classes), jobs=conf.get("jobs", _classes),
                   notify=conf.get("notify", str), store=store)
        reporter._own_store = own
        return reporter

    def __repr__(self):
        return f"GerritReporter({self.url!r}, dry_run={self.dry_run})"

    def _count(self, key):
        with self._stats_lock:
            self.stats[key] += 1

    # -- deciding --------------------------------------------------------------

    def decide(self, prediction):
        """``(key, endpoint path, body)`` of the comment to post, or ``(None, why not, None)``."""
        if prediction.get("error") or not prediction.get("predicted"):
            return None, "not predicted", None
        if prediction.get("status") != "failed":
            return None, f"the run did not fail (status {prediction.get('status')})", None
        predicted = str(prediction["predicted"])
        if self.classes is not None:
            if predicted not in self.classes:
                return None, f"class {predicted} is not among [gerrit] classes", None
        elif predicted in NO_CAUSE:
            return None, f"predicted {predicted}: no cause to report", None
        job = prediction.get("build_name") or ""
        if self.jobs is not None and job not in self.jobs:
            return None, f"job {job} is not among [gerrit] jobs", None
        probability = (prediction.get("probabilities") or {}).get(predicted)
        if probability is None or float(probability) < self.min_confidence:
            return None, (f"confidence {probability} below min_confidence "
                          f"{self.min_confidence}"), None
        metadata = prediction.get("metadata") or {}
        # Zuul's names, then subunit2sql's run_metadata names.
        change = metadata.get("change") or metadata.get("build_change")
        patchset = metadata.get("patchset") or metadata.get("build_patchset")
        if not change or not patchset or not str(change).isdigit() or \
                not str(patchset).isdigit():
            return None, "no Gerrit change and patchset in the run's metadata", None
        project = metadata.get("project")
        change_id = (urllib.parse.quote(str(project), safe="") + "~" if project else "") + \
            str(change)
        key = f"{change_id},{patchset},{job}"
        path = f"/a/changes/{change_id}/revisions/{patchset}/review"
        body = {"message": self.message(prediction, predicted, float(probability)),
                "tag": "autogenerated:ciml"}
        if self.notify:
            body["notify"] = self.notify
        return key, path, body

    def message(self, prediction, predicted, probability):
        """The comment's text: cause, confidence, the explanation's top line, the link."""
        from ciml.explain import summary

        job = prediction.get("build_name") or "this job"
        lines = [f"ciml: this failed run of {job} looks like {predicted} "
                 f"(probability {probability:.2f}, model {prediction.get('model')})."]
        why = summary(prediction.get("explanation"), top=1)
        if why:
            lines.append(f"Why: {why}")
        if self.run_url and prediction.get("run_id"):
            link = self.run_url.replace(
                "{run_id}", urllib.parse.quote(str(prediction["run_id"]), safe=""))
            lines.append(f"Details: {link}")
        return "\n\n".join(lines)

    # -- the hook --------------------------------------------------------------

    @hookimpl
    def ciml_prediction_made(self, prediction):
        key, path, body = self.decide(prediction)
        if key is None:
            self._count("skipped")
            LOG.debug("gerrit: not commenting on run %s: %s", prediction.get("run_id"), path)
            return
        try:
            self._queue.put_nowait((key, path, body, str(prediction.get("run_id"))))
        except queue.Full:
            self._count("failed")
            LOG.error("gerrit: %d comments are waiting already; not commenting on %s",
                      QUEUE_SIZE, key)

    def _poster(self):
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self.report(*item)
            except Exception:  # a last guard: the poster must outlive any one comment
                LOG.exception("gerrit: unexpected error")
            finally:
                self._queue.task_done()

    def report(self, key, path, body, run_id):
        """Claim ``key``, post (or log, in dry-run), record the outcome; returns it."""
        from ciml.errors import CimlError

        if self.store is not None:
            try:
                if not self.store.claim_report(self.reporter, key, run_id):
                    self._count("duplicate")
                    LOG.info("gerrit: %s was commented on already; not again", key)
                    return "duplicate"
            except CimlError as exc:
                # Without the claim, "at most one comment" cannot be kept: skip.
                self._count("failed")
                LOG.error("gerrit: not commenting on %s: %s", key, exc)
                return "failed"
        if self.dry_run:
            self._count("dry_run")
            LOG.info("gerrit (dry run): would post to %s%s: %s", self.url, path,
                     body["message"])
            self._finish(key, "dry run")
            return "dry-run"
        outcome, detail = self.post(path, body)
        if outcome == "posted":
            self._count("posted")
            LOG.info("gerrit: commented on %s (run %s)", key, run_id)
            self._finish(key, detail)
        else:
            self._count("failed")
            LOG.error("gerrit: could not comment on %s (run %s): %s", key, run_id, detail)
            if outcome == "failed" and self.store is not None:
                try:
                    self.store.release_report(self.reporter, key)
                except CimlError as exc:
                    LOG.error("gerrit: %s", exc)
            elif self.store is not None:
                self._finish(key, "unknown: " + detail)
        return outcome

    def _finish(self, key, detail):
        from ciml.errors import CimlError

        if self.store is None:
            return
        try:
            self.store.finish_report(self.reporter, key, detail)
        except CimlError as exc:
            LOG.error("gerrit: %s", exc)

    def post(self, path, body):
        """POST ``body``: ``("posted", detail)``, ``("failed", why)`` or ``("unknown", why)``.

        ``unknown``: the request timed out, so it may have been applied.
        """
        import requests

        from ciml.http import redact_text

        if self._session is None:
            self._session = requests.Session()
            self._session.auth = self._credentials
            self._session.headers.update({"Content-Type": "application/json; charset=UTF-8",
                                          "Accept": "application/json",
                                          "User-Agent": "ciml-gerrit-reporter"})
        url = self.url + path
        try:
            resp = self._session.post(url, json=body, timeout=self.timeout,
                                      allow_redirects=False)
        except requests.exceptions.ReadTimeout:
            return "unknown", f"no answer within {self.timeout:g} s"
        except requests.exceptions.RequestException as exc:
            return "failed", f"cannot reach {self.url}: {redact_text(str(exc))[:300]}"
        if resp.status_code == 401:
            return "failed", ("401: Gerrit refused the credentials; use the HTTP password "
                              "from Gerrit's settings page in credentials_file")
        if resp.status_code == 403:
            return "failed", "403: the Gerrit account may not comment on this change"
        if resp.status_code == 404:
            return "failed", f"404: Gerrit does not know {path.split('/')[3]}"
        if resp.status_code != 200:
            text = " ".join(resp.text.split())[:200]
            return "failed", f"{resp.status_code} from Gerrit: {redact_text(text)}"
        try:
            parse_gerrit_json(resp.text)
        except ValueError:
            return "failed", "Gerrit answered 200 but not with JSON (a proxy's page?)"
        return "posted", f"posted to {path}"

    def close(self, timeout=None):
        """Let the comments in hand go out (within the post timeout each), then stop."""
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            LOG.error("gerrit: comments still waiting are dropped")
        self._thread.join(timeout if timeout is not None else self.timeout * 2 + 5)
        with self._stats_lock:
            counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.stats.items() if v)
        if counts:
            LOG.info("gerrit%s: %s", " (dry run)" if self.dry_run else "", counts)
        if self._session is not None:
            self._session.close()
        if self._own_store is not None:
            self._own_store.close()


@hookimpl
def ciml_watch_reporters(options):
    """``[gerrit]`` in the configuration file: comment on failed runs' changes."""
    conf = settings(SECTION)
    if not conf or not conf.get("enabled", parse_bool, True):
        return None
    if not conf.get("url", str):
        LOG.warning("the configuration file's [gerrit] table has no url: not commenting")
        return None
    return GerritReporter.from_settings(conf, store=options.get("prediction_store"),
                                        data_path=options.get("data_path"))
