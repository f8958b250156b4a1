"""Benchmark: ``dnn`` training examples/s, ciml's train path from Zarr vs plain Keras on numpy.

The dataset is 20,000 training examples of 1,000 features (10 time steps x
100 features, float32) plus a 2,000-example dev split, written as a real
ciml dataset (Zarr v3, chunked along examples as ``build-dataset`` does).

* ``ciml``: ``ciml.model.train_model`` (the ``ciml train-model`` path): the
  training split is read from Zarr in whole chunks (kept in memory when it
  fits the budget, else streamed each epoch through ``tf.py_function`` +
  ``rebatch``), the dev split is the validation set, seeded and
  deterministic, with the ``dnn`` default of 32 steps per execution.
* ``ciml-unbatch``: the same with ``unbatch().batch()`` instead of ``rebatch``.
* ``ciml-stream``: ``ciml`` with the in-memory copy of small splits disabled
  (``CIML_TRAIN_MEMORY_BYTES=0``): every epoch decompresses every chunk.
* ``ciml-nodet``: ``ciml`` with ``-o deterministic=false`` (no TensorFlow op
  determinism; the seed still fixes initial weights, dropout and batch order).
* ``keras-det``: ``keras`` with op determinism, as ciml trains by default.
* ``keras``: the same model (Flatten, Normalization with the same
  statistics, 100/100/100 ReLU with dropout, softmax, Adam, the same batch
  size, balanced class weights, validation on the dev split) built by hand
  and trained with ``model.fit`` on in-memory numpy arrays.
* ``keras-spe``: ``keras`` compiled with the same ``steps_per_execution``
  as ciml's default: the like-for-like baseline for ciml's own overhead.

Each variant runs in its own fresh interpreter (op determinism is a
process-wide switch), alternating, ``--repeat`` times; the median and the
best run are reported (on a shared machine, other work slows single runs).
Examples/s = training examples x epochs / seconds in ``fit`` (wall clock),
and per CPU second of the process (all its threads).  TensorFlow is imported
before the clock starts in every variant (ciml imports it lazily, inside
``fit``); the first epoch's tracing is inside it in every variant.

    python benchmarks/bench_train.py [--epochs 3] [--repeat 2] [--batch-size 64]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

N_TRAIN, N_DEV, N_TEST = 20_000, 2_000, 2_000
STEPS, FEATURES = 10, 100


def make_dataset(root):
    """A real ciml dataset (``Dataset.open`` reads it) with a learnable signal."""
    from ciml.dataset import Dataset, store
    from ciml.paths import DataPath

    dp = DataPath(root)
    path = dp.dataset("bench")
    if path.is_dir():
        return dp
    rng = np.random.default_rng(0)
    sizes = {"training": N_TRAIN, "dev": N_DEV, "test": N_TEST}
    writer = store.DatasetWriter(path, sizes, (STEPS, FEATURES))
    w = rng.normal(size=(STEPS, FEATURES)).astype(np.float32)
    for split, n in sizes.items():
        for start in range(0, n, writer.chunk):
            m = min(writer.chunk, n - start)
            X = rng.normal(size=(m, STEPS, FEATURES)).astype(np.float32)
            score = (X * w).sum(axis=(1, 2)) / np.sqrt(w.size)
            y = (score > 1.6).astype(np.int64)  # about 5% "failed"
            writer.write(split, start, X, y, [f"{split}-{start + i}" for i in range(m)],
                         np.full(m, STEPS))
    attrs = {"name": "bench", "config": {"class_label": "status", "build_name": "bench"},
             "features": [f"f{i}" for i in range(FEATURES)], "classes": ["passed", "failed"],
             "axis": "time", "steps": [str(i) for i in range(STEPS)], "chain": [],
             "splits": list(sizes), "counts": sizes, "fingerprint": "bench",
             "provenance": {}}
    writer.finish(sizes, attrs)
    ds = Dataset.open(dp, "bench")
    print(f"dataset: {ds.split('training').X.shape} float32, chunks "
          f"{ds.split('training').X.chunks}, failed share "
          f"{ds.split('training').y.mean():.3f}", file=sys.stderr)
    return dp


def run_ciml(root, epochs, batch_size, unbatch=False, deterministic=True):
    import ciml_plugins.estimators.keras as kest
    from ciml.experiment import Experiment
    from ciml.model import train_model


    if unbatch:
        import tensorflow as tf

        tf.data.Dataset.rebatch = lambda self, b, drop_remainder=False: \
            self.unbatch().batch(b, drop_remainder=drop_remainder)
    # Import TensorFlow before the clock starts, as run_keras does: ciml
    # imports it lazily inside fit, and its 2-3 s are not training.
    kest._tf()
    timings = {}
    original_fit = kest._KerasEstimator.fit

    def timed_fit(self, *a, **kw):
        t, c = time.perf_counter(), time.process_time()
        out = original_fit(self, *a, **kw)
        timings["fit_s"] = time.perf_counter() - t
        timings["fit_cpu_s"] = time.process_time() - c
        return out

    kest._KerasEstimator.fit = timed_fit
    Experiment.create("bench", "dnn", {"epochs": epochs, "patience": 0,
                                       "batch_size": batch_size,
                                       "deterministic": deterministic}).save(root, force=True)
    t = time.perf_counter()
    metrics = train_model(root, "bench", "bench", seed=0, progress=False)
    total = time.perf_counter() - t
    return {"fit_s": timings["fit_s"], "fit_cpu_s": timings["fit_cpu_s"],
            "train_model_s": total,
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def run_keras(root, epochs, batch_size, deterministic=False, steps_per_execution=1):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    from ciml.dataset import Dataset
    from ciml_plugins.estimators.keras import class_weights, feature_moments

    ds = Dataset.open(root, "bench")
    tr, dev = ds.split("training"), ds.split("dev")
    X, y = np.asarray(tr.X[...]), tr.y
    Xd, yd = np.asarray(dev.X[...]), dev.y
    keras.utils.set_random_seed(0)
    t, c = time.perf_counter(), time.process_time()
    mean, var = feature_moments(X, 0, len(X))
    norm = keras.layers.Normalization(mean=mean, variance=var)
    inputs = keras.Input(shape=X.shape[1:])
    h = norm(keras.layers.Flatten()(inputs))
    for _ in range(3):
        h = keras.layers.Dense(100, activation="relu",
                               kernel_regularizer=keras.regularizers.L2(1e-4))(h)
        h = keras.layers.Dropout(0.2)(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(), weighted_metrics=[],
                  steps_per_execution=steps_per_execution)
    cw = dict(enumerate(class_weights(y, 2)))
    model.fit(X, y, batch_size=batch_size, epochs=epochs, class_weight=cw,
              validation_data=(Xd, yd), shuffle=True, verbose=0)
    return {"fit_s": time.perf_counter() - t, "fit_cpu_s": time.process_time() - c}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", default=None, help="Keep the dataset here")
    parser.add_argument("--variants", nargs="+",
                        default=["keras", "keras-spe", "ciml", "ciml-stream"],
                        help="keras keras-det keras-spe ciml ciml-stream ciml-unbatch ciml-nodet")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:
        if args.step == "ciml-stream":
            os.environ["CIML_TRAIN_MEMORY_BYTES"] = "0"
        if args.step in ("keras", "keras-det", "keras-spe"):
            spe = 1
            if args.step == "keras-spe":
                from ciml_plugins.estimators.keras import DNNEstimator

                spe = DNNEstimator().steps_per_execution
            out = run_keras(args.dir, args.epochs, args.batch_size,
                            deterministic=args.step == "keras-det", steps_per_execution=spe)
        else:
            out = run_ciml(args.dir, args.epochs, args.batch_size,
                           unbatch=args.step == "ciml-unbatch",
                           deterministic=args.step != "ciml-nodet")
        print("RESULT " + json.dumps(out))
        return 0

    root = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="bench-train-"))
    make_dataset(root)
    results = {v: [] for v in args.variants}
    for r in range(args.repeat):
        for variant in args.variants:
            proc = subprocess.run(
                [sys.executable, __file__, "--step", variant, "--dir", str(root),
                 "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)],
                capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{variant} failed")
            res = json.loads(lines[-1][7:])
            res["examples_per_s"] = N_TRAIN * args.epochs / res["fit_s"]
            res["examples_per_cpu_s"] = N_TRAIN * args.epochs / res["fit_cpu_s"]
            results[variant].append(res)
            print(f"run {r + 1} {variant:13s} fit {res['fit_s']:6.1f} s  "
                  f"{res['examples_per_s']:8.0f} examples/s  "
                  f"{res['examples_per_cpu_s']:8.0f} examples/CPU-s"
                  + (f"  (train-model total {res['train_model_s']:.1f} s, test accuracy "
                     f"{res['accuracy']:.3f}, macro-F1 {res['macro_f1']:.3f})"
                     if "train_model_s" in res else ""), flush=True)
    print(f"\n{N_TRAIN} x {STEPS * FEATURES} features, {args.epochs} epochs, batch "
          f"{args.batch_size}, median of {args.repeat}:")
    for key, unit in (("examples_per_s", "examples/s (wall clock)"),
                      ("examples_per_cpu_s", "examples per CPU second (all threads)")):
        print(f" {unit}:")
        med = {v: statistics.median(r[key] for r in rs) for v, rs in results.items()}
        best = {v: max(r[key] for r in rs) for v, rs in results.items()}
        for variant in results:
            ratio = (f"  {med[variant] / med['keras']:.2f}x plain Keras (best run "
                     f"{best[variant]:.0f}, {best[variant] / best['keras']:.2f}x)"
                     if "keras" in med else "")
            print(f"  {variant:13s} {med[variant]:8.0f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
