"""Benchmark: prediction quality of every built-in estimator at default settings.

A generated CI history (:func:`ciml.generator.generate_history`, one job,
11 node providers, every failure cause) is cached and built into datasets
with a *time* split (train on the oldest runs, test on the newest), as an
operator would, then each estimator is trained with its defaults:

* ``status`` (passed/failed) from per-column aggregates (``agg``) and from
  the time series at 10 s (``ts``): precision and recall of the runs
  flagged failed at the operating point ``train-model`` chose on dev
  (default target: precision 0.9), recall per failure cause (oom,
  timeout, network, test-failure), expected calibration error and Brier
  score of the calibrated probabilities, ROC-AUC;
* ``node_provider_all`` (11 classes): macro-F1 from aggregates (and from
  the series for ``cnn``), and beside it the same once the providers the
  generator gives identical hardware count as one class: those pairs can
  only be told apart by chance (``bench_provider_ceiling.py``), which
  caps the expected 11-class macro-F1 at 7/11 = 0.636;
* beside each, the majority-class baseline, and the training time.

The seeds are not the ones the defaults were developed on; pass others with
``--seed``.  Everything runs in this process, serially (2-core machine).

    python benchmarks/bench_quality.py [--runs 1200] [--seed 1013]
        [--estimators gbdt dnn linear-svm cnn] [--aggregates mean std ...]
        [--work-dir DIR [--reuse]] [--json results.json]
"""

import argparse
import csv
import json
import pathlib
import sys
import tempfile
import time

JOB = "tempest-full"
CAUSES = ("oom", "timeout", "network", "test-failure")


def build(dp, name, class_label, **kw):
    from ciml.dataset import build_dataset

    started = time.monotonic()
    build_dataset(dp, name, JOB, class_label=class_label, split="time", progress=False,
                  seed=0, force=True, **kw)
    return time.monotonic() - started


def _flagged(dp, dataset, experiment, decision):
    """Per test run: (flagged at the operating point, truly failed)."""
    from ciml.model import PREDICTIONS_FILE

    path = dp.model(dataset, experiment) / PREDICTIONS_FILE
    pos = decision["positive_class"]
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != "test" or row["dataset"] != dataset:
                continue
            # ``predicted`` is the verdict at the operating point.
            out[row["run_id"]] = (row["predicted"] == pos, row["true"] == pos)
    return out


def evaluate_status(dp, dataset, experiment, cause_of):
    from ciml.model import read_metrics

    m = read_metrics(dp, dataset, experiment)
    op = m["operating_point"]
    chosen = op["chosen"]
    flagged = _flagged(dp, dataset, experiment, op["decision"])
    recall = {}
    for cause in CAUSES:
        runs = [f for run_id, (f, _) in flagged.items() if cause_of.get(run_id) == cause]
        recall[cause] = (sum(runs) / len(runs), len(runs)) if runs else (None, 0)
    return {"precision": chosen.get("precision"), "recall": chosen.get("recall"),
            "flagged": chosen.get("flagged"), "threshold": chosen.get("threshold"),
            "met_on_dev": op["decision"].get("met"),
            "recall_by_cause": recall, "ece": op["calibration"]["ece"],
            "brier": op["calibration"]["brier"], "calibration": op["calibration"]["method"],
            "roc_auc": m.get("roc_auc"), "train_s": m["training_time_s"],
            "baseline": {"precision": op["baseline"].get("precision"),
                         "recall": op["baseline"].get("recall")}}


def _merged_macro_f1(metrics):
    """Macro-F1 once providers with identical generated hardware count as one class.

    Equal to 1 when every error of the model is a confusion within such a
    pair (see ``bench_provider_ceiling.py``: nothing can tell them apart).
    """
    import numpy as np

    from ciml.generator import PROVIDERS
    from ciml.metrics import per_class_scores

    classes = metrics["classes"]
    if not set(classes) <= set(PROVIDERS):
        return None
    groups = sorted({PROVIDERS[c][1:] for c in classes})
    index = [groups.index(PROVIDERS[c][1:]) for c in classes]
    cm = np.asarray(metrics["confusion_matrix"])
    merged = np.zeros((len(groups), len(groups)), dtype=np.int64)
    for i, gi in enumerate(index):
        for j, gj in enumerate(index):
            merged[gi, gj] += cm[i, j]
    return float(np.mean(per_class_scores(merged)[2]))


def evaluate_provider(dp, dataset, experiment):
    from ciml.model import read_metrics

    m = read_metrics(dp, dataset, experiment)
    op = m["operating_point"]
    return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
            "macro_f1_pairs_merged": _merged_macro_f1(m),
            "baseline_macro_f1": m["baseline"]["macro_f1"], "train_s": m["training_time_s"],
            "ece": op["calibration"]["ece"],
            "uncertain_rate": op["chosen"].get("uncertain_rate")}


def train(dp, dataset, estimator, params=None):
    from ciml.experiment import Experiment
    from ciml.model import train_model

    name = f"{estimator}-{dataset}"
    Experiment.create(name, estimator, params or {}).save(dp, force=True)
    train_model(dp, dataset, name)
    return name


def _fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def print_tables(results):
    """The Markdown tables of one run's results (as ``--json`` writes them)."""
    print(f"\n## pass/fail at the operating point (test split, time split, "
          f"{results['runs']} runs, seed {results['seed']})\n")
    print("| model | flagged precision | recall | flagged | " +
          " | ".join(f"recall {c}" for c in CAUSES) + " | ECE | Brier | ROC-AUC | calib. | "
          "train s |")
    print("|" + "---|" * (9 + len(CAUSES)))
    first = None
    for key, r in results["status"].items():
        first = first or r
        causes = " | ".join(f"{_fmt(r['recall_by_cause'][c][0], 2)} "
                            f"({r['recall_by_cause'][c][1]})" for c in CAUSES)
        print(f"| {key} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {r['flagged']} | "
              f"{causes} | {_fmt(r['ece'])} | {_fmt(r['brier'])} | {_fmt(r['roc_auc'])} | "
              f"{r['calibration']} | {r['train_s']:.1f} |")
    if first:
        b = first["baseline"]
        print(f"| majority baseline | {_fmt(b['precision'])} | {_fmt(b['recall'])} | - | "
              + " | ".join("0.00" for _ in CAUSES) + " | - | - | 0.500 | - | - |")
    print("\n## provider (agg-prov, ts-prov: 11 raw providers), "
          "macro-F1 at arg-max\n")
    print("| model | macro-F1 | pairs merged | accuracy | uncertain rate | ECE | train s |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for key, r in results["provider"].items():
        base = r["baseline_macro_f1"]
        print(f"| {key} | {_fmt(r['macro_f1'])} | {_fmt(r.get('macro_f1_pairs_merged'))} | "
              f"{_fmt(r['accuracy'])} | {_fmt(r['uncertain_rate'])} | {_fmt(r['ece'])} | "
              f"{r['train_s']:.1f} |")
    if base is not None:
        print(f"| majority baseline | {_fmt(base)} | - | - | - | - | - |")
    print("\n(pairs merged: macro-F1 once the providers the generator gives identical "
          "hardware count as one class; 1.000 means every error is within such a pair)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1013)
    parser.add_argument("--estimators", nargs="+", default=["gbdt", "dnn", "linear-svm", "cnn"])
    parser.add_argument("--sample-interval", default="10s")
    parser.add_argument("--aggregates", nargs="+", default=None,
                        help="aggregation functions of the aggregate datasets (default: "
                        "the suggested ones, SUGGESTED_AGGREGATES)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--reuse", action="store_true",
                        help="with --work-dir: reuse the history and raw cache a run of "
                        "this seed left there (datasets and models are rebuilt)")
    parser.add_argument("--compare-scaling", action="store_true",
                        help="also train dnn and cnn on a time-series dataset scaled per "
                        "(time step, feature) cell, the original's scaling")
    parser.add_argument("--tables-of", metavar="JSON", default=None,
                        help="only print the tables of results written by --json")
    args = parser.parse_args(argv)
    if args.tables_of:
        print_tables(json.loads(pathlib.Path(args.tables_of).read_text()))
        return

    from ciml.collect import cache_data
    from ciml.generator import generate_history
    from ciml.paths import DataPath
    from ciml_plugins.metrics.dstat import DstatMetricSource
    from ciml_plugins.sources.subunit2sql import Subunit2sqlResultSource

    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="ciml-quality-"))
    dp = DataPath(work / "data")
    started = time.monotonic()
    manifest = work / "history" / "history.json"
    if args.reuse and manifest.is_file() and (work / "data").is_dir():
        runs = json.loads(manifest.read_text())
        if len(runs) != args.runs:
            parser.error(f"{work} holds a history of {len(runs)} runs, not {args.runs}")
        cause_of = {r["run_id"]: r["cause"] for r in runs}
        print(f"history: {args.runs} runs reused from {work}", file=sys.stderr)
    else:
        history = generate_history(work / "history", runs=args.runs, seed=args.seed,
                                   jobs=(JOB,), bad_fraction=0.0, tests=False,
                                   new_year=False)
        cause_of = {r["run_id"]: r["cause"] for r in history.runs}
        with Subunit2sqlResultSource(db_uri=history.db_uri) as source:
            cache_data(dp, source, DstatMetricSource(), JOB, progress=False)
        print(f"history: {args.runs} runs (seed {args.seed}), cached in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    from ciml_plugins.normalizers.builtin import SUGGESTED_AGGREGATES

    aggregates = list(args.aggregates or SUGGESTED_AGGREGATES)
    print(f"aggregates: {' '.join(aggregates)}", file=sys.stderr)
    build(dp, "agg", "status", aggregation_functions=aggregates)
    build(dp, "agg-prov", "node_provider_all", aggregation_functions=aggregates)
    wants_ts = any(e in ("cnn", "dnn") for e in args.estimators)
    if wants_ts:
        build(dp, "ts", "status", sample_interval=args.sample_interval)
    if "cnn" in args.estimators:
        build(dp, "ts-prov", "node_provider_all", sample_interval=args.sample_interval)
    if args.compare_scaling:
        build(dp, "ts-cell", "status", sample_interval=args.sample_interval, scale_per="cell")

    from ciml.dataset import Dataset

    test_ids = Dataset.open(dp, "agg").split("test").ids
    test_causes = {c: sum(1 for i in test_ids if cause_of.get(i) == c) for c in CAUSES}
    print(f"test split: {len(test_ids)} runs, causes {test_causes}", file=sys.stderr)

    results = {"runs": args.runs, "seed": args.seed, "status": {}, "provider": {}}
    plan = []
    for est in args.estimators:
        if est == "cnn":
            plan += [("status", "ts", est), ("provider", "ts-prov", est)]
        else:
            plan += [("status", "agg", est), ("provider", "agg-prov", est)]
            if est == "dnn":
                plan.append(("status", "ts", est))
        if args.compare_scaling and est in ("dnn", "cnn"):
            plan.append(("status", "ts-cell", est))
    for task, dataset, est in plan:
        t0 = time.monotonic()
        name = train(dp, dataset, est)
        if task == "status":
            results["status"][f"{est}/{dataset}"] = evaluate_status(dp, dataset, name,
                                                                   cause_of)
        else:
            results["provider"][f"{est}/{dataset}"] = evaluate_provider(dp, dataset, name)
        print(f"{task} {est}/{dataset}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        if args.json:
            # After every model: a long run cut short keeps what it measured.
            pathlib.Path(args.json).write_text(json.dumps(results, indent=2, default=str))

    print_tables(results)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"\ntotal {time.monotonic() - started:.0f} s; work dir {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
