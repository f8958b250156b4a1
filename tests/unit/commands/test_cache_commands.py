"""``ciml cache-data``, ``ciml run list`` and ``ciml run show``: parsers, columns, rows, errors."""

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from ciml.base import FetchedMetrics
from ciml.cache import RawCache
from ciml.commands.cache import CacheData, parse_when
from ciml.commands.run import RunList, RunShow, RunUpgradeSeries
from ciml.errors import ConfigError, NotFoundError
from ciml.records import RunRecord
from ciml.shell import CimlApp

UTC = dt.timezone.utc


@pytest.fixture
def app(data_path):
    app = CimlApp()
    app.stdout, app.stderr = io.StringIO(), io.StringIO()
    app.options = app.parser.parse_args(["--data-path", str(data_path.root)])
    return app


def test_cache_data_parser_has_every_option(app):
    parser = CacheData(app, None).get_parser("ciml cache-data")
    args = parser.parse_args([
        "--build-name", "tempest-full", "--db-uri", "sqlite:///x.db", "--limit", "5",
        "--workers", "3", "--since", "2024-01-01", "--until", "2024-02-01T12:00:00",
        "--filter", "build_queue=gate", "--filter", "node_provider=rax-dfw", "--balanced",
        "--retry-unavailable", "--zuul-url", "http://z", "--tenant", "t", "--project", "p",
        "--pipeline", "gate", "--paths", "a.gz", "b", "--max-bytes", "1000"])
    assert args.source == "subunit2sql" and args.metric_source == "dstat"
    assert (args.limit, args.workers, args.balanced, args.retry_unavailable) == (5, 3, True, True)
    assert args.filter == ["build_queue=gate", "node_provider=rax-dfw"]
    assert args.db_uri == "sqlite:///x.db" and args.zuul_url == "http://z"
    assert args.paths == ["a.gz", "b"]
    for bad in (["--limit", "0"], ["--workers", "-2"], []):
        with pytest.raises(SystemExit):
            parser.parse_args(["--build-name", "x", *bad] if bad else bad)


def test_db_uri_help_never_shows_a_default_secret(app):
    help_text = CacheData(app, None).get_parser("ciml cache-data").format_help()
    assert "--db-uri" in help_text and "--api-token" in help_text


def test_parse_when():
    assert parse_when("2024-03-01", "--since") == dt.datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_when("2024-03-01T12:30:00Z", "--since") == dt.datetime(
        2024, 3, 1, 12, 30, tzinfo=UTC)
    assert parse_when("2024-03-01T14:30:00+02:00", "--since") == dt.datetime(
        2024, 3, 1, 12, 30, tzinfo=UTC)
    assert parse_when(None, "--since") is None
    with pytest.raises(ConfigError, match="--until"):
        parse_when("last tuesday", "--until")


def test_bad_filter_is_one_clear_error(app):
    cmd = CacheData(app, None)
    args = cmd.get_parser("x").parse_args(["--build-name", "j", "--db-uri", "sqlite:///x",
                                           "--filter", "novalue"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        cmd.take_action(args)


def _fill(data_path):
    with RawCache(data_path) as cache:
        for i, provider in enumerate(["rax-dfw", "ovh-bhs1"]):
            run = RunRecord(id=f"run-{i}", build_name="tempest-full",
                            status="failed" if i else "passed",
                            start=dt.datetime(2024, 1, 1 + i, tzinfo=UTC),
                            metadata={"node_provider": provider})
            index = pd.date_range(run.start, periods=3 + i, freq="s").as_unit("ns")
            frame = pd.DataFrame({"cpu_usr": np.ones(3 + i), "mem_used": np.ones(3 + i)},
                                 index=index)
            cache.store(run, FetchedMetrics("dstat-csv_log.txt.gz", b"x", "http://l/x"),
                        frame)
        cache.mark_unavailable(RunRecord(id="run-9", build_name="grenade", status="failed"),
                               "html", "an HTML page")


def test_run_list(app, data_path):
    data_path.root.mkdir()  # an empty data path lists nothing
    cmd = RunList(app, None)
    columns, rows = cmd.take_action(cmd.get_parser("x").parse_args([]))
    assert columns == ("id", "build_name", "status", "provider", "start", "samples",
                       "incomplete")
    assert list(rows) == []
    _fill(data_path)
    columns, rows = cmd.take_action(cmd.get_parser("x").parse_args([]))
    assert [r[0] for r in rows] == ["run-0", "run-1"]
    assert rows[1][1:4] == ("tempest-full", "failed", "ovh-bhs1")
    assert rows[1][5] == 4
    columns, rows = cmd.take_action(cmd.get_parser("x").parse_args(["--build-name",
                                                                    "grenade"]))
    assert list(rows) == []
    columns, rows = cmd.take_action(cmd.get_parser("x").parse_args(["--unavailable"]))
    assert columns[:3] == ("id", "build_name", "reason")
    assert [r[:3] for r in rows] == [("run-9", "grenade", "html")]


def test_run_show(app, data_path):
    _fill(data_path)
    cmd = RunShow(app, None)
    columns, values = cmd.take_action(cmd.get_parser("x").parse_args(["run-1"]))
    shown = dict(zip(columns, values))
    assert shown["id"] == "run-1" and shown["state"] == "cached"
    assert shown["samples"] == 4
    assert shown["metric_columns"] == ["cpu_usr", "mem_used"]
    assert shown["metadata"]["node_provider"] == "ovh-bhs1"
    folder = RawCache(data_path).raw_file("run-1").parent
    on_disk = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert shown["bytes_series"] == on_disk["series.bin"]
    assert shown["bytes_on_disk"] == sum(on_disk.values())
    raw_file = RawCache(data_path).raw_file("run-1")
    assert shown["bytes_raw"] == on_disk[raw_file.name]
    assert shown["raw_packed"] == RawCache(data_path).info("run-1")["raw_packed"]
    assert shown["bytes_fetched"] == RawCache(data_path).info("run-1")["bytes"]
    assert shown["disk_per_fetched"] == round(shown["bytes_on_disk"] / shown["bytes_fetched"], 3)
    columns, values = cmd.take_action(cmd.get_parser("x").parse_args(["run-9"]))
    assert dict(zip(columns, values))["reason"] == "html"
    with pytest.raises(NotFoundError):
        cmd.take_action(cmd.get_parser("x").parse_args(["nope"]))


def test_run_upgrade_series(app, data_path):
    _fill(data_path)
    cache = RawCache(data_path)
    before = cache.series("run-0")
    folder = cache.raw_file("run-0").parent
    (folder / "series.bin").unlink()  # run-0 as an older ciml cached it
    np.savez(folder / "series.npz", timestamps=before.timestamps,
             values=np.ascontiguousarray(before.values), columns=np.array(before.columns))
    cmd = RunUpgradeSeries(app, None)
    columns, values = cmd.take_action(cmd.get_parser("x").parse_args([]))
    shown = dict(zip(columns, values))
    assert shown["upgraded"] == 1 and shown["unreadable"] == 0 and shown["bytes_saved"] > 0
    assert not (folder / "series.npz").exists()
    assert cache.series("run-0").values.tobytes() == before.values.tobytes()
    # _fill's one-byte files would not shrink: none is packed.
    assert shown["files_packed"] == 0 and shown["bytes_saved_files"] == 0
    columns, values = cmd.take_action(cmd.get_parser("x").parse_args([]))
    assert dict(zip(columns, values))["upgraded"] == 0


def test_run_upgrade_series_packs_files_kept_as_fetched(app, data_path, sample_data,
                                                        monkeypatch):
    import gzip

    plain = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes()
    monkeypatch.setattr(RawCache, "pack_raw", False)  # as an older ciml kept them
    with RawCache(data_path) as cache:
        run = RunRecord(id="old-1", build_name="tempest-full", status="passed")
        frame = pd.DataFrame({"cpu_usr": np.ones(3)}, index=pd.date_range(
            "2024-01-01", periods=3, freq="s", tz="UTC").as_unit("ns"))
        cache.store(run, FetchedMetrics("dstat-csv_log.txt.gz", gzip.compress(plain), "x"),
                    frame)
        before = cache.sizes("old-1")
    cmd = RunUpgradeSeries(app, None)
    shown = dict(zip(*cmd.take_action(cmd.get_parser("x").parse_args([]))))
    assert shown["files_packed"] == 1 and shown["upgraded"] == 0
    with RawCache(data_path) as cache:
        assert shown["bytes_saved_files"] == before["raw"] - cache.sizes("old-1")["raw"] > 0
        assert cache.fetched_content("old-1") == plain
    shown = dict(zip(*cmd.take_action(cmd.get_parser("x").parse_args([]))))
    assert shown["files_packed"] == 0
