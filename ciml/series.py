"""The parsed series of a cached run, on disk: compact, lossless, read back as arrays.

A series is ``(timestamps, values, columns)``: int64 nanoseconds since the
epoch (UTC), a 2-D float array ``(time, column)`` and the column names.
:func:`write_series` and :func:`read_series` are the only code that knows
the bytes; both take a binary file object, so the cache can route them
through any file system.

The format (``series.bin``)::

    b"CIMLSER2"  uint32 LE header length  header  body

The header (JSON, UTF-8, Zstandard-compressed) names the dtype, the row
count, the columns, each column's decimals ``k`` and the groups of columns
that share an encoding and a width.  The body is one Zstandard frame: the
timestamps, then each group's columns, each column an unsigned integer
array (the smallest of 8, 16, 32 or 64 bits that holds it) stored byte
plane by byte plane (byte-shuffled):

timestamps
    zigzag-coded differences (the first from 0).
``dec`` / ``dec-delta``
    a column whose every value is ``n / 10**k`` for an integer ``n`` (what
    dstat prints: up to 3 decimals) stores ``n``, or its differences, zigzag
    coded.  ``k`` is guessed on the first rows and checked on the whole
    column, bit for bit against what decoding computes, before the column
    gets it: the encoding is exact.  Differences are kept where they are
    smaller in sum (a level such as memory in use), plain values elsewhere
    (a rate such as CPU %).
``bits``
    anything else (NaN, -0.0, more digits): the float64 bits as they are.

Every step works on all columns at once (a few whole-array operations and
one compression), which is what makes writing cheap (about 3 ms of CPU for
a one-hour run of 3,600 rows x 31 columns, against 6-11 ms for the first
layout, which compressed every column twice to choose) and reading too
(about 1.4 ms).

Dstat values are a few decimal digits, so a column costs little more than
its information; the series takes about half the bytes of the gzipped CSV
it came from and a fifth of the plain text, against 3-4x the gzipped CSV as
float64 in ``series.npz``.  Reading back is one decompression and
a cumulative sum per group of columns: no parse, no DataFrame.

Older files are still read: ``CIMLSER1`` (the first ``series.bin``: the
same encodings, one Zstandard frame per column, chosen by compressing both
candidates) and ``series.npz`` (numpy's archive of the three arrays,
uncompressed).
"""

from __future__ import annotations

import json
import struct
from typing import IO, NamedTuple

import numpy as np

MAGIC2 = b"CIMLSER2"
#: The first layout's magic (still read).
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


def _zigzag_inplace(ints):
    """:func:`_zigzag` overwriting ``ints`` (a large array: fewer temporaries)."""
    sign = ints >> 63
    ints <<= 1
    ints ^= sign
    return ints.view(np.uint64)


def _unzigzag(codes):
    codes = codes.astype(np.uint64, copy=False)
    return (codes >> np.uint64(1)).view(np.int64) ^ -(codes & np.uint64(1)).view(np.int64)


def _width(top):
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype).itemsize
    return 8


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _shuffled(codes, width):
    """Rows of codes as ``width``-byte integers, each row's byte planes one after another.

    The high bytes of small numbers are runs of zeros, which is what the
    compressor then removes.
    """
    codes = np.ascontiguousarray(codes, dtype=_UINT[width])
    n, rows = codes.shape
    return np.ascontiguousarray(codes.view(np.uint8).reshape(n, rows, width).transpose(0, 2, 1))


def _unshuffled(raw, n, width, rows):
    """Inverse of :func:`_shuffled`: ``(n, rows)`` unsigned integers from the byte planes."""
    planes = raw.reshape(n, width, rows)
    if width == 1:
        return planes.reshape(n, rows)
    return np.ascontiguousarray(planes.transpose(0, 2, 1)).view(_UINT[width]).reshape(n, rows)


def _fit(matrix, bits, cols, k):
    """Which of ``cols`` are all ``n / 10**k``, bit for bit; and their ``n``."""
    scale = 10.0 ** k
    scaled = np.rint(matrix[cols] * scale)
    # What decode divides is an int64 made float: -0.0 becomes 0.0, so a
    # -0.0 in the column must fail the comparison below.
    scaled += 0.0
    fits = np.maximum(scaled.max(axis=1), -scaled.min(axis=1)) < _MAX_INT
    fits &= ((scaled / scale).view(np.int64) == bits[cols]).all(axis=1)
    return fits, scaled


def _decimals(matrix):
    """Per column (row of ``matrix``) the ``k`` with every value ``n / 10**k``, or -1.

    Also the integers ``n`` (0 where ``k`` is -1).  Exact by the check that
    decides ``k``: ``n / 10**k`` is what :func:`decode` computes (an int64
    converted to float64, exactly since ``|n| < 2**52``, divided by the
    float64 ``10.0**k``), compared bit for bit with the value, so -0.0,
    NaN, infinities and values with more digits never get a decimal ``k``.
    The smallest ``k`` is guessed on the first rows, then checked on whole
    columns, all at once: a column needs more digits than its first rows
    only rarely, and then the next ``k`` are tried on it alone.
    """
    n_cols, rows = matrix.shape
    ks = np.full(n_cols, -1, dtype=np.int64)
    ints = np.zeros(matrix.shape, dtype=np.int64)
    if rows == 0:
        ks[:] = 0
        return ks, ints
    bits = matrix.view(np.int64)
    head = np.ascontiguousarray(matrix[:, :64])
    head_bits = head.view(np.int64)
    guess = np.full(n_cols, -1, dtype=np.int64)
    todo = np.flatnonzero(np.isfinite(head).all(axis=1))
    for k in range(_MAX_DIGITS + 1):
        if todo.size == 0:
            break
        fits, _ = _fit(head, head_bits, todo, k)
        guess[todo[fits]] = k
        todo = todo[~fits]
    for k in range(_MAX_DIGITS + 1):
        cols = np.flatnonzero(guess == k)
        while cols.size:
            fits, scaled = _fit(matrix, bits, cols, k)
            ks[cols[fits]] = k
            ints[cols[fits]] = scaled[fits]
            cols = cols[~fits]
            if k == _MAX_DIGITS:
                break
            guess[cols] = k + 1  # tried again with the next k
            cols = cols[:0]
    return ks, ints


def encode(timestamps, values, columns) -> bytes:
    """The bytes of a series (see the module's description of the format)."""
    from numcodecs import zstd

    stamps = np.ascontiguousarray(timestamps, dtype=np.int64)
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        raise SeriesError(f"series values must be float32 or float64, not {values.dtype}")
    columns = [str(c) for c in columns]
    if values.ndim != 2 or values.shape != (len(stamps), len(columns)):
        raise SeriesError(f"inconsistent shapes {values.shape}, {len(stamps)} timestamps, "
                          f"{len(columns)} columns")
    rows = len(stamps)
    # (column, time): one row of this array per column.
    matrix = np.ascontiguousarray(values.T, dtype=np.float64)
    ks, ints = _decimals(matrix)
    delta = np.empty_like(ints)
    delta[:, :1] = ints[:, :1]
    np.subtract(ints[:, 1:], ints[:, :-1], out=delta[:, 1:])
    # A level (memory in use) changes little from one second to the next; a
    # rate (CPU %) does not: keep the differences where they are smaller
    # (a guess at what compresses better, never a question of exactness:
    # both decode to the same integers).
    use_delta = (np.abs(delta).sum(axis=1, dtype=np.float64)
                 < np.abs(ints).sum(axis=1, dtype=np.float64))
    codes = np.where(use_delta[:, None], delta, ints)
    del delta
    codes = _zigzag_inplace(codes)
    is_bits = ks < 0
    encs = np.where(is_bits, "bits", np.where(use_delta, "dec-delta", "dec"))
    if is_bits.any():
        codes[is_bits] = matrix[is_bits].view(np.uint64)
    tops = codes.max(axis=1, initial=0) if rows else np.zeros(len(columns), np.uint64)
    widths = [8 if bits else _width(int(top)) for bits, top in zip(is_bits, tops)]
    stamp_codes = _zigzag(np.diff(stamps, prepend=np.int64(0)))
    stamp_width = _width(int(stamp_codes.max(initial=0)))
    # Columns of one encoding and width go together: one array operation
    # each way for all of them.
    groups = {}
    for j, (enc, width) in enumerate(zip(encs.tolist(), widths)):
        groups.setdefault((enc, width), []).append(j)
    parts = [_shuffled(stamp_codes[None, :], stamp_width)]
    parts.extend(_shuffled(codes[members], width) for (_, width), members in groups.items())
    body = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0, np.uint8)
    blob = zstd.compress(body, LEVEL) if body.size else b""
    header = zstd.compress(json.dumps(
        {"version": 2, "rows": rows, "dtype": values.dtype.name, "columns": columns,
         "stamps": stamp_width, "k": [max(int(k), 0) for k in ks],
         "groups": [[enc, width, members] for (enc, width), members in groups.items()],
         "bytes": len(blob)},
        separators=(",", ":")).encode("utf-8"), LEVEL)
    return b"".join([MAGIC2, _HEADER_LEN.pack(len(header)), header, blob])


def _header(data, magic):
    from numcodecs import zstd

    try:
        start = len(magic) + _HEADER_LEN.size
        (size,) = _HEADER_LEN.unpack(data[len(magic):start])
        header = json.loads(zstd.decompress(data[start:start + size]).decode("utf-8"))
        if not isinstance(header, dict):
            raise TypeError("the header is not an object")
        rows, columns = int(header["rows"]), [str(c) for c in header["columns"]]
        dtype = np.dtype(header["dtype"])
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise SeriesError(f"bad series header: {exc}") from None
    if rows < 0 or dtype not in (np.float32, np.float64):
        raise SeriesError(f"bad series header: {rows} rows, dtype {dtype}")
    return header, rows, columns, dtype, start + size


def decode(data) -> Series:
    """A :class:`Series` from the bytes :func:`encode` made (or an older ``series.bin``
    or ``series.npz``)."""
    data = memoryview(data)
    magic = bytes(data[:len(MAGIC2)])
    if magic[:4] == _NPZ_MAGIC:
        return _decode_npz(data)
    if magic == MAGIC:
        return _decode_v1(data)
    if magic != MAGIC2:
        raise SeriesError("not a ciml series (unknown magic)")
    from numcodecs import zstd

    header, rows, columns, dtype, offset = _header(data, MAGIC2)
    try:
        stamp_width = int(header["stamps"])
        ks = [int(k) for k in header["k"]]
        groups = [(str(enc), int(width), [int(j) for j in members])
                  for enc, width, members in header["groups"]]
        nbytes = int(header["bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SeriesError(f"bad series header: {exc}") from None
    placed = sorted(j for _, _, members in groups for j in members)
    if (len(ks) != len(columns) or placed != list(range(len(columns)))
            or any(w not in _UINT for w in [stamp_width] + [g[1] for g in groups])
            or any(not 0 <= k <= _MAX_DIGITS for k in ks)):
        raise SeriesError(f"bad series header: blocks do not match {len(columns)} columns")
    if offset + nbytes != len(data):
        raise SeriesError(f"series of {len(data)} bytes, its header says "
                          f"{offset + nbytes}: truncated or unexpected bytes")
    expected = rows * (stamp_width + sum(width * len(members) for _, width, members in groups))
    if expected == 0:
        raw = np.zeros(0, dtype=np.uint8)
    else:
        try:
            raw = np.frombuffer(zstd.decompress(data[offset:]), dtype=np.uint8)
        except RuntimeError as exc:  # numcodecs' word for a corrupt frame
            raise SeriesError(f"corrupt series: {exc}") from None
    if raw.size != expected:
        raise SeriesError(f"the series holds {raw.size} bytes, expected {expected}")
    at = rows * stamp_width
    stamps = np.cumsum(_unzigzag(_unshuffled(raw[:at], 1, stamp_width, rows)[0]),
                       dtype=np.int64)
    values = np.empty((len(columns), rows), dtype=np.float64)
    scales = 10.0 ** np.asarray(ks, dtype=np.float64)
    for enc, width, members in groups:
        size = rows * width * len(members)
        codes = _unshuffled(raw[at:at + size], len(members), width, rows)
        at += size
        if enc == "bits":
            if width != 8:
                raise SeriesError(f"bad series header: float bits in {width} bytes")
            values[members] = codes.view(np.float64)
        elif enc in ("dec", "dec-delta"):
            # Codes of decimals are below 2**54 (encode's |n| < 2**52): as
            # int64 the arithmetic shift undoes the zigzag in place.
            ints = codes.astype(np.int64)
            sign = ints & 1
            np.negative(sign, out=sign)
            ints >>= 1
            ints ^= sign
            if enc == "dec-delta":
                np.cumsum(ints, axis=1, out=ints)
            values[members] = ints / scales[members][:, None]
        else:
            raise SeriesError(f"unknown block encoding {enc!r}")
    return _series(stamps, values, columns, dtype)


def _series(stamps, by_column, columns, dtype):
    """The :class:`Series` of values decoded as ``(column, time)`` rows."""
    # Filled column by column; the transpose is the (time, column) view
    # that the build and predict read, with no copy.
    values = by_column.T
    if dtype == np.float32:
        values = values.astype(np.float32)
    return Series(stamps, values, columns)


def _unpack_v1(blob, width, rows):
    from numcodecs import zstd

    if width not in _UINT:
        raise SeriesError(f"bad block width {width}")
    if rows == 0 and len(blob) == 0:
        return np.zeros(0, dtype=_UINT[width])
    try:
        raw = np.frombuffer(zstd.decompress(blob), dtype=np.uint8)
    except RuntimeError as exc:  # numcodecs' word for a corrupt frame
        raise SeriesError(f"corrupt block: {exc}") from None
    if raw.size != rows * width:
        raise SeriesError(f"a block holds {raw.size} bytes, expected {rows * width}")
    return _unshuffled(raw, 1, width, rows)[0]


def _decode_v1(data):
    """The first ``series.bin`` layout (``CIMLSER1``): one Zstandard frame per column."""
    header, rows, columns, dtype, offset = _header(data, MAGIC)
    try:
        specs = [{"enc": str(enc), "k": int(k), "width": int(width), "bytes": int(nbytes)}
                 for enc, k, width, nbytes in header["blocks"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SeriesError(f"bad series header: {exc}") from None
    if len(specs) != len(columns) + 1:
        raise SeriesError(f"bad series header: {len(specs)} blocks for "
                          f"{len(columns)} columns, dtype {dtype}")
    decoded = []
    for spec in specs:
        stop = offset + int(spec["bytes"])
        if stop > len(data):
            raise SeriesError(f"truncated series: {len(data)} bytes, a block ends at {stop}")
        codes = _unpack_v1(data[offset:stop], int(spec["width"]), rows)
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
    return _series(stamps, values, columns, dtype)


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
