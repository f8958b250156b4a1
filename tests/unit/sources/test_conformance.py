"""The source conformance kits, run over the built-in sources on generated histories."""

import pytest

from ciml.errors import NotFoundError
from ciml.records import RunRecord
from ciml.testing import sources as kit
from ciml.testing.servers import CIServer
from ciml_plugins.metrics.dstat import DstatMetricSource
from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource
from ciml_plugins.sources.zuul import ZuulResultSource

JOB = "tempest-full"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A generated history whose logs are served over HTTP."""
    from ciml.generator import generate_history

    root = tmp_path_factory.mktemp("conformance")
    (root / "logs").mkdir()
    with CIServer(root=root / "logs") as logs:
        history = generate_history(root, runs=24, seed=8, jobs=(JOB, "grenade"),
                                   base_url=logs.url, bad_fraction=0.0, tests=False,
                                   duration=(300, 600))
        yield history, logs


def test_subunit2sql_conforms(served):
    history, _ = served
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        kit.check_result_source(source, JOB)


def test_subunit2sql_on_mariadb_conforms(s2s_mariadb, tmp_path):
    from ciml.generator import generate_history

    generate_history(tmp_path / "h", runs=12, seed=9, jobs=(JOB,), db_uri=s2s_mariadb,
                     tests=False, duration=(300, 400))
    with Subunit2sqlResultSource(db_uri=s2s_mariadb) as source:
        kit.check_result_source(source, JOB)


@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_zuul_conforms(served, flat):
    history, _ = served
    builds = history.zuul_builds_flat if flat else history.zuul_builds
    with CIServer(builds=builds) as api:
        with ZuulResultSource(zuul_url=api.zuul_url, tenant="openstack",
                              page_size=5) as source:
            kit.check_result_source(source, JOB)


@pytest.mark.parametrize("variant", ["0.7.2", "0.7.3", "0.7.4"])
def test_dstat_conforms_over_http_and_on_disk(served, variant):
    history, _ = served
    picked = [r for r in history.good_runs(JOB) if r["variant"] == variant]
    assert picked, f"the history has no run with dstat {variant}"
    run = picked[0]
    record = RunRecord(id=run["run_id"], build_name=JOB, status=run["status"],
                       artifacts_url=run["artifacts_url"], start=run["start"])
    kit.check_metric_source(DstatMetricSource(retries=0), record)
    on_disk = history.logs_dir / run["artifacts_url"].split("/", 3)[3]
    kit.check_metric_source(DstatMetricSource(), RunRecord(
        id=record.id, build_name=JOB, status=record.status, artifacts_url=str(on_disk),
        start=record.start))


# -- the kits fail where they should ----------------------------------------------


class _Base(Subunit2sqlResultSource):
    """A subunit2sql source broken on purpose"""

    name = "broken-subunit2sql"


def _broken(history, **overrides):
    source = _Base(db_uri=history.db_uri)
    for name, func in overrides.items():
        setattr(source, name, func.__get__(source))
    return source


@pytest.mark.parametrize("override,message", [
    ("eager", "fails check_list_runs_streams: list_runs\\(\\) returned a list"),
    ("limit", "fails check_limit: limit=1 gave"),
    ("naive", "fails check_run_records: run .* start .* is not a timezone-aware datetime"),
    ("missing", "fails check_get_run: get_run\\(\\) of an unknown id must raise NotFoundError"),
    ("unbalanced", "fails check_balanced: balanced=True, limit=2 did not give"),
])
def test_result_kit_names_the_broken_promise(served, override, message):
    history, _ = served
    original = Subunit2sqlResultSource.list_runs

    def eager(self, build_name, **kw):
        return list(original(self, build_name, **kw))

    def limit(self, build_name, **kw):
        kw.pop("limit", None)
        return original(self, build_name, **kw)

    def naive(self, build_name, **kw):
        for run in original(self, build_name, **kw):
            run.start = run.start.replace(tzinfo=None)
            yield run

    def missing(self, run_id):
        try:
            return Subunit2sqlResultSource.get_run(self, run_id)
        except NotFoundError:
            return RunRecord(id=run_id, build_name=JOB, status="passed")

    def unbalanced(self, build_name, **kw):
        kw.pop("balanced", None)
        return original(self, build_name, **kw)

    funcs = {"eager": ("list_runs", eager), "limit": ("list_runs", limit),
             "naive": ("list_runs", naive), "missing": ("get_run", missing),
             "unbalanced": ("list_runs", unbalanced)}
    name, func = funcs[override]
    with pytest.raises(AssertionError, match=message):
        kit.check_result_source(_broken(history, **{name: func}), JOB)


class _LaxDstat(DstatMetricSource):
    """A dstat source that lets garbage through"""

    name = "lax-dstat"

    def parse(self, data, run):
        if data.startswith(b"<!DOCTYPE"):
            raise ValueError("not CSV")
        return super().parse(data, run)


class _NaiveDstat(DstatMetricSource):
    """A dstat source whose timestamps carry no zone"""

    name = "naive-dstat"

    def parse(self, data, run):
        frame = super().parse(data, run)
        frame.index = frame.index.tz_localize(None)
        return frame


class _StaleSeriesDstat(DstatMetricSource):
    """A dstat source whose arrays for the cache drop the last sample its frame keeps"""

    name = "stale-series-dstat"

    def parse_series(self, data, run):
        stamps, values, columns = super().parse_series(data, run)
        return stamps[:-1], values[:-1], columns


@pytest.mark.parametrize("cls,message", [
    (_StaleSeriesDstat, r"fails check_parse: parse_series\(\) gives other time stamps"),
    (_LaxDstat, "fails check_parse_rejects_garbage: parse\\(\\) of an HTML page raised "
                "ValueError"),
    (_NaiveDstat, "fails check_parse: parse\\(\\): the index is not in UTC"),
])
def test_metric_kit_names_the_broken_promise(served, cls, message):
    history, _ = served
    run = history.good_runs(JOB)[0]
    record = RunRecord(id=run["run_id"], build_name=JOB, status=run["status"],
                       artifacts_url=run["artifacts_url"], start=run["start"])
    with pytest.raises(AssertionError, match=message):
        kit.check_metric_source(cls(), record)
