"""ciml.rawpack: fetched files packed by column give back their content byte for byte."""

import gzip
import zlib

import numpy as np
import pytest

from ciml import rawpack
from ciml.rawpack import RawPackError, pack, unpack

SAMPLES = ["dstat-csv_log.dstat-0.7.2.generated.txt", "dstat-csv_log.dstat-0.7.3.generated.txt",
           "dstat-csv_log.debian-0.7.4-devstack-top-opts.generated.txt"]


def _back(fetched):
    stored, how = pack(fetched)
    content = rawpack.content_of(fetched)[0]
    if how["packed"] == "as-fetched":
        assert stored == fetched
    else:
        assert rawpack.is_packed(stored)
        assert unpack(stored) == content
        assert how["gzipped"] == (content != fetched)
    return stored, how


def _table_back(text):
    """The table encoding of ``text`` unpacked, whatever pack would have chosen;
    ``False`` when ``text`` has no table with a number in it."""
    buf = np.frombuffer(text, dtype=np.uint8)
    found = rawpack._table(buf)
    made = found and rawpack._pack_table(buf, found)
    if not made:
        return False
    header, blocks = made
    header.update(size=len(text), crc32=zlib.crc32(text))
    assert unpack(rawpack._assemble(header, blocks)) == text
    return True


def test_real_dstat_samples_plain_and_gzipped(sample_data, monkeypatch):
    from numcodecs import zstd

    for name in SAMPLES:
        plain = (sample_data / "dstat" / name).read_bytes()
        stored, how = _back(plain)
        # The smaller of the table and one frame (the smallest sample has 47 lines).
        assert how["packed"] in ("table", "zstd") and not how["gzipped"]
        assert len(stored) < 0.3 * len(plain)
        assert len(stored) <= len(zstd.compress(plain, 3)) + 100  # + the header
        zipped = gzip.compress(plain, 6)
        stored, how = _back(zipped)
        assert how["packed"] in ("table", "zstd", "as-fetched")
    monkeypatch.setattr(rawpack, "SMALL", 0)  # the table, whatever its size
    for name in SAMPLES:
        plain = (sample_data / "dstat" / name).read_bytes()
        stored, how = _back(plain)
        assert how["packed"] == "table"
        assert len(stored) < 0.25 * len(plain)  # 0.17-0.23 measured


@pytest.mark.parametrize("small", [rawpack.SMALL, 0])
@pytest.mark.parametrize("text", [
    b"", b"\n", b",", b"a,b\n", b"1,2\n3,4", b"1,2\n3,4\n", b"1,2\r\n3,4\r\n",
    # Not numbers: leading zeros, bare dots, exponents, plus signs, doubled signs.
    b"007,1.,.5,+3,1e5,--1,-,-.5,0.,00.5,1.2.3,1-2\n0,0,0,0,0,0,0,0,0,0,0,0\n",
    # Numbers: zero in every form, signs, the longest magnitude.
    b"0,-0,-0.0,0.000,10.50,-123.456,999999999999999999,0.05\n1,2,3,4,5,6,7,8\n",
    b"1234567890123456789,1\n2,3\n",  # 19 digits: text
    b'"time","usr"\n"a","b"\n01-01 00:00:01,5.000\n01-01 00:00:02,49\nlast line,no newline',
    "ünïcödé,1.5\n\xff,2\n".encode("utf-8", "surrogateescape") + b"\xfe\xff,3\n",
    b"x" * 1000,
    b"{\"json\": [1, 2, 3]}\n",
])
def test_odd_content_comes_back(text, small, monkeypatch):
    monkeypatch.setattr(rawpack, "SMALL", small)
    _table_back(text)
    _back(text)
    _back(gzip.compress(text))


def test_random_csv_like_bytes_come_back(monkeypatch):
    """Many small files from an alphabet that makes number cells, near-numbers,
    empty cells and ragged lines: every one comes back byte for byte, packed or
    checked by pack itself."""
    monkeypatch.setattr(rawpack, "SMALL", 0)
    rng = np.random.default_rng(8)
    alphabet = np.frombuffer(b"0123456789012345.-,,,\n\n a", dtype=np.uint8)
    tables = 0
    for _ in range(400):
        text = alphabet[rng.integers(0, alphabet.size, rng.integers(0, 200))].tobytes()
        _back(text)
        tables += _table_back(text)
    cells = [b"0", b"-0", b"12", b"-3.250", b"0.001", b"007", b"1.", b".5", b"", b"x", b"1e3",
             b"99999999999999999.9", b"-", b"4.0.1", b" 1", b"1 ", b"\t", b"1234567890123456789"]
    for _ in range(300):
        width = int(rng.integers(1, 6))
        lines = []
        for _ in range(int(rng.integers(1, 30))):
            n = width if rng.random() < 0.8 else int(rng.integers(1, 8))
            lines.append(b",".join(cells[i] for i in rng.integers(0, len(cells), n)))
        text = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        _back(text)
        tables += _table_back(text)
    assert tables > 300  # the table encoding was exercised, not only the fallbacks


def test_a_table_of_numbers_and_levels():
    rng = np.random.default_rng(9)
    rows = [b"time,cpu,mem,neg"]
    mem = 1_600_000_000
    for i in range(2000):
        mem += int(rng.integers(-4096, 4097))
        rows.append(b"%02d:%02d,%.3f,%d,%.1f" % (i // 60, i % 60, rng.random() * 100, mem,
                                                  -rng.random() * 10))
    text = b"\n".join(rows) + b"\n"
    stored, how = _back(text)
    assert how["packed"] == "table"
    assert len(stored) < 0.25 * len(gzip.compress(text, 6)) * 4  # well under the text
    header = rawpack._header_bytes(stored)
    assert b'"mode":"table"' in header


def test_corrupt_or_foreign_bytes_raise_a_clear_error(sample_data):
    plain = (sample_data / "dstat" / SAMPLES[0]).read_bytes()
    stored, _ = pack(plain)
    with pytest.raises(RawPackError, match="magic"):
        unpack(plain)
    for cut in (8, 12, 40, len(stored) - 1):
        with pytest.raises(RawPackError):
            unpack(stored[:cut])
    with pytest.raises(RawPackError):
        unpack(stored + b"\0")
    # A flipped byte in the last block: the frame or the CRC-32 catches it.
    flipped = bytearray(stored)
    flipped[-3] ^= 0x10
    with pytest.raises(RawPackError):
        unpack(bytes(flipped))
