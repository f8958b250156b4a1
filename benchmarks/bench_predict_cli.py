"""Benchmark: ``ciml predict`` of one cached run from the command line, in fresh processes.

Set-up (once, kept with ``--dir``): the demo's data path (``ciml demo
--no-plots``: a generated history of 360 runs, cached; a 1 min time-series
dataset with a ``dnn`` (Keras) model, an aggregate dataset with a ``gbdt``
(LightGBM) model).  Then, for each model, one held-out run of its test
split is predicted ``--repeat`` times, each time by a new ``ciml`` process
(``--no-store``, as the demo's own examples but without a result source:
the run is read from the raw cache), interleaved gbdt/dnn/help so that a
change in the machine's load hits all three alike.

Reported per command: median, min and max of the wall time and of the CPU
time (user + system of the process and its children, from
``getrusage(RUSAGE_CHILDREN)``), and the load average before and after.
``ciml --help`` is timed as the floor every command pays.

ciml's own modules are byte-compiled first (``compileall``), as pip does
when it installs a package: in an editable checkout under
``PYTHONDONTWRITEBYTECODE=1`` (this project's machines) they would be
compiled from source in every process, about 0.1 s of CPU that an
installed ciml never pays.  ``--no-compile`` skips that.  Target (issue
14): gbdt at most 2 s of wall time on a 2-core machine.  With
``--imports`` the modules each command imported that take over 10 ms
(``python -X importtime``, cumulative, top level) are listed once.

Usage: ``python benchmarks/bench_predict_cli.py [--dir D] [--repeat 7] [--imports]``.
The commands run as ``python -c``, whose module path starts with the
current directory: run it from the checkout to measure the checkout, and
from elsewhere with ``PYTHONPATH=OTHER_CHECKOUT`` to measure another.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CIML = [sys.executable, "-c", "import sys; from ciml.shell import main; sys.exit(main())"]
MODELS = {"gbdt": ("demo-cause", "demo-gbdt"), "dnn": ("demo-status", "demo-dnn")}


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(root):
    """The demo's data path under ``root`` (made once) and a test-split run per model."""
    data = root / "demo"
    done = all((data / "models" / ds / exp / "metadata.json").is_file()
               for ds, exp in MODELS.values())
    if not done:
        _log(f"building the demo data path in {data} (about a minute of CPU)")
        t = time.monotonic()
        subprocess.run([*CIML, "--data-path", str(data), "demo", "--no-plots"], check=True,
                       stdout=subprocess.DEVNULL)
        _log(f"built in {time.monotonic() - t:.0f} s")
    from ciml.dataset import Dataset
    from ciml.paths import DataPath

    runs = {name: Dataset.open(DataPath(data), ds).split("test").ids[0]
            for name, (ds, _exp) in MODELS.items()}
    return data, runs


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd):
    """``(wall s, cpu s, stdout)`` of one command in a fresh process."""
    cpu0 = children_cpu()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    cpu = children_cpu() - cpu0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, cpu, proc.stdout


def slow_imports(cmd, threshold_ms=10.0):
    """Top-level imports of ``cmd`` over ``threshold_ms`` (cumulative), largest first."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True,
                          text=True)
    found = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self, cumulative, name = line[len("import time:"):].split("|", 2)
        if not name.startswith(" ") or name.startswith("  "):
            continue  # only what the program itself imported (one space deep)
        try:
            ms = int(cumulative) / 1000
        except ValueError:
            continue
        if ms >= threshold_ms:
            found.append((ms, name.strip()))
    return sorted(found, reverse=True)


def summary(values):
    return (f"median {statistics.median(values):.2f}  min {min(values):.2f}  "
            f"max {max(values):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=pathlib.Path, default=None,
                        help="where the demo data path is kept (made when missing)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="do not byte-compile ciml's modules first")
    parser.add_argument("--imports", action="store_true",
                        help="also list each command's imports over 10 ms")
    args = parser.parse_args()

    root = args.dir or pathlib.Path(tempfile.mkdtemp(prefix="ciml-bench-predict-"))
    root.mkdir(parents=True, exist_ok=True)
    data, runs = prepare(root)
    if args.compile:
        import compileall

        import ciml
        import ciml_plugins

        for package in (ciml, ciml_plugins):
            compileall.compile_dir(os.path.dirname(package.__file__), quiet=1)
    commands = {"help": [*CIML, "--help"]}
    for name, (ds, exp) in MODELS.items():
        commands[name] = [*CIML, "--data-path", str(data), "predict", "--dataset", ds,
                          "--experiment", exp, "--no-store", "-f", "json", runs[name]]
    # One untimed round: the page cache, and the first-run costs (bytecode).
    for name, cmd in commands.items():
        _, _, out = timed(cmd)
        if name != "help":
            rows = json.loads(out)
            _log(f"{name}: {runs[name]} predicted {rows[0]['predicted']}")
    load_before = os.getloadavg()
    walls = {name: [] for name in commands}
    cpus = {name: [] for name in commands}
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            wall, cpu, _ = timed(cmd)
            walls[name].append(wall)
            cpus[name].append(cpu)
    load_after = os.getloadavg()
    print(f"ciml predict, one cached run, fresh process each time ({args.repeat} runs each, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    for name in commands:
        label = "ciml --help" if name == "help" else f"predict {name} ({'/'.join(MODELS[name])})"
        print(f"  {label}")
        print(f"    wall s: {summary(walls[name])}")
        print(f"    CPU s:  {summary(cpus[name])}")
    print(f"  load average (1, 5, 15 min): before {load_before[0]:.1f} {load_before[1]:.1f} "
          f"{load_before[2]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f} "
          f"{load_after[2]:.1f}")
    print(f"  ciml's modules byte-compiled first: {'yes' if args.compile else 'no'}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
    ok = statistics.median(walls["gbdt"]) <= 2.0
    print("  target (gbdt median wall <= 2 s): " + ("met" if ok else "NOT met"))
    if args.imports:
        for name, cmd in commands.items():
            found = slow_imports(cmd)
            print(f"  imports over 10 ms, {name}: " + (", ".join(
                f"{mod} {ms:.0f}" for ms, mod in found) or "none"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
