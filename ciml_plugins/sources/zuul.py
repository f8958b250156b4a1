"""The ``zuul`` result source: finished builds from Zuul's REST API.

``GET <zuul_url>/api/tenant/<tenant>/builds`` lists builds newest first; it
takes ``job_name``, ``project``, ``pipeline``, ``branch``, ``result``...
filters and ``limit``/``skip`` paging, and returns no total, so paging stops
on a short page.  ``/build/<uuid>`` returns one build.  Two record formats
exist: the flat one (``project``, ``branch``, ``change`` at top level, before
Zuul 10 in 2024) and the nested one (those under ``ref``); both are read.

Builds that are not final, or have no ``log_url`` (nothing to fetch metrics
from), are skipped, as are results that say the job never really ran
(``SKIPPED``, ``CANCELED``, ``ABORTED``, ``DEQUEUED``).  ``SUCCESS`` is
"passed"; every other final result (``FAILURE``, ``TIMED_OUT``,
``POST_FAILURE``, ``NODE_FAILURE``, ``RETRY_LIMIT``, ``DISK_FULL``,
``MERGE_CONFLICT``...) is "failed"; the raw result is kept.

Runs come newest first, as Zuul lists them: the API cannot list oldest
first without reading the whole history.

Zuul's API does not say which cloud a build ran on.  Before a run is
cached, :meth:`ZuulResultSource.complete` reads the Ansible inventory Zuul
publishes with the logs (``zuul-info/inventory.yaml``): its hosts'
``nodepool`` sections give ``node_provider`` (``rax-dfw``), ``node_cloud``,
``node_region``, ``node_az`` and ``node_label``, from the ``controller``
host when there is one, else from the first host that names a provider.
A run whose inventory is missing or unreadable is cached without them.
"""

import dataclasses
import itertools
import logging
import threading
import urllib.parse

from ciml.base import Parameter, ResultSource
from ciml.errors import ConfigError, NotFoundError, SourceError
from ciml.hookspecs import hookimpl
from ciml.http import (
    HTTP_PARAMETERS,
    FetchError,
    HttpClient,
    is_remote,
    local_path,
    looks_like_html,
    read_local,
    redact_url,
)
from ciml.records import FAILED, PASSED, RunRecord
from ciml_plugins.sources.common import as_utc, interleave

LOG = logging.getLogger(__name__)

#: Final results that mean the job did not run its payload: nothing to learn.
NOT_RUN = frozenset({"SKIPPED", "CANCELED", "ABORTED", "DEQUEUED"})

#: Query parameters the builds endpoint filters on; other ``--filter`` keys
#: are matched against the record's metadata here.
API_FILTERS = ("project", "pipeline", "branch", "change", "patchset", "ref",
               "newrev", "result", "voting", "node_name", "uuid")

#: Keys copied from a build (or its ``ref``) into the record's metadata.
_REF_KEYS = ("project", "branch", "change", "patchset", "ref", "ref_url",
             "oldrev", "newrev")
_BUILD_KEYS = ("pipeline", "voting", "nodeset", "node_name", "event_id",
               "event_timestamp", "end_time", "error_detail", "held", "final")


#: Where Zuul publishes a build's Ansible inventory, under its log URL.
DEFAULT_INVENTORY_PATH = "zuul-info/inventory.yaml"

#: Inventories are a few kB to a few hundred; anything larger is not one.
MAX_INVENTORY_BYTES = 8 << 20

#: Warnings about unreadable inventories before the rest go to debug level.
MAX_INVENTORY_WARNINGS = 3

#: Inventory ``nodepool`` keys copied into a run's metadata, and as what.
_NODEPOOL_KEYS = (("provider", "node_provider"), ("cloud", "node_cloud"),
                  ("region", "node_region"), ("az", "node_az"), ("label", "node_label"))


class InventoryError(ValueError):
    """An inventory file that cannot be read as one."""


def nodepool_metadata(data):
    """Run metadata from the bytes of a Zuul ``inventory.yaml``.

    ``{}`` when no host names a provider.  Raises :class:`InventoryError`
    for what is not a YAML inventory (an HTML error page, a corrupt file).
    """
    import yaml

    if looks_like_html(data[:8192]):
        raise InventoryError("an HTML page, not an inventory")
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        doc = yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InventoryError(f"not valid YAML{where}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("all"), dict):
        raise InventoryError("no 'all' group")
    hosts = doc["all"].get("hosts")
    if not isinstance(hosts, dict):
        return {}

    def nodepool(host):
        section = hosts.get(host)
        section = section.get("nodepool") if isinstance(section, dict) else None
        return section if isinstance(section, dict) and section.get("provider") else None

    # dstat is read from the controller first, so its node is the one to name.
    names = ["controller", *(h for h in hosts if h != "controller")]
    section = next((s for s in map(nodepool, names) if s is not None), None)
    if section is None:
        return {}
    return {key: str(section[field]) for field, key in _NODEPOOL_KEYS
            if isinstance(section.get(field), (str, int, float)) and section[field] != ""}


def run_status(result):
    return PASSED if result == "SUCCESS" else FAILED


def _matches(run, key, value):
    have = run.result if key == "result" else run.metadata.get(key)
    if key == "voting" and have is not None:
        return have == _text(str(value).lower() in ("1", "true", "yes"))
    return have is None or have == str(value)


def _text(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class ZuulResultSource(ResultSource):
    """Finished builds of a job from Zuul's REST API (/api/tenant/<tenant>/builds)"""

    name = "zuul"
    parameters = (
        Parameter("zuul_url", str, help="Zuul web URL, e.g. https://zuul.opendev.org"),
        Parameter("tenant", str, help="Zuul tenant, e.g. openstack"),
        Parameter("project", str, help="only builds of this project"),
        Parameter("pipeline", str, help="only builds of this pipeline (gate, check...)"),
        Parameter("branch", str, help="only builds of this branch"),
        Parameter("result", str, help="only builds with this Zuul result (SUCCESS...)"),
        Parameter("api_token", str, secret=True,
                  help="bearer token sent with every request (env CIML_ZUUL_API_TOKEN)"),
        Parameter("page_size", int, default=100, help="builds requested per page"),
        Parameter("inventory_path", str, default=DEFAULT_INVENTORY_PATH,
                  help="file under a build's log URL whose nodepool section names the "
                       "node provider; '' to skip"),
        *HTTP_PARAMETERS,
    )

    def __init__(self, **params):
        import os

        super().__init__(**params)
        if not self.api_token:
            self.api_token = os.environ.get("CIML_ZUUL_API_TOKEN") or None
        if not self.zuul_url:
            raise ConfigError("result source 'zuul' needs --zuul-url")
        if "/api/tenant/" not in self.zuul_url and not self.tenant:
            raise ConfigError("result source 'zuul' needs --tenant")
        if self.page_size < 1:
            raise ConfigError("page_size must be at least 1")
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else None
        self._api = HttpClient.for_component(self, "ciml-zuul", headers=headers)
        # Logs are served by another host than the API: a client of their
        # own, which never sends the API token.
        self._logs = HttpClient.for_component(self, "ciml-zuul")
        self._warnings_lock = threading.Lock()
        self._inventory_warnings = 0

    @property
    def api_url(self):
        """``<zuul_url>/api/tenant/<tenant>`` (a URL that already has it is kept)."""
        url = self.zuul_url.rstrip("/")
        if "/api/tenant/" in url:
            return url
        return f"{url}/api/tenant/{urllib.parse.quote(self.tenant, safe='')}"

    # -- HTTP ------------------------------------------------------------------

    def close(self):
        self._api.close()
        self._logs.close()

    def _get(self, path, params=None):
        """GET a JSON document; ``None`` on 404.

        Retries (server errors, dropped connections, Retry-After) are the
        shared client's; what is left becomes a :class:`SourceError` whose
        message never shows the URL's credentials.
        """
        url = self.api_url + path
        try:
            data, _ = self._api.get_json(url, params=params, what="the Zuul API")
        except FetchError as exc:
            if exc.reason == "auth":
                raise SourceError(f"{exc}: check --api-token (or CIML_ZUUL_API_TOKEN)",
                                  transient=True) from None
            if exc.reason == "not-json":
                raise SourceError(f"{exc} (is --zuul-url the Zuul web root?)") from None
            raise SourceError(f"Zuul API: {exc}", transient=exc.transient) from None
        return data

    # -- records ---------------------------------------------------------------

    def complete(self, run):
        """Add the node provider (and cloud, region, az, label) from the inventory."""
        if not self.inventory_path or not run.artifacts_url:
            return run
        base = run.artifacts_url
        try:
            if is_remote(base):
                url = base.rstrip("/") + "/" + self.inventory_path.lstrip("/")
                where = redact_url(url)
                data = self._logs.fetch(url, max_bytes=MAX_INVENTORY_BYTES)
            else:
                path = local_path(base) / self.inventory_path
                where = str(path)
                data = read_local(path, MAX_INVENTORY_BYTES)
            if data is None:
                LOG.debug("run %s has no inventory at %s", run.id, where)
                return run
            found = nodepool_metadata(data)
        except (FetchError, InventoryError) as exc:
            self._inventory_problem(run, where, exc)
            if getattr(exc, "transient", False):
                # Worth another try: cache-data completes it next time.
                return dataclasses.replace(run, incomplete=f"node provider: {exc}")
            return run
        if not found:
            LOG.debug("run %s: the inventory %s names no node provider", run.id, where)
            return run
        # What the build record said explicitly wins.
        return dataclasses.replace(run, metadata={**found, **run.metadata})

    def record(self, build):
        """A :class:`RunRecord` for a build dict, or ``None`` if it is to be skipped."""
        if not isinstance(build, dict) or not build.get("uuid"):
            return None
        result = build.get("result")
        if build.get("final") is False or not result or result == "IN_PROGRESS":
            return None
        if result in NOT_RUN or not build.get("log_url"):
            return None
        ref = build.get("ref")
        source = ref if isinstance(ref, dict) else build
        meta = {}
        for key in _REF_KEYS:
            if key == "ref" and isinstance(ref, dict):
                value = ref.get("ref")
            else:
                value = source.get(key, build.get(key) if key != "ref" else None)
            if value is not None:
                meta[key] = _text(value)
        for key in _BUILD_KEYS:
            if build.get(key) is not None:
                meta[key] = _text(build[key])
        buildset = build.get("buildset")
        if isinstance(buildset, dict) and buildset.get("uuid"):
            meta["buildset_uuid"] = str(buildset["uuid"])
        extra = build.get("metadata")
        if isinstance(extra, dict):
            for key, value in extra.items():
                if isinstance(value, (str, int, float, bool)):
                    meta.setdefault(str(key), _text(value))
        # nodeset and node_name name a node *type* (ubuntu-jammy), not where it
        # ran: taking them as the provider would mislabel every run, so only
        # an explicit provider (a deployment that reports one) is used.
        provider = build.get("node_provider") or meta.get("node_provider")
        if provider:
            meta["node_provider"] = str(provider)
        # The keys the original's subunit2sql metadata used, so labels and
        # filters work the same whichever source cached a run.
        meta["build_name"] = str(build.get("job_name") or "")
        meta["build_uuid"] = str(build["uuid"])
        meta["build_status"] = str(result)
        if "pipeline" in meta:
            meta["build_queue"] = meta["pipeline"]
        if "branch" in meta:
            meta["build_branch"] = meta["branch"]
        if self.tenant:
            meta["tenant"] = self.tenant
        duration = build.get("duration")
        try:
            duration = float(duration) if duration is not None else None
        except (TypeError, ValueError):
            duration = None
        try:
            start = as_utc(build.get("start_time"))
        except (TypeError, ValueError):
            start = None
        return RunRecord(
            id=str(build["uuid"]), build_name=str(build.get("job_name") or ""),
            status=run_status(result), artifacts_url=str(build["log_url"]),
            build_uuid=str(build["uuid"]), start=start, duration=duration,
            result=str(result), source=self.name, metadata=meta)

    def _inventory_problem(self, run, where, exc):
        # One broken log server would otherwise print a warning per run.
        with self._warnings_lock:
            self._inventory_warnings += 1
            count = self._inventory_warnings
        if count <= MAX_INVENTORY_WARNINGS:
            more = (" (more of these are logged at debug level)"
                    if count == MAX_INVENTORY_WARNINGS else "")
            LOG.warning("run %s: no node provider from its inventory %s: %s%s",
                        run.id, where, exc, more)
        else:
            LOG.debug("run %s: no node provider from its inventory %s: %s", run.id, where, exc)

    # -- listing ---------------------------------------------------------------

    def _query(self, build_name, filters, result=None):
        params = {"job_name": build_name}
        for key in ("project", "pipeline", "branch", "result"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        local = {}
        for key, value in (filters or {}).items():
            if key in API_FILTERS:
                params[key] = value
            else:
                local[key] = str(value)
        if result is not None:
            params["result"] = result
        return params, local

    def _iter_builds(self, build_name, since, until, filters, result=None, status=None):
        params, local = self._query(build_name, filters, result)
        skip = 0
        since = as_utc(since)
        until = as_utc(until)
        while True:
            page = self._get("/builds", {**params, "limit": self.page_size, "skip": skip})
            where = redact_url(self.api_url) + "/builds"
            if page is None:
                raise SourceError(f"Zuul API: no builds endpoint at {where} "
                                  "(check --zuul-url and --tenant)")
            if not isinstance(page, list):
                raise SourceError(f"Zuul API: {where} did not return a list")
            all_older = bool(page)
            for build in page:
                run = self.record(build)
                start = run.start if run is not None else None
                if start is None or since is None or start >= since:
                    all_older = False
                if run is None or run.build_name != build_name:
                    continue
                if not self.matches(run, status=status, since=since, until=until,
                                    filters=local):
                    continue
                # Servers ignore filters they do not know: check again here.
                if not all(_matches(run, k, v) for k, v in params.items()
                           if k in API_FILTERS):
                    continue
                yield run
            # Zuul lists newest first: once a whole page started before
            # --since, every later page does too.
            if len(page) < self.page_size or (since is not None and all_older):
                return
            skip += len(page)

    def list_runs(self, build_name, *, since=None, until=None, filters=None,
                  limit=None, balanced=False):
        if limit is not None and limit <= 0:
            return
        if balanced:
            stream = interleave(
                self._iter_builds(build_name, since, until, filters, status=FAILED),
                self._iter_builds(build_name, since, until, filters, result="SUCCESS"))
        else:
            stream = self._iter_builds(build_name, since, until, filters)
        yield from itertools.islice(stream, limit)

    def get_run(self, run_id):
        build = self._get("/build/" + urllib.parse.quote(str(run_id), safe=""))
        if build is None:
            raise NotFoundError(f"no Zuul build {run_id!r} in {redact_url(self.api_url)}")
        run = self.record(build)
        if run is None:
            raise NotFoundError(f"Zuul build {run_id!r} is not a finished build with logs")
        return run

    def __repr__(self):
        return (f"{type(self).__name__}(zuul_url={redact_url(self.zuul_url)!r}, "
                f"tenant={self.tenant!r}, "
                f"api_token={'****' if self.api_token else None})")


@hookimpl
def ciml_register_result_sources(register):
    register(ZuulResultSource)


__all__ = ["ZuulResultSource", "nodepool_metadata", "run_status"]
