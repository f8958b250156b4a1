"""The dstat reader's fast time path gives what the reference path gives, on every sample.

``parse_dstat_arrays`` reads the time cells of dstat's usual layout
straight from the bytes (:func:`ciml_plugins.metrics.dstat._time_codes_of_lines`);
any other layout goes through the reference path, which reads the time
column as text with pandas.  Here every real sample (dstat 0.7.2, 0.7.3,
Debian's 0.7.4 with its text columns, pcp-dstat) and every odd variant the
reader accepts is parsed both ways: timestamps, values (NaN positions
included) and column names must be identical, and so must the frame of
``parse_dstat`` and the arrays the cache stores.
"""

import datetime as dt
import gzip

import numpy as np
import pytest

from ciml.generator import VARIANTS, synthetic_dstat
from ciml_plugins.metrics import dstat, pcp

UTC = dt.timezone.utc


def _samples(sample_data):
    out = {}
    for folder in ("dstat", "pcp"):
        for path in sorted((sample_data / folder).iterdir()):
            out[f"{folder}/{path.name}"] = path.read_bytes()
    return out


def _odd(data):
    """Variants of one file that the reader accepts, each a different code path."""
    lines = data.split(b"\n")
    head = next(i for i, line in enumerate(lines) if line.split(b",", 1)[0].strip(b'"')
                in (b"time", b"epoch")) + 1
    rows = [line for line in lines[head:] if line]
    header = b"\n".join(lines[:head]) + b"\n"
    restart = len(rows) // 2
    return {
        "gzip": gzip.compress(data),
        "crlf": data.replace(b"\n", b"\r\n"),
        "blank-lines": header + b"\n".join(rows[:3]) + b"\n\n\n" + b"\n".join(rows[3:]) + b"\n",
        "partial-last-line": data[:-7],
        "restarted": header + b"\n".join(rows[:restart]) + b"\n" + header
        + b"\n".join(rows[restart:]) + b"\n",
        "repeated-second": header + b"\n".join([rows[0], rows[0], *rows[1:]]) + b"\n",
    }


def _both_ways(parse, data, monkeypatch, **kwargs):
    fast = parse(data, **kwargs)
    with monkeypatch.context() as patched:
        # The reference path: the time column read as text by pandas.
        patched.setattr(dstat, "_time_codes_of_lines", lambda body, rows: None)
        reference = parse(data, **kwargs)
    return fast, reference


def _assert_same(fast, reference):
    stamps, values, names = fast
    ref_stamps, ref_values, ref_names = reference
    assert names == ref_names
    assert stamps.dtype == ref_stamps.dtype == np.int64
    np.testing.assert_array_equal(stamps, ref_stamps)
    assert values.dtype == ref_values.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(values), np.isnan(ref_values))
    np.testing.assert_array_equal(values, ref_values)


def _cases(sample_data):
    cases = {}
    for name, data in _samples(sample_data).items():
        cases[name] = data
        if name.startswith("dstat/"):
            cases.update({f"{name} ({kind})": odd for kind, odd in _odd(data).items()})
    for variant in VARIANTS:
        text = synthetic_dstat(variant, rows=600, seed=7).encode()
        cases[f"generated {variant}"] = text
        cases[f"generated {variant} (gzip)"] = gzip.compress(text)
    return cases


def test_fast_and_reference_paths_agree_on_every_sample(sample_data, monkeypatch):
    cases = _cases(sample_data)
    assert len(cases) == 30
    fast_taken = 0
    for name, data in cases.items():
        parse = (lambda d, **kw: _frame_arrays(pcp.parse_pcp(d, **kw))) \
            if name.startswith("pcp/") else dstat.parse_dstat_arrays
        fast, reference = _both_ways(parse, data, monkeypatch)
        try:
            _assert_same(fast, reference)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        if name.startswith(("dstat/", "generated")):
            fast_taken += dstat._time_codes_of_lines(*_body_and_rows(data)) is not None
    # The fast path is the one the usual files take.
    assert fast_taken >= 12


def _body_and_rows(data):
    if data.startswith(dstat.GZIP_MAGIC):
        data = gzip.decompress(data)
    _, _, offset = dstat._find_header(data)
    body = data[offset:]
    return body, sum(1 for line in body.split(b"\n") if line.strip())


def _frame_arrays(frame):
    stamps = frame.index.as_unit("ns").asi8.astype(np.int64)
    return stamps, frame.to_numpy(), [str(c) for c in frame.columns]


def test_the_frame_and_the_cached_arrays_are_the_same_data(sample_data):
    source = dstat.DstatMetricSource()
    for name, data in _cases(sample_data).items():
        if name.startswith("pcp/"):
            continue
        _assert_same(source.parse_series(data, None), _frame_arrays(source.parse(data, None)))


def test_pcp_keeps_its_own_parse_for_the_cached_arrays(sample_data):
    # PcpMetricSource subclasses the dstat source: its arrays must be pcp's
    # (renamed, rescaled), never dstat's reading of the same bytes.
    source = pcp.PcpMetricSource()
    data = (sample_data / "pcp" / "pcp-dstat-devstack.csv").read_bytes()
    _assert_same(source.parse_series(data, None), _frame_arrays(source.parse(data, None)))


@pytest.mark.parametrize("stamps,start", [
    (["31-12 23:59:58", "31-12 23:59:59", "01-01 00:00:00"], dt.datetime(2025, 12, 31, 23)),
    (["29-02 10:00:00", "29-02 10:00:01"], dt.datetime(2028, 2, 29, 9, tzinfo=UTC)),
])
def test_the_year_is_chosen_alike(sample_data, monkeypatch, stamps, start):
    data = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.3.generated.txt").read_bytes()
    lines = data.split(b"\n")
    head = next(i for i, line in enumerate(lines) if line.startswith(b'"time"')) + 1
    rows = [line for line in lines[head:] if line]
    data = b"\n".join(lines[:head] + [s.encode() + rows[i][14:] for i, s in enumerate(stamps)])
    _assert_same(*_both_ways(dstat.parse_dstat_arrays, data + b"\n", monkeypatch, start=start))


def test_rejections_are_the_same_both_ways(sample_data, monkeypatch):
    data = (sample_data / "dstat" / "dstat-csv_log.dstat-0.7.2.generated.txt").read_bytes()
    for bad, reason in [(data.replace(b"27-11 03:54:12", b"27/11 03:54:12", 1), "bad-time"),
                        (data.replace(b"27-11 03:54:12", b"31-11 03:54:12", 1), "bad-time"),
                        (data.replace(b"0.430,0.270", b"0.430,abc", 1), "non-numeric")]:
        messages = []
        for patch in (False, True):
            with monkeypatch.context() as patched:
                if patch:
                    patched.setattr(dstat, "_time_codes_of_lines", lambda body, rows: None)
                with pytest.raises(dstat.MetricsUnavailable) as info:
                    dstat.parse_dstat_arrays(data=bad, start=dt.datetime(2026, 11, 27))
            assert info.value.reason == reason
            messages.append(str(info.value))
        assert messages[0] == messages[1]
