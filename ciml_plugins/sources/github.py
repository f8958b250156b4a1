"""The ``github`` result source: GitHub Actions jobs from the REST API.

A *run* is one job of a workflow run: the unit that ran on one machine,
whose resource usage dstat (or Prometheus, through its runner name)
recorded.  The build name is the job's name as GitHub shows it
(``test``, ``test (3.11, ubuntu)`` for a matrix job).

``GET /repos/{owner}/{repo}/actions/runs`` (or
``/actions/workflows/{workflow}/runs`` with ``--workflow``) lists workflow
runs newest first, filtered on the server by ``branch``, ``event`` and
``created`` (from ``--since``/``--until``), paged with the ``Link``
header; ``/actions/runs/{id}/jobs`` lists each run's jobs (the latest
attempt), and ``/actions/runs/{id}/artifacts`` its artifacts.  GitHub
answers at most 1,000 runs to a query filtered by ``branch``, ``event``
or ``created``: cache a long history in windows.

A job's ``conclusion`` is kept as the run's ``result``: ``success`` is
"passed", ``failure`` and ``timed_out`` are "failed"; jobs that never ran
their steps to an end (``cancelled``, ``skipped``, ``neutral``,
``action_required``, ``stale``) and jobs still going are skipped.  The
metadata holds the workflow, event, branch, head sha, run number and
attempt, the runner's name, labels and group, and the job's URL.

Artifacts: GitHub keeps a workflow run's artifacts as zip archives.  The
run's ``artifacts_url`` is the archive of the artifact named by
``--artifact-name`` (``dstat-{job}``: the job name with the characters
GitHub refuses in artifact names replaced by ``-``), else of one named
``dstat``; ``artifacts_archive: zip`` in the metadata tells the metric
source to look inside.  A run whose artifact expired or was never uploaded
has no artifacts URL (``no-artifacts-url`` when caching).

The token (``--github-token`` or, better, ``CIML_GITHUB_TOKEN``) is sent
as a bearer token to the API, and lent to the metric source for artifact
downloads under the same API; it never reaches the storage host GitHub
redirects those to.  Rate limits are honoured through the shared client
(:mod:`ciml.http`): ``X-RateLimit-Remaining: 0`` makes it wait for the
reset, a secondary limit's ``Retry-After`` is waited for, both up to
``--max-wait``; a longer wait ends the listing with a transient error.
"""

import datetime as dt
import itertools
import logging
import os
import re
import urllib.parse

from ciml.base import Parameter, positive_int
from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.hookspecs import hookimpl
from ciml.http import HTTP_PARAMETERS, redact_url
from ciml.records import FAILED, PASSED, RunRecord
from ciml_plugins.sources.common import as_utc, interleave
from ciml_plugins.sources.rest import (
    RestResultSource,
    expect,
    get_json_page,
    is_http_url,
    text,
)

LOG = logging.getLogger(__name__)

ENV_TOKEN = "CIML_GITHUB_TOKEN"
DEFAULT_URL = "https://api.github.com"

#: Job conclusions and the status they mean; others are skipped.
CONCLUSIONS = {"success": PASSED, "failure": FAILED, "timed_out": FAILED}

#: Metadata keys the API filters on (others are matched here).
_API_FILTERS = {"branch": "branch", "head_branch": "branch", "event": "event"}

#: GitHub answers at most this many runs to a filtered query.
_SEARCH_CAP = 1000

#: A job may start this long after its workflow run was created (queueing,
#: ``needs``): ``--since`` asks the server for runs created this much earlier.
_QUEUE_MARGIN = dt.timedelta(days=1)

#: Workflow runs whose jobs and artifacts are asked for at once while listing.
_LISTING_THREADS = 4

_ARTIFACT_UNSAFE = re.compile(r'[":<>|*?\\/\r\n]+')
_PAGE_SIZE_MAX = 100


def artifact_slug(job_name):
    """A job name as it can appear in an artifact name (GitHub refuses ``":<>|*?\\/``)."""
    return _ARTIFACT_UNSAFE.sub("-", job_name).strip()


def run_status(conclusion):
    """``passed``/``failed`` for a job conclusion, ``None`` for one that did not run."""
    return CONCLUSIONS.get(conclusion)


class GitHubResultSource(RestResultSource):
    """GitHub Actions jobs of a repository (REST API; github.com or GitHub Enterprise)"""

    name = "github"
    parameters = (
        Parameter("github_url", str, default=DEFAULT_URL,
                  help="GitHub REST API root (GitHub Enterprise: https://HOST/api/v3)"),
        Parameter("repo", str, help="the repository, OWNER/NAME"),
        Parameter("workflow", str,
                  help="only runs of this workflow (its file name, e.g. ci.yml, or id)"),
        Parameter("branch", str, help="only builds of this branch"),
        Parameter("event", str, help="only workflow runs of this event (push, pull_request...)"),
        Parameter("github_token", str, secret=True,
                  help=f"GitHub token sent as a bearer token (env {ENV_TOKEN})"),
        Parameter("artifact_name", str, default="dstat-{job}",
                  help="name of the artifact holding a job's metrics; {job} is the job name "
                       "(characters GitHub refuses become '-'), {job_id} its id"),
        Parameter("page_size", positive_int, default=_PAGE_SIZE_MAX,
                  help="builds requested per page"),
        *HTTP_PARAMETERS,
    )

    def __init__(self, **params):
        super().__init__(**params)
        if not self.github_token:
            self.github_token = os.environ.get(ENV_TOKEN) or None
        if not self.repo or not re.fullmatch(r"[\w.-]+/[\w.-]+", self.repo):
            raise ConfigError("result source 'github' needs --repo OWNER/NAME "
                              f"(got {self.repo!r})")
        if not is_http_url(self.github_url):
            raise ConfigError("--github-url must be an http(s) URL")
        self.page_size = min(self.page_size, _PAGE_SIZE_MAX)
        # Artifact downloads are API URLs too: the metric source is lent the
        # token for them, and only for them.
        self._open_client(
            "ciml-github",
            auth={"Authorization": f"Bearer {self.github_token}"} if self.github_token else None,
            headers={"Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28"})

    @property
    def api_root(self):
        return self.github_url.rstrip("/")

    @property
    def repo_url(self):
        return f"{self.api_root}/repos/{self.repo}"

    credential_root = api_root

    # -- HTTP -------------------------------------------------------------------------

    system = "GitHub"
    token_hint = f"check the token (--github-token or {ENV_TOKEN}) and its repository access"

    def _pages(self, url, key, params):
        """Every item of a paged list, following ``Link: rel="next"``."""
        while url:
            page, url = get_json_page(self._client, url, params=params, system=self.system,
                                      token_hint=self.token_hint)
            params = None   # the next link carries them
            if page is None:
                raise SourceError(f"GitHub API: nothing at {redact_url(self.repo_url)} "
                                  "(check --repo, --workflow and the token's access)")
            items = expect(page, dict, "a GitHub list", self.repo_url).get(key)
            if not isinstance(items, list):
                raise SourceError(f"GitHub API: the answer has no {key!r} list")
            yield from items
            if not items:
                return

    # -- records ----------------------------------------------------------------------

    def _artifact(self, job, artifacts):
        """The artifact of this job's metrics among its workflow run's, or ``None``."""
        wanted = [self.artifact_name.format(job=artifact_slug(str(job.get("name") or "")),
                                            job_id=job.get("id")), "dstat"]
        by_name = {a.get("name"): a for a in artifacts if isinstance(a, dict)}
        for name in wanted:
            if name in by_name:
                return by_name[name]
        return None

    def record(self, job, run=None, artifacts=()):
        """A :class:`RunRecord` for a job dict (and its workflow run), or ``None`` to skip."""
        if not isinstance(job, dict) or job.get("id") is None or not job.get("name"):
            return None
        if job.get("status") != "completed":
            return None
        conclusion = job.get("conclusion")
        status = run_status(conclusion)
        if status is None:
            return None
        run = run if isinstance(run, dict) else {}
        try:
            start = as_utc(job.get("started_at"))
            end = as_utc(job.get("completed_at"))
        except (TypeError, ValueError):
            start = end = None
        duration = (end - start).total_seconds() if start and end and end >= start else None
        labels = job.get("labels") or job.get("label_filters") or []
        meta = {
            "repo": self.repo,
            "workflow_name": job.get("workflow_name") or run.get("name"),
            "workflow_path": run.get("path"),
            "workflow_id": run.get("workflow_id"),
            "workflow_run_id": job.get("run_id"),
            "run_number": run.get("run_number"),
            "run_attempt": job.get("run_attempt") or run.get("run_attempt"),
            "event": run.get("event"),
            "head_branch": job.get("head_branch") or run.get("head_branch"),
            "head_sha": job.get("head_sha") or run.get("head_sha"),
            "runner_name": job.get("runner_name"),
            "runner_labels": ",".join(str(x) for x in labels) if labels else None,
            "runner_group_name": job.get("runner_group_name"),
            "conclusion": conclusion,
            "completed_at": job.get("completed_at"),
            "html_url": job.get("html_url"),
        }
        meta = {k: text(v) for k, v in meta.items() if v is not None and v != ""}
        meta["build_name"] = str(job["name"])
        meta["build_status"] = str(conclusion)
        if "head_branch" in meta:
            meta["build_branch"] = meta["head_branch"]
        artifacts_url = None
        artifact = self._artifact(job, artifacts)
        if artifact is not None:
            meta["artifact_name"] = str(artifact.get("name"))
            if artifact.get("expired"):
                meta["artifact_expired"] = "1"
            elif artifact.get("archive_download_url"):
                artifacts_url = str(artifact["archive_download_url"])
                meta["artifacts_archive"] = "zip"
        return RunRecord(
            id=str(job["id"]), build_name=str(job["name"]), status=status,
            artifacts_url=artifacts_url, start=start, duration=duration,
            result=str(conclusion), source=self.name, metadata=meta)

    # -- listing ----------------------------------------------------------------------

    def _runs_url(self):
        if self.workflow:
            return (f"{self.repo_url}/actions/workflows/"
                    f"{urllib.parse.quote(str(self.workflow), safe='')}/runs")
        return f"{self.repo_url}/actions/runs"

    def _query(self, filters, since, until):
        params = {"per_page": self.page_size}
        if self.branch:
            params["branch"] = self.branch
        if self.event:
            params["event"] = self.event
        local = {}
        for key, value in (filters or {}).items():
            if key in _API_FILTERS and _API_FILTERS[key] not in params:
                params[_API_FILTERS[key]] = str(value)
            local[key] = str(value)
        low = since - _QUEUE_MARGIN if since is not None else None
        if low is not None or until is not None:
            fmt = "%Y-%m-%dT%H:%M:%SZ"
            params["created"] = (f"{low.strftime(fmt) if low else '*'}.."
                                 f"{until.strftime(fmt) if until else '*'}")
        return params, local

    def _iter_jobs(self, build_name, since, until, filters, status=None):
        import concurrent.futures as cf

        since, until = as_utc(since), as_utc(until)
        params, local = self._query(filters, since, until)
        wf_runs = self._pages(self._runs_url(), "workflow_runs", params)
        listed = 0
        # Each workflow run costs two requests (its jobs, its artifacts):
        # asked a few runs at a time, in order, so that listing a long
        # history is not one round trip after another.
        with cf.ThreadPoolExecutor(max_workers=_LISTING_THREADS,
                                   thread_name_prefix="ciml-github") as pool:
            done = False
            while not done:
                chunk = []
                for wf_run in wf_runs:
                    listed += 1
                    if not isinstance(wf_run, dict) or wf_run.get("status") != "completed":
                        continue
                    # Newest first: once a run was created before the window
                    # (less the queueing margin), so were all later ones.
                    try:
                        created = as_utc(wf_run.get("created_at"))
                    except (TypeError, ValueError):
                        created = None
                    if since is not None and created is not None \
                            and created < since - _QUEUE_MARGIN:
                        done = True
                        break
                    chunk.append(wf_run)
                    if len(chunk) == 2 * _LISTING_THREADS:
                        break
                else:
                    done = True
                for runs in pool.map(lambda r: self._jobs_of(r, build_name, since, until,
                                                              local, status), chunk):
                    yield from runs
        if listed >= _SEARCH_CAP and "created" in params:
            LOG.warning("GitHub answers at most %d workflow runs to a filtered query; "
                        "older runs need a narrower --since/--until window", _SEARCH_CAP)

    def _jobs_of(self, wf_run, build_name, since, until, local, status=None):
        """The records of a workflow run's jobs of ``build_name`` (a list)."""
        jobs = self._pages(f"{self.repo_url}/actions/runs/{wf_run['id']}/jobs", "jobs",
                           {"per_page": _PAGE_SIZE_MAX, "filter": "latest"})
        matching = [job for job in jobs if isinstance(job, dict)
                    and job.get("name") == build_name and job.get("status") == "completed"
                    and run_status(job.get("conclusion")) is not None
                    and (status is None or run_status(job.get("conclusion")) == status)]
        if not matching:
            return []
        artifacts = list(self._pages(f"{self.repo_url}/actions/runs/{wf_run['id']}/artifacts",
                                     "artifacts", {"per_page": _PAGE_SIZE_MAX}))
        records = []
        for job in matching:
            run = self.record(job, wf_run, artifacts)
            if run is None:
                continue
            if self.matches(run, since=since, until=until, filters=local):
                records.append(run)
        return records

    def list_runs(self, build_name, *, since=None, until=None, filters=None, limit=None,
                  balanced=False):
        if limit is not None and limit <= 0:
            return
        if balanced:
            stream = interleave(self._iter_jobs(build_name, since, until, filters, FAILED),
                                self._iter_jobs(build_name, since, until, filters, PASSED))
        else:
            stream = self._iter_jobs(build_name, since, until, filters)
        yield from itertools.islice(stream, limit)

    def get_run(self, run_id):
        job_id = str(run_id).strip()
        if not job_id.isdigit():
            raise NotFoundError(f"no GitHub Actions job {run_id!r}: job ids are numbers")
        job = self._get(f"{self.repo_url}/actions/jobs/{job_id}")
        if job is None:
            raise NotFoundError(f"no GitHub Actions job {job_id} in {self.repo}")
        expect(job, dict, "a GitHub job", self.repo_url)
        wf_run, artifacts = {}, []
        if job.get("run_id") is not None:
            wf_run = self._get(f"{self.repo_url}/actions/runs/{job['run_id']}") or {}
            artifacts = list(self._pages(
                f"{self.repo_url}/actions/runs/{job['run_id']}/artifacts", "artifacts",
                {"per_page": _PAGE_SIZE_MAX}))
        run = self.record(job, wf_run, artifacts)
        if run is None:
            raise NotFoundError(f"GitHub Actions job {job_id} is not a finished job that ran "
                                f"(status {job.get('status')!r}, conclusion "
                                f"{job.get('conclusion')!r})")
        return run

    def __repr__(self):
        return (f"{type(self).__name__}(github_url={redact_url(self.github_url)!r}, "
                f"repo={self.repo!r}, github_token={'****' if self.github_token else None})")


@hookimpl
def ciml_register_result_sources(register):
    register(GitHubResultSource)


__all__ = ["GitHubResultSource", "artifact_slug", "run_status"]
