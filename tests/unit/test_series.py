"""ciml.series: the parsed-series format is lossless to the bit, compact, and strict."""

import io

import numpy as np
import pytest

from ciml import series as series_mod
from ciml.series import SeriesError, decode, encode, read_series, write_series

SAMPLES = ["dstat-csv_log.dstat-0.7.2.generated.txt", "dstat-csv_log.dstat-0.7.3.generated.txt",
           "dstat-csv_log.debian-0.7.4-devstack-top-opts.generated.txt"]


def _stamps(n, start=1_700_000_000 * 10**9):
    return start + np.arange(n, dtype=np.int64) * 10**9


def _roundtrip(values, stamps=None, columns=None):
    values = np.asarray(values)
    stamps = _stamps(len(values)) if stamps is None else stamps
    columns = columns or [f"c{i}" for i in range(values.shape[1])]
    got = decode(encode(stamps, values, columns))
    assert got.timestamps.dtype == np.int64
    assert got.timestamps.tobytes() == np.asarray(stamps, dtype=np.int64).tobytes()
    assert got.values.dtype == values.dtype
    assert got.values.shape == values.shape
    assert np.ascontiguousarray(got.values).tobytes() == np.ascontiguousarray(values).tobytes()
    assert got.columns == columns
    return got


def test_every_kind_of_value_comes_back_bit_for_bit():
    rng = np.random.default_rng(1)
    n = 500
    cols = [
        np.round(rng.random(n) * 100, 3),  # dstat percentages: decimal
        np.cumsum(rng.integers(-5, 6, n)).astype(float) * 4096.0,  # a level: delta
        rng.random(n),  # full precision: bits
        np.where(rng.random(n) < 0.1, np.nan, 1.5),  # holes
        np.full(n, -0.0),  # -0.0 is not 0 / 10**k
        np.array([np.inf, -np.inf] * (n // 2)),
        np.full(n, 2.0 ** 60),  # too large for an exact decimal
        np.round(-rng.random(n) * 1e6, 1),
        np.zeros(n),
    ]
    _roundtrip(np.stack(cols, axis=1))


def test_float32_empty_and_irregular_times():
    rng = np.random.default_rng(2)
    _roundtrip(rng.random((40, 3)).astype(np.float32))
    _roundtrip(np.zeros((0, 4)))
    _roundtrip(np.ones((1, 1)))
    stamps = np.sort(rng.integers(0, 2**62, 30)).astype(np.int64)  # gaps, jitter
    _roundtrip(rng.random((30, 2)), stamps=stamps)


def test_real_dstat_samples_round_trip_and_are_small(sample_data):
    from ciml_plugins.metrics.dstat import parse_dstat

    for name in SAMPLES:
        raw = (sample_data / "dstat" / name).read_bytes()
        frame = parse_dstat(raw)
        got = _roundtrip(frame.to_numpy(), stamps=frame.index.asi8,
                         columns=[str(c) for c in frame.columns])
        size = len(encode(got.timestamps, got.values, got.columns))
        # A fifth to a quarter of the plain CSV (about 0.2-0.27 measured;
        # float64 in series.npz took 1.3-1.6 times it).
        assert size <= 0.3 * len(raw), (name, size, len(raw))


def test_file_object_interface():
    buf = io.BytesIO()
    values = np.round(np.random.default_rng(3).random((10, 2)) * 10, 2)
    written = write_series(buf, _stamps(10), values, ["a", "b"])
    assert written == len(buf.getvalue())
    buf.seek(0)
    got = read_series(buf).values
    assert np.ascontiguousarray(got).tobytes() == values.tobytes()


def test_legacy_npz_is_read():
    buf = io.BytesIO()
    values = np.random.default_rng(4).random((7, 2))
    np.savez(buf, timestamps=_stamps(7), values=values, columns=np.array(["a", "b"]))
    got = decode(buf.getvalue())
    assert got.values.tobytes() == values.tobytes() and got.columns == ["a", "b"]


@pytest.mark.parametrize("cut", [0, 5, 12, 40, -3, -1])
def test_truncated_or_garbage_bytes_raise_a_clear_error(cut):
    values = np.round(np.random.default_rng(5).random((100, 3)) * 100, 3)
    data = encode(_stamps(100), values, ["a", "b", "c"])
    with pytest.raises(SeriesError):
        decode(data[:cut] if cut else b"garbage, not a series")


def test_trailing_bytes_and_bad_header_are_refused():
    data = encode(_stamps(3), np.ones((3, 1)), ["a"])
    with pytest.raises(SeriesError, match="unexpected bytes"):
        decode(data + b"x")
    with pytest.raises(SeriesError):
        decode(series_mod.MAGIC + b"\x05\x00\x00\x00{bad}")


def test_refuses_inconsistent_input():
    with pytest.raises(SeriesError):
        encode(_stamps(3), np.ones((4, 1)), ["a"])
    with pytest.raises(SeriesError):
        encode(_stamps(3), np.ones((3, 1), dtype=np.int64), ["a"])


# Written by ciml.series at f726e59 (the first layout, CIMLSER1: one frame per
# column): caches made then must stay readable.
V1_BYTES = bytes.fromhex(
    "43494d4c534552317b00000028b52ffd2091950300a2c7181b706975a0c1b0d4a1f250cb5822bcaffe8d1c"
    "d5406bb16255ff97108bb502808d8b728e1f37107a3abad9d74917dcb893f85cb352e925307d8abfdc9afa"
    "6e6e1bdf701babf43285e629f39d9098e81b38ed0c89d87c24bd0885fe4933ba2c74072b020400510d01a1"
    "c8ac1329986628b52ffd20300501009800009454356c77fc0039002f002f00000000000710008103070e1c"
    "18ec6a0328b52ffd2018c10000b894003a708c0b11000e173c00000003000000000000000028b52ffd200c"
    "61000000000000000020406080a0c028b52ffd20308101006200009c0000110000750000c10000000000"
    "370000880000dd00003c00009a0000e40000bff8003704f03f7f807e407f")
V1_VALUES = np.array([[1.5, 4096.0, 0.1234567891234], [2.25, 8192.0, np.nan],
                      [0.0, 12288.0, -0.0], [100.125, 16384.0, 1e300], [3.0, 20480.0, 2.5],
                      [7.75, 24576.0, np.inf]])


def test_the_first_layout_is_still_read():
    got = decode(V1_BYTES)
    assert got.columns == ["usr", "used", "odd"]
    assert got.timestamps.tobytes() == _stamps(6).tobytes()
    assert np.ascontiguousarray(got.values).tobytes() == V1_VALUES.tobytes()
    # Same memory layout as the current layout gives (the build's sums depend on it).
    assert got.values.flags.f_contiguous
    assert decode(encode(_stamps(6), V1_VALUES, got.columns)).values.flags.f_contiguous
    with pytest.raises(SeriesError):
        decode(V1_BYTES[:-2])


def test_more_digits_after_the_first_rows_and_every_decimal_count():
    """The decimals are guessed on the first rows: a column that needs more
    later, or that is not decimal at all after them, must still come back
    bit for bit; so must any mix of 0 to 8 decimals, signs and levels."""
    rng = np.random.default_rng(6)
    n = 300
    late = np.round(rng.random(n) * 1000)
    late[200] = 12.345
    later = np.round(rng.random(n) * 10, 1)
    later[-1] = 1 / 3
    nan_late = np.round(rng.random(n), 2)
    nan_late[150] = np.nan
    neg_zero_late = np.zeros(n)
    neg_zero_late[299] = -0.0
    cols = [late, later, nan_late, neg_zero_late]
    for k in range(9):
        scale = 10.0 ** k
        ints = rng.integers(-10**9, 10**9, n)
        cols.append(ints / scale)
        cols.append(np.cumsum(rng.integers(-3, 4, n)) / scale + 2.0 ** 40 / scale)
    _roundtrip(np.stack(cols, axis=1))
    _roundtrip(np.stack(cols, axis=1).astype(np.float32))


def test_a_series_is_one_frame_whatever_the_columns():
    rng = np.random.default_rng(7)
    data = encode(_stamps(50), np.round(rng.random((50, 40)) * 100, 2),
                  [f"c{i}" for i in range(40)])
    assert data[:8] == series_mod.MAGIC2
    got = decode(data)
    assert got.values.shape == (50, 40)
    for cut in (len(data) - 1, len(data) - 10):
        with pytest.raises(SeriesError):
            decode(data[:cut])
    with pytest.raises(SeriesError, match="unexpected bytes"):
        decode(data + b"\0")
