"""The ``dstat`` metric source: fetch a run's dstat CSV log and parse it once.

Where the file is
-----------------
devstack-based jobs write ``dstat --output`` to ``dstat-csv_log.txt``,
collected gzipped or not under ``controller/logs/`` or ``logs/`` of the
build's artifacts.  :class:`DstatMetricSource` tries its ``paths`` in order
under the run's artifacts URL, which may be ``http(s)://``, ``file://`` or a
plain local directory.  Where the CI system keeps a job's artifacts as a
zip archive (GitHub Actions, GitLab CI), the result source marks the run
(``artifacts_archive: zip`` in its metadata; a URL ending in ``.zip`` counts
too): the archive is downloaded (spooled to disk past 16 MB, at most
``max_archive_bytes``) and the first of ``paths`` found in it, by full path
or by file name, is read, decompressed as a stream held to ``max_bytes``.
A 404 (or a missing file) moves on to the next path; a 5xx or a
connection error is retried with exponential backoff.

What the file looks like
------------------------
A few quoted preamble lines (``"Dstat 0.7.2 CSV output"``, author, host,
command line and date; dstat 0.7.2 adds a blank line), then two header
lines: the *groups* (``"total cpu usage",,,,`` — a title over its first
column, empty cells for the rest) and the *columns* (``"time","usr",...``),
then one data row per second.  The header is found by content (the line
starting with ``"time"`` or ``"epoch"`` and the non-blank line above it),
never by a fixed line count, because the preamble differs between versions.
Column order differs too (0.7.2 has ``used buff cach free``, 0.7.3 ``used
free buff cach``), so columns must always be used by name.

Column names
------------
Every metric column is named ``<group>_<column>``, lowercase; these names
are stable (``--features-regex`` matches them) and unique even where dstat
repeats a column name (``read``/``writ`` under both ``dsk/total`` and
``io/total``).  The group prefix is:

=====================  ==========  =========================================
dstat group title      prefix      columns (the devstack option set)
=====================  ==========  =========================================
total cpu usage        ``cpu``     ``cpu_usr cpu_sys cpu_idl cpu_wai``,
                                   ``cpu_hiq cpu_siq`` (0.7.2) or ``cpu_stl``
cpuN usage             ``cpuN``    per-CPU, same columns
memory usage           ``mem``     ``mem_used mem_free mem_buff mem_cach``
net/total              ``net``     ``net_recv net_send``
net/IFACE              ``net_IFACE``
dsk/total              ``dsk``     ``dsk_read dsk_writ`` (bytes/s)
dsk/DEV                ``dsk_DEV``
io/total               ``io``      ``io_read io_writ`` (requests/s)
system                 ``sys``     ``sys_int sys_csw``
load avg               ``load``    ``load_1m load_5m load_15m``
procs                  ``procs``   ``procs_run procs_blk procs_new``
paging                 ``paging``  ``paging_in paging_out``
swap                   ``swap``    ``swap_used swap_free``
tcp sockets            ``tcp``     ``tcp_lis tcp_act tcp_syn tcp_tim tcp_clo``
udp / unix sockets     ``udp`` / ``unix``
anything else          the title, lowercased, each run of other characters
                       than letters and digits turned into ``_``
=====================  ==========  =========================================

Column parts are slugged the same way.  Should two columns still get the
same name, the later ones get ``_2``, ``_3``... in file order.  The time
column (``time``, or ``epoch`` with ``dstat -T``) becomes the index.  Text
columns of the "top" plugins (``--top-cpu-adv``, ``--top-io-adv``...:
groups titled ``most expensive ...``, ``highest ...``, ``most frequent
...``, ``latest ...``, ``out of memory ...``; cells like ``Top: bash<TAB>
880973.5...``) are dropped.

Time stamps
-----------
dstat writes ``dd-mm HH:MM:SS``, without a year, in the node's local time
(UTC on CI nodes).  Each row gets the year (previous, same or next) that
puts it nearest to the run's start time, so a run that crosses New Year
stays a short series and 29 February works.  Without a start time the
``Date:`` preamble line is the anchor, failing that the current year.
The index is UTC, strictly increasing: a row whose time does not move
forward (a clock step back, a repeated second) is dropped.

Rejections
----------
Bad input raises :class:`ciml.errors.MetricsUnavailable` with one of these
reason codes: ``no-artifacts-url``, ``missing`` (not found on any path),
``http-error`` / ``connection-error`` (transient: server error or
network, after retries), ``auth`` (transient: the server refused the
credentials, 401/403; fix them and run again), ``rate-limited``
(transient: the server asked for a longer wait than ``max_wait``),
``corrupt-gzip``, ``truncated-gzip``, ``too-large`` (over ``max_bytes``
compressed or decompressed; gzip is decompressed as a capped stream, so a
gzip bomb cannot exhaust memory),
``read-error`` (a local file that cannot be read), ``corrupt-archive`` (an
artifacts archive that is not a readable zip, or an encrypted member),
``empty``, ``html`` (a
web page instead of CSV), ``not-dstat`` (no dstat
header), ``header-only`` (no data rows), ``malformed`` (rows with the wrong
number of fields), ``non-numeric`` (text in a metric column) and
``bad-time`` (a time cell not in dstat's format).  A final line without
its newline (dstat killed while writing) is ignored rather than rejected,
and so is a repeated preamble (dstat restarted on the same file) when its
columns are the same.
"""

import csv
import datetime as dt
import io
import logging
import re
import urllib.parse
import zlib

import numpy as np

from ciml.base import FetchedMetrics, MetricSource, Parameter
from ciml.errors import MetricsUnavailable
from ciml.hookspecs import hookimpl
from ciml.http import (
    DEFAULT_MAX_BYTES,
    HTTP_PARAMETERS,
    FetchError,
    HttpClient,
    is_remote,
    local_path,
    looks_like_html,
    read_local,
    redact_url,
)

LOG = logging.getLogger(__name__)

#: Where devstack-based jobs leave the dstat CSV, most likely first.
DEFAULT_PATHS = (
    "controller/logs/dstat-csv_log.txt.gz",
    "controller/logs/dstat-csv_log.txt",
    "logs/dstat-csv_log.txt.gz",
    "logs/dstat-csv_log.txt",
    # At the top of a build's artifacts (the recipes' Jenkins archiveArtifacts).
    "dstat-csv_log.txt.gz",
    "dstat-csv_log.txt",
)

#: Default cap on an artifacts archive's (zip) download; it is spooled to a
#: temporary file, never held in memory whole.
DEFAULT_MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024

#: A zip with more members than this is not a job's artifacts but an attack
#: on the reader (its central directory alone would fill memory).
MAX_ARCHIVE_MEMBERS = 100_000

ZIP_MAGIC = b"PK\x03\x04"

GZIP_MAGIC = b"\x1f\x8b"

_GROUP_PREFIX = {
    "total cpu usage": "cpu",
    "memory usage": "mem",
    "net/total": "net",
    "dsk/total": "dsk",
    "io/total": "io",
    "system": "sys",
    "load avg": "load",
    "procs": "procs",
    "paging": "paging",
    "swap": "swap",
    "tcp sockets": "tcp",
    "udp": "udp",
    "unix sockets": "unix",
}
_CPU_N = re.compile(r"^cpu(\d+) usage$")
_TEXT_GROUP = re.compile(r"^(most expensive|highest|most frequent|latest|out of memory)\b")
_SLUG = re.compile(r"[^a-z0-9]+")
_TIME_COLUMNS = ("time", "epoch")
_HEADER_SCAN_LINES = 40
_DATE_LINE = re.compile(rb'"Date:","(\d{1,2} \w{3} \d{4})')


# -- parsing -----------------------------------------------------------------


def _slug(text):
    return _SLUG.sub("_", text.strip().lower()).strip("_")


def _group_prefix(title):
    title = title.strip().lower()
    if title in _GROUP_PREFIX:
        return _GROUP_PREFIX[title]
    match = _CPU_N.match(title)
    if match:
        return "cpu" + match.group(1)
    if "/" in title:
        head, _, tail = title.partition("/")
        if head in ("net", "dsk", "io"):
            return f"{head}_{_slug(tail)}"
    return _slug(title) or "group"


def column_names(groups, columns):
    """Name dstat's columns: ``(time_index, [(position, name)...])``.

    ``groups`` and ``columns`` are the cells of the two header lines.  The
    time column's position is returned separately; text columns are left
    out.  Public so that tools can show the mapping without a data file.
    """
    time_index = None
    named = []
    seen = {}
    group = ""
    for i, column in enumerate(columns):
        if i < len(groups) and groups[i].strip():
            group = groups[i]
        col = column.strip()
        if time_index is None and col.lower() in _TIME_COLUMNS:
            time_index = i
            continue
        if _TEXT_GROUP.match(group.strip().lower()) or re.search(r"\s", col):
            continue
        name = f"{_group_prefix(group)}_{_slug(col) or f'col{i}'}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 1)
        named.append((i, name))
    return time_index, named


def _gunzip(data, max_bytes):
    """Decompress gzip (several members allowed) with a cap on the output size."""
    out = bytearray()
    pending = data
    while True:
        decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        buf = pending
        try:
            while True:
                room = max_bytes - len(out) + 1
                chunk = decomp.decompress(buf, room)
                out += chunk
                if len(out) > max_bytes:
                    raise MetricsUnavailable(
                        "too-large", f"gzip data decompresses to more than {max_bytes} bytes")
                if decomp.eof:
                    break
                buf = decomp.unconsumed_tail
                if not buf and not chunk:
                    raise MetricsUnavailable(
                        "truncated-gzip",
                        f"gzip data ends early after {len(data)} bytes "
                        f"({len(out)} bytes decompressed)")
        except zlib.error as exc:
            raise MetricsUnavailable("corrupt-gzip", f"corrupt gzip data: {exc}") from None
        pending = decomp.unused_data
        # Several gzip members may be concatenated; NUL padding after the last
        # one is tolerated, as gzip(1) does.
        if not pending.startswith(GZIP_MAGIC):
            if pending.strip(b"\0"):
                raise MetricsUnavailable(
                    "corrupt-gzip", f"{len(pending)} bytes of garbage after the gzip data")
            return bytes(out)


def _lines(data, limit):
    """Yield ``(start, end_of_line, next_start)`` for the first ``limit`` lines."""
    pos = 0
    n = len(data)
    for _ in range(limit):
        if pos >= n:
            return
        nl = data.find(b"\n", pos)
        if nl < 0:
            nl = n
        yield pos, nl, nl + 1
        pos = nl + 1


def _csv_cells(line):
    return next(csv.reader([line.decode("latin-1").rstrip("\r")]), [])


def _find_header(data):
    """Return ``(group_cells, column_cells, body_offset)`` or ``None``."""
    previous = None
    found = None   # (groups, columns, body offset) of the first time line
    for start, end, nxt in _lines(data, _HEADER_SCAN_LINES):
        line = data[start:end]
        stripped = line.strip()
        if not stripped:
            continue
        first = stripped.split(b",", 1)[0].strip(b'"').strip().lower()
        is_time = first.decode("latin-1") in _TIME_COLUMNS
        if found is not None:
            # With an epoch column (dstat -T) the group line starts with
            # "epoch" too: then the line after it is the column line.
            if is_time and line.startswith(b'"'):
                return found[1], _csv_cells(line), nxt
            return found
        if is_time and previous is not None:
            found = (_csv_cells(previous), _csv_cells(line), nxt)
        previous = line
    return found


def _anchor_year(data, start):
    if start is not None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.timezone.utc)
        return start.astimezone(dt.timezone.utc)
    match = _DATE_LINE.search(data[:4096])
    if match:
        try:
            day = dt.datetime.strptime(match.group(1).decode("ascii"), "%d %b %Y")
            return day.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    LOG.warning("dstat data has no run start and no Date: line; assuming this year")
    now = dt.datetime.now(dt.timezone.utc)
    return now


def _parse_times(values, anchor):
    """``dd-mm HH:MM:SS`` strings to int64 ns since the epoch, year nearest ``anchor``."""
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    # One join and a byte view instead of per-row string handling: the time
    # column is fixed-width when it is valid.
    try:
        joined = "".join(values).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        joined = b""
    if len(joined) != 14 * n:
        lengths = [len(str(v)) for v in values]
        bad = next((i for i, size in enumerate(lengths) if size != 14), 0)
        raise MetricsUnavailable(
            "bad-time", f"data row {bad + 1}: time {str(values[bad])!r} is not dstat's "
            "'dd-mm HH:MM:SS'")
    codes = np.frombuffer(joined, dtype=np.uint8).reshape(n, 14)
    return _parse_time_codes(codes, anchor, values.__getitem__)


def _parse_time_codes(codes, anchor, cell):
    """:func:`_parse_times` on an ``(n, 14)`` uint8 array of the cells' bytes;
    ``cell(i)`` gives row ``i``'s cell, for an error message."""
    digits = codes.astype(np.int64) - ord("0")
    digit_pos = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13]
    ok = (codes[:, 2] == ord("-")) & (codes[:, 5] == ord(" "))
    ok &= (codes[:, 8] == ord(":")) & (codes[:, 11] == ord(":"))
    ok &= ((digits[:, digit_pos] >= 0) & (digits[:, digit_pos] <= 9)).all(axis=1)
    day = digits[:, 0] * 10 + digits[:, 1]
    month = digits[:, 3] * 10 + digits[:, 4]
    hour = digits[:, 6] * 10 + digits[:, 7]
    minute = digits[:, 9] * 10 + digits[:, 10]
    second = digits[:, 12] * 10 + digits[:, 13]
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 60)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise MetricsUnavailable(
            "bad-time", f"data row {bad + 1}: time {str(cell(bad))!r} is not dstat's "
            "'dd-mm HH:MM:SS'")
    month0 = np.clip(month - 1, 0, 11)
    seconds_of_day = hour * 3600 + minute * 60 + second
    anchor_ns = np.datetime64(anchor.replace(tzinfo=None), "ns").astype(np.int64)
    best = None
    best_dist = None
    for year in (anchor.year - 1, anchor.year, anchor.year + 1):
        months = (np.datetime64(f"{year:04d}-01", "M") + month0.astype("timedelta64[M]"))
        days = months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
        # numpy rolls 29-02 of a common year over into March: such a day does
        # not exist in that year.
        valid = days.astype("datetime64[M]") == months
        ns = days.astype("datetime64[ns]").astype(np.int64) + seconds_of_day * 1_000_000_000
        dist = np.where(valid, np.abs(ns - anchor_ns), np.iinfo(np.int64).max)
        if best is None:
            best, best_dist = ns, dist
        else:
            closer = dist < best_dist
            best = np.where(closer, ns, best)
            best_dist = np.where(closer, dist, best_dist)
    if (best_dist == np.iinfo(np.int64).max).any():
        bad = int(np.flatnonzero(best_dist == np.iinfo(np.int64).max)[0])
        raise MetricsUnavailable("bad-time",
                                 f"data row {bad + 1}: no such date {str(cell(bad))!r}")
    return best


def _time_codes_of_lines(body, rows):
    """The time cells as an ``(rows, 14)`` uint8 array, straight from the bytes.

    The fast path for dstat's usual layout, the time first and unquoted
    (``dd-mm HH:MM:SS,``): the line starts are found with numpy and the
    cells read in one gather, so no Python object is made per row.
    Returns ``(codes, cell)``, ``cell(i)`` being row ``i``'s time cell as
    text for an error message; ``None`` when any line does not look so
    (quoted, another width, blank lines that the CSV reader counted
    differently): the caller then reads the column as text.
    """
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    if not body.endswith(b"\n"):
        ends = np.append(ends, len(buf))
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    # The lines the CSV reader skips: empty ones, and a lone "\r" (CRLF).
    blank = lengths == 0
    blank |= (lengths == 1) & (buf[np.minimum(starts, len(buf) - 1)] == ord("\r"))
    if blank.any():
        starts, ends, lengths = starts[~blank], ends[~blank], lengths[~blank]
    if len(starts) != rows or rows == 0 or (lengths < 15).any():
        return None
    codes = buf[starts[:, None] + np.arange(15)]
    if not (codes[:, 14] == ord(",")).all():
        return None

    def cell(i):
        return body[starts[i]:ends[i]].split(b",", 1)[0].decode("latin-1")

    return codes[:, :14], cell


def _first_bad_cell(body, positions, names):
    """Find the first non-numeric metric cell, for the error message (slow path)."""
    reader = csv.reader(io.StringIO(body.decode("latin-1")))
    for row_no, row in enumerate(reader, start=1):
        for pos, name in zip(positions, names):
            if pos < len(row):
                try:
                    float(row[pos])
                except ValueError:
                    return f"data row {row_no}, column {name}: {row[pos][:40]!r}"
    return "a metric cell is not a number"


def _first_bad_row(body, ncols):
    row_no = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        row_no += 1
        fields = line.count(b",") + 1
        if fields != ncols:
            return f"data row {row_no} has {fields} fields; the header has {ncols}"
    return "rows and header disagree on the number of fields"


def _drop_repeated_headers(body, head):
    """Remove a second preamble and header (dstat restarted on the same file).

    dstat appends to an existing ``--output`` file and writes its preamble
    again; the rows stay comparable only if the columns did not change.
    """
    column_line = None
    for line in reversed(head.rstrip(b"\r\n").split(b"\n")):
        column_line = line.rstrip(b"\r")
        break
    kept = []
    for line in body.split(b"\n"):
        if line.startswith(b'"'):
            first = line.split(b",", 1)[0].strip(b'"').lower()
            if first in (b"time", b"epoch") and line.rstrip(b"\r") != column_line:
                raise MetricsUnavailable(
                    "malformed", "dstat was restarted on the same file with other columns")
            continue
        kept.append(line)
    return b"\n".join(kept)


def parse_dstat(data, start=None, max_bytes=DEFAULT_MAX_BYTES):
    """Parse dstat CSV output (gzipped or not) into a float64 frame.

    :param data: the file's bytes, as fetched (gzip is recognised by its
        magic bytes, not by a file name).
    :param start: the run's start (a datetime; naive means UTC): it gives
        the year that dstat does not write.
    :param max_bytes: refuse data larger than this, compressed or not.
    :return: a :class:`pandas.DataFrame` indexed by a strictly increasing
        UTC ``DatetimeIndex`` named ``time``, one float64 column per metric,
        named as the module documentation says.
    :raises ciml.errors.MetricsUnavailable: see the module documentation
        for the reason codes.
    """
    import pandas as pd

    stamps, values, names = parse_dstat_arrays(data, start=start, max_bytes=max_bytes)
    index = pd.DatetimeIndex(stamps.astype("datetime64[ns]"), name="time").tz_localize("UTC")
    return pd.DataFrame(values, index=index, columns=names, copy=False)


def parse_dstat_arrays(data, start=None, max_bytes=DEFAULT_MAX_BYTES):
    """:func:`parse_dstat` as arrays: ``(timestamps, values, columns)``.

    int64 nanoseconds since the epoch (UTC), strictly increasing; float64
    ``(time, column)``; the column names (a list of str).  What the raw
    cache stores: ``cache-data`` takes these, never building the frame.
    """
    import pandas as pd

    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_bytes:
        raise MetricsUnavailable("too-large", f"{len(data)} bytes is over the {max_bytes} limit")
    if data.startswith(GZIP_MAGIC):
        data = _gunzip(data, max_bytes)
    if not data[:4096].strip() and not data.strip():
        raise MetricsUnavailable("empty", "the dstat file is empty")
    if looks_like_html(data[:8192]):
        raise MetricsUnavailable("html", "got an HTML page where dstat CSV was expected")
    header = _find_header(data)
    if header is None:
        raise MetricsUnavailable(
            "not-dstat", f"no dstat CSV header (a \"time\" column line) in the first "
            f"{_HEADER_SCAN_LINES} lines")
    groups, columns, offset = header
    time_index, named = column_names(groups, columns)
    if not named:
        raise MetricsUnavailable("not-dstat", "the dstat header has no metric columns")
    body = data[offset:]
    if not body.endswith(b"\n"):
        # dstat killed mid-line: drop the partial line rather than the run.
        cut = body.rfind(b"\n")
        body = body[:cut + 1] if cut >= 0 else b""
    if b'\n"' in body or body.startswith(b'"'):
        body = _drop_repeated_headers(body, data[:offset])
    if not body[:4096].strip() and not body.strip():
        raise MetricsUnavailable("header-only", "the dstat file has a header but no data rows")

    positions = [p for p, _ in named]
    names = [n for _, n in named]
    ncols = len(columns)
    # The usual layout (time first, as ``dd-mm HH:MM:SS``) reads only the
    # metric columns, all float64, and takes the time cells from the
    # lines: a text column costs the CSV reader a Python string per row.
    fast_time = time_index == 0 and columns[0].strip().lower() == "time"
    if fast_time:
        usecols, dtypes = positions, np.float64
    else:
        usecols = [time_index, *positions]
        dtypes = {p: np.float64 for p in positions}
        dtypes[time_index] = str
    try:
        frame = pd.read_csv(
            io.BytesIO(body), header=None, names=list(range(ncols)),
            usecols=usecols, dtype=dtypes, engine="c",
            encoding="latin-1", skip_blank_lines=True, keep_default_na=False,
            na_values=[""], index_col=False)
    except ValueError as exc:
        text = str(exc)
        if "could not convert" in text or "Unable to parse" in text:
            raise MetricsUnavailable(
                "non-numeric", "non-numeric value in a metric column: "
                + _first_bad_cell(body, positions, names)) from None
        raise MetricsUnavailable("malformed", f"malformed dstat CSV: {text}") from None
    except pd.errors.ParserError as exc:
        raise MetricsUnavailable("malformed", f"malformed dstat CSV: {exc}") from None
    if len(frame) == 0:
        raise MetricsUnavailable("header-only", "the dstat file has a header but no data rows")

    # The C parser pads short rows and, with index_col=False, silently drops
    # surplus fields; counting separators catches both at memory speed.
    if body.count(b",") != len(frame) * (ncols - 1):
        raise MetricsUnavailable("malformed", _first_bad_row(body, ncols))
    frame_times = None if fast_time else frame[time_index].tolist()
    if list(frame.columns) != positions:
        frame = frame[positions]
    values = frame.to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        row, col = (int(v[0]) for v in np.nonzero(np.isnan(values)))
        raise MetricsUnavailable(
            "malformed", f"data row {row + 1}, column {names[col]}: empty cell")

    fast = _time_codes_of_lines(body, len(frame)) if fast_time else None
    if fast is not None:
        codes, cell = fast
        stamps = _parse_time_codes(codes, _anchor_year(data, start), cell)
    elif fast_time:
        # An unusual time cell: read the column as text for the checks and
        # the message.
        times = pd.read_csv(
            io.BytesIO(body), header=None, names=list(range(ncols)), usecols=[0],
            dtype=str, engine="c", encoding="latin-1", skip_blank_lines=True,
            keep_default_na=False, index_col=False)[0].tolist()
        stamps = _parse_times(times, _anchor_year(data, start))
    elif columns[time_index].strip().lower() == "epoch":
        try:
            stamps = (np.asarray(frame_times, dtype=np.float64) * 1e9).astype(np.int64)
        except ValueError:
            raise MetricsUnavailable("bad-time", "non-numeric epoch time stamp") from None
    else:
        stamps = _parse_times(frame_times, _anchor_year(data, start))

    # A repeated or backward time stamp would break every resampling step.
    if len(stamps) > 1:
        previous_max = np.maximum.accumulate(stamps)[:-1]
        keep = np.concatenate(([True], stamps[1:] > previous_max))
        if not keep.all():
            stamps = stamps[keep]
            values = values[keep]
    return stamps, values, names


# -- fetching ------------------------------------------------------------------


class DstatMetricSource(MetricSource):
    """dstat CSV logs (gzipped or not) from a run's artifacts, over HTTP(S) or on disk

    Tries each of ``paths`` under the run's artifacts URL (``http(s)://``,
    ``file://`` or a local directory) until one exists; server errors and
    dropped connections are retried with exponential backoff.  Every real
    dstat layout parses to the same column names (``cpu_usr``,
    ``mem_used``, ``load_1m``, ``dsk_read``, ``io_read``...); bad files are
    rejected with a reason code.  Timestamps get their year from the run's
    start, so runs crossing New Year stay whole.
    """

    name = "dstat"
    parameters = (
        Parameter("paths", str, default=list(DEFAULT_PATHS), multiple=True,
                  help="paths under the artifacts URL to try, in order"),
        *HTTP_PARAMETERS,
        Parameter("max_bytes", int, default=DEFAULT_MAX_BYTES,
                  help="largest file accepted, compressed or decompressed"),
        Parameter("max_archive_bytes", int, default=DEFAULT_MAX_ARCHIVE_BYTES,
                  help="largest artifacts archive (zip) downloaded; the file in it is "
                       "held to --max-bytes"),
    )

    def __init__(self, **params):
        super().__init__(**params)
        # One pooled client for every fetching thread (urllib3's pools are
        # thread-safe).
        self._client = HttpClient.for_component(self, "ciml-dstat")

    def close(self):
        """Close the pooled HTTP connections.  Idempotent; the source stays usable."""
        self._client.close()

    def fetch(self, run):
        base = run.artifacts_url
        if not base:
            raise MetricsUnavailable("no-artifacts-url", f"run {run.id} has no artifacts URL")
        if is_archive(run):
            return self._fetch_archive(run)
        tried = []
        problems = []   # (reason, message, transient)
        for path in listed_first(self.paths, run):
            if is_remote(base):
                url = base.rstrip("/") + "/" + path.lstrip("/")
                result = self._fetch_http(url, problems)
            else:
                local = local_path(base) / path
                url = local.as_uri() if local.is_absolute() else str(local)
                result = self._fetch_file(local, problems)
            tried.append(redact_url(url))
            if result is None and problems and problems[-1][2]:
                # The server is failing: later paths would only multiply the
                # wait, and "missing" would be a lie.  Try the run again later.
                break
            if result is not None:
                name = path.rsplit("/", 1)[-1]
                if result.startswith(GZIP_MAGIC) and not name.endswith(".gz"):
                    name += ".gz"
                return FetchedMetrics(name=name, data=result, url=redact_url(url))
        transient = [p for p in problems if p[2]]
        if transient:
            reason, message, _ = transient[-1]
            raise MetricsUnavailable(reason, f"run {run.id}: {message}", transient=True)
        if problems:
            reason, message, _ = problems[0]
            raise MetricsUnavailable(reason, f"run {run.id}: {message}")
        raise MetricsUnavailable(
            "missing", f"run {run.id}: no dstat file at " + ", ".join(tried))

    def _fetch_file(self, path, problems):
        try:
            data = read_local(path, self.max_bytes)
        except FetchError as exc:
            problems.append((exc.reason, str(exc), exc.transient))
            return None
        if data is not None and not data.startswith(GZIP_MAGIC) \
                and looks_like_html(data[:8192]):
            problems.append(("html", f"{path} is an HTML page, not dstat CSV", False))
            return None
        return data

    def _fetch_http(self, url, problems):
        try:
            data = self._client.fetch(url, max_bytes=self.max_bytes)
        except FetchError as exc:
            problems.append((exc.reason, str(exc), exc.transient))
            return None
        if data is not None and not data.startswith(GZIP_MAGIC) \
                and looks_like_html(data[:8192]):
            problems.append(("html", f"{redact_url(url)} is an HTML page, "
                             "not dstat CSV", False))
            return None
        return data

    # -- artifacts kept as a zip archive ---------------------------------------------

    def _fetch_archive(self, run):
        """The dstat file inside the run's artifacts archive (GitHub, GitLab: a zip)."""
        import tempfile

        url = run.artifacts_url
        safe = redact_url(url)
        # Spooled: a small archive stays in memory, a large one goes to disk,
        # and neither is held twice.
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
            try:
                if is_remote(url):
                    found = self._client.fetch(url, max_bytes=self.max_archive_bytes,
                                               sink=spool)
                else:
                    found = self._copy_local(local_path(url), spool)
            except FetchError as exc:
                raise MetricsUnavailable(exc.reason, f"run {run.id}: {exc}",
                                         transient=exc.transient) from None
            if found is None:
                # GitHub answers 410 for an expired artifact.
                raise MetricsUnavailable("missing",
                                         f"run {run.id}: no artifacts archive at {safe}")
            name, data = read_from_zip(spool, self.paths, self.max_bytes, safe)
        if data.startswith(GZIP_MAGIC) and not name.endswith(".gz"):
            name += ".gz"
        elif not data.startswith(GZIP_MAGIC) and looks_like_html(data[:8192]):
            raise MetricsUnavailable("html", f"run {run.id}: {name} in {safe} is an HTML "
                                     "page, not dstat CSV")
        return FetchedMetrics(name=name.rsplit("/", 1)[-1], data=data, url=f"{safe}#{name}")

    def _copy_local(self, path, spool):
        import shutil

        try:
            size = path.stat().st_size
            if not path.is_file():
                return None
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise FetchError("read-error", f"cannot read {path}: {exc}") from None
        if size > self.max_archive_bytes:
            raise FetchError("too-large", f"{path} is {size} bytes, over the "
                             f"{self.max_archive_bytes} limit")
        with open(path, "rb") as handle:
            shutil.copyfileobj(handle, spool)
        return b""

    def parse(self, data, run):
        start = run.start if run is not None else None
        return parse_dstat(data, start=start, max_bytes=self.max_bytes)

    def parse_series(self, data, run):
        # A subclass that reads another format (pcp) overrides parse():
        # then the arrays must come from its frame, not from dstat's reader.
        if type(self).parse is not DstatMetricSource.parse:
            return super().parse_series(data, run)
        start = run.start if run is not None else None
        return parse_dstat_arrays(data, start=start, max_bytes=self.max_bytes)


def listed_first(paths, run):
    """``paths``, those the run's metadata lists among its artifacts first.

    A source that knows a run's artifacts (Jenkins lists them with each
    build, comma-separated in ``artifacts``) saves a request per path that
    is not there; paths it does not list are still tried, after.
    """
    listed = (run.metadata or {}).get("artifacts")
    if not listed:
        return list(paths)
    names = {p.strip().lstrip("/") for p in str(listed).split(",")}
    return sorted(paths, key=lambda p: p.lstrip("/") not in names)


def is_archive(run):
    """Whether a run's artifacts URL is an archive to look into, not a folder.

    The result source says so (``artifacts_archive: zip`` in the metadata:
    GitHub Actions artifacts, GitLab job artifacts); a URL or path ending in
    ``.zip`` is taken as one too.
    """
    kind = (run.metadata or {}).get("artifacts_archive")
    if kind:
        return str(kind).lower() == "zip"
    path = urllib.parse.urlsplit(run.artifacts_url or "").path
    return path.lower().endswith(".zip")


def read_from_zip(fileobj, paths, max_bytes, where="the archive"):
    """``(member name, bytes)`` of the first of ``paths`` in a zip archive.

    A path matches a member of the same name, else (an artifact zip holds
    files relative to what was uploaded) a member with the same base name,
    the shallowest first.  Zip bombs cannot exhaust memory: the number of
    members is capped, and the member is decompressed as a stream that
    stops past ``max_bytes`` whatever size the archive declares.

    :raises MetricsUnavailable: ``corrupt-archive``, ``too-large``,
        ``html`` (a web page instead of a zip), ``missing`` (no such file
        in the archive; the message lists what is there).
    """
    import zipfile

    fileobj.seek(0)
    head = fileobj.read(8192)
    fileobj.seek(0)
    if not head:
        raise MetricsUnavailable("empty", f"{where}: the artifacts archive is empty")
    if looks_like_html(head):
        raise MetricsUnavailable("html", f"{where} is an HTML page, not a zip archive")
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise MetricsUnavailable("corrupt-archive",
                                 f"{where} is not a readable zip archive: {exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise MetricsUnavailable("too-large", f"{where} has {len(members)} members, "
                                     f"over the {MAX_ARCHIVE_MEMBERS} limit")
        files = [m for m in members if not m.is_dir()]
        by_name = {m.filename.lstrip("/"): m for m in files}
        chosen = None
        for path in paths:
            path = path.lstrip("/")
            chosen = by_name.get(path)
            if chosen is None:
                base = path.rsplit("/", 1)[-1]
                same = sorted((m for m in files if m.filename.rsplit("/", 1)[-1] == base),
                              key=lambda m: (m.filename.count("/"), m.filename))
                chosen = same[0] if same else None
            if chosen is not None:
                break
        if chosen is None:
            names = ", ".join(sorted(by_name)[:10]) or "nothing"
            raise MetricsUnavailable("missing", f"no dstat file in {where} (it holds {names})")
        if chosen.file_size > max_bytes:
            raise MetricsUnavailable("too-large", f"{chosen.filename} in {where} is "
                                     f"{chosen.file_size} bytes, over the {max_bytes} limit")
        if chosen.flag_bits & 0x1:
            raise MetricsUnavailable("corrupt-archive",
                                     f"{chosen.filename} in {where} is encrypted")
        parts, total = [], 0
        try:
            with archive.open(chosen) as member:
                while True:
                    chunk = member.read(1 << 16)
                    if not chunk:
                        break
                    total += len(chunk)
                    # The declared size can lie: count what comes out.
                    if total > max_bytes:
                        raise MetricsUnavailable(
                            "too-large", f"{chosen.filename} in {where} decompresses to "
                            f"more than {max_bytes} bytes")
                    parts.append(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
                zlib.error) as exc:
            raise MetricsUnavailable("corrupt-archive", f"cannot read {chosen.filename} "
                                     f"from {where}: {exc}") from None
        return chosen.filename, b"".join(parts)


@hookimpl
def ciml_register_metric_sources(register):
    register(DstatMetricSource)


__all__ = ["DEFAULT_PATHS", "DstatMetricSource", "column_names", "is_archive", "parse_dstat",
           "parse_dstat_arrays", "read_from_zip"]
