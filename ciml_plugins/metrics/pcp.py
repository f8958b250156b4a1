"""The ``pcp`` metric source: the CSV of ``pcp-dstat --output``, named and scaled like dstat's.

On newer distributions ``dstat`` is Performance Co-Pilot's ``pcp-dstat``
(devstack's ``tools/dstat.sh`` runs whichever ``dstat`` the node has), so
the same ``dstat-csv_log.txt`` paths hold a file of another dialect.  It
looks like dstat's CSV (quoted preamble, a group line, a column line, one
row per sample) with these differences, all seen in real output (see
``tests/data/pcp``):

* the preamble's first line reads ``"pcp-dstat 6.0.3 CSV Output"``;
* a column's name carries its group: ``"total usage:usr"``,
  ``"net/total:recv"``, ``"total:used"`` (some do not: ``"used"``,
  ``"1m"``);
* the total CPU group is titled ``total usage`` (dstat: ``total cpu
  usage``), per-CPU groups ``cpuN usage``; the swap group is titled by the
  swap device, ``total`` for the total;
* memory columns are in KiB, disk bytes in KiB/s and swap in KiB (dstat
  writes bytes), the memory ``buf`` column is dstat's ``buff``, paging is
  in pages/s (dstat: bytes/s; 4 KiB pages are assumed);
* the first data row has fewer fields than the header: its rates need two
  samples, and pcp-dstat collapses the run of empty cells.  A row with the
  wrong number of fields or an empty metric cell is a sample pcp could not
  take, and is skipped (dstat itself never writes one).

:func:`parse_pcp` rewrites the header into dstat's dialect, drops those
rows, parses with :func:`ciml_plugins.metrics.dstat.parse_dstat` and scales
to dstat's units, so both sources give the same column names in the same
units (:mod:`ciml.columns`): a dataset may mix runs from both, and a model
trained on one predicts from the other.  A classic dstat file given to this
source parses exactly as the ``dstat`` source parses it.

Fetching is the ``dstat`` source's (same paths, HTTP(S), ``file://`` or a
local directory, retries, size caps); the reason codes are dstat's, plus
``not-pcp`` where dstat says ``not-dstat``.
"""

import csv
import io
import logging
import re

from ciml.errors import MetricsUnavailable
from ciml.hookspecs import hookimpl
from ciml_plugins.metrics import dstat as _dstat

LOG = logging.getLogger(__name__)

#: pcp-dstat group titles that differ from dstat's.
_GROUP_TITLES = {"total usage": "total cpu usage", "total": "swap"}
#: dstat's column names where pcp-dstat's differ (after the group prefix).
_COLUMN_NAMES = {("memory usage", "buf"): "buff"}
#: Factors from pcp-dstat's units to dstat's, by parsed column-name pattern.
_SCALES = (
    (re.compile(r"^mem_(used|free|buff|cach)$"), 1024.0),
    (re.compile(r"^dsk(_.+)?_(read|writ)$"), 1024.0),
    (re.compile(r"^swap_(used|free)$"), 1024.0),
    (re.compile(r"^paging_(in|out)$"), 4096.0),
)
_PCP_MARK = re.compile(rb'^\s*"?pcp-dstat\b', re.IGNORECASE)


def _cells(line):
    return next(csv.reader([line]), [])


def _quoted(cells):
    return ",".join('"' + c.replace('"', '""') + '"' if c else "" for c in cells)


def _is_pcp(data, columns):
    if _PCP_MARK.match(data[:200]):
        return True
    # A file without its preamble: pcp-dstat's group-prefixed names give it away.
    return any(":" in c for c in columns[1:])


def _translate_header(groups, columns):
    """pcp-dstat's two header lines in dstat's dialect (same cells, renamed)."""
    new_groups, new_columns = [], []
    group = ""
    for i, column in enumerate(columns):
        title = groups[i].strip() if i < len(groups) else ""
        if title:
            group = title
        name = column.strip()
        prefix = group + ":"
        if name.lower().startswith(prefix.lower()):
            name = name[len(prefix):]
        name = _COLUMN_NAMES.get((group.lower(), name.lower()), name)
        new_columns.append(name)
        new_groups.append(_GROUP_TITLES.get(title.lower(), title) if title else "")
    return new_groups, new_columns


def _realign(cells, ncols):
    """A row's cells under the header's columns, or ``None`` when that is unknowable.

    pcp-dstat writes a run of metrics it has no value for as fewer empty
    fields than columns.  With one such run in the row, the cells before it
    belong to the first columns and the cells after it to the last ones;
    with several, nothing says which columns each run covered.
    """
    if len(cells) == ncols:
        return cells
    if len(cells) > ncols:
        return None
    empties = [i for i, cell in enumerate(cells) if not cell.strip()]
    if not empties or empties[-1] - empties[0] + 1 != len(empties):
        return None
    left, right = cells[:empties[0]], cells[empties[-1] + 1:]
    return left + [""] * (ncols - len(left) - len(right)) + right


def _complete_rows(body, ncols, metric_positions):
    """``(rows, empty_positions, skipped)`` of the whole samples in ``body``.

    A row is its line, unchanged, when it is plainly whole (the header's
    number of fields, no empty cell, no quote): nearly every row, and no
    per-cell work.  Other rows are cell lists, realigned where that is
    possible.  A metric empty in every row is one pcp has no value for on
    that host (the swap columns of a node without swap): its position is
    returned so that the column is dropped rather than every row.
    """
    commas = ncols - 1
    candidates, skipped, plain = [], 0, 0
    for line in body.split("\n"):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith('"'):
            # Blank, or a repeated preamble (pcp-dstat restarted on the file).
            continue
        if ('"' not in line and line.count(",") == commas and ",," not in line
                and not line.endswith(",")):
            candidates.append(line)
            plain += 1
            continue
        cells = _realign(_cells(line), ncols)
        if cells is None:
            skipped += 1
            continue
        candidates.append(cells)
    empty = set()
    if not plain:
        lists = [c for c in candidates if isinstance(c, list)]
        empty = {p for p in metric_positions
                 if lists and all(not cells[p].strip() for cells in lists)}
    wanted = [p for p in metric_positions if p not in empty]
    rows = []
    for row in candidates:
        if isinstance(row, list) and any(not row[p].strip() for p in wanted):
            skipped += 1
        else:
            rows.append(row)
    return rows, empty, skipped


def parse_pcp(data, start=None, max_bytes=_dstat.DEFAULT_MAX_BYTES):
    """Parse ``pcp-dstat --output`` CSV (gzipped or not) into dstat's names and units.

    :param data: the file's bytes, as fetched.
    :param start: the run's start (gives the year the time stamps lack).
    :param max_bytes: refuse data larger than this, compressed or not.
    :return: a frame as :func:`ciml_plugins.metrics.dstat.parse_dstat`
        returns, with dstat's column names and units.
    :raises ciml.errors.MetricsUnavailable: as ``parse_dstat``; ``not-pcp``
        for a file with no dstat-style header.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_bytes:
        raise MetricsUnavailable("too-large", f"{len(data)} bytes is over the {max_bytes} limit")
    if data.startswith(_dstat.GZIP_MAGIC):
        data = _dstat._gunzip(data, max_bytes)
    header = _dstat._find_header(data) if data.strip() else None
    if header is None:
        try:
            return _dstat.parse_dstat(data, start=start, max_bytes=max_bytes)
        except MetricsUnavailable as exc:
            if exc.reason == "not-dstat":
                raise MetricsUnavailable(
                    "not-pcp", "no pcp-dstat CSV header (a \"time\" or \"epoch\" column "
                    "line) near the top of the file") from None
            raise
    groups, columns, offset = header
    if not _is_pcp(data, columns):
        return _dstat.parse_dstat(data, start=start, max_bytes=max_bytes)

    groups, columns = _translate_header(groups, columns)
    time_index, named = _dstat.column_names(groups, columns)
    text = data.decode("latin-1")
    head_lines = text[:offset].rstrip("\r\n").split("\n")[:-2]
    body = text[offset:]
    if not body.endswith("\n"):
        body = body[:body.rfind("\n") + 1]   # pcp-dstat stopped mid-line
    rows, empty, skipped = _complete_rows(body, len(columns),
                                          [p for p, _ in named] + [time_index or 0])
    if skipped and not rows:
        raise MetricsUnavailable(
            "malformed", f"none of the {skipped} pcp-dstat data rows is a whole sample "
            "(wrong number of fields or empty cells)")
    if skipped or empty:
        LOG.debug("pcp-dstat: skipped %d incomplete rows and %d empty columns",
                  skipped, len(empty))
    keep = [i for i in range(len(columns)) if i not in empty]
    # A dropped column's group title moves to the next kept column of the group.
    kept_groups = []
    for i in keep:
        title = groups[i]
        j = i
        while not title and j > 0 and j - 1 in empty:
            j -= 1
            title = groups[j]
        kept_groups.append(title)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        if isinstance(row, str):
            out.write(row + "\n")
        else:
            writer.writerow([row[i] for i in keep])
    rebuilt = ("\n".join([*head_lines, _quoted(kept_groups), _quoted([columns[i] for i in keep])])
               + "\n" + out.getvalue()).encode("latin-1")
    frame = _dstat.parse_dstat(rebuilt, start=start, max_bytes=max_bytes)
    for column in frame.columns:
        for pattern, factor in _SCALES:
            if pattern.match(column):
                frame[column] = frame[column] * factor
                break
    return frame


class PcpMetricSource(_dstat.DstatMetricSource):
    """pcp-dstat CSV logs (newer devstack), with dstat's column names and units

    Reads the file ``pcp-dstat --output`` writes (devstack runs it as
    ``dstat`` on distributions where dstat is Performance Co-Pilot's), at
    the same artifact paths as the dstat source and fetched the same way.
    Columns get dstat's stable names and units (memory and disk in bytes,
    not KiB), so pcp and dstat runs combine in one dataset.  A classic
    dstat file parses as the dstat source parses it.
    """

    name = "pcp"

    def parse(self, data, run):
        start = run.start if run is not None else None
        return parse_pcp(data, start=start, max_bytes=self.max_bytes)


@hookimpl
def ciml_register_metric_sources(register):
    register(PcpMetricSource)


__all__ = ["PcpMetricSource", "parse_pcp"]
