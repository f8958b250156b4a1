"""Measure how well the dataset profile tells resource trouble from ordinary runs.

Usage::

    python benchmarks/bench_unusual.py                  # 600 runs, seed 1
    python benchmarks/bench_unusual.py --runs 600 --seed 2

A generated history of one job (``ciml.generator``: labelled causes
``passed``, ``test-failure``, ``oom``, ``timeout``, ``network``) is cached
from local files, and two datasets are built from it: aggregated (mean, std,
max) and a 1-minute time series.  Every dev and test run is scored against
its dataset's profile (:mod:`ciml.dataset.profile`).  For each cause the
script prints how many runs were flagged unusual at the default 99th
percentile, and the AUC of the score against the passed runs (0.5: no
better than chance).  It measures detection quality, not speed.
"""

import argparse
import pathlib
import tempfile

import numpy as np

JOB = "tempest-full"


def auc(positive, negative):
    """Probability that a positive scores above a negative (ties count half)."""
    positive, negative = np.asarray(positive), np.asarray(negative)
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    from ciml.cache import RawCache
    from ciml.collect import cache_data
    from ciml.dataset import Dataset, build_dataset
    from ciml.generator import generate_history
    from ciml.paths import DataPath
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="ciml-unusual-"))
    history = generate_history(root / "history", runs=args.runs, seed=args.seed, jobs=(JOB,),
                               bad_fraction=0.0, tests=False)
    data_path = DataPath(root / "data")
    with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
        cache_data(data_path, source, DstatMetricSource(), JOB, progress=False)
    cause = {r["run_id"]: r["cause"] for r in history.runs}
    cache = RawCache(data_path)
    print(f"# {args.runs} runs of {JOB}, seed {args.seed}; work dir {root}")
    layouts = (("aggregated", dict(aggregation_functions=["mean", "std", "max"])),
               ("1min series", dict(sample_interval="1min")))
    for name, layout in layouts:
        dataset = name.split()[0]
        build_dataset(data_path, dataset, JOB, class_label="status", progress=False, seed=0,
                      **layout)
        ds = Dataset.open(data_path, dataset)
        scores, flagged = {}, {}
        for split in ("dev", "test"):
            for run_id in ds.split(split).ids:
                example, length = ds.example_from_frame(cache.frame(run_id), with_length=True)
                result = ds.unusual(example, length)
                scores.setdefault(cause[run_id], []).append(result["score"])
                flagged.setdefault(cause[run_id], []).append(result["unusual"])
        profile = ds.profile
        print(f"\n{name}: profile of {profile['runs']} {profile['reference']}")
        print(f"  {'cause':<13} {'runs':>5} {'flagged':>8} {'AUC vs passed':>14}")
        for key in sorted(scores, key=lambda c: (c != "passed", c)):
            share = np.mean(flagged[key])
            value = "" if key == "passed" else f"{auc(scores[key], scores['passed']):.2f}"
            print(f"  {key:<13} {len(scores[key]):>5} {share:>8.0%} {value:>14}")


if __name__ == "__main__":
    main()
