"""Time ``dataset plot`` on an aggregate, multiclass dataset (the demo's ``demo-cause``).

Usage::

    python benchmarks/bench_dataset_plot.py                 # 105 runs, 5 aggregates
    python benchmarks/bench_dataset_plot.py --runs 300 --repeat 5
    python benchmarks/bench_dataset_plot.py --data-path ~/ciml-demo --dataset demo-cause

Without ``--data-path`` a history of one job is generated (``ciml.generator``,
labelled causes: passed, test-failure, oom, timeout, network), cached from
local files and built as the demo builds ``demo-cause``: aggregates mean std
max min p95 of every common column, labelled by cause.  The script then
times :func:`ciml.dataset.plot.plot_dataset` ``--repeat`` times and prints
wall and CPU seconds per plot file kind (the best of the repeats), so a
slow plot stands out.  Run it by hand; CI never times anything.
"""

import argparse
import collections
import pathlib
import tempfile
import time

JOB = "tempest-full"


def build(root, runs, seed):
    from ciml.collect import cache_data
    from ciml.dataset import build_dataset
    from ciml.generator import generate_history
    from ciml.paths import DataPath
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

    history = generate_history(root / "history", runs=runs, seed=seed, jobs=(JOB,),
                               bad_fraction=0.0, tests=False, cause_key="failure_cause")
    data_path = DataPath(root / "data")
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(data_path, source, DstatMetricSource(), JOB, progress=False)
    build_dataset(data_path, "bench-cause", JOB, class_label="failure_cause",
                  aggregation_functions=("mean", "std", "max", "min", "p95"), seed=seed)
    return data_path, "bench-cause"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=105)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-path", default=None, help="use this data path's dataset")
    parser.add_argument("--dataset", default=None)
    args = parser.parse_args(argv)

    from ciml.dataset import Dataset
    from ciml.dataset import plot as plot_mod
    from ciml.paths import DataPath

    if args.data_path:
        data_path, name = DataPath(args.data_path), args.dataset or "demo-cause"
    else:
        data_path, name = build(pathlib.Path(tempfile.mkdtemp(prefix="ciml-plot-")),
                                args.runs, args.seed)
    ds = Dataset.open(data_path, name)
    print(f"# dataset {name}: {sum(ds.attrs.get('counts', {}).values())} examples, "
          f"{len(ds.classes)} classes, axis {ds.axis}, steps {len(ds.steps)}, "
          f"{len(ds.features)} features")

    # Per plot function: time each call, by wrapping the module's functions.
    per_kind = collections.defaultdict(list)
    for fname in ("plot_sizes", "plot_balance", "plot_distributions", "plot_scatter",
                  "plot_unusual"):
        real = getattr(plot_mod, fname)

        def timed(*a, _real=real, _name=fname, **k):
            w, c = time.perf_counter(), time.process_time()
            try:
                return _real(*a, **k)
            finally:
                per_kind[_name].append((time.perf_counter() - w, time.process_time() - c))
        setattr(plot_mod, fname, timed)

    out = pathlib.Path(tempfile.mkdtemp(prefix="ciml-plots-"))
    totals = []
    for _ in range(args.repeat):
        per_kind.clear()
        w, c = time.perf_counter(), time.process_time()
        paths = plot_mod.plot_dataset(data_path, name, output_dir=out)
        totals.append((time.perf_counter() - w, time.process_time() - c,
                       {k: (sum(x[0] for x in v), sum(x[1] for x in v), len(v))
                        for k, v in per_kind.items()}))
    wall, cpu, kinds = min(totals, key=lambda t: t[0])
    print(f"plot_dataset: {len(paths)} files, best of {args.repeat}: wall {wall:.2f} s, "
          f"cpu {cpu:.2f} s")
    for kind, (kw, kc, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        print(f"  {kind:20s} x{n}: wall {kw:.2f} s, cpu {kc:.2f} s")


if __name__ == "__main__":
    main()
