"""The parsed series of a cached run, on disk: compact, lossless, read back as arrays.

A series is ``(timestamps, values, columns)``: int64 nanoseconds since the
epoch (UTC), a 2-D float array ``(time, column)`` and the column names.
:func:`write_series` and :func:`read_series` are the only code that knows
the bytes; both take a binary file object, so the cache can route them
through any file system.

The format (``series.bin``)::

    b"CIMLSER1"  uint32 LE header length  header  blocks...

The header (JSON, UTF-8, Zstandard-compressed) names the dtype, the row
count, the columns and, per block, how it was encoded (``[encoding,
decimals, bytes per code, bytes]``).  Block 0 is the timestamps, then
one block per column.  Each block is a Zstandard frame of a byte-shuffled
unsigned integer array (the smallest of 8, 16, 32 or 64 bits that holds it):

``delta``
    timestamps: zigzag-coded differences (the first from 0).
``dec`` / ``dec-delta``
    a column whose every value is ``n / 10**k`` for an integer ``n`` (what
    dstat prints: up to 3 decimals) stores ``n``, or its differences, zigzag
    coded.  Whether ``n / 10**k`` gives back the very same bits is checked
    for the whole column before it is chosen, so the encoding is exact.
``bits``
    anything else (NaN, -0.0, more digits): the float64 bits as they are.

Dstat values are a few decimal digits, so a column costs little more than
its information; the series takes about half the bytes of the gzipped CSV
it came from and a fifth of the plain text, against 3-4x the gzipped CSV as
float64 in ``series.npz``.  Reading back is one decompression per column and
a cumulative sum: no parse, no DataFrame.

``series.npz`` (the layout before this one: numpy's archive of the three
arrays, uncompressed) is still read.
"""

from __future__ import annotations

import json
import struct
from typing import IO, NamedTuple

import numpy as np

MAGIC = b"CIMLSER1"
_HEADER_LEN = struct.Struct("<I")
_NPZ_MAGIC = b"PK\x03\x04"

#: Zstandard level: 3 is the library default; higher levels save a few
#: percent on dstat series at several times the cost of writing.
LEVEL = 3

#: Decimal digits tried for a ``dec`` column.
_MAX_DIGITS = 6

# n / 10**k is exact for |n| < 2**53; keep a margin for the check itself.
_MAX_INT = 2 ** 52


class Series(NamedTuple):
    """A run's parsed metrics as arrays."""

    timestamps: np.ndarray  #: int64 nanoseconds since the epoch, UTC
    values: np.ndarray  #: float32 or float64, ``(len(timestamps), len(columns))``
    columns: list[str]


class SeriesError(ValueError):
    """The bytes are not a readable series."""


def _zigzag(ints):
    return ((ints << 1) ^ (ints >> 63)).view(np.uint64)


def _unzigzag(codes):
    codes = codes.astype(np.uint64, copy=False)
    return (codes >> np.uint64(1)).view(np.int64) ^ -(codes & np.uint64(1)).view(np.int64)


def _narrow(codes):
    top = int(codes.max(initial=0))
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return codes.astype(dtype)
    return codes


def _pack(codes):
    """``(bytes, width)``: the codes narrowed, byte-shuffled and compressed."""
    from numcodecs import zstd

    codes = _narrow(codes)
    width = codes.itemsize
    if codes.size == 0:
        return b"", width
    # Byte planes: the high bytes of small numbers are runs of zeros.
    shuffled = np.ascontiguousarray(codes.view(np.uint8).reshape(-1, width).T)
    return zstd.compress(shuffled, LEVEL), width


def _unpack(blob, width, rows):
    from numcodecs import zstd

    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(width)
    if dtype is None:
        raise SeriesError(f"bad block width {width}")
    if rows == 0 and len(blob) == 0:
        return np.zeros(0, dtype=dtype)
    try:
        raw = np.frombuffer(zstd.decompress(blob), dtype=np.uint8)
    except RuntimeError as exc:  # numcodecs' word for a corrupt frame
        raise SeriesError(f"corrupt block: {exc}") from None
    if raw.size != rows * width:
        raise SeriesError(f"a block holds {raw.size} bytes, expected {rows * width}")
    if width == 1:
        return raw
    return np.ascontiguousarray(raw.reshape(width, rows).T).view(dtype).reshape(rows)


def _decimal(column):
    """``(k, n int64)`` with ``n / 10**k`` bit-identical to ``column``, else ``None``."""
    if not np.isfinite(column).all():
        return None
    bits = column.view(np.int64)
    for k in range(_MAX_DIGITS + 1):
        scale = 10.0 ** k
        scaled = np.round(column * scale)
        if np.abs(scaled).max(initial=0.0) >= _MAX_INT:
            return None
        ints = scaled.astype(np.int64)
        # What decode computes, compared bitwise: -0.0 (0 / 10**k gives 0.0)
        # is kept as bits.
        if np.array_equal((ints / scale).view(np.int64), bits):
            return k, ints
    return None


def _encode_column(column):
    decimal = _decimal(column)
    if decimal is None:
        blob, width = _pack(column.view(np.uint64))
        return {"enc": "bits"}, blob, width
    k, ints = decimal
    # A level (memory in use) changes little from one second to the next; a
    # rate (CPU %) does not: keep whichever compresses better.
    plain = _pack(_zigzag(ints))
    delta = _pack(_zigzag(np.diff(ints, prepend=np.int64(0))))
    if len(delta[0]) < len(plain[0]):
        return {"enc": "dec-delta", "k": k}, *delta
    return {"enc": "dec", "k": k}, *plain


def encode(timestamps, values, columns) -> bytes:
    """The bytes of a series (see the module's description of the format)."""
    stamps = np.ascontiguousarray(timestamps, dtype=np.int64)
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        raise SeriesError(f"series values must be float32 or float64, not {values.dtype}")
    columns = [str(c) for c in columns]
    if values.ndim != 2 or values.shape != (len(stamps), len(columns)):
        raise SeriesError(f"inconsistent shapes {values.shape}, {len(stamps)} timestamps, "
                          f"{len(columns)} columns")
    wide = values.astype(np.float64, copy=False)
    blob, width = _pack(_zigzag(np.diff(stamps, prepend=np.int64(0))))
    blocks = [({"enc": "delta"}, blob, width)]
    blocks.extend(_encode_column(np.ascontiguousarray(wide[:, j]))
                  for j in range(wide.shape[1]))
    from numcodecs import zstd

    specs = [[spec["enc"], spec.get("k", 0), width, len(blob)] for spec, blob, width in blocks]
    header = zstd.compress(json.dumps(
        {"version": 1, "rows": len(stamps), "dtype": values.dtype.name, "columns": columns,
         "blocks": specs}, separators=(",", ":")).encode("utf-8"), LEVEL)
    return b"".join([MAGIC, _HEADER_LEN.pack(len(header)), header]
                    + [blob for _, blob, _ in blocks])


def decode(data) -> Series:
    """A :class:`Series` from the bytes :func:`encode` made (or a legacy ``series.npz``)."""
    data = memoryview(data)
    if bytes(data[:4]) == _NPZ_MAGIC:
        return _decode_npz(data)
    if bytes(data[:len(MAGIC)]) != MAGIC:
        raise SeriesError("not a ciml series (unknown magic)")
    try:
        start = len(MAGIC) + _HEADER_LEN.size
        (size,) = _HEADER_LEN.unpack(data[len(MAGIC):start])
        from numcodecs import zstd

        header = json.loads(zstd.decompress(data[start:start + size]).decode("utf-8"))
        rows, columns = int(header["rows"]), [str(c) for c in header["columns"]]
        specs = [{"enc": str(enc), "k": int(k), "width": int(width), "bytes": int(nbytes)}
                 for enc, k, width, nbytes in header["blocks"]]
        dtype = np.dtype(header["dtype"])
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise SeriesError(f"bad series header: {exc}") from None
    if len(specs) != len(columns) + 1 or dtype not in (np.float32, np.float64):
        raise SeriesError(f"bad series header: {len(specs)} blocks for "
                          f"{len(columns)} columns, dtype {dtype}")
    offset = start + size
    decoded = []
    for spec in specs:
        stop = offset + int(spec["bytes"])
        if stop > len(data):
            raise SeriesError(f"truncated series: {len(data)} bytes, a block ends at {stop}")
        codes = _unpack(data[offset:stop], int(spec["width"]), rows)
        offset = stop
        decoded.append((spec, codes))
    if offset != len(data):
        raise SeriesError(f"{len(data) - offset} unexpected bytes after the last block")
    spec, codes = decoded[0]
    stamps = np.cumsum(_unzigzag(codes), dtype=np.int64)
    values = np.empty((len(columns), rows), dtype=np.float64)
    for j, (spec, codes) in enumerate(decoded[1:]):
        enc = spec["enc"]
        if enc == "bits":
            values[j] = codes.astype(np.uint64, copy=False).view(np.float64)
        elif enc in ("dec", "dec-delta"):
            ints = _unzigzag(codes)
            if enc == "dec-delta":
                ints = np.cumsum(ints, dtype=np.int64)
            np.divide(ints, 10.0 ** int(spec["k"]), out=values[j])
        else:
            raise SeriesError(f"unknown block encoding {enc!r}")
    # (column, time) was filled row by row; the transpose is the (time, column) view.
    values = values.T
    if dtype == np.float32:
        values = values.astype(np.float32)
    return Series(stamps, values, columns)


def _decode_npz(data):
    import io

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            stamps = npz["timestamps"]
            values = npz["values"]
            columns = [str(c) for c in npz["columns"]]
    except Exception as exc:
        raise SeriesError(f"unreadable series.npz: {type(exc).__name__}: {exc}") from None
    if values.ndim != 2 or values.shape != (len(stamps), len(columns)):
        raise SeriesError(f"inconsistent shapes {values.shape}, {len(stamps)} timestamps, "
                          f"{len(columns)} columns")
    return Series(stamps.astype(np.int64, copy=False), values, columns)


def write_series(fh: IO[bytes], timestamps, values, columns) -> int:
    """Write a series to a binary file object; returns the bytes written."""
    data = encode(timestamps, values, columns)
    fh.write(data)
    return len(data)


def read_series(fh: IO[bytes]) -> Series:
    """Read a series (this format or ``series.npz``) from a binary file object."""
    return decode(fh.read())


class Block:
    """A run between two normalizer steps, as arrays: what a DataFrame would hold.

    ``values`` is ``(rows, columns)``; ``stamps`` (int64 ns, UTC) while the
    rows are time steps, else ``None`` with ``labels`` naming the rows
    (``None``: 0, 1, 2...).  Built-in normalizers transform blocks directly
    (``transform_block``), which spares a run the DataFrame round trip; any
    other step gets :meth:`frame` and gives back a frame
    (:meth:`from_frame`).  The values keep the memory layout pandas would
    give (``frame.to_numpy()``), since numpy's reductions sum in an order
    that depends on it, and the dataset must not change by one bit.
    """

    __slots__ = ("values", "columns", "stamps", "labels")

    def __init__(self, values, columns, stamps=None, labels=None):
        self.values = values
        self.columns = list(columns)
        self.stamps = stamps
        self.labels = labels

    @classmethod
    def from_series(cls, series: Series) -> Block:
        return cls(series.values, series.columns, stamps=series.timestamps)

    @classmethod
    def from_frame(cls, frame) -> Block:
        import pandas as pd

        index = frame.index
        stamps = labels = None
        if isinstance(index, pd.DatetimeIndex):
            if index.tz is None:
                index = index.tz_localize("UTC")
            stamps = index.tz_convert("UTC").as_unit("ns").asi8
        elif not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
            labels = list(index)
        block = cls(frame.to_numpy(copy=False), [str(c) for c in frame.columns], stamps,
                    labels)
        return block

    @property
    def timed(self) -> bool:
        """Whether the rows are still time steps."""
        return self.stamps is not None

    def index(self):
        """The pandas index the rows would have in a DataFrame."""
        import pandas as pd

        if self.stamps is not None:
            return pd.DatetimeIndex(np.asarray(self.stamps).astype("datetime64[ns]"),
                                    name="time").tz_localize("UTC")
        if self.labels is None:
            return pd.RangeIndex(len(self.values))
        return pd.Index(self.labels)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.values, index=self.index(), columns=self.columns,
                            copy=False)
