"""The ``jenkins`` result source: builds of a Jenkins job through its JSON API.

The build name is the job's full name, folders and multibranch projects
included, as Jenkins shows it in ``JOB_NAME``: ``tempest-full``,
``ci/tempest-full``, ``my-project/main`` (a multibranch project's branch
job; a branch named ``feature/x`` is the job ``feature%2Fx``, written so).
``GET /job/A/job/B/api/json?tree=allBuilds[...]{M,N}`` lists its builds
newest first, ``page_size`` at a time (Jenkins's range syntax); ``tree``
asks for only the fields used, which keeps the answers small on a job with
thousands of builds.  One build is ``/job/A/job/B/<number>/api/json``.

A run's id is ``<job>#<number>`` (``ci/tempest-full#42``).  ``SUCCESS`` is
"passed", ``FAILURE`` and ``UNSTABLE`` (tests failed) are "failed";
``ABORTED``, ``NOT_BUILT`` and builds still running are skipped.  The
metadata holds the node the build ran on (``builtOn``: ``node_name``),
the build URL and number, and the archived artifacts' paths; a Pipeline
build, which has no single node, can name it in its description
(``node: <name>``, as the recipe in the user guide does).

Artifacts: Jenkins serves each archived file under the build's
``artifact/`` URL, which becomes the run's ``artifacts_url``; the metric
source tries its paths there (``dstat-csv_log.txt`` at the top is one).

The user and API token (``--jenkins-user`` and ``--jenkins-token``, or
``CIML_JENKINS_USER`` / ``CIML_JENKINS_TOKEN``) are sent as basic auth to
the Jenkins URL, and lent to the metric source for the artifact downloads.
"""

import base64
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
from ciml_plugins.sources.common import interleave
from ciml_plugins.sources.rest import RestResultSource, expect, is_http_url, text

LOG = logging.getLogger(__name__)

ENV_USER = "CIML_JENKINS_USER"
ENV_TOKEN = "CIML_JENKINS_TOKEN"

#: Build results and the status they mean; others are skipped.
RESULTS = {"SUCCESS": PASSED, "FAILURE": FAILED, "UNSTABLE": FAILED}

#: The build fields asked for (``tree``): everything else stays on the server.
BUILD_TREE = ("number,url,result,building,timestamp,duration,builtOn,displayName,"
              "description,artifacts[relativePath]")

#: Builds may finish out of start order (a long one started earlier): the
#: listing stops this long before ``--since``.
_ORDER_MARGIN = dt.timedelta(days=1)
_NODE_IN_DESCRIPTION = re.compile(r"\bnode:\s*(\S+)")
_FOLDER_CLASSES = ("Folder", "MultiBranchProject", "OrganizationFolder")


def run_status(result):
    """``passed``/``failed`` for a build result, ``None`` for one to skip."""
    return RESULTS.get(result)


def job_path(build_name):
    """``/job/A/job/B`` for the job ``A/B`` (each name quoted, ``%2F`` kept as such)."""
    names = [n for n in str(build_name).strip("/").split("/") if n]
    if not names:
        raise ConfigError("a Jenkins job name is needed (--build-name)")
    return "".join(f"/job/{urllib.parse.quote(n, safe='')}" for n in names)


class JenkinsResultSource(RestResultSource):
    """Builds of a Jenkins job, folders and multibranch included (JSON API)"""

    name = "jenkins"
    parameters = (
        Parameter("jenkins_url", str, help="Jenkins root URL, e.g. https://ci.example.org/"),
        Parameter("jenkins_user", str, help=f"Jenkins user name (env {ENV_USER})"),
        Parameter("jenkins_token", str, secret=True,
                  help=f"the user's Jenkins API token (env {ENV_TOKEN})"),
        Parameter("page_size", positive_int, default=100, help="builds requested per page"),
        *HTTP_PARAMETERS,
    )

    def __init__(self, **params):
        super().__init__(**params)
        if not self.jenkins_user:
            self.jenkins_user = os.environ.get(ENV_USER) or None
        if not self.jenkins_token:
            self.jenkins_token = os.environ.get(ENV_TOKEN) or None
        if not is_http_url(self.jenkins_url):
            raise ConfigError("result source 'jenkins' needs --jenkins-url (http or https)")
        if bool(self.jenkins_user) != bool(self.jenkins_token):
            raise ConfigError("--jenkins-user and --jenkins-token go together "
                              f"(or {ENV_USER} and {ENV_TOKEN})")
        auth = None
        if self.jenkins_token:
            pair = f"{self.jenkins_user}:{self.jenkins_token}".encode()
            auth = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        self._open_client("ciml-jenkins", auth=auth)

    @property
    def root(self):
        return self.jenkins_url.rstrip("/")

    credential_root = root

    system = "Jenkins"
    token_hint = (f"check --jenkins-user and --jenkins-token (or {ENV_USER} and {ENV_TOKEN}): "
                  "an API token from the user's Security page, with read access to the job")

    # -- records ----------------------------------------------------------------------

    def record(self, build, build_name):
        """A :class:`RunRecord` for a build dict of ``build_name``, or ``None`` to skip it."""
        if not isinstance(build, dict) or build.get("number") is None:
            return None
        if build.get("building"):
            return None
        result = build.get("result")
        status = run_status(result)
        if status is None:
            return None
        start = duration = None
        try:
            if build.get("timestamp") is not None:
                start = dt.datetime.fromtimestamp(int(build["timestamp"]) / 1000,
                                                  dt.timezone.utc)
            if build.get("duration") is not None:
                duration = int(build["duration"]) / 1000
        except (TypeError, ValueError, OverflowError, OSError):
            start = duration = None
        node = build.get("builtOn")
        if node == "":
            node = "built-in"   # Jenkins's own node has no name in builtOn
        if not node and isinstance(build.get("description"), str):
            match = _NODE_IN_DESCRIPTION.search(build["description"])
            node = match.group(1) if match else None
        artifacts = [a.get("relativePath") for a in build.get("artifacts") or ()
                     if isinstance(a, dict) and a.get("relativePath")]
        url = build.get("url") or f"{self.root}{job_path(build_name)}/{build['number']}/"
        url = url if url.endswith("/") else url + "/"
        meta = {
            "jenkins_job": build_name,
            "build_number": build.get("number"),
            "node_name": node,
            "build_url": url,
            "artifacts": ",".join(artifacts[:20]) if artifacts else None,
        }
        meta = {k: text(v) for k, v in meta.items() if v is not None and v != ""}
        meta["build_name"] = build_name
        meta["build_status"] = str(result)
        return RunRecord(
            id=f"{build_name}#{build['number']}", build_name=build_name, status=status,
            artifacts_url=url + "artifact/" if artifacts else None, start=start,
            duration=duration, result=str(result), source=self.name, metadata=meta)

    # -- listing ----------------------------------------------------------------------

    def _job_url(self, build_name):
        return self.root + job_path(build_name)

    def _iter_builds(self, build_name, since, until, filters, status=None):
        from ciml_plugins.sources.common import as_utc

        since, until = as_utc(since), as_utc(until)
        url = self._job_url(build_name) + "/api/json"
        local = {k: str(v) for k, v in (filters or {}).items()}
        start = 0
        while True:
            end = start + self.page_size
            doc = self._get(url, {"tree": f"_class,allBuilds[{BUILD_TREE}]{{{start},{end}}}"})
            if doc is None:
                raise SourceError(f"Jenkins: no job {build_name!r} at "
                                  f"{redact_url(self.root)} (check --build-name: folders "
                                  "are written folder/job)")
            expect(doc, dict, "a Jenkins job", url)
            builds = doc.get("allBuilds")
            if builds is None:
                kind = str(doc.get("_class") or "")
                if kind.endswith(_FOLDER_CLASSES):
                    raise SourceError(f"Jenkins: {build_name!r} is a folder, not a job; "
                                      "name a job inside it (folder/job)")
                raise SourceError(f"Jenkins: {build_name!r} has no builds list "
                                  f"({kind or 'unknown kind'})")
            if not isinstance(builds, list):
                raise SourceError(f"Jenkins: the builds of {build_name!r} are not a list")
            for build in builds:
                run = self.record(build, build_name)
                if run is None:
                    continue
                if since is not None and run.start is not None \
                        and run.start < since - _ORDER_MARGIN:
                    return
                if self.matches(run, status=status, since=since, until=until,
                                filters=local):
                    yield run
            if len(builds) < self.page_size:
                return
            start = end

    def list_runs(self, build_name, *, since=None, until=None, filters=None, limit=None,
                  balanced=False):
        if limit is not None and limit <= 0:
            return
        if balanced:
            stream = interleave(self._iter_builds(build_name, since, until, filters, FAILED),
                                self._iter_builds(build_name, since, until, filters, PASSED))
        else:
            stream = self._iter_builds(build_name, since, until, filters)
        yield from itertools.islice(stream, limit)

    def get_run(self, run_id):
        name, sep, number = str(run_id).strip().rpartition("#")
        if not sep or not name or not number.isdigit():
            raise NotFoundError(f"no Jenkins build {run_id!r}: a build is JOB#NUMBER, "
                                "e.g. ci/tempest-full#42")
        url = f"{self._job_url(name)}/{number}/api/json"
        build = self._get(url, {"tree": BUILD_TREE})
        if build is None:
            raise NotFoundError(f"no Jenkins build {run_id!r}")
        run = self.record(expect(build, dict, "a Jenkins build", url), name)
        if run is None:
            raise NotFoundError(f"Jenkins build {run_id!r} did not finish with a result "
                                f"ciml learns from ({build.get('result')!r})")
        return run

    def __repr__(self):
        return (f"{type(self).__name__}(jenkins_url={redact_url(self.jenkins_url)!r}, "
                f"jenkins_user={self.jenkins_user!r}, "
                f"jenkins_token={'****' if self.jenkins_token else None})")


@hookimpl
def ciml_register_result_sources(register):
    register(JenkinsResultSource)


__all__ = ["JenkinsResultSource", "job_path", "run_status"]
