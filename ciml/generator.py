"""A realistic, deterministic CI history: subunit2sql rows, dstat logs, Zuul builds, MQTT events.

Tests, benchmarks and ``ciml demo`` need CI histories that look like the
real thing, not three hand-made rows.  :func:`generate_history` writes, for
the same runs:

* a subunit2sql database (SQLite by default, or any SQLAlchemy URL such as a
  MariaDB one) created with :mod:`ciml_plugins.sources.subunit2sql_schema`:
  ``runs``, ``run_metadata`` with the keys OpenStack's log processor stored
  (``build_name``, ``build_uuid``, ``build_queue``, ``node_provider``...),
  ``tests`` and ``test_runs``;
* a log tree with one dstat CSV per run in the real layouts (dstat 0.7.2
  with its blank preamble line, 0.7.3, Debian's 0.7.4 with devstack's
  ``--top-cpu-adv --top-io-adv --swap`` columns), gzipped or not, at the
  real artifact paths;
* Zuul ``/builds`` records for the same runs, in the current nested-``ref``
  format (``zuul-builds.json``) and the older flat one
  (``zuul-builds.flat.json``), plus a few builds a Zuul source must skip
  (no log URL, not final);
* MQTT payloads: the firehose ``gearman-subunit`` messages and Zuul's MQTT
  reporter messages.

Runs belong to several jobs and run on 11 node providers in families with
different hardware (cores, memory, CPU speed, steal, disk latency), so
providers leave different CPU and memory signatures.  Each run has a
labelled *cause* with its own resource signature: ``passed``,
``test-failure`` (an ordinary run that failed tests), ``oom`` (memory climbs
to the limit, page cache is squeezed, paging and swap explode, the run dies
early), ``timeout`` (the run lasts the job's timeout with a long idle tail)
and ``network`` (traffic collapses, connections hang in SYN, the run ends
early).  A small fraction of runs get a broken dstat file (missing,
truncated or corrupt gzip, HTML, empty, header-only, non-numeric) whose
expected rejection reason is recorded as ``defect``.  One run crosses New
Year unless ``new_year=False``.

Everything is a pure function of the arguments: the same seed gives the same
bytes.  Signals are generated with numpy, one array per column, and CSV
lines are formatted once per row from a per-layout template.
"""

import dataclasses
import datetime as dt
import gzip
import json
import pathlib
import uuid

import numpy as np

UTC = dt.timezone.utc

DEFAULT_JOBS = ("tempest-full", "grenade", "tox-py311")

#: Raw provider name to hardware: (family, cores, memory GiB, cpu slowness,
#: steal %, disk wait %).  Families share hardware, so the original ciml's
#: ``node_provider`` (family) and ``node_provider_all`` (raw) labels both
#: have something to learn.
PROVIDERS = {
    "rax-dfw": ("rax", 8, 8, 1.00, 0.2, 1.0),
    "rax-ord": ("rax", 8, 8, 1.00, 0.2, 1.0),
    "rax-iad": ("rax", 8, 8, 1.00, 0.2, 1.2),
    "ovh-bhs1": ("ovh", 8, 8, 1.30, 4.0, 0.5),
    "ovh-gra1": ("ovh", 8, 8, 1.30, 4.0, 0.5),
    "vexxhost-ca-ymq-1": ("vexxhost", 8, 32, 0.75, 0.0, 0.3),
    "vexxhost-sjc1": ("vexxhost", 8, 32, 0.75, 0.0, 0.3),
    "inap-mtl01": ("inap", 8, 8, 1.10, 1.0, 2.0),
    "limestone-regionone": ("limestone", 8, 8, 1.00, 0.5, 9.0),
    "citycloud-kna1": ("citycloud", 4, 8, 1.60, 6.0, 1.5),
    "citycloud-lon1": ("citycloud", 4, 8, 1.60, 6.0, 1.5),
}

CAUSES = ("passed", "test-failure", "oom", "timeout", "network")
_CAUSE_WEIGHTS = (0.60, 0.15, 0.08, 0.08, 0.09)

VARIANTS = ("0.7.2", "0.7.3", "0.7.4")
_VARIANT_WEIGHTS = (0.35, 0.35, 0.30)

#: Where the dstat file lands under a run's artifacts, with how often.
DSTAT_PATHS = (
    "controller/logs/dstat-csv_log.txt.gz",
    "controller/logs/dstat-csv_log.txt",
    "logs/dstat-csv_log.txt.gz",
    "logs/dstat-csv_log.txt",
)
_PATH_WEIGHTS = (0.55, 0.10, 0.25, 0.10)

#: Broken files, by the reason code the dstat source must reject them with.
DEFECTS = ("missing", "truncated-gzip", "html", "non-numeric", "empty", "header-only",
           "corrupt-gzip")

_PROJECTS = ("openstack/nova", "openstack/neutron", "openstack/cinder", "openstack/glance",
             "openstack/keystone", "openstack/swift")
_PIPELINES = ("check", "gate", "periodic")
_PIPELINE_WEIGHTS = (0.55, 0.35, 0.10)
_NODESETS = {"0.7.2": "ubuntu-xenial", "0.7.3": "ubuntu-bionic", "0.7.4": "debian-bookworm"}
_TENANT = "openstack"
_LOG_HOST = "https://logs.example.org"

# dstat's header lines, copied from real output (see tests/data/dstat).
_GROUPS = {
    "0.7.2": '"system","total cpu usage",,,,,,"memory usage",,,,"net/total",,"dsk/total",,'
             '"io/total",,"system",,"load avg",,,"procs",,,"paging",,"tcp sockets",,,,',
    "0.7.3": '"system","total cpu usage",,,,,"memory usage",,,,"net/total",,"dsk/total",,'
             '"io/total",,"system",,"load avg",,,"procs",,,"paging",,"tcp sockets",,,,',
    "0.7.4": '"system","total cpu usage",,,,,"memory usage",,,,"net/total",,"dsk/total",,'
             '"io/total",,"system",,"load avg",,,"procs",,,"paging",,'
             '"most expensive cpu process","most expensive i/o process","swap",,'
             '"tcp sockets",,,,',
}
_TOP_HEADERS = ('"process              pid  cpu read write",'
                '"process              pid  read write cpu"')
# The canonical (parsed) name of each column, in each layout's order.
_LAYOUT = {
    "0.7.2": ("cpu_usr cpu_sys cpu_idl cpu_wai cpu_hiq cpu_siq mem_used mem_buff mem_cach "
              "mem_free net_recv net_send dsk_read dsk_writ io_read io_writ sys_int sys_csw "
              "load_1m load_5m load_15m procs_run procs_blk procs_new paging_in paging_out "
              "tcp_lis tcp_act tcp_syn tcp_tim tcp_clo").split(),
    "0.7.3": ("cpu_usr cpu_sys cpu_idl cpu_wai cpu_stl mem_used mem_free mem_buff mem_cach "
              "net_recv net_send dsk_read dsk_writ io_read io_writ sys_int sys_csw "
              "load_1m load_5m load_15m procs_run procs_blk procs_new paging_in paging_out "
              "tcp_lis tcp_act tcp_syn tcp_tim tcp_clo").split(),
    "0.7.4": ("cpu_usr cpu_sys cpu_idl cpu_wai cpu_stl mem_used mem_free mem_buff mem_cach "
              "net_recv net_send dsk_read dsk_writ io_read io_writ sys_int sys_csw "
              "load_1m load_5m load_15m procs_run procs_blk procs_new paging_in paging_out "
              "top_cpu top_io swap_used swap_free "
              "tcp_lis tcp_act tcp_syn tcp_tim tcp_clo").split(),
}
_TOP_CPU = ("Top: python3\t50.0\t0.0\t0.0", "Top: nova-api\t31.5\t0.0\t0.0",
            "Top: mysqld\t12.0\t4096.0\t8192.0", "Top: qemu-system-x86\t88.5\t0.0\t0.0",
            "Top: neutron-server\t22.5\t0.0\t0.0", "Top: pip\t70.0\t1048576.0\t0.0")
_TOP_IO = ("Top: bash\t880973.498603352\t2089.5709314039746\t0.004292975547211283",
           "Top: mysqld\t12288.0\t1638400.0\t2.5", "Top: apt-get\t4194304.0\t8192.0\t1.0",
           "Top: glance-api\t65536.0\t33554432.0\t3.0")

_TESTS = {
    "tempest-full": [f"tempest.api.compute.servers.test_servers.ServersTest.test_{n}"
                     for n in ("create", "delete", "rebuild", "resize", "reboot", "list",
                               "show", "update_name", "lock", "pause")]
    + [f"tempest.api.network.test_ports.PortsTest.test_{n}"
       for n in ("create_port", "delete_port", "list_ports", "update_port")]
    + [f"tempest.scenario.test_minimum_basic.TestMinimumBasicScenario.test_{n}"
       for n in ("minimum_basic_scenario", "volume_boot_pattern")],
    "grenade": [f"tempest.scenario.test_server_basic_ops.TestServerBasicOps.test_{n}"
                for n in ("server_basic_ops", "server_rebuild", "server_upgrade",
                          "resources_survive", "volume_attach", "network_basic_ops")],
}

#: Column names of :attr:`History.runs` entries.
RUN_KEYS = ("run_id", "build_uuid", "build_name", "status", "cause", "node_provider",
            "start", "duration", "artifacts_url", "variant")


@dataclasses.dataclass
class History:
    """What :func:`generate_history` wrote, and the truth about every run.

    ``runs`` holds one dict per run, oldest first, with at least the keys
    in :data:`RUN_KEYS`; also ``result`` (the Zuul result), ``project``,
    ``pipeline``, ``family`` (provider family), ``dstat_path`` (relative to
    the artifacts, ``None`` when missing), ``rows`` (data rows written) and
    ``defect`` (the rejection reason the file must get, or ``None``).
    """

    out_dir: pathlib.Path
    db_uri: str
    logs_dir: pathlib.Path
    zuul_builds: pathlib.Path
    zuul_builds_flat: pathlib.Path
    mqtt_events: pathlib.Path
    runs: list
    #: Where each node's series for the Prometheus-API test server are, when
    #: asked for (``prometheus=True``); ``None`` otherwise.
    prometheus_dir: pathlib.Path | None = None

    def by_id(self, run_id):
        """The run dict with this run id (or build uuid)."""
        for run in self.runs:
            if run_id in (run["run_id"], run["build_uuid"]):
                return run
        raise KeyError(run_id)

    def good_runs(self, build_name=None):
        """Runs whose dstat file is valid, optionally of one job."""
        return [r for r in self.runs if r["defect"] is None
                and (build_name is None or r["build_name"] == build_name)]


# -- signals -------------------------------------------------------------------


def _smooth(x, span):
    """Exponential moving average with time constant ``span`` samples (dstat's load)."""
    if span <= 1 or len(x) == 0:
        return x.copy()
    alpha = 1.0 / span
    n = len(x)
    # A truncated convolution is exact enough (weights below 1e-6 dropped)
    # and keeps this vectorised.
    k = min(n, int(span * 14))
    kernel = alpha * (1 - alpha) ** np.arange(k)
    out = np.convolve(x, kernel)[:n]
    # Start from the first value rather than from zero.
    out += x[0] * (1 - alpha) ** (np.arange(n) + 1)
    return out


def _ramp(u, start, end):
    return np.clip((u - start) / max(end - start, 1e-9), 0.0, 1.0)


def _signals(rng, n, job, hw, cause, interval):
    """Canonical column name -> numpy array of ``n`` samples for one run."""
    family, cores, mem_gib, slow, steal, disk = hw
    u = np.arange(n) / max(n - 1, 1)
    noise = rng.standard_normal((12, n))
    total = mem_gib * 1024 ** 3

    # CPU: devstack's set-up phase is busy, tests are lighter; tox is busy
    # throughout.  A slower CPU shows as more user time for the same work.
    if job.startswith("tox"):
        busy = 72 + 10 * noise[0]
    elif job == "grenade":
        busy = np.where((u < 0.25) | ((u > 0.45) & (u < 0.65)), 58, 30) + 9 * noise[0]
    else:
        busy = np.where(u < 0.3, 55, 33) + 9 * noise[0]
    busy = busy * slow * (8.0 / cores) ** 0.5
    usr = busy
    wai = np.abs(disk * (1 + 0.6 * noise[1]))
    stl = np.abs(steal * (1 + 0.5 * noise[2]))
    mem_peak = {"tempest-full": 4.2, "grenade": 5.0}.get(job, 1.8) * 1024 ** 3
    mem_peak = min(mem_peak, 0.8 * total)
    used = 0.45 * 1024 ** 3 + mem_peak * _ramp(u, 0.0, 0.35) ** 0.7
    used = used * (1 + 0.02 * noise[3])
    cach = np.minimum(0.25 * 1024 ** 3 + 2.2 * 1024 ** 3 * _ramp(u, 0.0, 0.5),
                      0.9 * (total - used))
    net = np.where(u < 0.3, 6e6, 4e5) * np.exp(0.8 * noise[4])
    dsk_w = np.where(u < 0.3, 9e6, 2.5e6) * np.exp(0.9 * noise[5])
    paging = np.abs(rng.poisson(0.05, n)).astype(float)
    swap_used = np.zeros(n)
    tcp_act = 30 + 25 * _ramp(u, 0.1, 0.3) + 4 * noise[6]
    tcp_syn = np.zeros(n)
    blk = rng.poisson(wai / 8.0).astype(float)

    if cause == "oom":
        grab = _ramp(u, 0.55, 0.97)
        used = used + (0.975 * total - used) * grab ** 1.5
        cach = cach * (1 - 0.95 * grab)
        squeeze = _ramp(u, 0.8, 1.0)
        paging = paging + squeeze * 4e3 * np.exp(0.5 * noise[7])
        swap_used = squeeze * 0.9 * 1024 ** 3
        wai = wai + 35 * squeeze
        usr = usr * (1 - 0.5 * squeeze)
        blk = blk + rng.poisson(6 * squeeze)
    elif cause == "timeout":
        tail = u > 0.62
        usr = np.where(tail, 1.5 + 0.5 * np.abs(noise[8]), usr)
        net = np.where(tail, 800 * np.exp(0.3 * noise[4]), net)
        dsk_w = np.where(tail, 4e3 * np.exp(0.3 * noise[5]), dsk_w)
        wai = np.where(tail, 0.1 * wai, wai)
    elif cause == "network":
        cut = u > 0.55
        net = np.where(cut, 40 * np.exp(0.3 * noise[4]), net)
        usr = np.where(cut, 4 + 1.5 * np.abs(noise[8]), usr)
        tcp_act = np.where(cut, 3 + np.abs(noise[6]), tcp_act)
        tcp_syn = np.where(cut, rng.poisson(6, n), 0).astype(float)
    elif cause == "test-failure":
        usr = usr * (1 + 0.08 * noise[9])

    usr = np.clip(usr, 0.3, 92.0)
    sys_ = np.clip(usr * 0.16 * (1 + 0.2 * noise[10]), 0.1, 100)
    wai = np.clip(wai, 0, 60)
    stl = np.clip(stl, 0, 30)
    scale = np.maximum((usr + sys_ + wai + stl) / 99.0, 1.0)
    usr, sys_, wai, stl = usr / scale, sys_ / scale, wai / scale, stl / scale
    siq = np.clip(0.1 * np.abs(noise[11]), 0, 1)
    used = np.minimum(used, 0.99 * total)
    buff = 0.12 * 1024 ** 3 + 0.05 * 1024 ** 3 * u
    cach = np.clip(cach, 0.02 * 1024 ** 3, None)
    free = np.maximum(total - used - buff - cach, 0.01 * total)

    runq = cores * (usr + sys_) / 100.0 + blk
    load_1m = _smooth(runq, 60.0 / interval)
    load_5m = _smooth(runq, 300.0 / interval)
    load_15m = _smooth(runq, 900.0 / interval)
    rate = 1.0 / interval  # dstat reports per second whatever the delay

    def ints(x):
        return np.rint(np.clip(x, 0, None)).astype(np.int64)

    cols = {
        "cpu_usr": usr, "cpu_sys": sys_, "cpu_wai": wai, "cpu_stl": stl,
        "cpu_hiq": np.zeros(n), "cpu_siq": siq,
        "mem_used": ints(used), "mem_buff": ints(buff), "mem_cach": ints(cach),
        "mem_free": ints(free),
        "net_recv": ints(net * rate), "net_send": ints(net * 0.08 * rate),
        "dsk_read": ints(dsk_w * 0.15), "dsk_writ": ints(dsk_w),
        "io_read": ints(dsk_w * 0.15 / 65536), "io_writ": ints(dsk_w / 32768),
        "sys_int": ints(250 + 12 * usr * cores / 8), "sys_csw": ints(400 + 30 * usr * cores / 8),
        "load_1m": np.round(load_1m, 2), "load_5m": np.round(load_5m, 2),
        "load_15m": np.round(load_15m, 2),
        "procs_run": ints(rng.poisson(np.clip(runq, 0, None))),
        "procs_blk": ints(blk), "procs_new": ints(rng.poisson(8 + usr / 4)),
        "paging_in": ints(paging), "paging_out": ints(paging * 1.4),
        "swap_used": ints(swap_used),
        "swap_free": ints(1024 ** 3 - np.minimum(swap_used, 1024 ** 3)),
        "tcp_lis": np.full(n, 38, dtype=np.int64), "tcp_act": ints(tcp_act),
        "tcp_syn": ints(tcp_syn), "tcp_tim": ints(120 + 60 * np.abs(noise[7])),
        "tcp_clo": ints(rng.poisson(0.3, n)),
    }
    # Three decimals as dstat prints; idle is what is left, so the five add up.
    for key in ("cpu_usr", "cpu_sys", "cpu_wai", "cpu_stl", "cpu_hiq", "cpu_siq"):
        cols[key] = np.round(cols[key], 3)
    busy_sum = cols["cpu_usr"] + cols["cpu_sys"] + cols["cpu_wai"]
    cols["cpu_idl"] = np.round(np.clip(100 - busy_sum - cols["cpu_stl"], 0, 100), 3)
    cols["cpu_idl_072"] = np.round(np.clip(100 - busy_sum - cols["cpu_hiq"] - cols["cpu_siq"],
                                           0, 100), 3)
    cols["top_cpu"] = rng.integers(0, len(_TOP_CPU), n)
    cols["top_io"] = rng.integers(0, len(_TOP_IO), n)
    return cols


# -- CSV writing ---------------------------------------------------------------

_PCT_TABLES = {}


def _pct_table(int_style):
    """Strings for 0.000..100.000 as dstat prints them, indexed by value*1000."""
    table = _PCT_TABLES.get(int_style)
    if table is None:
        table = np.array(["%.3f" % (i / 1000) for i in range(100001)], dtype=object)
        whole = np.arange(0, 100001, 1000)
        table[whole] = [int_style % (i // 1000) for i in whole]
        _PCT_TABLES[int_style] = table
    return table


def _time_strings(start, n, interval):
    stamps = (np.datetime64(start.replace(tzinfo=None), "s")
              + np.arange(n) * np.timedelta64(int(interval), "s"))
    iso = np.datetime_as_string(stamps, unit="s").tolist()
    return [f"{s[8:10]}-{s[5:7]} {s[11:19]}" for s in iso]


def _preamble(variant, host, start):
    date = start.strftime("%d %b %Y %H:%M:%S UTC")
    if variant == "0.7.4":
        title = "Dstat 0.8.0"
        cmd = ("dstat -tcmndrylpg --top-cpu-adv --top-io-adv --swap --tcp "
               "--output /opt/stack/logs/dstat-csv.log")
    else:
        title = f"Dstat {variant}"
        cmd = "dstat -tcmndrylpg --tcp --output /opt/stack/logs/dstat-csv.log"
    lines = [f'"{title} CSV output"',
             '"Author:","Dag Wieers <dag@wieers.com>",,,,"URL:",'
             '"http://dag.wieers.com/home-made/dstat/"',
             f'"Host:","{host}",,,,"User:","stack"',
             f'"Cmdline:","{cmd}",,,,"Date:","{date}"']
    if variant == "0.7.2":
        lines.append("")
    lines.append(_GROUPS[variant])
    names = [name.split("_", 1)[1] for name in _LAYOUT[variant]]
    header = ",".join(f'"{c}"' for c in ["time", *names])
    if variant == "0.7.4":
        header = header.replace('"cpu","io"', _TOP_HEADERS)
    lines.append(header)
    return "\n".join(lines) + "\n"


def render_dstat(cols, variant, start, host, interval=1):
    """The text of a dstat CSV file in one real layout, from canonical columns."""
    n = len(cols["cpu_usr"])
    int_style = "%d.0" if variant == "0.7.2" else "%d"
    table = _pct_table(int_style)
    columns = [_time_strings(start, n, interval)]
    specs = ["%s"]
    for name in _LAYOUT[variant]:
        if name == "cpu_idl" and variant == "0.7.2":
            name = "cpu_idl_072"
        values = cols[name]
        if name.startswith("cpu_"):
            idx = np.rint(np.clip(values, 0, 100) * 1000).astype(np.int64)
            columns.append(table[idx].tolist())
            specs.append("%s")
        elif name.startswith("load_"):
            columns.append(values.tolist())
            specs.append("%.3f")
        elif name in ("top_cpu", "top_io"):
            options = _TOP_CPU if name == "top_cpu" else _TOP_IO
            columns.append(np.array(options, dtype=object)[values].tolist())
            specs.append("%s")
        else:
            columns.append(values.tolist())
            specs.append("%.1f" if variant == "0.7.2" else "%d")
    template = ",".join(specs)
    rows = [template % row for row in zip(*columns)]
    if rows:
        # dstat's first row is the average since boot: rates are fractional.
        first = list(next(zip(*columns)))
        for i, name in enumerate(_LAYOUT[variant], start=1):
            if name.split("_")[0] in ("net", "dsk", "io", "sys", "paging") or name == "procs_new":
                first[i] = "%.3f" % (first[i] + 0.137)
        rows[0] = template.replace("%d", "%s").replace("%.1f", "%s") % tuple(first)
    return _preamble(variant, host, start) + "\n".join(rows) + ("\n" if rows else "")


def synthetic_dstat(variant="0.7.3", rows=3600, *, seed=0, job="tempest-full",
                    provider="rax-dfw", cause="passed", start=None, interval=1):
    """The text of one generated dstat file (no history around it).

    Handy for benchmarks and for tests that need one file of a given
    layout, length and cause.  ``start`` defaults to a fixed time.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown dstat layout {variant!r}; choose from {VARIANTS}")
    start = start or dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    cols = _signals(np.random.default_rng(seed), rows, job, PROVIDERS[provider], cause,
                    interval)
    return render_dstat(cols, variant, start, f"node-{provider}", interval)


def _defective(defect, text, rng):
    """Bytes of a broken dstat file, and whether to give it a .gz name."""
    if defect == "truncated-gzip":
        data = gzip.compress(text.encode(), compresslevel=1, mtime=0)
        return data[: max(40, len(data) // 3)]
    if defect == "corrupt-gzip":
        data = bytearray(gzip.compress(text.encode(), compresslevel=1, mtime=0))
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(rng.integers(0, 256, 64, dtype=np.uint8))
        return bytes(data)
    if defect == "html":
        return (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                b"<body><h1>Not Found</h1><p>The requested URL was not found on this "
                b"server.</p></body></html>\n")
    if defect == "empty":
        return b""
    if defect == "header-only":
        lines = text.split("\n")
        n_head = next(i for i, line in enumerate(lines) if line.startswith('"time"')) + 1
        return ("\n".join(lines[:n_head]) + "\n").encode()
    if defect == "non-numeric":
        lines = text.split("\n")
        n_head = next(i for i, line in enumerate(lines) if line.startswith('"time"')) + 1
        k = n_head + min(5, len(lines) - n_head - 2)
        cells = lines[k].split(",")
        cells[2] = "n/a"
        lines[k] = ",".join(cells)
        return "\n".join(lines).encode()
    raise ValueError(defect)


# -- the history ---------------------------------------------------------------


def _uuid(rng):
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _force_each(rng, values, options):
    """Make sure every option appears at least once (when there is room)."""
    if len(values) >= len(options):
        spots = rng.permutation(len(values))[:len(options)]
        for spot, option in zip(spots, options):
            values[spot] = option
    return values


def generate_history(out_dir, *, runs=120, seed=0, jobs=None, providers=None,
                     duration=(600, 1800), base_url=None, db_uri=None,
                     bad_fraction=0.03, interval=1, start=None, new_year=True,
                     tests=True, cause_key=None, prometheus=False):
    """Write a CI history under ``out_dir`` and return its :class:`History`.

    :param runs: how many runs (builds) in all jobs.
    :param seed: everything written is a function of the arguments and this.
    :param jobs: job (build) names; default :data:`DEFAULT_JOBS`.
    :param providers: raw node provider names, a subset of :data:`PROVIDERS`.
    :param duration: ``(min, max)`` run length in seconds; ``max`` is the
        job timeout that ``timeout`` runs hit.
    :param base_url: where the log tree will be served (e.g. the test HTTP
        server's URL); artifacts URLs are ``file://`` URLs when ``None``.
    :param db_uri: a SQLAlchemy URL to fill (its tables are created if
        missing); default a new SQLite file ``subunit2sql.db`` in ``out_dir``.
    :param bad_fraction: share of runs with a broken dstat file.
    :param interval: seconds between dstat samples.
    :param start: the first run's start (aware datetime); by default the
        history is placed so that its middle run crosses New Year 2026.
    :param new_year: make one run cross midnight of 31 December (dstat's
        missing year is a classic trap): the middle one by default, or with
        an explicit ``start`` the one nearest to a New Year inside the
        history's span, if any.  That run has ``new_year`` set.
    :param tests: also fill ``tests`` and ``test_runs``.
    :param cause_key: when set, each run's cause is also stored under this
        run-metadata key, so that ``--class-label <cause_key>`` can learn
        it.  Real databases have no such key, so it is off by default.
    :param prometheus: also write, for each run's node, the series a
        Prometheus scraping node_exporter there would hold
        (``prometheus/<node>.npz``, see :func:`write_node_series`), for
        :class:`ciml.testing.prometheus.PrometheusServer`; the node of a
        run whose dstat file is ``missing`` is left out (Prometheus never
        knew it).
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logs_dir = out_dir / "logs"
    logs_dir.mkdir(exist_ok=True)
    jobs = tuple(jobs or DEFAULT_JOBS)
    provider_names = tuple(providers or PROVIDERS)
    unknown = [p for p in provider_names if p not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown providers {unknown}; choose from {sorted(PROVIDERS)}")
    lo, hi = duration
    if not 0 < lo <= hi:
        raise ValueError(f"bad duration range {duration!r}")
    rng = np.random.default_rng(seed)

    job_of = rng.choice(len(jobs), runs).tolist()
    prov_of = rng.choice(len(provider_names), runs).tolist()
    cause_of = _force_each(rng, rng.choice(len(CAUSES), runs, p=_CAUSE_WEIGHTS).tolist(),
                           range(len(CAUSES)))
    variant_of = _force_each(rng, rng.choice(3, runs, p=_VARIANT_WEIGHTS).tolist(), range(3))
    path_of = _force_each(rng, rng.choice(4, runs, p=_PATH_WEIGHTS).tolist(), range(4))
    pipeline_of = rng.choice(3, runs, p=_PIPELINE_WEIGHTS).tolist()
    gaps = rng.uniform(0.5, 3.5, runs) * 3600
    gaps[0] = 0
    offsets = np.cumsum(gaps)
    middle = runs // 2
    if start is None:
        if new_year:
            anchor = dt.datetime(2025, 12, 31, 23, 55, tzinfo=UTC)
            start = anchor - dt.timedelta(seconds=float(offsets[middle]))
        else:
            start = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    starts = [start + dt.timedelta(seconds=round(float(o))) for o in offsets]
    eve_run = None
    if new_year and runs:
        # The run nearest to 23:55 on a 31 December inside the history's span
        # starts then and runs normally through midnight.  Moving the nearest
        # run there keeps the runs in time order.
        for year in range(starts[0].year, starts[-1].year + 1):
            eve = dt.datetime(year, 12, 31, 23, 55, tzinfo=UTC)
            if starts[0] <= eve <= starts[-1]:
                eve_run = min(range(runs), key=lambda k: abs(starts[k] - eve))
                starts[eve_run] = eve
                cause_of[eve_run] = 0
                break

    n_bad = int(round(runs * bad_fraction))
    if bad_fraction > 0 and n_bad == 0 and runs >= 10:
        n_bad = 1
    candidates = [i for i in rng.permutation(runs).tolist() if i != eve_run]
    defect_of = {i: DEFECTS[k % len(DEFECTS)] for k, i in enumerate(candidates[:n_bad])}

    history_runs = []
    db_rows = []
    for i in range(runs):
        r = np.random.default_rng([seed, i])
        job = jobs[job_of[i]]
        provider = provider_names[prov_of[i]]
        hw = PROVIDERS[provider]
        cause = CAUSES[cause_of[i]]
        variant = VARIANTS[variant_of[i]]
        pipeline = _PIPELINES[pipeline_of[i]]
        base_len = r.uniform(lo, (lo + hi) / 2) if job.startswith("tox") else r.uniform(lo, hi)
        if cause == "timeout":
            length = float(hi)
        elif cause == "oom":
            length = base_len * r.uniform(0.55, 0.85)
        elif cause == "network":
            length = max(60.0, base_len * r.uniform(0.15, 0.35))
        else:
            length = base_len
        if i == eve_run:
            length = max(length, 900.0)
        n_rows = max(int(length // interval), 2)
        length = float(n_rows * interval)
        project = _PROJECTS[int(r.integers(len(_PROJECTS)))]
        change = int(r.integers(600000, 960000))
        patchset = int(r.integers(1, 12))
        build_uuid = uuid.UUID(bytes=r.bytes(16), version=4).hex
        run_id = _uuid(r)
        short = build_uuid[:7]
        if pipeline == "periodic":
            rel = f"periodic/opendev.org/{project}/master/{job}/{short}"
        else:
            rel = f"{change % 100:02d}/{change}/{patchset}/{pipeline}/{job}/{short}"
        run_dir = logs_dir / rel
        if base_url:
            artifacts = base_url.rstrip("/") + "/" + rel + "/"
        else:
            artifacts = run_dir.resolve().as_uri() + "/"
        dstat_start = starts[i] - dt.timedelta(seconds=int(r.integers(0, 20)))
        host = f"{_NODESETS[variant]}-{provider}-{int(r.integers(10 ** 6, 10 ** 7))}"
        cols = _signals(r, n_rows, job, hw, cause, interval)
        if prometheus and defect_of.get(i) != "missing":
            write_node_series(out_dir / "prometheus", host, cols, dstat_start, interval)
        text = render_dstat(cols, variant, dstat_start, host, interval)
        _write_inventory(run_dir, host, provider, _NODESETS[variant], build_uuid, job)
        dstat_path = DSTAT_PATHS[path_of[i]]
        defect = defect_of.get(i)
        if defect in ("truncated-gzip", "corrupt-gzip") and not dstat_path.endswith(".gz"):
            dstat_path += ".gz"
        target = run_dir / dstat_path
        if defect == "missing":
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "job-output.txt").write_text("dstat was not collected\n")
            dstat_path = None
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            if defect is not None:
                data = _defective(defect, text, r)
            else:
                data = text.encode()
            if defect is None or defect in ("html", "empty", "header-only", "non-numeric"):
                if dstat_path.endswith(".gz"):
                    data = gzip.compress(data, compresslevel=1, mtime=0)
            target.write_bytes(data)

        failed = cause != "passed"
        result = {"passed": "SUCCESS", "test-failure": "FAILURE", "oom": "FAILURE",
                  "timeout": "TIMED_OUT"}.get(cause)
        if cause == "network":
            result = ("FAILURE", "RETRY_LIMIT", "POST_FAILURE")[int(r.integers(3))]
        run = {
            "run_id": run_id, "build_uuid": build_uuid, "build_name": job,
            "status": "failed" if failed else "passed", "cause": cause,
            "node_provider": provider, "family": hw[0], "start": starts[i],
            "duration": length, "artifacts_url": artifacts, "variant": variant,
            "result": result, "project": project, "pipeline": pipeline,
            "change": None if pipeline == "periodic" else change,
            "patchset": None if pipeline == "periodic" else patchset,
            "dstat_path": dstat_path, "rows": n_rows, "defect": defect,
            "node": host, "new_year": i == eve_run,
        }
        history_runs.append(run)
        db_rows.append((run, r))

    db_uri = db_uri or f"sqlite:///{(out_dir / 'subunit2sql.db').resolve()}"
    _write_db(db_uri, db_rows, tests, cause_key)
    zuul_path = out_dir / "zuul-builds.json"
    flat_path = out_dir / "zuul-builds.flat.json"
    mqtt_path = out_dir / "mqtt-events.json"
    builds = _zuul_builds(history_runs, rng)
    zuul_path.write_text(json.dumps(builds, indent=1))
    flat_path.write_text(json.dumps([_flat_build(b) for b in builds], indent=1))
    mqtt_path.write_text(json.dumps(_mqtt_events(history_runs), indent=1))
    manifest = [{**run, "start": run["start"].isoformat()} for run in history_runs]
    (out_dir / "history.json").write_text(json.dumps(manifest, indent=1))
    return History(out_dir=out_dir, db_uri=db_uri, logs_dir=logs_dir, zuul_builds=zuul_path,
                   zuul_builds_flat=flat_path, mqtt_events=mqtt_path, runs=history_runs,
                   prometheus_dir=(out_dir / "prometheus") if prometheus else None)


#: What :func:`write_node_series` keeps: the ``prometheus`` source's default
#: query names, in dstat's units (as the source's queries give them).
NODE_SERIES = ("cpu_usr", "cpu_sys", "cpu_idl", "cpu_wai", "cpu_stl", "mem_used", "mem_free",
               "mem_buff", "mem_cach", "mem_avail", "load_1m", "load_5m", "load_15m",
               "dsk_read", "dsk_writ", "net_recv", "net_send", "procs_run", "procs_blk")


def write_node_series(directory, node, cols, start, interval=1):
    """Write one node's series (``<directory>/<node>.npz``) from generated signals.

    ``time`` holds seconds since the epoch (int64), each of
    :data:`NODE_SERIES` a float32 column.  ``mem_avail`` is what the kernel
    would call available: free memory, buffers and page cache.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = len(cols["cpu_usr"])
    first = int(start.timestamp())
    arrays = {"time": first + np.arange(n, dtype=np.int64) * int(interval)}
    for name in NODE_SERIES:
        if name == "mem_avail":
            values = (np.asarray(cols["mem_free"], np.float64) + cols["mem_buff"]
                      + cols["mem_cach"])
        else:
            values = cols[name]
        arrays[name] = np.asarray(values, dtype=np.float32)
    with open(directory / f"{node}.npz", "wb") as fh:
        np.savez_compressed(fh, **arrays)


def read_node_series(directory):
    """``{node: (seconds, {column: values})}`` of every file :func:`write_node_series` wrote."""
    nodes = {}
    for path in sorted(pathlib.Path(directory).glob("*.npz")):
        with np.load(path) as data:
            stamps = data["time"].astype(np.float64)
            nodes[path.stem] = (stamps, {k: data[k] for k in data.files if k != "time"})
    return nodes


def _write_inventory(run_dir, host, provider, label, build_uuid, job):
    """``zuul-info/inventory.yaml`` as Zuul publishes it, nodepool section and all.

    The Zuul API does not name a build's cloud; this file does, and the
    ``zuul`` result source reads ``node_provider`` from it.
    """
    import yaml

    family = PROVIDERS[provider][0]
    region = provider[len(family) + 1:] or provider
    node = {
        "ansible_connection": "ssh", "ansible_host": "203.0.113.10", "ansible_port": 22,
        "ansible_python_interpreter": "auto", "ansible_user": "zuul",
        "nodepool": {
            "az": "nova", "cloud": family, "external_id": build_uuid[:8],
            "host_id": build_uuid[8:24], "interface_ip": "203.0.113.10", "label": label,
            "private_ipv4": "10.0.0.10", "provider": provider, "public_ipv4": "203.0.113.10",
            "region": region.upper() if family == "rax" else region,
        },
    }
    inventory = {"all": {"hosts": {"controller": node},
                         "vars": {"zuul": {"build": build_uuid, "job": job,
                                           "tenant": _TENANT}}}}
    target = run_dir / "zuul-info" / "inventory.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(inventory, default_flow_style=False))


def _write_db(db_uri, db_rows, with_tests, cause_key=None):
    import sqlalchemy as sa

    from ciml_plugins.sources import subunit2sql_schema as schema

    engine = sa.create_engine(db_uri)
    try:
        schema.create_schema(engine)
        with engine.begin() as conn:
            first_run = (conn.execute(sa.select(sa.func.max(schema.runs.c.id))).scalar() or 0) + 1
            test_ids = {}
            if with_tests:
                for row in conn.execute(sa.select(schema.tests.c.id, schema.tests.c.test_id)):
                    test_ids[row.test_id] = row.id
            run_rows, meta_rows, test_run_rows = [], [], []
            stats = {}
            for k, (run, r) in enumerate(db_rows):
                run_pk = first_run + k
                names = _TESTS.get(run["build_name"]) or [
                    f"{run['project'].split('/')[-1]}.tests.unit.test_{n}"
                    for n in ("api", "db", "utils", "scheduler", "compute", "network", "rpc",
                              "config")]
                statuses = _test_statuses(run, names, r)
                passes = sum(s in ("success", "xfail") for s in statuses)
                fails = sum(s in ("fail", "uxsuccess") for s in statuses)
                skips = sum(s == "skip" for s in statuses)
                run_rows.append({
                    "id": run_pk, "uuid": run["run_id"], "skips": skips, "fails": fails,
                    "passes": passes, "run_time": run["duration"],
                    "artifacts": run["artifacts_url"].rstrip("/"),
                    "run_at": run["start"].astimezone(UTC).replace(tzinfo=None)})
                metadata = _run_metadata(run)
                if cause_key:
                    metadata[cause_key] = run["cause"]
                for key, value in metadata.items():
                    meta_rows.append({"run_id": run_pk, "key": key, "value": value})
                if not with_tests:
                    continue
                t0 = run["start"].astimezone(UTC).replace(tzinfo=None)
                step = run["duration"] / (len(names) + 1)
                for j, (name, status) in enumerate(zip(names, statuses)):
                    if status is None:
                        continue
                    begin = t0 + dt.timedelta(seconds=step * j + float(r.uniform(0, 2)))
                    end = begin + dt.timedelta(seconds=float(r.uniform(0.2, step * 0.9)))
                    test_run_rows.append({
                        "test": name, "run_id": run_pk, "status": status,
                        "start_time": begin.replace(microsecond=0),
                        "start_time_microsecond": begin.microsecond,
                        "stop_time": end.replace(microsecond=0),
                        "stop_time_microsecond": end.microsecond})
                    st = stats.setdefault(name, [0, 0, 0, []])
                    if status in ("success", "xfail"):
                        st[0] += 1
                        st[3].append((end - begin).total_seconds())
                    elif status in ("fail", "uxsuccess"):
                        st[1] += 1
            conn.execute(schema.runs.insert(), run_rows)
            conn.execute(schema.run_metadata.insert(), meta_rows)
            if with_tests and test_run_rows:
                new = [n for n in stats if n not in test_ids]
                next_id = (conn.execute(sa.select(sa.func.max(schema.tests.c.id))).scalar()
                           or 0) + 1
                for name in new:
                    test_ids[name] = next_id
                    next_id += 1
                if new:
                    conn.execute(schema.tests.insert(), [
                        {"id": test_ids[n], "test_id": n, "run_count": stats[n][0] + stats[n][1],
                         "success": stats[n][0], "failure": stats[n][1],
                         "run_time": float(np.mean(stats[n][3])) if stats[n][3] else None}
                        for n in new])
                for row in test_run_rows:
                    row["test_id"] = test_ids[row.pop("test")]
                conn.execute(schema.test_runs.insert(), test_run_rows)
    finally:
        engine.dispose()


def _test_statuses(run, names, r):
    """One status per test (``None``: never ran), matching the run's cause."""
    n = len(names)
    statuses = ["success"] * n
    statuses[-1] = "skip" if r.random() < 0.5 else "success"
    cause = run["cause"]
    if cause in ("test-failure", "oom"):
        for j in r.choice(n - 1, int(r.integers(1, 3)), replace=False):
            statuses[int(j)] = "fail"
    elif cause == "timeout":
        cut = int(n * 0.6)
        statuses[cut] = "fail"
        statuses[cut + 1:] = [None] * (n - cut - 1)
    elif cause == "network":
        # Nothing ran: subunit2sql's rule (passes == 0) marks it failed.
        statuses = [None] * n
    return statuses


def _run_metadata(run):
    change = run["change"]
    meta = {
        "filename": "testrepository.subunit",
        "build_name": run["build_name"],
        "build_node": _NODESETS[run["variant"]],
        "build_master": f"ze0{int(run['build_uuid'][0], 16) % 8 + 1}.opendev.org",
        "project": run["project"],
        "voting": "1",
        "build_uuid": run["build_uuid"],
        "build_short_uuid": run["build_uuid"][:7],
        "build_queue": run["pipeline"],
        "build_branch": "master",
        "build_zuul_url": "N/A",
        "node_provider": run["node_provider"],
    }
    if change is None:
        meta["build_ref"] = "refs/heads/master"
    else:
        meta["build_ref"] = f"refs/changes/{change % 100:02d}/{change}/{run['patchset']}"
        meta["build_change"] = str(change)
        meta["build_patchset"] = str(run["patchset"])
    return meta


def _iso(moment):
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _ref(run):
    change = run["change"]
    if change is None:
        return {"project": run["project"], "branch": "master", "change": None,
                "patchset": None, "ref": "refs/heads/master", "oldrev": None,
                "newrev": None, "ref_url": None}
    return {"project": run["project"], "branch": "master", "change": change,
            "patchset": str(run["patchset"]),
            "ref": f"refs/changes/{change % 100:02d}/{change}/{run['patchset']}",
            "oldrev": None, "newrev": None,
            "ref_url": f"https://review.opendev.org/{change}"}


def _zuul_builds(history_runs, rng):
    """Zuul ``/builds`` records (current format), newest first as the API lists them."""
    builds = []
    for k, run in enumerate(history_runs):
        end = run["start"] + dt.timedelta(seconds=run["duration"])
        builds.append({
            "_id": 40000000 + 2 * k,
            "uuid": run["build_uuid"], "job_name": run["build_name"],
            "result": run["result"], "held": False,
            "start_time": _iso(run["start"]), "end_time": _iso(end),
            "duration": run["duration"], "voting": True,
            "log_url": run["artifacts_url"],
            "nodeset": _NODESETS[run["variant"]], "error_detail": None, "final": True,
            "artifacts": [{"name": "Zuul Manifest",
                           "url": run["artifacts_url"] + "zuul-manifest.json",
                           "metadata": {"type": "zuul_manifest"}}],
            "provides": [], "ref": _ref(run), "pipeline": run["pipeline"],
            "event_id": uuid.UUID(bytes=rng.bytes(16), version=4).hex,
            "event_timestamp": _iso(run["start"] - dt.timedelta(minutes=3)),
            "buildset": {"uuid": uuid.UUID(bytes=rng.bytes(16), version=4).hex},
        })
    # Builds a Zuul source must skip: a node failure has no logs, and a
    # build still running is not final.
    for k in range(0, len(history_runs), 40):
        builds.append({**builds[k], "_id": 40000001 + 2 * k,
                       "uuid": uuid.UUID(bytes=rng.bytes(16), version=4).hex,
                       "result": "NODE_FAILURE", "start_time": None, "duration": None,
                       "log_url": None, "artifacts": []})
    if history_runs:
        last = history_runs[-1]
        builds.append({**builds[len(history_runs) - 1], "_id": 40000000 + 2 * len(history_runs),
                       "uuid": uuid.UUID(bytes=rng.bytes(16), version=4).hex,
                       "result": None, "final": False, "end_time": None, "duration": None,
                       "log_url": None, "start_time": _iso(last["start"])})
    builds.sort(key=lambda b: b["_id"], reverse=True)
    return builds


def _flat_build(build):
    """The pre-2024 flat format of a build record (``project``/``change`` at top level)."""
    ref = build["ref"]
    return {
        "uuid": build["uuid"], "job_name": build["job_name"], "result": build["result"],
        "start_time": build["start_time"], "end_time": build["end_time"],
        "duration": build["duration"], "voting": build["voting"],
        "log_url": build["log_url"], "node_name": None, "artifacts": build["artifacts"],
        "provides": [], "project": ref["project"], "branch": ref["branch"],
        "pipeline": build["pipeline"], "change": ref["change"], "patchset": ref["patchset"],
        "ref": ref["ref"], "newrev": ref["newrev"], "ref_url": ref["ref_url"],
        "event_id": build["event_id"],
        **({} if build["final"] else {"final": False}),
    }


def _mqtt_events(history_runs):
    """Firehose ``gearman-subunit`` and Zuul MQTT reporter messages, in time order."""
    events = []
    for run in history_runs:
        end = run["start"] + dt.timedelta(seconds=run["duration"])
        change = run["change"]
        ref = _ref(run)
        events.append((end.timestamp() + 30, {
            "topic": f"gearman-subunit/subunit-worker0{int(run['build_uuid'][1], 16) % 2 + 1}"
                     f"/{run['project']}/{change if change is not None else 'periodic'}",
            "payload": {"build_uuid": run["build_uuid"],
                        "source_url": run["artifacts_url"] + "testrepository.subunit",
                        "status": "failed" if run["status"] == "failed" else "success"}}))
        action = "success" if run["result"] == "SUCCESS" else "failure"
        change_url = ref["ref_url"]
        events.append((end.timestamp() + 5, {
            "topic": f"zuul/{_TENANT}/{run['pipeline']}/{run['project']}/master",
            "payload": {
                "timestamp": end.timestamp() + 5, "action": action, "tenant": _TENANT,
                "zuul_ref": "Z" + run["build_uuid"][::-1],
                "pipeline": run["pipeline"], "project": run["project"], "branch": "master",
                "change_url": change_url, "change": change, "patchset": ref["patchset"],
                "ref": ref["ref"],
                "message": f"Build {'succeeded' if action == 'success' else 'failed'} "
                           f"({run['pipeline']} pipeline).",
                "enqueue_time": run["start"].timestamp() - 240,
                "buildset": {
                    "uuid": run["build_uuid"][::-1],
                    "result": run["result"],
                    "builds": [{
                        "job_name": run["build_name"], "voting": True,
                        "uuid": run["build_uuid"],
                        "start_time": run["start"].timestamp(), "end_time": end.timestamp(),
                        "execute_time": run["start"].timestamp() - 60,
                        "log_url": run["artifacts_url"],
                        "web_url": f"{_LOG_HOST}/t/{_TENANT}/build/{run['build_uuid']}",
                        "result": run["result"], "dependencies": [], "artifacts": [],
                    }],
                },
            }}))
    events.sort(key=lambda e: e[0])
    return [event for _, event in events]
