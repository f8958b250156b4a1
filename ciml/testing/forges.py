"""Fake GitHub Actions, GitLab CI and Jenkins servers on loopback, fed from a generated history.

Each server answers the part of its system's REST API that ciml's result
sources read, in the documented format (field names, paging, status codes,
rate-limit headers, error bodies), and serves each run's dstat file the
way that system keeps artifacts: a zip archive (GitHub Actions artifacts,
GitLab job artifacts) or a plain file under the build (Jenkins).  They are
:class:`ciml.testing.servers.CIServer` subclasses, so the same faults
(``status``, ``drop``, ``truncate``, ``html``, ``latency``, ``headers``)
apply to any path::

    from ciml.generator import generate_history
    from ciml.testing.forges import GitHubServer

    history = generate_history(tmp / "hist", runs=40, seed=1, tests=False)
    with GitHubServer.from_history(history, token="t0ken") as server:
        server.fault("*/actions/runs", status=429, times=1, headers={"Retry-After": "1"})
        # ciml cache-data --source github --github-url {server.api_url} --repo octo/ci ...

A generated run (one job's build) becomes:

* GitHub: a workflow run of the workflow ``CI`` (``.github/workflows/ci.yml``)
  holding that job (and, for some runs, a ``lint`` job, so that a run has
  several jobs), with an artifact ``dstat-<job>`` (a zip with the dstat
  file) unless the run's file is missing;
* GitLab: a pipeline with that job, its ``artifacts_file`` the zip;
* Jenkins: a build of the job ``<job>`` (in the folder ``ci``), the dstat
  file archived as ``dstat-csv_log.txt[.gz]``.

The servers keep everything in memory; a history of a few hundred runs is
a few MB.
"""

import datetime as dt
import hashlib
import io
import json
import re
import time
import urllib.parse
import zipfile

from ciml.testing.servers import CIServer

UTC = dt.timezone.utc

#: generated Zuul-style result -> GitHub job conclusion.
_GITHUB_CONCLUSION = {"SUCCESS": "success", "FAILURE": "failure", "TIMED_OUT": "timed_out",
                      "POST_FAILURE": "failure", "RETRY_LIMIT": "failure"}


def _iso(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(text):
    return hashlib.sha1(text.encode()).hexdigest()


def _json(status, data, headers=None):
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, \
        json.dumps(data).encode()


def _zip(members):
    """A zip archive (deflated) of ``{name: bytes}``, as CI systems build them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buf.getvalue()


def _dstat_member(history, run):
    """``(file name, bytes)`` of a generated run's dstat file, or ``None`` when missing."""
    import pathlib
    import urllib.request

    if not run.get("dstat_path"):
        return None
    url = run["artifacts_url"]
    path = urllib.parse.urlparse(url).path
    if url.startswith("file:"):
        candidates = [pathlib.Path(urllib.request.url2pathname(path))]
    else:
        # Served from a base URL: the run's folder is a tail of the URL path.
        parts = [p for p in path.split("/") if p]
        candidates = [history.logs_dir.joinpath(*parts[i:]) for i in range(len(parts))]
    for folder in candidates:
        target = folder / run["dstat_path"]
        if target.is_file():
            return run["dstat_path"].rsplit("/", 1)[-1], target.read_bytes()
    raise FileNotFoundError(f"the dstat file of run {run['run_id']} is not under "
                            f"{history.logs_dir}")


def _page_params(query, default=30, most=100):
    try:
        per_page = int(query.get("per_page", [default])[0])
        page = int(query.get("page", [1])[0])
    except ValueError:
        return None
    if per_page < 1 or page < 1:
        return None
    return min(per_page, most), page


def _link_header(base_url, path, query, page, per_page, total):
    """GitHub's and GitLab's ``Link`` header for a page of ``total`` items."""
    last = max(1, -(-total // per_page))
    links = []

    def url(n):
        params = {k: v[0] for k, v in query.items()}
        params.update(page=str(n), per_page=str(per_page))
        return f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"

    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        links.append(f'<{url(1)}>; rel="first"')
        links.append(f'<{url(page - 1)}>; rel="prev"')
    return ", ".join(links)


def _created_match(spec, when):
    """GitHub's ``created`` search qualifier: ``>=X``, ``<X``, ``X..Y``, ``X``."""
    from ciml_plugins.sources.common import as_utc

    def parse(text):
        text = text.strip()
        if len(text) == 10:
            text += "T00:00:00Z"
        return as_utc(text)

    if ".." in spec:
        low, high = spec.split("..", 1)
        return (low in ("", "*") or when >= parse(low)) and (
            high in ("", "*") or when <= parse(high))
    for op, test in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b),
                     (">", lambda a, b: a > b), ("<", lambda a, b: a < b)):
        if spec.startswith(op):
            return test(when, parse(spec[len(op):]))
    day = parse(spec)
    return day <= when < day + dt.timedelta(days=1)


class _ForgeServer(CIServer):
    """What the three fakes share: a base path, a token check, request counting."""

    def __init__(self, *, token=None, latency=0.0):
        super().__init__(root=None, builds=None, latency=latency)
        self.api_token = token
        #: Paths answered 401 because the token was missing or wrong.
        self.refused = []

    def url_for(self, path):
        return self.url.rstrip("/") + path


# -- GitHub ----------------------------------------------------------------------------------


class GitHubServer(_ForgeServer):
    """GitHub's Actions REST API for one repository, as github.com or GitHub Enterprise.

    Answers ``/repos/{owner}/{repo}/actions/runs`` (``branch``, ``event``,
    ``status``, ``created``, ``per_page``, ``page``; Link-header paging;
    newest first), ``/actions/workflows/{file}/runs``, ``/actions/runs/{id}``,
    ``/actions/runs/{id}/jobs``, ``/actions/jobs/{id}``,
    ``/actions/runs/{id}/artifacts`` and ``/actions/artifacts/{id}/zip``,
    which redirects (302) to a signed storage URL on another host name
    (``localhost`` instead of ``127.0.0.1``) that refuses a request carrying
    an ``Authorization`` header, as GitHub's storage does.  With
    ``enterprise=True`` everything is under ``/api/v3``.

    ``token``: requests must carry ``Authorization: Bearer <token>`` (or
    ``token <token>``), else 401 ``Bad credentials``.  ``rate_limit``: that
    many API requests, then 403 with ``X-RateLimit-Remaining: 0`` until
    ``rate_reset`` seconds later; every answer carries the
    ``X-RateLimit-*`` headers.
    """

    def __init__(self, *, repo="octo/ci", token=None, enterprise=False, rate_limit=None,
                 rate_reset=3600, latency=0.0):
        super().__init__(token=token, latency=latency)
        self.repo = repo
        self.prefix = "/api/v3" if enterprise else ""
        self.runs = []        # workflow run dicts, newest first
        self.jobs = {}        # run id -> [job dicts]
        self.artifacts = {}   # run id -> [artifact dicts]
        self.archives = {}    # artifact id -> zip bytes
        self.rate_limit = rate_limit
        self.rate_reset = rate_reset
        self._used = 0
        self._reset_at = int(time.time()) + rate_reset

    @property
    def api_url(self):
        """The ``--github-url`` to give the ``github`` source."""
        return self.url.rstrip("/") + self.prefix

    # -- building the history ------------------------------------------------------

    @classmethod
    def from_history(cls, history, *, workflow="CI", expired=(), **kwargs):
        """A server holding a generated :class:`ciml.generator.History`.

        ``expired``: generated run ids whose artifact has expired.
        """
        server = cls(**kwargs)
        server.add_history(history, workflow=workflow, expired=expired)
        return server

    def add_history(self, history, *, workflow="CI", expired=()):
        owner, name = self.repo.split("/", 1)
        api = "{api}"   # filled in when answering: the port is not known yet
        runs = []
        for i, run in enumerate(history.runs):
            run_id = 9_000_000 + i
            job_id = 70_000_000 + 10 * i
            start = run["start"]
            end = start + dt.timedelta(seconds=float(run["duration"]))
            created = start - dt.timedelta(seconds=20)
            event = {"gate": "push", "periodic": "schedule"}.get(run["pipeline"],
                                                                  "pull_request")
            branch = "main" if event != "pull_request" else f"change-{run['change']}"
            sha = _sha(run["build_uuid"])
            conclusion = _GITHUB_CONCLUSION.get(run["result"], "failure")
            provider = run["node_provider"]
            job = {
                "id": job_id, "run_id": run_id,
                "run_url": f"{api}/repos/{owner}/{name}/actions/runs/{run_id}",
                "run_attempt": 1, "node_id": f"CR_{job_id}", "head_sha": sha,
                "url": f"{api}/repos/{owner}/{name}/actions/jobs/{job_id}",
                "html_url": f"https://github.com/{owner}/{name}/actions/runs/{run_id}"
                            f"/job/{job_id}",
                "status": "completed", "conclusion": conclusion,
                "created_at": _iso(created), "started_at": _iso(start),
                "completed_at": _iso(end), "name": run["build_name"],
                "steps": [
                    {"name": "Set up job", "status": "completed", "conclusion": "success",
                     "number": 1, "started_at": _iso(start), "completed_at": _iso(start)},
                    {"name": "Run tests", "status": "completed", "conclusion": conclusion,
                     "number": 2, "started_at": _iso(start), "completed_at": _iso(end)},
                ],
                "check_run_url": f"{api}/repos/{owner}/{name}/check-runs/{job_id}",
                "labels": ["self-hosted", "linux", "x64", provider],
                "runner_id": 100 + i % 7,
                "runner_name": run["node"], "runner_group_id": 1,
                "runner_group_name": run["family"], "workflow_name": workflow,
                "head_branch": branch,
            }
            jobs = [job]
            if i % 3 == 0:
                # A second job of the same workflow run, which lists must skip.
                jobs.append({**job, "id": job_id + 1, "name": "lint", "conclusion": "success",
                             "url": f"{api}/repos/{owner}/{name}/actions/jobs/{job_id + 1}",
                             "labels": ["ubuntu-latest"], "runner_name": "GitHub Actions 7",
                             "runner_group_name": "GitHub Actions"})
            if i % 5 == 1:
                jobs.append({**job, "id": job_id + 2, "name": run["build_name"] + "-docs",
                             "conclusion": "skipped", "started_at": _iso(end),
                             "completed_at": _iso(end), "steps": [], "runner_name": None,
                             "labels": ["ubuntu-latest"]})
            run_conclusion = "success" if all(
                j["conclusion"] in ("success", "skipped") for j in jobs) else "failure"
            wf_run = {
                "id": run_id, "name": workflow, "node_id": f"WFR_{run_id}",
                "head_branch": branch, "head_sha": sha,
                "path": ".github/workflows/ci.yml", "display_title": f"Build {i}",
                "run_number": i + 1, "event": event, "status": "completed",
                "conclusion": run_conclusion, "workflow_id": 161335,
                "check_suite_id": 40_000_000 + i,
                "url": f"{api}/repos/{owner}/{name}/actions/runs/{run_id}",
                "html_url": f"https://github.com/{owner}/{name}/actions/runs/{run_id}",
                "created_at": _iso(created), "updated_at": _iso(end),
                "run_attempt": 1, "run_started_at": _iso(created),
                "jobs_url": f"{api}/repos/{owner}/{name}/actions/runs/{run_id}/jobs",
                "logs_url": f"{api}/repos/{owner}/{name}/actions/runs/{run_id}/logs",
                "artifacts_url": f"{api}/repos/{owner}/{name}/actions/runs/{run_id}/artifacts",
                "workflow_url": f"{api}/repos/{owner}/{name}/actions/workflows/161335",
                "actor": {"login": "octocat", "id": 1, "type": "User"},
                "head_commit": {"id": sha, "tree_id": _sha(sha), "message": f"Change {i}",
                                "timestamp": _iso(created)},
                "repository": {"id": 1296269, "name": name, "full_name": self.repo},
            }
            runs.append(wf_run)
            self.jobs[run_id] = jobs
            member = _dstat_member(history, run)
            artifacts = []
            if member is not None:
                art_id = 5_000_000 + i
                artifact_name = "dstat-" + run["build_name"]
                is_expired = run["run_id"] in expired
                artifacts.append({
                    "id": art_id, "node_id": f"A_{art_id}", "name": artifact_name,
                    "size_in_bytes": len(member[1]),
                    "url": f"{api}/repos/{owner}/{name}/actions/artifacts/{art_id}",
                    "archive_download_url":
                        f"{api}/repos/{owner}/{name}/actions/artifacts/{art_id}/zip",
                    "expired": is_expired, "created_at": _iso(end),
                    "expires_at": _iso(end + dt.timedelta(days=90)), "updated_at": _iso(end),
                    "digest": "sha256:" + hashlib.sha256(member[1]).hexdigest(),
                    "workflow_run": {"id": run_id, "repository_id": 1296269,
                                     "head_repository_id": 1296269, "head_branch": branch,
                                     "head_sha": sha},
                })
                if not is_expired:
                    self.archives[art_id] = _zip({member[0]: member[1]})
            self.artifacts[run_id] = artifacts
        # Newest first, as GitHub lists them; a run still going is listed too.
        runs.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        if runs:
            going = {**runs[0], "id": 8_999_999, "status": "in_progress", "conclusion": None,
                     "run_number": len(runs) + 1}
            self.jobs[going["id"]] = [{**self.jobs[runs[0]["id"]][0], "id": 69_999_999,
                                       "run_id": going["id"], "status": "in_progress",
                                       "conclusion": None, "completed_at": None}]
            self.artifacts[going["id"]] = []
            runs.insert(0, going)
        self.runs = runs + self.runs

    # -- answering ------------------------------------------------------------------

    def _fill(self, data):
        return json.loads(json.dumps(data).replace("{api}", self.api_url))

    def _limit_headers(self):
        if self.rate_limit is None:
            return {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999",
                    "X-RateLimit-Reset": str(self._reset_at), "X-RateLimit-Used": "1",
                    "X-RateLimit-Resource": "core"}
        left = max(0, self.rate_limit - self._used)
        return {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": str(self._reset_at),
                "X-RateLimit-Used": str(self._used), "X-RateLimit-Resource": "core"}

    def route(self, method, path, query, headers):
        if path.startswith("/_blob/"):
            return self._blob(path, headers)
        if not path.startswith(self.prefix + "/repos/"):
            return None
        if self.api_token:
            auth = headers.get("Authorization") or headers.get("authorization") or ""
            if auth not in (f"Bearer {self.api_token}", f"token {self.api_token}"):
                with self._lock:
                    self.refused.append(path)
                return _json(401, {"message": "Bad credentials",
                                   "documentation_url": "https://docs.github.com/rest",
                                   "status": "401"})
        with self._lock:
            if self.rate_limit is not None and self._used >= self.rate_limit:
                headers_out = self._limit_headers()
                return _json(403, {
                    "message": "API rate limit exceeded for installation ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/"
                                         "rate-limits-for-the-rest-api"}, headers_out)
            self._used += 1
            limits = self._limit_headers()
        rest = path[len(self.prefix + "/repos/"):]
        repo_path = self.repo + "/actions/"
        if not rest.lower().startswith(repo_path.lower()):
            return _json(404, {"message": "Not Found",
                               "documentation_url": "https://docs.github.com/rest"}, limits)
        parts = rest[len(repo_path):].split("/")
        answer = self._actions(parts, query, path)
        status, extra, body = answer
        return status, {**extra, **limits}, body

    def _not_found(self):
        return _json(404, {"message": "Not Found",
                           "documentation_url": "https://docs.github.com/rest"})

    def _actions(self, parts, query, path):
        if parts == ["runs"] or (len(parts) == 3 and parts[0] == "workflows"
                                 and parts[2] == "runs"):
            if parts[0] == "workflows" and parts[1] not in ("ci.yml", "161335"):
                return self._not_found()
            return self._list_runs(query, path)
        if len(parts) == 2 and parts[0] == "runs":
            run = self._run(parts[1])
            return _json(200, self._fill(run)) if run else self._not_found()
        if len(parts) == 3 and parts[0] == "runs" and parts[2] in ("jobs", "artifacts"):
            run = self._run(parts[1])
            if run is None:
                return self._not_found()
            items = (self.jobs if parts[2] == "jobs" else self.artifacts)[run["id"]]
            if parts[2] == "artifacts" and query.get("name"):
                items = [a for a in items if a["name"] == query["name"][0]]
            return self._page(items, parts[2], query, path)
        if len(parts) == 2 and parts[0] == "jobs":
            for jobs in self.jobs.values():
                for job in jobs:
                    if str(job["id"]) == parts[1]:
                        return _json(200, self._fill(job))
            return self._not_found()
        if len(parts) == 3 and parts[0] == "artifacts" and parts[2] == "zip":
            for artifacts in self.artifacts.values():
                for artifact in artifacts:
                    if str(artifact["id"]) == parts[1]:
                        if artifact["expired"]:
                            return _json(410, {"message": "Artifact has expired",
                                               "documentation_url": "https://docs.github.com"
                                                                    "/rest"})
                        signed = (f"http://localhost:{self.port}/_blob/{artifact['id']}.zip"
                                  f"?sv=2021-08-06&se=2099-01-01T00%3A00%3A00Z&sr=b"
                                  f"&sp=r&sig=c2lnbmF0dXJl")
                        return 302, {"Location": signed, "Content-Type": "text/plain"}, b""
            return self._not_found()
        return self._not_found()

    def _run(self, text):
        for run in self.runs:
            if str(run["id"]) == text:
                return run
        return None

    def _list_runs(self, query, path):
        selected = []
        for run in self.runs:
            ok = True
            for key in ("branch", "event"):
                want = query.get(key)
                field = "head_branch" if key == "branch" else key
                if want and run[field] != want[0]:
                    ok = False
            status = query.get("status")
            if ok and status:
                ok = status[0] in (run["status"], run["conclusion"])
            created = query.get("created")
            if ok and created:
                from ciml_plugins.sources.common import as_utc

                ok = _created_match(created[0], as_utc(run["created_at"]))
            if ok:
                selected.append(run)
        return self._page(selected, "workflow_runs", query, path)

    def _page(self, items, key, query, path):
        paging = _page_params(query)
        if paging is None:
            return _json(422, {"message": "Validation Failed",
                               "documentation_url": "https://docs.github.com/rest"})
        per_page, page = paging
        chosen = items[(page - 1) * per_page: page * per_page]
        link = _link_header(self.url, path, query, page, per_page, len(items))
        headers = {"Link": link} if link else {}
        return _json(200, {"total_count": len(items), key: self._fill(chosen)}, headers)

    def _blob(self, path, headers):
        if headers.get("Authorization") or headers.get("authorization"):
            # What Azure storage answers when a client forwards GitHub's token.
            return 400, {"Content-Type": "application/xml"}, (
                b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidAuthenticationInfo'
                b"</Code><Message>Authentication information is not given in the correct "
                b"format.</Message></Error>")
        match = re.fullmatch(r"/_blob/(\d+)\.zip", path)
        data = self.archives.get(int(match.group(1))) if match else None
        if data is None:
            return 404, {"Content-Type": "application/xml"}, \
                b"<Error><Code>BlobNotFound</Code></Error>"
        return 200, {"Content-Type": "application/zip"}, data


# -- GitLab ----------------------------------------------------------------------------------

#: generated cause -> GitLab failure_reason (the API's own vocabulary).
_GITLAB_FAILURE = {"test-failure": "script_failure", "oom": "script_failure",
                   "timeout": "job_execution_timeout", "network": "runner_system_failure"}


class GitLabServer(_ForgeServer):
    """GitLab's REST API v4 for one project: its CI jobs and their artifacts.

    Answers ``/api/v4/projects/:id/jobs`` (``scope[]``; keyset paging with
    ``pagination=keyset``, else offset paging with ``page``/``per_page`` and
    the ``X-Page``/``X-Next-Page``/``X-Total`` headers; both give a ``Link``
    header; newest first), ``/projects/:id/jobs/:job_id`` and
    ``/projects/:id/jobs/:job_id/artifacts`` (the zip).  ``:id`` is the
    numeric id or the URL-encoded path.  ``token``: ``Authorization: Bearer``
    or ``PRIVATE-TOKEN`` must carry it, else 401.  ``rate_limit``: that many
    requests, then 429 with ``Retry-After`` and ``RateLimit-*`` headers.
    """

    def __init__(self, *, project="group/ci", project_id=42, token=None, rate_limit=None,
                 retry_after=60, latency=0.0):
        super().__init__(token=token, latency=latency)
        self.project = project
        self.project_id = project_id
        self.jobs = []        # newest first
        self.archives = {}    # job id -> zip bytes
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self._used = 0

    @property
    def api_url(self):
        """The ``--gitlab-url`` to give the ``gitlab`` source (the instance root)."""
        return self.url.rstrip("/")

    @classmethod
    def from_history(cls, history, *, expired=(), **kwargs):
        server = cls(**kwargs)
        server.add_history(history, expired=expired)
        return server

    def add_history(self, history, *, expired=()):
        jobs = []
        web = f"https://gitlab.example.com/{self.project}"
        for i, run in enumerate(history.runs):
            job_id = 100_000 + 3 * i
            pipeline_id = 5_000 + i
            start = run["start"]
            end = start + dt.timedelta(seconds=float(run["duration"]))
            created = start - dt.timedelta(seconds=15)
            failed = run["status"] == "failed"
            sha = _sha(run["build_uuid"])
            source = {"gate": "push", "periodic": "schedule"}.get(run["pipeline"],
                                                                   "merge_request_event")
            ref = "main" if source != "merge_request_event" else \
                f"refs/merge-requests/{run['change']}/head"
            member = _dstat_member(history, run)
            job = {
                "commit": {"id": sha, "short_id": sha[:8], "title": f"Change {i}",
                           "created_at": _iso(created)},
                "coverage": None, "archived": False, "source": source,
                "allow_failure": False, "created_at": _iso(created),
                "started_at": _iso(start), "finished_at": _iso(end), "erased_at": None,
                "duration": float(run["duration"]), "queued_duration": 15.0,
                "tag_list": ["linux", run["node_provider"]],
                "id": job_id, "name": run["build_name"],
                "pipeline": {"id": pipeline_id, "project_id": self.project_id, "ref": ref,
                             "sha": sha, "status": "failed" if failed else "success",
                             "source": source},
                "ref": ref,
                "runner": {"id": 7 + i % 5, "description": run["node"], "ip_address": None,
                           "active": True, "paused": False, "is_shared": False,
                           "runner_type": "project_type", "name": "gitlab-runner",
                           "online": True, "status": "online"},
                "runner_manager": {"id": 3, "system_id": "s_" + sha[:12],
                                   "version": "17.5.0", "platform": "linux",
                                   "architecture": "amd64", "status": "online"},
                "stage": "test", "status": "failed" if failed else "success",
                "tag": False, "web_url": f"{web}/-/jobs/{job_id}",
                "project": {"ci_job_token_scope_enabled": False},
                "user": {"id": 1, "username": "root", "name": "Administrator"},
                "artifacts": [{"file_type": "trace", "size": 1500, "filename": "job.log",
                               "file_format": "raw"}],
            }
            if failed:
                job["failure_reason"] = _GITLAB_FAILURE.get(run["cause"], "script_failure")
            if member is not None and run["run_id"] not in expired:
                data = _zip({run["dstat_path"]: member[1], "reports/summary.txt": b"ok\n"})
                self.archives[job_id] = data
                job["artifacts_file"] = {"filename": "artifacts.zip", "size": len(data)}
                job["artifacts"].insert(0, {"file_type": "archive", "size": len(data),
                                            "filename": "artifacts.zip",
                                            "file_format": "zip"})
                job["artifacts_expire_at"] = _iso(end + dt.timedelta(days=30))
            jobs.append(job)
            if i % 4 == 0:
                jobs.append({**job, "id": job_id + 1, "status": "canceled",
                             "failure_reason": None, "artifacts": [],
                             "web_url": f"{web}/-/jobs/{job_id + 1}"})
            if i % 6 == 0:
                jobs.append({**job, "id": job_id + 2, "name": "deploy", "status": "manual",
                             "started_at": None, "finished_at": None, "duration": None,
                             "artifacts": [], "web_url": f"{web}/-/jobs/{job_id + 2}"})
        jobs.sort(key=lambda j: j["id"], reverse=True)
        self.jobs = jobs + self.jobs

    def route(self, method, path, query, headers):
        prefix = "/api/v4/projects/"
        if not path.startswith(prefix):
            return None
        if self.api_token:
            given = headers.get("Authorization") or headers.get("authorization") or ""
            private = headers.get("PRIVATE-TOKEN") or headers.get("Private-Token") or ""
            if given != f"Bearer {self.api_token}" and private != self.api_token:
                with self._lock:
                    self.refused.append(path)
                return _json(401, {"message": "401 Unauthorized"})
        with self._lock:
            self._used += 1
            if self.rate_limit is not None and self._used > self.rate_limit:
                reset = int(time.time()) + self.retry_after
                return _json(429, {"message": "Retry later"}, {
                    "Retry-After": str(self.retry_after), "RateLimit-Limit": str(self.rate_limit),
                    "RateLimit-Remaining": "0", "RateLimit-Reset": str(reset),
                    "Content-Type": "text/plain"})
        rest = path[len(prefix):]
        for key in (self.project, str(self.project_id)):
            if rest.startswith(key + "/"):
                parts = rest[len(key) + 1:].split("/")
                break
        else:
            return _json(404, {"message": "404 Project Not Found"})
        if parts == ["jobs"]:
            return self._list(query, path)
        if len(parts) in (2, 3) and parts[0] == "jobs":
            job = next((j for j in self.jobs if str(j["id"]) == parts[1]), None)
            if job is None:
                return _json(404, {"message": "404 Not found"})
            if len(parts) == 2:
                return _json(200, job)
            if parts[2] == "artifacts":
                data = self.archives.get(job["id"])
                if data is None:
                    return _json(404, {"message": "404 Not found"})
                return 200, {"Content-Type": "application/zip",
                             "Content-Disposition": 'attachment; filename="artifacts.zip"'}, data
        return _json(404, {"error": "404 Not Found"})

    def _list(self, query, path):
        scopes = set(query.get("scope[]", []) + query.get("scope", []))
        jobs = [j for j in self.jobs if not scopes or j["status"] in scopes]
        try:
            per_page = min(100, int(query.get("per_page", ["20"])[0]))
        except ValueError:
            return _json(400, {"error": "per_page is invalid"})
        params = {k: v for k, v in query.items() if k not in ("page", "cursor", "id_before")}
        base = f"{self.url.rstrip('/')}{urllib.parse.quote(path)}"
        if query.get("pagination") == ["keyset"]:
            cursor = query.get("id_before", [None])[0]
            if cursor is not None:
                jobs = [j for j in jobs if j["id"] < int(cursor)]
            page = jobs[:per_page]
            headers = {}
            if len(jobs) > per_page:
                next_params = {k: v for k, v in params.items()}
                next_params["id_before"] = [str(page[-1]["id"])]
                headers["Link"] = (f'<{base}?{urllib.parse.urlencode(next_params, doseq=True)}>'
                                   '; rel="next"')
            return _json(200, page, headers)
        try:
            number = int(query.get("page", ["1"])[0])
        except ValueError:
            return _json(400, {"error": "page is invalid"})
        page = jobs[(number - 1) * per_page: number * per_page]
        pages = max(1, -(-len(jobs) // per_page))
        headers = {"X-Page": str(number), "X-Per-Page": str(per_page),
                   "X-Total": str(len(jobs)), "X-Total-Pages": str(pages),
                   "X-Next-Page": str(number + 1) if number < pages else "",
                   "X-Prev-Page": str(number - 1) if number > 1 else ""}
        if number < pages:
            next_params = {**params, "page": [str(number + 1)]}
            headers["Link"] = (f'<{base}?{urllib.parse.urlencode(next_params, doseq=True)}>'
                               '; rel="next"')
        return _json(200, page, headers)


# -- Jenkins ---------------------------------------------------------------------------------

_JENKINS_RESULT = {"SUCCESS": "SUCCESS", "FAILURE": "FAILURE", "TIMED_OUT": "ABORTED",
                   "POST_FAILURE": "UNSTABLE", "RETRY_LIMIT": "FAILURE"}

_JENKINS_HTML = (b"<!DOCTYPE html><html><head><title>Jenkins</title></head><body>"
                 b"<h1>%s</h1></body></html>")


class JenkinsServer(_ForgeServer):
    """Jenkins's JSON API: a folder ``ci`` holding one job per generated job name.

    Answers ``/job/ci/api/json`` (the folder: its jobs),
    ``/job/ci/job/<name>/api/json`` with ``tree=allBuilds[...]{M,N}`` (or
    ``builds``, the last 100) newest first, ``/job/ci/job/<name>/<n>/api/json``
    and ``/job/ci/job/<name>/<n>/artifact/<path>`` (the archived dstat file,
    as ``archiveArtifacts`` keeps it).  ``user``/``token``: requests must
    carry them as basic auth, else 401 with Jenkins's HTML page.  Unknown
    paths get an HTML 404, as Jenkins answers.
    """

    def __init__(self, *, folder="ci", user=None, token=None, latency=0.0):
        super().__init__(token=token, latency=latency)
        self.folder = folder
        self.user = user
        self.jobs = {}       # job name -> [build dicts], newest first
        self.files = {}      # (job name, number, relative path) -> bytes

    @property
    def api_url(self):
        """The ``--jenkins-url`` to give the ``jenkins`` source."""
        return self.url.rstrip("/")

    @classmethod
    def from_history(cls, history, **kwargs):
        server = cls(**kwargs)
        server.add_history(history)
        return server

    def add_history(self, history):
        numbers = {}
        for run in history.runs:
            name = run["build_name"]
            number = numbers[name] = numbers.get(name, 0) + 1
            member = _dstat_member(history, run)
            result = _JENKINS_RESULT.get(run["result"], "FAILURE")
            if run["status"] == "failed" and result == "SUCCESS":
                result = "FAILURE"
            if result == "ABORTED":
                result = "FAILURE"   # a timeout that ran to its end
            build = {
                "_class": "hudson.model.FreeStyleBuild", "number": number,
                "id": str(number), "displayName": f"#{number}",
                "url": f"{{root}}/job/{self.folder}/job/{name}/{number}/",
                "result": result, "building": False, "inProgress": False,
                "timestamp": int(run["start"].timestamp() * 1000),
                "duration": int(float(run["duration"]) * 1000),
                "estimatedDuration": 900_000, "builtOn": run["node"],
                "description": None, "fullDisplayName": f"{self.folder} » {name} #{number}",
                "artifacts": [],
            }
            if member is not None:
                rel = run["dstat_path"].rsplit("/", 1)[-1]
                build["artifacts"].append({"displayPath": rel, "fileName": rel,
                                           "relativePath": rel})
                self.files[(name, number, rel)] = member[1]
            self.jobs.setdefault(name, []).insert(0, build)
        for name, builds in self.jobs.items():
            top = builds[0]["number"]
            # An aborted build and one still running: both are skipped.
            builds.insert(0, {**builds[0], "number": top + 1, "id": str(top + 1),
                              "displayName": f"#{top + 1}", "result": "ABORTED",
                              "url": f"{{root}}/job/{self.folder}/job/{name}/{top + 1}/"})
            builds.insert(0, {**builds[0], "number": top + 2, "id": str(top + 2),
                              "displayName": f"#{top + 2}", "result": None, "building": True,
                              "inProgress": True,
                              "url": f"{{root}}/job/{self.folder}/job/{name}/{top + 2}/"})

    def _fill(self, data):
        return json.loads(json.dumps(data).replace("{root}", self.api_url))

    def _html(self, status, title):
        return status, {"Content-Type": "text/html;charset=utf-8"}, _JENKINS_HTML % title

    def route(self, method, path, query, headers):
        if not path.startswith("/job/"):
            return None
        if self.api_token:
            import base64

            want = "Basic " + base64.b64encode(
                f"{self.user}:{self.api_token}".encode()).decode()
            if (headers.get("Authorization") or headers.get("authorization")) != want:
                with self._lock:
                    self.refused.append(path)
                return 401, {"Content-Type": "text/html;charset=utf-8",
                             "WWW-Authenticate": 'Basic realm="Jenkins"'}, \
                    _JENKINS_HTML % b"Invalid password/token for user"
        parts = [p for p in path.split("/") if p]
        # /job/<folder>[/job/<name>[/<number>]][/api/json | /artifact/<path>]
        if parts[:2] != ["job", self.folder]:
            return self._html(404, b"Not Found")
        rest = parts[2:]
        if rest == ["api", "json"]:
            jobs = [{"_class": "hudson.model.FreeStyleProject", "name": n,
                     "url": f"{{root}}/job/{self.folder}/job/{n}/"} for n in sorted(self.jobs)]
            return _json(200, self._fill({
                "_class": "com.cloudbees.hudson.plugins.folder.Folder", "name": self.folder,
                "url": f"{{root}}/job/{self.folder}/", "jobs": jobs}))
        if len(rest) < 2 or rest[0] != "job" or rest[1] not in self.jobs:
            return self._html(404, b"Not Found")
        name, builds, rest = rest[1], self.jobs[rest[1]], rest[2:]
        if rest == ["api", "json"]:
            return self._job(name, builds, query)
        if rest and rest[0].isdigit():
            number = int(rest[0])
            build = next((b for b in builds if b["number"] == number), None)
            if build is None:
                return self._html(404, b"Not Found")
            if rest[1:] == ["api", "json"]:
                return _json(200, self._fill(build))
            if len(rest) > 2 and rest[1] == "artifact":
                data = self.files.get((name, number, "/".join(rest[2:])))
                if data is None:
                    return self._html(404, b"Not Found")
                return 200, {"Content-Type": "application/octet-stream"}, data
        return self._html(404, b"Not Found")

    def _job(self, name, builds, query):
        tree = query.get("tree", [""])[0]
        key = "allBuilds" if "allBuilds" in tree else "builds"
        chosen = builds if key == "allBuilds" else builds[:100]
        match = re.search(r"\{(\d*),(\d*)\}\s*$", tree)
        if match:
            low = int(match.group(1) or 0)
            high = int(match.group(2)) if match.group(2) else len(chosen)
            chosen = chosen[low:high]
        return _json(200, self._fill({
            "_class": "hudson.model.FreeStyleProject", "name": name,
            "fullName": f"{self.folder}/{name}",
            "url": f"{{root}}/job/{self.folder}/job/{name}/", key: chosen}))


__all__ = ["GitHubServer", "GitLabServer", "JenkinsServer"]
