"""Benchmark: how well can *any* model tell ciml's generated node providers apart?

``ciml.generator`` draws a run's resource signals from its provider's
hardware tuple only (``PROVIDERS``: cores, memory, CPU slowness, steal,
disk wait), and draws job, cause, length and dstat layout independently of
the provider.  Providers with the same tuple (rax-dfw/rax-ord,
ovh-bhs1/ovh-gra1, vexxhost-ca-ymq-1/vexxhost-sjc1,
citycloud-kna1/citycloud-lon1) therefore produce runs from one and the
same distribution: no feature of the metrics can separate them, and a
classifier can only guess within each pair.  Guessing gives each pair's
two F1 scores a sum of at most 1 (equal priors), so the expected 11-class
macro-F1 is at most (3 + 4 * 1) / 11 = 0.636 even with the three other
providers and the pairs' families recognised perfectly.

This script measures it directly, with no ciml pipeline in between (so it
runs in a minute): it draws runs from the generator's signal model at a
10 s interval, reduces every column to a set of aggregates, and
cross-validates LightGBM:

* on the 11 raw providers (macro-F1, and the same with the classes merged
  into families);
* on each pair alone (accuracy; 0.5 is chance) and, as a control, on two
  providers that differ (rax-dfw against rax-iad, whose disks wait 20 %
  longer).

    python benchmarks/bench_provider_ceiling.py [--runs-per-provider 150] [--seed 5]
        [--pairs-only]
"""

import argparse
import sys
import time

import numpy as np

PAIRS = (("rax-dfw", "rax-ord"), ("ovh-bhs1", "ovh-gra1"),
         ("vexxhost-ca-ymq-1", "vexxhost-sjc1"), ("citycloud-kna1", "citycloud-lon1"))
CONTROL = ("rax-dfw", "rax-iad")
AGGREGATES = ("mean", "std", "min", "max", "p95")


def _aggregate(cols):
    keys = sorted(k for k in cols if k not in ("top_cpu", "top_io", "cpu_idl_072"))
    values = np.stack([np.asarray(cols[k], dtype=np.float64) for k in keys], axis=1)
    rows = [values.mean(0), values.std(0), values.min(0), values.max(0),
            np.percentile(values, 95, axis=0)]
    return np.concatenate(rows)


def draw_runs(providers, per_provider, seed, interval=10, lo=600, hi=1800):
    """Aggregated runs ``(X, provider index)`` drawn as ``generate_history`` draws them."""
    from ciml import generator as g

    rng = np.random.default_rng(seed)
    X, y = [], []
    for p_index, provider in enumerate(providers):
        hw = g.PROVIDERS[provider]
        for _ in range(per_provider):
            cause = g.CAUSES[rng.choice(len(g.CAUSES), p=g._CAUSE_WEIGHTS)]
            base = rng.uniform(lo, hi)
            length = {"timeout": float(hi), "oom": base * rng.uniform(0.55, 0.85),
                      "network": max(60.0, base * rng.uniform(0.15, 0.35))}.get(cause, base)
            n = max(int(length // interval), 2)
            cols = g._signals(rng, n, "tempest-full", hw, cause, interval)
            X.append(_aggregate(cols))
            y.append(p_index)
    return np.asarray(X, np.float32), np.asarray(y, np.int64)


def cross_validate(X, y, k, folds=5, seed=0):
    """Out-of-fold predicted class of every run (LightGBM, ciml's gbdt defaults)."""
    import lightgbm as lgb

    order = np.random.default_rng(seed).permutation(len(y))
    pred = np.empty(len(y), np.int64)
    params = {"objective": "binary" if k == 2 else "multiclass", "num_leaves": 15,
              "learning_rate": 0.05, "min_data_in_leaf": 10, "feature_fraction": 0.5,
              "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
              "num_threads": 2, "seed": seed, "deterministic": True,
              "force_row_wise": True, "verbosity": -1}
    if k > 2:
        params["num_class"] = k
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        booster = lgb.train(params, lgb.Dataset(X[train], label=y[train]), num_boost_round=200)
        out = booster.predict(X[test])
        pred[test] = (out > 0.5).astype(np.int64) if k == 2 else out.argmax(axis=1)
    return pred


def macro_f1(y, pred, k):
    from ciml.metrics import confusion_matrix, per_class_scores

    _, _, f1, _ = per_class_scores(confusion_matrix(y, pred, k))
    return float(np.mean(f1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-provider", type=int, default=150)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--pairs-only", action="store_true",
                        help="skip the 11-class cross-validation (the slow part)")
    args = parser.parse_args(argv)
    from ciml import generator as g

    started = time.monotonic()
    providers = list(g.PROVIDERS)
    X, y = draw_runs(providers, args.runs_per_provider, args.seed)
    print(f"{len(y)} runs drawn in {time.monotonic() - started:.0f} s, "
          f"{X.shape[1]} features", file=sys.stderr)
    same = [a for a, b in PAIRS] + [b for a, b in PAIRS]
    print("## generator hardware per provider\n")
    print("| provider | family | cores | memory GiB | slowness | steal % | disk wait % |")
    print("|---|---|---|---|---|---|---|")
    for name, hw in g.PROVIDERS.items():
        print(f"| {name}{' (pair)' if name in same else ''} | " + " | ".join(map(str, hw)) + " |")

    print(f"\n## 5-fold cross-validation, {args.runs_per_provider} runs per provider\n")
    print("| task | classes | macro-F1 | accuracy | chance-level ceiling |")
    print("|---|---|---|---|---|")
    if not args.pairs_only:
        pred = cross_validate(X, y, len(providers), seed=args.seed)
        families = sorted({g.PROVIDERS[p][0] for p in providers})
        fam = np.array([families.index(g.PROVIDERS[providers[i]][0])
                        for i in range(len(providers))])
        print(f"| raw provider | 11 | {macro_f1(y, pred, len(providers)):.3f} | "
              f"{(pred == y).mean():.3f} | {7 / 11:.3f} |")
        print(f"| family (from the 11-class model) | {len(families)} | "
              f"{macro_f1(fam[y], fam[pred], len(families)):.3f} | "
              f"{(fam[pred] == fam[y]).mean():.3f} | 1.000 |")
    for a, b in PAIRS + (CONTROL,):
        keep = np.isin(y, [providers.index(a), providers.index(b)])
        yy = (y[keep] == providers.index(b)).astype(np.int64)
        pp = cross_validate(X[keep], yy, 2, seed=args.seed)
        kind = "control: different hardware" if (a, b) == CONTROL else "pair only"
        print(f"| {a} vs {b} ({kind}) | 2 | {macro_f1(yy, pp, 2):.3f} | "
              f"{(pp == yy).mean():.3f} | {'-' if (a, b) == CONTROL else '0.500'} |")
    print(f"\ntotal {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
