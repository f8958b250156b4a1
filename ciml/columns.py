"""The common column vocabulary that every built-in metric source maps onto.

A model learns from columns by name, so runs measured by different tools
can share a dataset, and a model trained on one tool's runs can predict
from another's, only where the tools name and scale a quantity alike.
dstat's stable names were there first (``cpu_usr``, ``mem_used``...); the
``pcp`` and ``prometheus`` sources produce the same names in the same units
for the quantities below.  Each source may add columns of its own (dstat's
``tcp_*``, Prometheus's ``mem_avail``...), which only its own runs have.

To learn from the common columns only, give ``build-dataset`` the regular
expression :data:`COMMON_FEATURES_REGEX`::

    ciml build-dataset --features-regex '^(cpu_(usr|sys|idl|wai)|mem_(used|free|cach)|...)$'
"""

#: name -> (unit, meaning), in the order datasets list them.
COMMON_COLUMNS = {
    "cpu_usr": ("%", "CPU time in user mode (with nice), share of all CPUs"),
    "cpu_sys": ("%", "CPU time in kernel mode"),
    "cpu_idl": ("%", "CPU time idle"),
    "cpu_wai": ("%", "CPU time waiting for I/O"),
    "mem_used": ("bytes", "memory used: total - free - buffers - page cache"),
    "mem_free": ("bytes", "memory free"),
    "mem_cach": ("bytes", "page cache"),
    "load_1m": ("", "load average over 1 minute"),
    "dsk_read": ("bytes/s", "bytes read from disks"),
    "dsk_writ": ("bytes/s", "bytes written to disks"),
    "net_recv": ("bytes/s", "bytes received on network interfaces (not loopback)"),
    "net_send": ("bytes/s", "bytes sent on network interfaces (not loopback)"),
    "procs_run": ("", "processes running (runnable)"),
    "procs_blk": ("", "processes blocked on I/O"),
}

#: A ``--features-regex`` that keeps exactly the common columns.
COMMON_FEATURES_REGEX = "^(" + "|".join(COMMON_COLUMNS) + ")$"

__all__ = ["COMMON_COLUMNS", "COMMON_FEATURES_REGEX"]
