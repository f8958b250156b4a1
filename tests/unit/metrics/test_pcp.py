"""The pcp metric source: real pcp-dstat output parsed to dstat's names and units."""

import csv
import datetime as dt
import gzip

import numpy as np
import pytest

from ciml import columns as vocabulary
from ciml.errors import MetricsUnavailable
from ciml.records import RunRecord
from ciml.testing import sources as kit
from ciml.testing.servers import CIServer
from ciml_plugins.metrics import dstat
from ciml_plugins.metrics.dstat import parse_dstat
from ciml_plugins.metrics.pcp import PcpMetricSource, parse_pcp

UTC = dt.timezone.utc
DEVSTACK = ["cpu_usr", "cpu_sys", "cpu_idl", "cpu_wai", "cpu_stl", "mem_used", "mem_free",
            "mem_buff", "mem_cach", "net_recv", "net_send", "dsk_read", "dsk_writ", "io_read",
            "io_writ", "sys_int", "sys_csw", "load_1m", "load_5m", "load_15m", "procs_run",
            "procs_blk", "procs_new", "paging_in", "paging_out", "tcp_lis", "tcp_act",
            "tcp_syn", "tcp_tim", "tcp_clo"]


@pytest.fixture(scope="module")
def pcp_samples(sample_data):
    return {name: (sample_data / "pcp" / f"pcp-dstat-{name}.csv").read_bytes()
            for name in ("devstack", "top-swap", "epoch")}


def _raw_rows(data):
    """The sample's data rows as cell lists, straight from the CSV."""
    lines = data.decode().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('"time"')
                  and not lines[i + 1].startswith('"'))
    return next(csv.reader([lines[header]])), [next(csv.reader([x])) for x in lines[header + 1:]]


def test_devstack_options_give_dstat_names_and_units(pcp_samples):
    data = pcp_samples["devstack"]
    frame = parse_pcp(data)
    assert list(frame.columns) == DEVSTACK
    assert all(frame.dtypes == np.float64)
    assert str(frame.index.tz) == "UTC" and frame.index.is_monotonic_increasing
    # 31 rows written; the first has no rates (fewer fields) and is skipped.
    header, rows = _raw_rows(data)
    assert len(rows) == 31 and len(rows[0]) < len(header) and len(frame) == 30
    second = rows[1]
    assert frame.index[0] == dt.datetime(2026, 12, 2, 4, 34, 53, tzinfo=UTC)
    # KiB in pcp-dstat's file, bytes in dstat's (and ciml's) vocabulary.
    assert frame["mem_used"].iloc[0] == float(second[header.index("used")]) * 1024
    assert frame["mem_buff"].iloc[0] == float(second[header.index("buf")]) * 1024
    assert frame["dsk_writ"].iloc[0] == float(second[header.index("dsk/total:writ")]) * 1024
    # Network is in bytes already; percentages and load pass unchanged.
    assert frame["net_recv"].iloc[0] == float(second[header.index("net/total:recv")])
    assert frame["cpu_usr"].iloc[0] == float(second[header.index("total usage:usr")])
    assert frame["load_1m"].iloc[0] == float(second[header.index("1m")])


def test_swap_missing_on_the_host_drops_its_columns_not_the_rows(pcp_samples):
    # No swap device: every row has one empty field where two columns are.
    frame = parse_pcp(pcp_samples["top-swap"])
    assert "swap_used" not in frame.columns and "swap_free" not in frame.columns
    assert list(frame.columns) == DEVSTACK   # the text "top" columns are dropped
    assert len(frame) >= 18


def test_epoch_time_column(pcp_samples):
    frame = parse_pcp(pcp_samples["epoch"])
    assert frame.index[0] == dt.datetime(2026, 12, 2, 4, 34, 54, tzinfo=UTC)
    assert (np.diff(frame.index.asi8) == 2_000_000_000).all()
    assert {"cpu_usr", "mem_used", "load_1m", "sys_csw"} <= set(frame.columns)


def test_dstat_parser_finds_the_column_line_under_an_epoch_group_line(pcp_samples):
    # dstat -T writes "epoch" first on both header lines; the first is the group line.
    groups, columns, _ = dstat._find_header(pcp_samples["epoch"])
    assert groups[:2] == ["epoch", "total usage"]
    assert columns[:2] == ["epoch", "total usage:usr"]


def test_gzip_and_plain_agree(pcp_samples):
    data = pcp_samples["devstack"]
    plain = parse_pcp(data)
    packed = parse_pcp(gzip.compress(data))
    assert plain.equals(packed)


def test_classic_dstat_parses_as_the_dstat_source_does(sample_data):
    data = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes()
    assert parse_pcp(data).equals(parse_dstat(data))


def test_common_vocabulary_from_pcp_and_dstat_agree(pcp_samples, sample_data):
    dstat_frame = parse_dstat(
        (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes())
    pcp_frame = parse_pcp(pcp_samples["devstack"])
    common = set(vocabulary.COMMON_COLUMNS)
    assert common <= set(dstat_frame.columns) and common <= set(pcp_frame.columns)
    # Same units: memory used on these two 2-CPU machines is gigabytes in both.
    for frame in (dstat_frame, pcp_frame):
        assert 1e8 < frame["mem_used"].median() < 1e11


def test_rows_that_cannot_be_aligned_are_skipped(pcp_samples):
    text = pcp_samples["devstack"].decode()
    lines = text.splitlines()
    # Two separate runs of collapsed empties: which columns they cover is unknowable.
    cells = lines[10].split(",")
    broken = cells[:2] + [""] + cells[4:20] + [""] + cells[23:]
    lines[10] = ",".join(broken)
    frame = parse_pcp(("\n".join(lines) + "\n").encode())
    assert len(frame) == 29


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (kit.HTML_PAGE, "html"),
    (b"just some text\nno header here\n", "not-pcp"),
])
def test_garbage_is_rejected_with_a_reason(data, reason):
    with pytest.raises(MetricsUnavailable) as info:
        parse_pcp(data)
    assert info.value.reason == reason


def test_no_whole_sample_is_malformed(pcp_samples):
    lines = pcp_samples["devstack"].decode().splitlines()
    head = lines[:6]
    bad = [",".join(line.split(",")[:3] + [""] + line.split(",")[6:9] + [""]
                    + line.split(",")[12:]) for line in lines[7:12]]
    with pytest.raises(MetricsUnavailable) as info:
        parse_pcp(("\n".join(head + bad) + "\n").encode())
    assert info.value.reason == "malformed"


def _run_at(tmp_path, data, name="logs/dstat-csv_log.txt"):
    target = tmp_path / "run" / name
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    return RunRecord(id="pcp-run", build_name="tempest-full", status="passed",
                     artifacts_url=(tmp_path / "run").as_uri() + "/",
                     start=dt.datetime(2026, 12, 2, 4, 34, tzinfo=UTC))


def test_conformance_on_a_local_log_tree(tmp_path, pcp_samples):
    kit.check_metric_source(PcpMetricSource(), _run_at(tmp_path, pcp_samples["devstack"]))


def test_fetch_over_http_like_dstat(tmp_path, pcp_samples):
    run = _run_at(tmp_path, gzip.compress(pcp_samples["devstack"]),
                  "controller/logs/dstat-csv_log.txt.gz")
    with CIServer(root=tmp_path) as server:
        run.artifacts_url = server.url + "run/"
        source = PcpMetricSource(retries=0)
        fetched, frame = source.load(run)
        assert fetched.name == "dstat-csv_log.txt.gz"
        assert list(frame.columns) == DEVSTACK
        server.fault("*/dstat-csv_log.txt.gz", html=True)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(run)
        assert info.value.reason == "html"
        source.close()


def test_registered_as_a_plugin():
    from ciml.plugins import get_manager

    assert get_manager().get("metric_source", "pcp") is PcpMetricSource



def test_read_from_a_zip_artifact(tmp_path, pcp_samples):
    # GitHub Actions / GitLab keep a job's artifacts as a zip: the recipe
    # uploads pcp-dstat's CSV under the dstat name.
    import zipfile

    archive = tmp_path / "artifact.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("logs/dstat-csv_log.txt", pcp_samples["devstack"])
    run = RunRecord(id="zip-run", build_name="tempest-full", status="passed",
                    artifacts_url=archive.as_uri(), metadata={"artifacts_archive": "zip"},
                    start=dt.datetime(2026, 12, 2, 4, 34, tzinfo=UTC))
    fetched, frame = PcpMetricSource().load(run)
    assert fetched.name == "dstat-csv_log.txt" and list(frame.columns) == DEVSTACK
