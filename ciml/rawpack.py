"""Fetched metrics kept compactly: CSV-like text packed by column, byte-identical when unpacked.

A metrics file as fetched (dstat's CSV, gzipped or not) and the series
parsed from it hold the same numbers twice.  Gzip leaves the text's numbers
as digits; this packs the text so that its numbers cost about what they
cost in the series (:mod:`ciml.series`), which takes the raw cache from
about 1.5 times the bytes fetched to about 1.1 (gzipped dstat files).

:func:`pack` gives the bytes of a file; :func:`unpack` gives the content
back, byte for byte.  How:

* The lines with the most common number of commas form a table; each cell
  between commas that reads as a plain decimal number (``-?`` then
  ``0`` or a digit string not starting with ``0``, then an optional
  ``.digits``; at most 18 digits) is a *number*: it is stored as its
  magnitude (an integer) and a kind (its sign and how many decimals it
  printed), which give back its very characters, by construction.
* Everything else (header lines, other lines, text cells, the commas and
  line ends) stays as text, in order, with the number cells cut out.
* The magnitudes column by column (their differences where smaller, as in
  :mod:`ciml.series`), the kinds and the text are compressed with
  Zstandard.

:func:`unpack` checks a CRC-32 of the content kept by :func:`pack`.  Content
that has no table (JSON, say) is stored as one Zstandard frame instead, and
content that Zstandard cannot shrink is kept as it came.  A gzipped file is unpacked first:
what is kept is its content, the bytes ``gunzip`` gives.

The format::

    b"CIMLRAW1"  uint32 LE header length  header (JSON)  blocks...
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np

MAGIC = b"CIMLRAW1"
_HEADER_LEN = struct.Struct("<I")

#: Zstandard level of the blocks.
LEVEL = 3
#: The level of a file stored as one frame (no table: JSON, say).
WHOLE_LEVEL = 3
#: Under this many bytes of content one frame is tried too (a table's
#: header and blocks cost a few hundred bytes).
SMALL = 1 << 16
#: Digits a number cell may have (its magnitude must fit an int64).
MAX_DIGITS = 18

_COMMA, _NL, _DOT, _MINUS, _ZERO = 44, 10, 46, 45, 48
_NEG = 32  # the kind's sign bit; the low bits are 1 + decimals
_POW10 = 10 ** np.arange(MAX_DIGITS + 1, dtype=np.int64)


class RawPackError(ValueError):
    """The bytes are not a readable packed file."""


def _prefix_sum(mask):
    out = np.zeros(mask.size + 1, dtype=np.int64)
    np.cumsum(mask, out=out[1:])
    return out


def _compress(data, level=LEVEL):
    from numcodecs import zstd

    return zstd.compress(np.ascontiguousarray(data).view(np.uint8).reshape(-1), level) \
        if len(data) else b""


def _decompress(blob, size):
    from numcodecs import zstd

    if size == 0:
        return np.zeros(0, dtype=np.uint8)
    try:
        raw = np.frombuffer(zstd.decompress(blob), dtype=np.uint8)
    except RuntimeError as exc:  # numcodecs' word for a corrupt frame
        raise RawPackError(f"corrupt block: {exc}") from None
    if raw.size != size:
        raise RawPackError(f"a block holds {raw.size} bytes, expected {size}")
    return raw


def _planes(codes):
    """uint64 codes as the narrowest unsigned type, byte planes one after another."""
    top = int(codes.max(initial=0))
    width = next(w for w, dtype in ((1, np.uint8), (2, np.uint16), (4, np.uint32), (8, None))
                 if dtype is None or top <= np.iinfo(dtype).max)
    narrow = np.ascontiguousarray(
        codes, dtype={1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width])
    n, rows = narrow.shape
    return width, np.ascontiguousarray(
        narrow.view(np.uint8).reshape(n, rows, width).transpose(0, 2, 1))


def _unplanes(raw, n, width, rows):
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    planes = raw.reshape(n, width, rows)
    return np.ascontiguousarray(planes.transpose(0, 2, 1)).view(dtype).reshape(n, rows)


def _table(buf):
    """``(line starts, line ends, table line numbers, cell starts, cell ends, commas a line)``.

    Cells are ``(table lines, commas + 1)``; ``None`` when no line has a comma.
    """
    newlines = np.flatnonzero(buf == _NL)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [buf.size]])
    commas = np.flatnonzero(buf == _COMMA)
    if commas.size == 0:
        return None
    line_of = np.searchsorted(newlines, commas)
    per_line = np.bincount(line_of, minlength=starts.size)
    counts = np.bincount(per_line)
    counts[0] = 0
    width = int(counts.argmax())
    if width == 0:
        return None
    table = np.flatnonzero(per_line == width)
    cell_commas = commas[per_line[line_of] == width].reshape(table.size, width)
    cell_starts = np.concatenate([starts[table, None], cell_commas + 1], axis=1)
    cell_ends = np.concatenate([cell_commas, ends[table, None]], axis=1)
    return starts, ends, table, cell_starts, cell_ends, width


#: Per byte: 1 for a digit, 64 for a dot, 4096 for a minus; differences of
#: the running sum over a cell of at most 20 bytes count each (modulo 2**32).
_CLASS = np.zeros(256, dtype=np.uint32)
_CLASS[_ZERO:_ZERO + 10] = 1
_CLASS[_DOT] = 64
_CLASS[_MINUS] = 4096
_LONGEST = MAX_DIGITS + 2


def _numbers(buf, s, e):
    """Which cells ``[s, e)`` are number cells; their magnitude, decimals and sign.

    Also a mask of the bytes in number cells.
    """
    n = buf.size
    running = np.zeros(n + 1, dtype=np.uint32)
    np.cumsum(_CLASS[buf], out=running[1:])
    counts = running[e] - running[s]
    nd = (counts & 63).astype(np.int64)
    ndots = (counts >> 6) & 63
    nneg = (counts >> 12).astype(np.int64)
    length = e - s
    ok = (length <= _LONGEST) & (nd >= 1) & (nd <= MAX_DIGITS) & (ndots <= 1) & (nneg <= 1)
    ok &= nd + ndots + nneg == length
    padded = np.concatenate([buf, np.zeros(2, np.uint8)])
    ok &= (nneg == 0) | (padded[s] == _MINUS)
    first = np.minimum(s + nneg, n)  # the first digit
    ok &= padded[first] != _DOT
    ok &= (padded[first] != _ZERO) | (first + 1 == e) | (padded[first + 1] == _DOT)
    last = padded[np.maximum(e - 1, 0)]
    ok &= (ndots == 0) | (last != _DOT)
    s, e, nd, nneg = s[ok], e[ok], nd[ok], nneg[ok]
    has_dot = ndots[ok] == 1
    decimals = np.zeros(s.shape, dtype=np.int64)
    if has_dot.any():
        dots = np.flatnonzero(buf == _DOT)
        at = dots[np.searchsorted(dots, s[has_dot])]
        decimals[has_dot] = e[has_dot] - at - 1
    in_number = np.zeros(n + 1, dtype=np.int8)
    # (Starts are distinct, and so are ends: plain indexing adds once each.)
    in_number[s] += 1
    in_number[e] -= 1
    mask = np.cumsum(in_number[:n], dtype=np.int8).view(bool)
    # The magnitudes: each digit times ten to the number of digits after it
    # in its cell, summed per cell.
    digits = buf[mask]
    digits = digits[(digits >= _ZERO)]  # drop the dots and minus signs
    last = np.cumsum(nd) - 1
    power = np.repeat(last, nd) - np.arange(digits.size)
    terms = (digits - _ZERO).astype(np.int64) * _POW10[power]
    magnitude = np.add.reduceat(terms, last - nd + 1) if digits.size else \
        np.zeros(0, dtype=np.int64)
    return ok, magnitude, decimals, nneg == 1, mask


def _render(magnitude, decimals, negative):
    """The characters of number cells, one after another, and each cell's length."""
    ndigits = np.searchsorted(_POW10, magnitude, side="right")
    ndigits = np.maximum(ndigits, np.maximum(decimals + 1, 1))  # 0.05 prints its leading zeros
    neg = negative.astype(np.int64)
    length = neg + ndigits + (decimals > 0)
    total = int(length.sum())
    cell = np.repeat(np.arange(length.size), length)
    offset = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
    clen, cdec, cneg = length[cell], decimals[cell], neg[cell]
    dot_at = np.where(cdec > 0, clen - cdec - 1, -1)
    # Digits left of this position within the number, counted from the right.
    power = clen - 1 - offset - ((cdec > 0) & (offset < dot_at))
    power = np.clip(power, 0, MAX_DIGITS)
    out = ((magnitude[cell] // _POW10[power]) % 10 + _ZERO).astype(np.uint8)
    out[offset == dot_at] = _DOT
    out[(cneg == 1) & (offset == 0)] = _MINUS
    return out, length


def _pack_table(buf, found):
    _, _, table, cell_starts, cell_ends, width = found
    s, e = cell_starts.reshape(-1), cell_ends.reshape(-1)
    ok, magnitude, decimals, negative, in_number = _numbers(buf, s, e)
    if not ok.any():
        return None
    kinds = np.zeros(ok.shape, dtype=np.uint8)
    kinds[ok] = 1 + decimals + _NEG * negative
    magnitude_all = np.zeros(ok.shape, dtype=np.int64)
    magnitude_all[ok] = magnitude
    magnitude = magnitude_all
    # The text: every byte outside a number cell, in order.
    text = buf[~in_number]
    # Column by column (a column's numbers are alike): kinds and magnitudes.
    cols = width + 1
    kinds_t = np.ascontiguousarray(kinds.reshape(-1, cols).T)
    mags = magnitude.reshape(-1, cols).T
    delta = np.empty_like(mags)
    delta[:, :1] = mags[:, :1]
    np.subtract(mags[:, 1:], mags[:, :-1], out=delta[:, 1:])
    use_delta = (np.abs(delta).sum(axis=1, dtype=np.float64)
                 < np.abs(mags).sum(axis=1, dtype=np.float64))
    chosen = np.where(use_delta[:, None], delta, mags)
    codes = ((chosen << 1) ^ (chosen >> 63)).view(np.uint64)
    mag_width, planes = _planes(codes)
    lines = np.diff(table, prepend=-1).astype(np.int64)  # gaps between table lines
    line_width, line_planes = _planes(lines[None, :].view(np.uint64))
    blocks = [_compress(text), _compress(kinds_t), _compress(planes),
              _compress(line_planes)]
    header = {"mode": "table", "commas": width, "lines": int(table.size),
              "text": int(text.size), "mag_width": mag_width, "line_width": line_width,
              "delta": use_delta.astype(int).tolist(), "blocks": [len(b) for b in blocks]}
    return header, blocks


def _unpack_table(header, blocks, size):
    try:
        width, n_lines = int(header["commas"]), int(header["lines"])
        mag_width, line_width = int(header["mag_width"]), int(header["line_width"])
        use_delta = np.asarray(header["delta"], dtype=bool)
        text_size = int(header["text"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RawPackError(f"bad header: {exc}") from None
    cols = width + 1
    if (mag_width not in (1, 2, 4, 8) or line_width not in (1, 2, 4, 8)
            or use_delta.shape != (cols,) or len(blocks) != 4):
        raise RawPackError("bad header: blocks do not match the table")
    text = _decompress(blocks[0], text_size)
    kinds = _decompress(blocks[1], cols * n_lines).reshape(cols, n_lines).T.reshape(-1)
    codes = _unplanes(_decompress(blocks[2], cols * n_lines * mag_width), cols, mag_width,
                      n_lines)
    gaps = _unplanes(_decompress(blocks[3], n_lines * line_width), 1, line_width,
                     n_lines)[0].astype(np.int64)
    codes = codes.astype(np.uint64)
    mags = ((codes >> np.uint64(1)).view(np.int64) ^ -(codes & np.uint64(1)).view(np.int64))
    mags[use_delta] = np.cumsum(mags[use_delta], axis=1)
    magnitude = np.ascontiguousarray(mags.T).reshape(-1)
    table = np.cumsum(gaps) - 1
    # Where each cell starts in the text: table lines there have their commas.
    newlines = np.flatnonzero(text == _NL)
    starts = np.concatenate([[0], newlines + 1])
    commas = np.flatnonzero(text == _COMMA)
    if n_lines and (table[0] < 0 or table[-1] >= starts.size
                    or (np.diff(table) <= 0).any()):
        raise RawPackError("bad table lines")
    line_of = np.searchsorted(newlines, commas)
    per_line = np.bincount(line_of, minlength=starts.size)
    if n_lines and (per_line[table] != width).any():
        raise RawPackError("the text does not hold the table's commas")
    in_table = np.zeros(starts.size, dtype=bool)
    in_table[table] = True
    cell_commas = commas[in_table[line_of]].reshape(n_lines, width)
    cell_at = np.concatenate([starts[table, None], cell_commas + 1], axis=1).reshape(-1)
    number = kinds > 0
    low = (kinds & (_NEG - 1)).astype(np.int64)
    decimals, negative = low - 1, (kinds & _NEG) > 0
    if (low[number] > MAX_DIGITS).any() or (magnitude[number] < 0).any():
        raise RawPackError("bad number cells")
    chars, length = _render(magnitude[number], decimals[number], negative[number])
    if chars.size + text.size != size:
        raise RawPackError(f"unpacks to {chars.size + text.size} bytes, expected {size}")
    # A number cell starts where its cell is in the text, shifted by the
    # number characters before it.
    shift = np.cumsum(length) - length
    first = cell_at[number] + shift
    out = np.empty(size, dtype=np.uint8)
    is_number = np.zeros(size + 1, dtype=np.int8)
    is_number[first] += 1
    is_number[first + length] -= 1
    mask = np.cumsum(is_number[:size], dtype=np.int64) > 0
    out[mask] = chars
    out[~mask] = text
    return out.tobytes()


def content_of(fetched: bytes) -> tuple[bytes, bool]:
    """``(content, gzipped)``: a gzipped file's content, or the bytes as they are."""
    if fetched[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(fetched), True
        except (OSError, EOFError, zlib.error):
            pass
    return fetched, False


def pack(fetched: bytes, *, verify: bool = False) -> tuple[bytes, dict]:
    """``(bytes to store, what they are)``: the file packed (see the module's description).

    The description says ``{"packed": "table" | "zstd" | "as-fetched",
    "gzipped": bool}``.  ``verify`` unpacks the table and compares it with
    the content (falling back to one frame if they differ); the
    construction makes that unnecessary and it costs about as much again,
    so the cache does not ask for it: the CRC-32 is checked on every unpack.
    """
    content, gzipped = content_of(fetched)
    buf = np.frombuffer(content, dtype=np.uint8)
    crc = zlib.crc32(content)
    packed = None
    found = _table(buf) if buf.size else None
    if found is not None:
        made = _pack_table(buf, found)
        if made is not None:
            header, blocks = made
            header.update(size=len(content), crc32=crc)
            packed = _assemble(header, blocks)
            if verify:
                try:
                    if unpack(packed) != content:
                        packed = None
                except RawPackError:
                    packed = None
    if packed is None or len(content) < SMALL:
        block = _compress(buf, WHOLE_LEVEL)
        whole = _assemble({"mode": "zstd", "size": len(content), "crc32": crc,
                           "blocks": [len(block)]}, [block])
        if packed is None or len(whole) < len(packed):
            packed = whole
    if len(packed) >= len(fetched):
        return fetched, {"packed": "as-fetched", "gzipped": False}
    return packed, {"packed": json.loads(_header_bytes(packed))["mode"], "gzipped": gzipped}


def _assemble(header, blocks):
    data = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return b"".join([MAGIC, _HEADER_LEN.pack(len(data)), data, *blocks])


def _header_bytes(packed):
    start = len(MAGIC) + _HEADER_LEN.size
    (size,) = _HEADER_LEN.unpack(packed[len(MAGIC):start])
    return packed[start:start + size]


def is_packed(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC


def unpack(packed: bytes) -> bytes:
    """The content :func:`pack` was given (gunzipped), byte for byte."""
    data = memoryview(packed)
    if bytes(data[:len(MAGIC)]) != MAGIC:
        raise RawPackError("not a packed ciml file (unknown magic)")
    try:
        raw_header = _header_bytes(data)
        header = json.loads(bytes(raw_header).decode("utf-8"))
        mode, size, crc = str(header["mode"]), int(header["size"]), int(header["crc32"])
        sizes = [int(n) for n in header["blocks"]]
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise RawPackError(f"bad header: {exc}") from None
    at = len(MAGIC) + _HEADER_LEN.size + len(raw_header)
    if at + sum(sizes) != len(data) or min(sizes, default=0) < 0:
        raise RawPackError(f"{len(data)} bytes, the header says {at + sum(sizes)}")
    blocks = []
    for n in sizes:
        blocks.append(data[at:at + n])
        at += n
    if mode == "zstd" and len(blocks) == 1:
        content = _decompress(blocks[0], size).tobytes()
    elif mode == "table":
        content = _unpack_table(header, blocks, size)
    else:
        raise RawPackError(f"unknown mode {mode!r}")
    if zlib.crc32(content) != crc:
        raise RawPackError("the content does not match its CRC-32")
    return content
