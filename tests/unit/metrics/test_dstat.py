"""The dstat metric source: every real layout, every rejection, the year, fetching."""

import datetime as dt
import gzip

import numpy as np
import pytest

from ciml.errors import MetricsUnavailable
from ciml.records import RunRecord
from ciml.testing.servers import CIServer
from ciml_plugins.metrics import dstat
from ciml_plugins.metrics.dstat import DstatMetricSource, parse_dstat

UTC = dt.timezone.utc
SAMPLES = {
    "0.7.2": "dstat-csv_log.dstat-0.7.2.generated.txt",
    "0.7.3": "dstat-csv_log.dstat-0.7.3.generated.txt",
    "0.7.4": "dstat-csv_log.debian-0.7.4-devstack-top-opts.generated.txt",
}
COMMON = ["cpu_usr", "cpu_sys", "cpu_idl", "cpu_wai", "mem_used", "mem_free", "mem_buff",
          "mem_cach", "net_recv", "net_send", "dsk_read", "dsk_writ", "io_read", "io_writ",
          "sys_int", "sys_csw", "load_1m", "load_5m", "load_15m", "procs_run", "procs_blk",
          "procs_new", "paging_in", "paging_out", "tcp_lis", "tcp_act", "tcp_syn", "tcp_tim",
          "tcp_clo"]


@pytest.fixture(scope="module")
def samples(sample_data):
    return {v: (sample_data / "dstat" / name).read_bytes() for v, name in SAMPLES.items()}


def _reason(data, **kwargs):
    with pytest.raises(MetricsUnavailable) as info:
        parse_dstat(data, **kwargs)
    return info.value.reason


# -- the real samples ----------------------------------------------------------


@pytest.mark.parametrize("variant,rows,extra", [
    ("0.7.2", 151, ["cpu_hiq", "cpu_siq"]),
    ("0.7.3", 150, ["cpu_stl"]),
    ("0.7.4", 45, ["cpu_stl", "swap_used", "swap_free"]),
])
def test_real_samples(samples, variant, rows, extra):
    frame = parse_dstat(samples[variant])
    assert len(frame) == rows
    assert sorted(frame.columns) == sorted(COMMON + extra)
    assert all(frame.dtypes == np.float64)
    assert str(frame.index.tz) == "UTC"
    assert frame.index.name == "time"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    # Without a run start, the Date: line of the preamble gives the year.
    assert frame.index[0].year == 2026 and frame.index[0].month == 11


def test_gzip_and_plain_agree(samples):
    for data in samples.values():
        plain = parse_dstat(data)
        packed = parse_dstat(gzip.compress(data))
        assert plain.equals(packed)


def test_columns_are_aligned_by_name(samples):
    # 0.7.2 orders memory "used buff cach free", 0.7.3 "used free buff cach".
    old = parse_dstat(samples["0.7.2"])
    new = parse_dstat(samples["0.7.3"])
    assert old["mem_used"].iloc[1] == 337354752.0
    assert old["mem_free"].iloc[1] == 23135711232.0
    assert new["mem_free"].iloc[1] == 23137701888.0
    assert new["mem_cach"].iloc[1] == 1772056576.0


def test_duplicate_dstat_names_are_distinct(samples):
    frame = parse_dstat(samples["0.7.3"])
    # read/writ appear under dsk/total (bytes) and io/total (requests).
    assert frame["dsk_read"].iloc[1] == 172032.0
    assert frame["io_read"].iloc[1] == 12.0
    assert frame["dsk_writ"].iloc[1] == 106496.0
    assert frame["io_writ"].iloc[1] == 10.0


def test_top_text_columns_are_dropped_and_integers_parse(samples):
    frame = parse_dstat(samples["0.7.4"])
    assert not any("process" in c or "top" in c for c in frame.columns)
    assert frame["cpu_idl"].iloc[1] == 49.0   # written "49", no decimal point
    assert frame["mem_used"].iloc[0] == 166518784.0


def test_column_names_helper():
    time_index, named = dstat.column_names(
        ["system", "total cpu usage", "", "dsk/sda", "", "cpu3 usage", "odd Group!", ""],
        ["time", "usr", "sys", "read", "writ", "usr", "a b", "x"])
    assert time_index == 0
    assert named == [(1, "cpu_usr"), (2, "cpu_sys"), (3, "dsk_sda_read"),
                     (4, "dsk_sda_writ"), (5, "cpu3_usr"), (7, "odd_group_x")]


def test_repeated_names_get_suffixes():
    _, named = dstat.column_names(["system", "foo", "", "", "bar"],
                                  ["time", "x", "x", "x", "x"])
    assert [n for _, n in named] == ["foo_x", "foo_x_2", "foo_x_3", "bar_x"]


# -- the year --------------------------------------------------------------------


def _with_times(sample, stamps):
    lines = sample.split(b"\n")
    head = next(i for i, line in enumerate(lines) if line.startswith(b'"time"')) + 1
    rows = [line for line in lines[head:] if line]
    out = [stamp.encode() + rows[i % len(rows)][14:] for i, stamp in enumerate(stamps)]
    return b"\n".join(lines[:head] + out) + b"\n"


def test_new_year_crossing(samples):
    stamps = ["31-12 23:59:58", "31-12 23:59:59", "01-01 00:00:00", "01-01 00:00:01"]
    data = _with_times(samples["0.7.3"], stamps)
    frame = parse_dstat(data, start=dt.datetime(2025, 12, 31, 23, 50, tzinfo=UTC))
    assert [t.isoformat() for t in frame.index] == [
        "2025-12-31T23:59:58+00:00", "2025-12-31T23:59:59+00:00",
        "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00"]
    # The run's recorded start may fall after midnight while dstat started before.
    frame = parse_dstat(data, start=dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    assert frame.index[0].year == 2025 and frame.index[-1].year == 2026
    assert (frame.index[-1] - frame.index[0]).total_seconds() == 3


def test_february_29(samples):
    data = _with_times(samples["0.7.2"], ["29-02 10:00:00", "29-02 10:00:01"])
    frame = parse_dstat(data, start=dt.datetime(2028, 2, 29, 9, 59, tzinfo=UTC))
    assert frame.index[0] == dt.datetime(2028, 2, 29, 10, tzinfo=UTC)
    # A naive start is UTC; another time zone is converted.
    frame = parse_dstat(data, start=dt.datetime(2028, 2, 29, 11, 0,
                                                tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert frame.index[0].year == 2028


def test_year_comes_from_start_not_today(samples):
    frame = parse_dstat(samples["0.7.3"], start=dt.datetime(2019, 11, 27, 3, 50))
    assert frame.index[0] == dt.datetime(2019, 11, 27, 3, 54, 10, tzinfo=UTC)


def test_repeated_and_backward_seconds_are_dropped(samples):
    data = _with_times(samples["0.7.3"], ["27-11 03:00:00", "27-11 03:00:01",
                                          "27-11 03:00:01", "27-11 02:59:59",
                                          "27-11 03:00:02"])
    frame = parse_dstat(data)
    assert [t.second for t in frame.index] == [0, 1, 2]


# -- rejections ------------------------------------------------------------------


def _header(sample):
    lines = sample.split(b"\n")
    head = next(i for i, line in enumerate(lines) if line.startswith(b'"time"')) + 1
    return b"\n".join(lines[:head]) + b"\n"


def test_rejections(samples):
    s = samples["0.7.2"]
    packed = gzip.compress(s)
    assert _reason(b"") == "empty"
    assert _reason(b"\n\n  \n") == "empty"
    assert _reason(gzip.compress(b"")) == "empty"
    assert _reason(_header(s)) == "header-only"
    assert _reason(gzip.compress(_header(samples["0.7.4"]))) == "header-only"
    assert _reason(packed[: len(packed) // 2]) == "truncated-gzip"
    assert _reason(packed[:-4]) == "truncated-gzip"
    broken = bytearray(packed)
    broken[len(broken) // 2: len(broken) // 2 + 40] = b"\xff" * 40
    assert _reason(bytes(broken)) == "corrupt-gzip"
    assert _reason(packed + b"garbage") == "corrupt-gzip"
    assert _reason(b"<!DOCTYPE html>\n<html><body>Not Found</body></html>") == "html"
    assert _reason(gzip.compress(b"  <html><head></head></html>")) == "html"
    assert _reason(s.replace(b"0.430,0.270", b"0.430,abc", 1)) == "non-numeric"
    assert _reason(s.replace(b"0.430,0.270", b"0.430,1,2,0.270", 1)) == "malformed"
    assert _reason(s.replace(b",0.0,0.0,0.0\n", b"\n", 1)) == "malformed"
    assert _reason(s.replace(b"27-11 03:54:12", b"27/11 03:54:12", 1)) == "bad-time"
    assert _reason(s.replace(b"27-11 03:54:12", b"31-11 03:54:12", 1),
                   start=dt.datetime(2026, 11, 27)) == "bad-time"
    assert _reason(b"just,some\n1,2\n") == "not-dstat"


def test_non_numeric_message_names_the_cell(samples):
    bad = samples["0.7.3"].replace(b"0.430,0.270", b"0.430,abc", 1)
    with pytest.raises(MetricsUnavailable, match="load_5m.*abc"):
        parse_dstat(bad)


def test_size_limits(samples):
    s = samples["0.7.3"]
    assert _reason(s, max_bytes=1000) == "too-large"
    # A gzip bomb: 64 MB of zeros in ~64 kB; the cap stops it early.
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 200_000
    assert _reason(bomb, max_bytes=1024 * 1024) == "too-large"


def test_multi_member_gzip_and_partial_last_line(samples):
    s = samples["0.7.3"]
    cut = s.index(b"\n27-11 03:54:30")
    frame = parse_dstat(gzip.compress(s[:cut]) + gzip.compress(s[cut:]))
    assert len(frame) == 150
    # dstat killed mid-line: the partial line goes, the run stays.
    assert len(parse_dstat(s[:-20])) == 149


def test_crlf_epoch_and_restarted_dstat(samples):
    s = samples["0.7.3"]
    assert parse_dstat(s.replace(b"\n", b"\r\n")).equals(parse_dstat(s))
    epoch = (b'"Dstat 0.7.3 CSV output"\n"system","total cpu usage",,\n'
             b'"epoch","usr","sys","idl"\n1767225599.5,1,2,97\n1767225600.5,3,4,93\n')
    frame = parse_dstat(epoch)
    assert frame.index[1] == dt.datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert frame.columns.tolist() == ["cpu_usr", "cpu_sys", "cpu_idl"]
    # dstat appends its preamble again when restarted on the same file.
    cut = s.index(b"\n27-11 03:55:00") + 1
    again = s[:cut] + _header(s).replace(b"03:54:10", b"03:55:00") + s[cut:]
    assert len(parse_dstat(again)) == 150
    other = _header(samples["0.7.2"])
    assert _reason(s[:cut] + other + s[cut:]) == "malformed"


# -- fetching ---------------------------------------------------------------------


def _run(url, start=None):
    return RunRecord(id="run-1", build_name="tempest-full", status="passed",
                     artifacts_url=url, start=start)


@pytest.fixture
def log_tree(tmp_path, samples):
    root = tmp_path / "logs"
    gz = root / "a" / "controller" / "logs" / "dstat-csv_log.txt.gz"
    gz.parent.mkdir(parents=True)
    gz.write_bytes(gzip.compress(samples["0.7.3"]))
    plain = root / "b" / "logs" / "dstat-csv_log.txt"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(samples["0.7.2"])
    (root / "c").mkdir()
    html = root / "d" / "controller" / "logs" / "dstat-csv_log.txt.gz"
    html.parent.mkdir(parents=True)
    html.write_bytes(b"<html><body>soft 404</body></html>")
    return root


def test_local_directory_and_file_url(log_tree):
    source = DstatMetricSource()
    fetched, frame = source.load(_run(str(log_tree / "a")))
    assert fetched.name == "dstat-csv_log.txt.gz"
    assert fetched.data[:2] == b"\x1f\x8b"   # kept as fetched
    assert len(frame) == 150
    fetched, frame = source.load(_run((log_tree / "b").as_uri() + "/"))
    assert fetched.name == "dstat-csv_log.txt"
    assert fetched.url == (log_tree / "b" / "logs" / "dstat-csv_log.txt").as_uri()
    assert len(frame) == 151
    with pytest.raises(MetricsUnavailable) as info:
        source.fetch(_run((log_tree / "c").as_uri()))
    assert info.value.reason == "missing" and not info.value.transient
    with pytest.raises(MetricsUnavailable) as info:
        source.fetch(_run(str(log_tree / "d")))
    assert info.value.reason == "html"
    with pytest.raises(MetricsUnavailable) as info:
        source.fetch(_run(None))
    assert info.value.reason == "no-artifacts-url"


def test_configured_paths(log_tree):
    source = DstatMetricSource(paths="logs/dstat-csv_log.txt")
    assert source.paths == ["logs/dstat-csv_log.txt"]
    assert source.fetch(_run(str(log_tree / "b"))).name == "dstat-csv_log.txt"
    with pytest.raises(MetricsUnavailable):
        source.fetch(_run(str(log_tree / "a")))


def test_local_size_limit(log_tree):
    source = DstatMetricSource(max_bytes=100)
    with pytest.raises(MetricsUnavailable) as info:
        source.fetch(_run(str(log_tree / "a")))
    assert info.value.reason == "too-large"


def test_http_fetch_with_faults(log_tree):
    source = DstatMetricSource(backoff=0.01, retries=2, timeout=5)
    with CIServer(root=log_tree) as server:
        fetched, frame = source.load(_run(server.url + "a/"))
        assert fetched.url == server.url + "a/controller/logs/dstat-csv_log.txt.gz"
        assert len(frame) == 150
        # 404 on the first paths, found on the last one.
        assert source.fetch(_run(server.url + "b")).name == "dstat-csv_log.txt"
        assert server.hits("/b/*") == 4

        server.fault("/a/*", status=500, times=2)
        assert source.fetch(_run(server.url + "a")).data[:2] == b"\x1f\x8b"
        assert server.hits("/a/*") == 1 + 2 + 1   # earlier fetch, two 500s, success

        server.fault("/a/*", drop=True, times=1)
        assert len(source.load(_run(server.url + "a"))[1]) == 150
        server.fault("/a/*", truncate=True, times=1)
        assert len(source.load(_run(server.url + "a"))[1]) == 150

        server.fault("/a/*", status=503)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(server.url + "a"))
        assert info.value.reason == "http-error" and info.value.transient
        server.clear_faults()

        server.fault("/a/*", drop=True)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(server.url + "a"))
        assert info.value.reason == "connection-error" and info.value.transient
        server.clear_faults()

        server.fault("/a/*", html=True)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(server.url + "a"))
        assert info.value.reason == "html" and not info.value.transient
        server.clear_faults()

        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(server.url + "c/"))
        assert info.value.reason == "missing" and not info.value.transient

        # A refused credential is not a fact about the run: it is tried
        # again once the token is fixed, never recorded as missing.
        for status in (401, 403):
            server.clear_faults()
            server.fault("/a/*", status=status)
            with pytest.raises(MetricsUnavailable) as info:
                source.fetch(_run(server.url + "a"))
            assert info.value.reason == "auth" and info.value.transient
            assert f"HTTP {status}" in str(info.value)
        server.clear_faults()
        server.fault("/a/*", status=400)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(server.url + "a"))
        assert info.value.reason == "http-error" and not info.value.transient


def test_http_read_timeout_is_retried_then_transient(log_tree):
    source = DstatMetricSource(timeout=0.2, retries=1, backoff=0.01)
    with CIServer(root=log_tree) as server:
        server.fault("/a/*", latency=0.6, times=1)
        assert len(source.load(_run(server.url + "a"))[1]) == 150
        server.fault("/a/*", latency=0.6)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(server.url + "a"))
    assert info.value.reason == "connection-error" and info.value.transient
    assert "Timeout" in str(info.value)


def test_one_pooled_client_for_all_threads_and_close(log_tree):
    import concurrent.futures

    source = DstatMetricSource()
    with CIServer(root=log_tree) as server:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(lambda _: len(source.load(_run(server.url + "a"))[1]),
                                  range(12)))
        assert sizes == [150] * 12
        client = source._client
        assert client is not None and len(client._managers) == 1
        source.close()
        source.close()
        assert client._managers == {}
        assert len(source.load(_run(server.url + "a"))[1]) == 150


def test_http_keeps_gzip_bytes_under_content_encoding(log_tree):
    source = DstatMetricSource()
    with CIServer(root=log_tree, gzip_content_encoding=True) as server:
        fetched = source.fetch(_run(server.url + "a"))
    assert fetched.data[:2] == b"\x1f\x8b"
    assert len(source.parse(fetched.data, _run(None))) == 150


def test_http_size_limit_and_credentials_redacted(log_tree):
    source = DstatMetricSource(max_bytes=100, retries=0)
    with CIServer(root=log_tree) as server:
        url = server.url.replace("http://", "http://user:s3cret@") + "a"
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_run(url))
    assert info.value.reason == "too-large"
    assert "s3cret" not in str(info.value)


def test_registered_as_plugin():
    from ciml import plugins

    assert plugins.get_manager().get("metric_source", "dstat") is DstatMetricSource
    assert DstatMetricSource.description().startswith("dstat CSV logs")


def test_line_endings_and_blank_lines_do_not_change_the_series(samples):
    # The usual layout takes its time cells straight from the lines; CRLF,
    # blank and whitespace-only lines must give what the CSV reader gives.
    data = samples["0.7.3"]
    start = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    plain = parse_dstat(data, start=start)
    head_end = data.index(b"\n", data.index(b'"time"')) + 1
    rows = data[head_end:].split(b"\n")
    odd = data[:head_end] + b"\r\n".join(rows[:3] + [b"", b"   "] + rows[3:])
    assert dstat._time_codes_of_lines(odd[head_end:], len(plain)) is None
    other = parse_dstat(odd, start=start)
    assert other.equals(plain) and other.index.equals(plain.index)


# -- artifacts kept as a zip archive (GitHub Actions, GitLab) ---------------------------------


def _zip(members, method=None):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method or zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _archive_run(url):
    return RunRecord(id="run-z", build_name="tempest-full", status="passed",
                     artifacts_url=url, metadata={"artifacts_archive": "zip"})


def test_reads_the_file_from_a_zip_archive(tmp_path, samples):
    from ciml_plugins.metrics.dstat import is_archive

    source = DstatMetricSource()
    archive = tmp_path / "artifact.zip"
    archive.write_bytes(_zip({"reports/junit.xml": b"<x/>",
                              "dstat-csv_log.txt": samples["0.7.3"]}))
    fetched, frame = source.load(_archive_run(str(archive)))
    assert fetched.name == "dstat-csv_log.txt" and len(frame) == 150
    assert fetched.url.endswith("artifact.zip#dstat-csv_log.txt")
    # A gzipped file inside keeps its bytes; the .zip suffix alone says "archive".
    archive.write_bytes(_zip({"controller/logs/dstat-csv_log.txt.gz":
                              gzip.compress(samples["0.7.2"])}))
    plain = RunRecord(id="r", build_name="j", status="passed", artifacts_url=str(archive))
    assert is_archive(plain)
    fetched = source.fetch(plain)
    assert fetched.name == "dstat-csv_log.txt.gz" and fetched.data[:2] == b"\x1f\x8b"
    assert not is_archive(_run("http://logs/x/"))


@pytest.mark.parametrize("content,reason", [
    (b"PK\x03\x04 this is not really a zip", "corrupt-archive"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "html"),
    (b"", "empty"),
])
def test_bad_archives_get_a_reason(tmp_path, content, reason):
    archive = tmp_path / "a.zip"
    archive.write_bytes(content)
    with pytest.raises(MetricsUnavailable) as info:
        DstatMetricSource().fetch(_archive_run(str(archive)))
    assert info.value.reason == reason and not info.value.transient


def test_an_archive_without_the_file_says_what_it_holds(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip({"junit.xml": b"<x/>", "logs/syslog.txt": b"..."}))
    with pytest.raises(MetricsUnavailable, match="junit.xml, logs/syslog.txt") as info:
        DstatMetricSource().fetch(_archive_run(str(archive)))
    assert info.value.reason == "missing"
    with pytest.raises(MetricsUnavailable) as info:
        DstatMetricSource().fetch(_archive_run(str(tmp_path / "nothing.zip")))
    assert info.value.reason == "missing"


def test_a_zip_bomb_is_refused_without_filling_memory(tmp_path, monkeypatch):
    import zipfile

    # 2 GB of zeros deflate to about 2 MB; the declared size is then made
    # to lie, as a crafted archive's would.
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        with out.open("dstat-csv_log.txt", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(200):
                member.write(block)
    source = DstatMetricSource(max_bytes=1 << 20)
    with pytest.raises(MetricsUnavailable, match="over the 1048576 limit") as info:
        source.fetch(_archive_run(str(archive)))
    assert info.value.reason == "too-large"
    import ciml_plugins.metrics.dstat as dstat_module

    real = zipfile.ZipFile.infolist

    def lying(self):
        infos = real(self)
        for info in infos:
            info.file_size = 10
        return infos

    # A declared size that lies: zipfile stops at it and the CRC fails; the
    # reader never holds more than the cap either way.
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying)
    with pytest.raises(MetricsUnavailable, match="CRC") as info:
        source.fetch(_archive_run(str(archive)))
    assert info.value.reason == "corrupt-archive"
    monkeypatch.setattr(dstat_module, "MAX_ARCHIVE_MEMBERS", 0)
    with pytest.raises(MetricsUnavailable, match="members") as info:
        source.fetch(_archive_run(str(archive)))


def test_archives_over_http(tmp_path, samples):
    root = tmp_path / "srv"
    root.mkdir()
    (root / "a.zip").write_bytes(_zip({"dstat-csv_log.txt": samples["0.7.3"]}))
    source = DstatMetricSource(backoff=0, retries=1, max_archive_bytes=100_000)
    with CIServer(root=root) as server:
        assert len(source.load(_archive_run(server.url + "a.zip"))[1]) == 150
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_archive_run(server.url + "gone.zip"))
        assert info.value.reason == "missing"
        server.fault("/a.zip", status=401)
        with pytest.raises(MetricsUnavailable) as info:
            source.fetch(_archive_run(server.url + "a.zip"))
        assert info.value.reason == "auth" and info.value.transient
        server.clear_faults()
    small = DstatMetricSource(max_archive_bytes=100)
    with CIServer(root=root) as server:
        with pytest.raises(MetricsUnavailable) as info:
            small.fetch(_archive_run(server.url + "a.zip"))
    assert info.value.reason == "too-large"


def test_the_conformance_kit_on_a_zip_artifact(tmp_path, samples):
    from ciml.testing.sources import check_metric_source

    archive = tmp_path / "artifact.zip"
    archive.write_bytes(_zip({"dstat-csv_log.txt": samples["0.7.3"]}))
    run = _archive_run(str(archive))
    run.start = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    check_metric_source(DstatMetricSource(), run)


def test_paths_the_run_lists_among_its_artifacts_are_tried_first(tmp_path, samples):
    root = tmp_path / "srv"
    (root / "b1" / "artifact").mkdir(parents=True)
    (root / "b1" / "artifact" / "dstat-csv_log.txt").write_bytes(samples["0.7.3"])
    run = RunRecord(id="job#1", build_name="job", status="passed",
                    artifacts_url=None, metadata={"artifacts": "junit.xml,dstat-csv_log.txt"})
    with CIServer(root=root) as server:
        run.artifacts_url = server.url + "b1/artifact/"
        assert DstatMetricSource().fetch(run).name == "dstat-csv_log.txt"
        assert server.hits() == 1
        run.metadata = {}
        DstatMetricSource().fetch(run)
        assert server.hits() == 1 + 6   # every default path, the top-level ones last
