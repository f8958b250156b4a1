"""The ``gitlab`` result source: GitLab CI jobs from the REST API (v4).

A *run* is one CI job (the unit a runner executed); the build name is the
job's name (``test``, ``rspec:other``).  ``GET /projects/:id/jobs`` lists a
project's jobs newest first; ``scope[]=success&scope[]=failed`` keeps the
finished ones on the server (and gives ``balanced`` its two streams).  It
pages with keyset pagination (``pagination=keyset``, which GitLab
recommends for walking a long list), following the ``Link`` header's
``rel="next"``; an instance that answers with offset pages is followed the
same way (its ``Link`` header, else ``X-Next-Page``).
``/projects/:id/jobs/:job_id`` gives one job.

``success`` is "passed", ``failed`` is "failed"; canceled, skipped, manual
and unfinished jobs are skipped.  The raw status is kept as the run's
``result``, and GitLab's ``failure_reason`` (``script_failure``,
``runner_system_failure``, ``stuck_or_timeout_failure``,
``job_execution_timeout``...) is kept in the metadata: a ready-made cause
label (``build-dataset --class-label failure_reason``).  The metadata also
holds the pipeline, ref, sha, stage, the runner's description and id, and
the job's tags.

Artifacts: GitLab keeps a job's artifacts as a zip archive, downloaded from
``/projects/:id/jobs/:job_id/artifacts``; a job that has one gets that URL
as its ``artifacts_url`` (``artifacts_archive: zip`` in the metadata tells
the metric source to look inside).  Expired or erased artifacts leave no URL.

The token (``--gitlab-token`` or, better, ``CIML_GITLAB_TOKEN``: a personal,
project or group access token with ``read_api``) is sent as
``Authorization: Bearer``, which GitLab accepts for those tokens and which
is dropped on a redirect to another host (object storage); it is lent to
the metric source for the artifact downloads under the same API.
"""

import datetime as dt
import itertools
import logging
import os
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
    is_http_url,
    source_error,
    text,
)

LOG = logging.getLogger(__name__)

ENV_TOKEN = "CIML_GITLAB_TOKEN"
DEFAULT_URL = "https://gitlab.com"

#: Job statuses and the status they mean; others are skipped.
STATUSES = {"success": PASSED, "failed": FAILED}

_PAGE_SIZE_MAX = 100

#: A job may start this long after it was created (waiting for a runner).
_QUEUE_MARGIN = dt.timedelta(days=1)


def run_status(status):
    """``passed``/``failed`` for a job status, ``None`` for one to skip."""
    return STATUSES.get(status)


class GitLabResultSource(RestResultSource):
    """GitLab CI jobs of a project (REST API v4; gitlab.com or self-managed)"""

    name = "gitlab"
    parameters = (
        Parameter("gitlab_url", str, default=DEFAULT_URL,
                  help="GitLab instance URL (its /api/v4 is added)"),
        Parameter("project", str, help="the GitLab project: its id or path (group/name)"),
        Parameter("branch", str, help="only builds of this branch"),
        Parameter("gitlab_token", str, secret=True,
                  help=f"GitLab access token with read_api (env {ENV_TOKEN})"),
        Parameter("page_size", positive_int, default=_PAGE_SIZE_MAX,
                  help="builds requested per page"),
        *HTTP_PARAMETERS,
    )

    def __init__(self, **params):
        super().__init__(**params)
        if not self.gitlab_token:
            self.gitlab_token = os.environ.get(ENV_TOKEN) or None
        if not self.project:
            raise ConfigError("result source 'gitlab' needs --project (the project's id, "
                              "or its path like group/name)")
        if not is_http_url(self.gitlab_url):
            raise ConfigError("--gitlab-url must be an http(s) URL")
        self.page_size = min(self.page_size, _PAGE_SIZE_MAX)
        self._open_client(
            "ciml-gitlab",
            auth={"Authorization": f"Bearer {self.gitlab_token}"} if self.gitlab_token else None)

    @property
    def api_root(self):
        url = self.gitlab_url.rstrip("/")
        return url if url.endswith("/api/v4") else url + "/api/v4"

    @property
    def project_url(self):
        return f"{self.api_root}/projects/{urllib.parse.quote(str(self.project), safe='')}"

    credential_root = api_root

    system = "GitLab"
    token_hint = (f"check the token (--gitlab-token or {ENV_TOKEN}): it needs the read_api "
                  "scope and access to the project")

    def _pages(self, url, params):
        """Every job of a paged list: keyset or offset pages, whichever the server gives."""
        from ciml.http import FetchError
        from ciml_plugins.sources.rest import next_link

        while url:
            try:
                page, resp = self._client.get_json(url, params=params, what="the GitLab API")
            except FetchError as exc:
                raise source_error(exc, self.system, self.token_hint) from None
            if page is None:
                raise SourceError(f"GitLab API: no project {self.project!r} at "
                                  f"{redact_url(self.api_root)} (check --project, "
                                  "--gitlab-url and the token's access)")
            expect(page, list, "a GitLab job list", url)
            yield from page
            if not page:
                return
            following = next_link(resp.headers)
            if following is None and (resp.headers.get("X-Next-Page") or "").strip():
                following = url
                params = {**(params or {}), "page": resp.headers["X-Next-Page"].strip()}
            elif following is not None:
                params = None   # the link carries them
            url = following

    # -- records ----------------------------------------------------------------------

    def record(self, job):
        """A :class:`RunRecord` for a job dict, or ``None`` to skip it."""
        if not isinstance(job, dict) or job.get("id") is None or not job.get("name"):
            return None
        status = run_status(job.get("status"))
        if status is None:
            return None
        try:
            start = as_utc(job.get("started_at"))
        except (TypeError, ValueError):
            start = None
        try:
            duration = float(job["duration"]) if job.get("duration") is not None else None
        except (TypeError, ValueError):
            duration = None
        pipeline = job.get("pipeline") if isinstance(job.get("pipeline"), dict) else {}
        runner = job.get("runner") if isinstance(job.get("runner"), dict) else {}
        commit = job.get("commit") if isinstance(job.get("commit"), dict) else {}
        tags = job.get("tag_list") or []
        meta = {
            "project": self.project,
            "pipeline_id": pipeline.get("id"),
            "pipeline_source": pipeline.get("source") or job.get("source"),
            "ref": job.get("ref") or pipeline.get("ref"),
            "sha": pipeline.get("sha") or commit.get("id"),
            "stage": job.get("stage"),
            "status": job.get("status"),
            "failure_reason": job.get("failure_reason") if status == FAILED else None,
            "allow_failure": job.get("allow_failure"),
            "runner_id": runner.get("id"),
            "runner_description": runner.get("description"),
            "runner_type": runner.get("runner_type"),
            "runner_tags": ",".join(str(t) for t in tags) if tags else None,
            "finished_at": job.get("finished_at"),
            "web_url": job.get("web_url"),
        }
        meta = {k: text(v) for k, v in meta.items() if v is not None and v != ""}
        meta["build_name"] = str(job["name"])
        meta["build_status"] = str(job.get("status"))
        if "ref" in meta:
            meta["build_branch"] = meta["ref"]
        artifacts_url = None
        archive = job.get("artifacts_file") if isinstance(job.get("artifacts_file"), dict) \
            else {}
        has_zip = bool(archive.get("filename")) or any(
            isinstance(a, dict) and a.get("file_type") == "archive"
            for a in job.get("artifacts") or ())
        if has_zip:
            artifacts_url = f"{self.project_url}/jobs/{job['id']}/artifacts"
            meta["artifacts_archive"] = "zip"
            if job.get("artifacts_expire_at"):
                meta["artifacts_expire_at"] = str(job["artifacts_expire_at"])
        return RunRecord(
            id=str(job["id"]), build_name=str(job["name"]), status=status,
            artifacts_url=artifacts_url, start=start, duration=duration,
            result=str(job.get("status")), source=self.name, metadata=meta)

    # -- listing ----------------------------------------------------------------------

    def _iter_jobs(self, build_name, since, until, filters, scopes):
        since, until = as_utc(since), as_utc(until)
        params = {"scope[]": list(scopes), "per_page": self.page_size,
                  "pagination": "keyset", "order_by": "id", "sort": "desc"}
        local = {k: str(v) for k, v in (filters or {}).items()}
        if self.branch:
            local.setdefault("ref", self.branch)
        for job in self._pages(f"{self.project_url}/jobs", params):
            if not isinstance(job, dict):
                continue
            # Newest first (by id, which follows creation): once a job was
            # created before --since (less the time a job may queue), so
            # were all later ones.
            try:
                created = as_utc(job.get("created_at"))
            except (TypeError, ValueError):
                created = None
            if since is not None and created is not None and created < since - _QUEUE_MARGIN:
                return
            if job.get("name") != build_name:
                continue
            run = self.record(job)
            if run is None:
                continue
            if self.matches(run, since=since, until=until, filters=local):
                yield run

    def list_runs(self, build_name, *, since=None, until=None, filters=None, limit=None,
                  balanced=False):
        if limit is not None and limit <= 0:
            return
        if balanced:
            stream = interleave(
                self._iter_jobs(build_name, since, until, filters, ("failed",)),
                self._iter_jobs(build_name, since, until, filters, ("success",)))
        else:
            stream = self._iter_jobs(build_name, since, until, filters, ("success", "failed"))
        yield from itertools.islice(stream, limit)

    def get_run(self, run_id):
        job_id = str(run_id).strip()
        if not job_id.isdigit():
            raise NotFoundError(f"no GitLab job {run_id!r}: job ids are numbers")
        job = self._get(f"{self.project_url}/jobs/{job_id}")
        if job is None:
            raise NotFoundError(f"no GitLab job {job_id} in project {self.project}")
        run = self.record(expect(job, dict, "a GitLab job", self.project_url))
        if run is None:
            raise NotFoundError(f"GitLab job {job_id} did not succeed or fail (status "
                                f"{job.get('status')!r})")
        return run

    def __repr__(self):
        return (f"{type(self).__name__}(gitlab_url={redact_url(self.gitlab_url)!r}, "
                f"project={self.project!r}, "
                f"gitlab_token={'****' if self.gitlab_token else None})")


@hookimpl
def ciml_register_result_sources(register):
    register(GitLabResultSource)


__all__ = ["GitLabResultSource", "run_status"]
