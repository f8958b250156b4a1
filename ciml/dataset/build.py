"""The build-dataset stage: cached runs -> normalizer chain -> a Zarr dataset, streaming.

Runs are read from the raw cache (parsed series, never CSV), pushed
through the stateless head of the normalizer chain in worker processes,
and written a chunk of examples at a time, so memory does not grow with
the number of runs.  The stateful tail (scaling) is fitted on the
training split while it streams by, then the training chunks are rescaled
in place and dev/test are scaled as they are written.  Everything goes to
a hidden folder beside the datasets and is moved into place only when
complete.

Features are fixed before the build, from column names only (the raw
cache index, never the series): the columns matching ``--features-regex``
(all columns without one) that are present in *every* selected run,
sorted by name.  dstat 0.7.2 has ``cpu_hiq cpu_siq`` where 0.7.3 and
0.7.4 have ``cpu_stl``, so a cache mixing versions loses those columns,
reported once as ``dropped_features``, rather than half of its runs.  A
run with no matching column at all is left out (``missing-columns``).
The sorted list is pinned in the filter step of the stored chain, so
prediction selects the same columns, in the same order, by name.
"""

import collections
import concurrent.futures
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid

import numpy as np

import ciml
from ciml import fileutil, human_labels
from ciml.dataset import labels as labels_mod
from ciml.dataset import store
from ciml.dataset.profile import fit_profile
from ciml.errors import AlreadyExistsError, CimlError, ConfigError, MetricsUnavailable

LOG = logging.getLogger(__name__)

#: Passed training runs needed to profile "normal" on them alone.
MIN_PROFILE_RUNS = 10

SPLITS = ("training", "dev", "test")


# -- options -----------------------------------------------------------------


def parse_slicer(slicer):
    """``START:STOP[:STEP]`` (each part optional) -> :class:`slice`."""
    if slicer in (None, "", ":"):
        return slice(None)
    if isinstance(slicer, slice):
        return slicer
    parts = str(slicer).split(":")
    if len(parts) > 3:
        raise ConfigError(f"bad slicer {slicer!r}: use START:STOP")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ConfigError(f"bad slicer {slicer!r}: START and STOP must be integers") from None
    if len(values) == 1:
        # A bare number: the first N runs, not the single run N.
        return slice(None, values[0])
    return slice(*values)


def check_tdt_split(tdt_split):
    try:
        values = tuple(int(v) for v in tdt_split)
    except (TypeError, ValueError):
        raise ConfigError(f"bad --tdt-split {tdt_split!r}: give three integers") from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) != 10:
        raise ConfigError(
            f"--tdt-split {' '.join(map(str, values))}: training, dev and test must be "
            "three non-negative integers that sum to 10 (e.g. 6 2 2)")
    if values[0] == 0:
        raise ConfigError("--tdt-split: the training share must not be 0 "
                          "(scaling is fitted on the training split)")
    return values


def split_runs(runs, tdt_split, split="random", seed=0):
    """Assign runs (sorted by start, id) to training, dev and test.

    The sizes follow the original: ``int(n * training / 10)`` training runs,
    ``int(n * dev / 10)`` dev runs, the rest test.  ``random`` is a seeded
    permutation; ``time`` trains on the oldest runs and tests on the newest.
    """
    n = len(runs)
    n_train = int(n * tdt_split[0] / 10)
    n_dev = int(n * tdt_split[1] / 10)
    if tdt_split[2] == 0:
        n_dev = n - n_train
    if split == "random":
        order = np.random.default_rng(seed).permutation(n)
        parts = (np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_dev]),
                 np.sort(order[n_train + n_dev:]))
    elif split == "time":
        idx = np.arange(n)
        parts = idx[:n_train], idx[n_train:n_train + n_dev], idx[n_train + n_dev:]
    else:
        raise ConfigError(f"bad --split {split!r}: choose random or time")
    return {name: [runs[i] for i in part] for name, part in zip(SPLITS, parts)}


# -- the chain ---------------------------------------------------------------


def make_step(spec):
    """A normalizer from ``{"name", "params", "state"}``."""
    from ciml.plugins import get_manager

    cls = get_manager().get("normalizer", spec["name"])
    step = cls.from_options(spec.get("params") or {})
    if spec.get("state"):
        step.set_state(spec["state"])
    return step


def make_chain(specs):
    return [make_step(spec) for spec in specs]


def step_spec(step):
    return {"name": step.name, "params": step.get_params(include_secrets=False),
            "state": step.get_state()}


def _as_spec(item):
    if isinstance(item, str):
        return {"name": item, "params": {}}
    if isinstance(item, dict):
        return {"name": item["name"], "params": dict(item.get("params") or {})}
    return {"name": item.name, "params": item.get_params()}


def default_chain(features_regex=None, sample_interval=None, aggregation_functions=None,
                  scale="range", normalizers=None, scale_per="cell"):
    """The chain specs for the build options (columns are pinned later)."""
    from ciml_plugins.normalizers.builtin import normalized_length

    specs = [{"name": "filter", "params": {"regex": features_regex}}]
    if sample_interval:
        specs.append({"name": "resample", "params": {"interval": sample_interval}})
    # Third-party steps work on the time-indexed series (a derivative, an FFT).
    specs.extend(_as_spec(n) for n in normalizers or ())
    if aggregation_functions:
        specs.append({"name": "aggregate",
                      "params": {"functions": list(aggregation_functions)}})
    else:
        specs.append({"name": "fixed-length",
                      "params": {"length": normalized_length(sample_interval)}})
    if scale and scale != "none":
        specs.append({"name": "scale", "params": {"method": scale, "per": scale_per}})
    return specs


def split_chain(chain):
    """(stateless head, tail from the first stateful step)."""
    for i, step in enumerate(chain):
        if step.stateful:
            return chain[:i], chain[i:]
    return chain, []


def transform_with_length(steps, frame):
    """Run ``steps`` over a run's frame; returns ``(frame, length)``.

    ``length`` is the number of time steps the series had just before it
    lost its time axis (cut/pad or aggregation), or at the end if it kept
    it: what a dataset stores as the example's length.
    """
    import pandas as pd

    length = len(frame)
    if length == 0:
        # Cut/pad would turn it into an example of zeros.
        raise MetricsUnavailable("empty", "the run has no samples")
    for step in steps:
        frame = step.transform(frame)
        if isinstance(frame.index, pd.DatetimeIndex):
            length = len(frame)
    return frame, length


def apply_head(head, frame):
    """Run the stateless steps; returns (values float32, index labels, columns, length).

    ``length`` is the number of time steps the series had just before it
    lost its time axis (cut/pad or aggregation): the original's example size.
    """
    frame, length = transform_with_length(head, frame)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise MetricsUnavailable("empty", "no samples or no columns after normalization")
    return frame.to_numpy(dtype="float32"), frame.index, [str(c) for c in frame.columns], length


def apply_tail(tail, values, index, columns):
    """Run the stateful tail on a batch ``(n, t, f)``; returns float32."""
    import pandas as pd

    for step in tail:
        if hasattr(step, "transform_array"):
            values = step.transform_array(values)
        else:
            values = np.stack([
                step.transform(pd.DataFrame(v, index=index, columns=columns))
                .to_numpy(dtype="float32") for v in values])
    return np.asarray(values, dtype="float32")


# -- per-run work (worker processes) ---------------------------------------

_WORKER = {}


def _init_worker(cache_root, head_specs):
    from ciml.cache import RawCache
    from ciml.paths import DataPath

    _WORKER["cache"] = RawCache(DataPath(cache_root))
    _WORKER["head"] = make_chain(head_specs)


def _load(cache, head, run_id):
    """(run_id, values, length, error) for one run; never raises for bad data."""
    try:
        frame = cache.frame(run_id)
        values, _index, _columns, length = apply_head(head, frame)
        return run_id, values, length, None
    except MetricsUnavailable as exc:
        return run_id, None, None, (exc.reason, str(exc))
    except CimlError as exc:
        return run_id, None, None, ("error", str(exc))
    except Exception as exc:  # a bad series must not stop the build
        return run_id, None, None, ("error", f"{type(exc).__name__}: {exc}")


def _worker_load(run_id):
    return _load(_WORKER["cache"], _WORKER["head"], run_id)


class _Loader:
    """Ordered, bounded streaming of per-run results: serial, threads or processes."""

    def __init__(self, cache, cache_root, head_specs, workers, executor):
        self.cache = cache
        self.head = make_chain(head_specs)
        self.workers = workers
        self.kind = executor
        self.pool = None
        if executor == "process":
            import multiprocessing

            # forkserver: no inherited threads (zarr runs an event loop thread)
            # or open SQLite handles in the workers.
            ctx = multiprocessing.get_context("forkserver")
            self.pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker,
                initargs=(str(cache_root), head_specs))
        elif executor == "thread":
            self.pool = concurrent.futures.ThreadPoolExecutor(workers)

    def map(self, run_ids):
        if self.pool is None:
            for run_id in run_ids:
                yield _load(self.cache, self.head, run_id)
            return
        window = collections.deque()
        limit = 4 * self.workers
        fn = _worker_load if self.kind == "process" else (
            lambda rid: _load(self.cache, self.head, rid))
        for run_id in run_ids:
            window.append(self.pool.submit(fn, run_id))
            if len(window) >= limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# -- the build ---------------------------------------------------------------


def _clean_leftovers(datasets_dir, name):
    """Remove temp folders of builds of ``name`` whose process is gone."""
    if not datasets_dir.is_dir():
        return
    for entry in datasets_dir.iterdir():
        for prefix in (f".tmp-{name}-", f".{name}.old-"):
            if entry.name.startswith(prefix):
                try:
                    pid = int(entry.name[len(prefix):].split("-")[0])
                except ValueError:
                    continue
                if not fileutil.pid_alive(pid):
                    shutil.rmtree(entry, ignore_errors=True)


def _progress(progress, total, desc):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=None if progress in (
        None, True) else True, leave=False)


#: Fitted values with more elements than this are stored as arrays.
STATE_ARRAY_MIN = 256
ARRAY_REF = "$array"


def externalize_state(specs):
    """Move large fitted values out of the chain specs: (specs, {key: ndarray})."""
    arrays, out = {}, []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        state = dict(spec.get("state") or {})
        for key, value in state.items():
            if isinstance(value, list):
                value = np.asarray(value)
                if value.dtype.kind in "fiub" and value.size > STATE_ARRAY_MIN:
                    ref = f"{i}-{spec['name']}-{key}"
                    arrays[ref] = value
                    state[key] = {ARRAY_REF: ref}
        spec["state"] = state
        out.append(spec)
    return out, arrays


def resolve_state(specs, load):
    """The chain specs with array references replaced by ``load(ref)``."""
    out = []
    for spec in specs:
        spec = dict(spec)
        spec["state"] = {k: load(v[ARRAY_REF]) if isinstance(v, dict) and ARRAY_REF in v
                         else v for k, v in (spec.get("state") or {}).items()}
        out.append(spec)
    return out


def fingerprint(attrs, ids, state_arrays=None):
    """A stable digest of what the dataset contains (not when it was made)."""
    digest = hashlib.sha256()
    for key in sorted(state_arrays or {}):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(state_arrays[key]).tobytes())
    digest.update(json.dumps({k: attrs[k] for k in ("config", "chain", "classes",
                                                     "features")},
                             sort_keys=True, default=str).encode())
    for split in SPLITS:
        digest.update(split.encode())
        digest.update("\n".join(ids.get(split, ())).encode())
    return digest.hexdigest()[:16]


def build_dataset(data_path, name, build_name, *, slicer=None, features_regex=None,
                  sample_interval=None, aggregation_functions=None, class_label="status",
                  tdt_split=(6, 2, 2), split="random", seed=0, force=False,
                  normalizers=None, progress=None, visualize=False, scale="range",
                  workers=None, executor=None, cache=None, plot_dir=None,
                  fixed_length=None, scale_per="auto"):
    """Build the dataset ``name`` from the cached runs of ``build_name``; returns a summary.

    ``normalizers``: extra normalizer steps (names, ``{"name", "params"}``
    dicts or instances) run after resampling, before cut/pad or aggregation.
    ``scale``: ``range`` (the original), ``zscore`` or ``none``.
    ``scale_per``: ``cell`` (per time step or aggregate, and feature),
    ``feature`` (one scale per feature over all time steps) or ``auto``
    (``feature`` for time series, ``cell`` for aggregates).
    ``fixed_length``: time steps per example (time series); default: what
    the training runs need (:mod:`ciml.dataset.length`).
    ``executor``: ``process``, ``thread`` or ``serial`` (default: processes
    when there are enough runs and cores).  ``cache``: a raw cache object
    (default: :class:`ciml.cache.RawCache` of ``data_path``).
    """
    from ciml.paths import DataPath

    started = time.monotonic()
    if not isinstance(data_path, DataPath):
        data_path = DataPath(data_path)
    final = data_path.dataset(name)
    tdt = check_tdt_split(tdt_split)
    if split not in ("random", "time"):
        raise ConfigError(f"bad --split {split!r}: choose random or time")
    if store.is_dataset(final) and not force:
        raise AlreadyExistsError(f"dataset {name!r} already exists; use --force to replace it")
    if final.exists() and not force and any(final.iterdir()):
        raise AlreadyExistsError(f"{final} exists (not a complete dataset); use --force "
                                 "to replace it")
    sl = parse_slicer(slicer)
    if scale_per in (None, "auto"):
        scale_per = "cell" if aggregation_functions else "feature"
    head_specs_all = default_chain(features_regex, sample_interval, aggregation_functions,
                                   scale, normalizers, scale_per=scale_per)
    chain = make_chain(head_specs_all)  # validates names and parameters early

    if cache is None:
        from ciml.cache import RawCache

        raw = RawCache(data_path)
        try:
            return build_dataset(
                data_path, name, build_name, slicer=slicer, features_regex=features_regex,
                sample_interval=sample_interval,
                aggregation_functions=aggregation_functions, class_label=class_label,
                tdt_split=tdt, split=split, seed=seed, force=force,
                normalizers=normalizers, progress=progress, visualize=visualize,
                scale=scale, workers=workers, executor=executor, cache=raw,
                plot_dir=plot_dir, fixed_length=fixed_length, scale_per=scale_per)
        finally:
            raw.close()
    from ciml.cache import RawCache

    # Worker processes open their own RawCache: only the real one can travel.
    cache_is_raw = isinstance(cache, RawCache)
    runs = sorted(cache.runs(build_name), key=lambda r: (_start_key(r), r.id))[sl]
    # What a person said about a run beats what its source said.
    runs, human = human_labels.apply(cache, runs)
    if not runs:
        raise CimlError(f"no cached runs for build name {build_name!r} "
                        f"(slice {slicer or ':'}); run cache-data first")

    skipped = []
    labelled = []
    for run in runs:
        label = labels_mod.run_label(run, class_label)
        if label is None:
            skipped.append({"run_id": run.id, "split": None, "reason": "unlabelled",
                            "message": f"run has no {class_label!r}"})
        else:
            labelled.append((run, label))
    if not labelled:
        raise CimlError(f"none of the {len(runs)} runs has a {class_label!r} label")
    head, tail = split_chain(chain)
    filter_step = head[0]
    selection = select_features(cache, [run.id for run, _ in labelled], filter_step)
    for run_id in selection["unmatched"]:
        skipped.append({"run_id": run_id, "split": None, "reason": "missing-columns",
                        "message": _no_match_message(features_regex)})
    unmatched = set(selection["unmatched"])
    labelled = [(run, label) for run, label in labelled if run.id not in unmatched]
    if not selection["columns"]:
        raise CimlError(_no_common_message(build_name, features_regex, selection))
    # Pinned by name: every later run, here or at prediction time, gives these.
    filter_step.columns = selection["columns"]
    dropped = selection["dropped"]
    if dropped:
        LOG.warning("%s: %d feature(s) not in every run left out: %s", name, len(dropped),
                    ", ".join(f"{c} (missing in {n} of {selection['runs']} runs)"
                              for c, n in dropped.items()))

    classes = labels_mod.class_names(class_label, [lb for _, lb in labelled])
    code = {c: i for i, c in enumerate(classes)}
    parts = split_runs(labelled, tdt, split, seed)
    splits = tuple(s for s, share in zip(SPLITS, tdt) if share > 0)

    length_from = _set_fixed_length(head, cache, parts["training"], sample_interval,
                                    fixed_length)

    # The example layout (time steps or aggregates, output feature labels)
    # from the first training run that goes through the head.
    features = index_labels = None
    probe_rejects = {}
    for run, _ in parts["training"]:
        try:
            _values, index, features, _ = apply_head(head, cache.frame(run.id))
            index_labels = [str(i) for i in index]
            break
        except (MetricsUnavailable, CimlError, ValueError, KeyError) as exc:
            probe_rejects[run.id] = str(exc)
            continue
    if features is None:
        raise CimlError(
            f"no training run of {build_name!r} could be normalized; e.g. "
            + "; ".join(f"{k}: {v}" for k, v in list(probe_rejects.items())[:3]))
    head_specs = [step_spec(s) for s in head]
    example_shape = (len(index_labels), len(features))
    time_axis = not aggregation_functions

    datasets_dir = data_path.datasets
    datasets_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(datasets_dir, name)
    tmp = datasets_dir / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    total = sum(len(parts[s]) for s in splits)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    if executor in (None, "auto"):
        executor = _choose_executor(cpus, total, example_shape, cache_is_raw)
    if executor == "process" and not cache_is_raw:
        executor = "thread"
    workers = workers or cpus

    loader = _Loader(cache, data_path.root, head_specs, workers, executor)
    counts, ids_by_split = {}, {}
    try:
        writer = store.DatasetWriter(tmp, {s: len(parts[s]) for s in splits}, example_shape)
        staging = _Staging(tmp / "training.staging", example_shape)
        bar = _progress(progress, total, f"building {name}")
        for split_name in splits:
            stream = _SplitStream(split_name, writer, staging, tail, features, index_labels,
                                  example_shape)
            labels_of = {run.id: code[label] for run, label in parts[split_name]}
            for run_id, values, length, error in loader.map(list(labels_of)):
                bar.update(1)
                if error is None:
                    error = stream.add(run_id, values, labels_of[run_id], length)
                if error is not None:
                    skipped.append({"run_id": run_id, "split": split_name,
                                    "reason": error[0], "message": error[1]})
            written, ids_written = stream.close()
            if split_name == "training":
                if written == 0:
                    raise CimlError(f"no usable training run for {name!r}; "
                                    f"{len(skipped)} run(s) skipped")
                if tail:
                    _finish_tail_fit(writer, staging, tail, written, index_labels, features)
                staging.close()
            counts[split_name] = written
            ids_by_split[split_name] = ids_written
        bar.close()
        loader.close()

        # What a new run is compared with to say how unusual it is: the
        # training runs that passed, which is what normal means to a CI
        # operator, or all of them when too few passed.
        train = writer.arrays["training"]
        n_train = counts["training"]
        status_of = {run.id: run.status for run, _ in parts["training"]}
        passed = np.array([status_of.get(i) == "passed" for i in ids_by_split["training"]])
        use_passed = passed.sum() >= MIN_PROFILE_RUNS
        profile = fit_profile(train["X"], np.asarray(train["length"][:n_train]),
                              "time" if time_axis else "aggregate", index_labels, features,
                              chunk=writer.chunk, reference=passed if use_passed else None,
                              reference_name="passed training runs" if use_passed
                              else "training runs")

        chain_specs, state_arrays = externalize_state(
            head_specs + [step_spec(s) for s in tail])
        config = {
            "build_name": build_name, "slicer": slicer or ":",
            "features_regex": features_regex, "sample_interval": sample_interval,
            "aggregation_functions": list(aggregation_functions or []) or None,
            "class_label": class_label, "tdt_split": list(tdt), "split": split,
            "seed": seed, "scale": scale,
            "normalizers": [_as_spec(n) for n in normalizers or ()],
            "normalized_length": example_shape[0] if time_axis else None,
            "fixed_length_from": length_from, "scale_per": scale_per,
        }
        sources = sorted({str(getattr(r, "source", None) or "unknown") for r, _ in labelled})
        balance = {s: _balance(classes, _codes_of(parts[s], ids_by_split[s], code))
                   for s in splits}
        attrs = {
            "name": name, "config": config, "features": features, "classes": classes,
            "axis": "time" if time_axis else "aggregate", "steps": index_labels,
            "chain": chain_specs, "splits": list(splits), "counts": counts,
            "class_balance": balance,
            "profile": profile,
            "dropped_features": list(dropped),
            "skipped": skipped,
            "provenance": {
                "source": sources[0] if len(sources) == 1 else sources,
                "query": {"build_name": build_name, "slicer": slicer or ":"},
                "run_count": len(runs), "example_count": sum(counts.values()),
                "human_labels": human_labels.human_count(
                    class_label, [i for s in splits for i in ids_by_split[s]], human),
                "ciml_version": ciml.__version__,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            },
        }
        attrs["fingerprint"] = fingerprint(attrs, ids_by_split, state_arrays)
        writer.finish(counts, attrs, state_arrays)
        if store.is_dataset(final) and not force:
            raise AlreadyExistsError(f"dataset {name!r} appeared meanwhile; use --force")
        fileutil.replace_dir(tmp, final)
    except BaseException:
        loader.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    summary = {
        "name": name, "path": str(final), "splits": counts, "classes": classes,
        "features": features, "example_shape": list(example_shape),
        "class_balance": attrs["class_balance"], "config": config,
        "runs_selected": len(runs), "skipped": skipped,
        "skipped_by_reason": skipped_by_reason(skipped),
        "dropped_features": list(dropped),
        "fingerprint": attrs["fingerprint"],
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    log_skipped(name, skipped)
    from ciml.plugins import get_manager

    get_manager().call_lifecycle("ciml_dataset_built", name=name, path=final,
                                 summary=summary)
    if visualize:
        from ciml.dataset.plot import plot_dataset

        summary["plots"] = [str(p) for p in plot_dataset(data_path, name,
                                                         output_dir=plot_dir)]
    return summary


def _set_fixed_length(head, cache, training, sample_interval, fixed_length):
    """Set the cut/pad step's length; returns where it came from (``None``: no such step)."""
    from ciml.dataset import length as length_mod

    step = next((s for s in head if getattr(s, "name", None) == "fixed-length"), None)
    if step is None:
        return None
    if fixed_length:
        step.length = int(fixed_length)
        return "--fixed-length"
    needed = length_mod.training_length(cache, [run.id for run, _ in training],
                                        sample_interval)
    if needed is None:
        return "default"
    step.length = needed
    return f"p{length_mod.PERCENTILE:g} of the training runs' lengths"


# -- features and reports ------------------------------------------------------


def run_columns(cache, run_id):
    """The column names of a cached run, without loading its series if possible.

    :meth:`ciml.cache.RawCache.info` has them from the index (written at
    ``store`` time); a cache without them (or a test double) loads the frame.
    """
    info = getattr(cache, "info", None)
    if info is not None:
        columns = (info(run_id) or {}).get("columns")
        if columns is not None:
            return [str(c) for c in columns]
    return [str(c) for c in cache.frame(run_id).columns]


def select_features(cache, run_ids, filter_step):
    """The features every run has, among those ``filter_step`` selects.

    Returns a dict: ``columns`` (sorted by name: an order that does not
    depend on which dstat version wrote the first run, so datasets built
    from other slices line up), ``dropped`` (``{column: runs lacking it}``
    for the columns matched in some runs only), ``unmatched`` (run ids with
    no matching column), ``unreadable`` (run ids whose columns could not be
    read: the build reports them with the real reason when it loads them)
    and ``runs`` (how many runs the intersection was taken over).
    """
    seen = collections.Counter()
    unmatched, unreadable, n = [], [], 0
    for run_id in run_ids:
        try:
            columns = run_columns(cache, run_id)
        except (MetricsUnavailable, CimlError, OSError, ValueError, KeyError):
            unreadable.append(run_id)
            continue
        matched = set(filter_step.select(columns))
        if not matched:
            unmatched.append(run_id)
            continue
        seen.update(matched)
        n += 1
    common = sorted(c for c, k in seen.items() if k == n)
    dropped = {c: n - k for c, k in sorted(seen.items()) if k < n}
    return {"columns": common, "dropped": dropped, "unmatched": unmatched,
            "unreadable": unreadable, "runs": n}


def _no_match_message(features_regex):
    if features_regex:
        return f"no column matches --features-regex {features_regex!r}"
    return "the run has no metric column"


def _no_common_message(build_name, features_regex, selection):
    what = f" matching --features-regex {features_regex!r}" if features_regex else ""
    if not selection["runs"]:
        return (f"no run of {build_name!r} has a metric column{what} "
                f"({len(selection['unmatched'])} without one, "
                f"{len(selection['unreadable'])} unreadable)")
    return (f"no metric column{what} is present in all {selection['runs']} runs of "
            f"{build_name!r}; columns present in some runs only: "
            + ", ".join(list(selection["dropped"])[:10])
            + " (pick runs of one layout with --slicer)")


def skipped_by_reason(skipped):
    """``{reason: count}`` of skipped runs, most frequent first."""
    return dict(collections.Counter(s["reason"] for s in skipped).most_common())


#: How many run ids the one-line-per-reason report names.
REPORT_IDS = 3


def log_skipped(name, skipped):
    """One warning per reason (count, a few ids); one line per run at DEBUG.

    cliff shows INFO by default and DEBUG with ``-v``: the per-run lines
    are for ``-v``.
    """
    by_reason = collections.defaultdict(list)
    for skip in skipped:
        by_reason[skip["reason"]].append(skip)
    for reason, count in skipped_by_reason(skipped).items():
        items = by_reason[reason]
        ids = ", ".join(s["run_id"] for s in items[:REPORT_IDS])
        more = f" and {count - REPORT_IDS} more" if count > REPORT_IDS else ""
        LOG.warning("%s: %d run(s) left out, %s: %s%s (%s)", name, count, reason,
                    ids, more, items[0]["message"])
    for skip in skipped:
        LOG.debug("%s: left out %s (%s split): %s: %s", name, skip["run_id"],
                 skip["split"] or "no", skip["reason"], skip["message"])


#: Examples at least this large travel badly between processes (pickled through
#: a pipe); threads win there, as numpy and zarr release the GIL.
PROCESS_MAX_EXAMPLE_BYTES = 256 * 1024


def _choose_executor(cpus, total, example_shape, cache_is_raw):
    """Measured on 2 cores (benchmarks/bench_build_dataset.py), 4000 one-hour runs:
    at 1 s (5500 x 31) threads took 0.5x the time of processes; at 1min
    (92 x 31) processes took 0.7x the time of threads."""
    if cpus < 2 or total < 64:
        return "serial"
    if not cache_is_raw or int(np.prod(example_shape)) * 4 >= PROCESS_MAX_EXAMPLE_BYTES:
        return "thread"
    return "process"


def _start_key(run):
    start = getattr(run, "start", None)
    if start is None:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    if start.tzinfo is None:
        return start.replace(tzinfo=dt.timezone.utc)
    return start


def _fit_frames(step, batch, index, columns):
    import pandas as pd

    for values in batch:
        step.partial_fit(pd.DataFrame(values, index=index, columns=columns))


class _SplitStream:
    """Buffers one split's examples into whole chunks and writes them.

    Training chunks feed the fit of the first stateful step and wait,
    unscaled, in the staging file; other splits are scaled as they pass.
    """

    def __init__(self, split, writer, staging, tail, features, index, example_shape):
        self.split, self.writer, self.staging, self.tail = split, writer, staging, tail
        self.features, self.index, self.shape = features, index, tuple(example_shape)
        self.fitting = split == "training"
        self.written = 0
        self.ids = []
        self.buf = ([], [], [], [])  # values, codes, ids, lengths

    def add(self, run_id, values, code, length):
        """Buffer one example; returns an ``(reason, message)`` error or ``None``."""
        if values.shape != self.shape:
            return "shape", f"example shape {values.shape}, expected {self.shape}"
        for buf, item in zip(self.buf, (values, code, run_id, length)):
            buf.append(item)
        if len(self.buf[0]) >= self.writer.chunk:
            self.flush()
        return None

    def flush(self):
        xs, codes, ids, lengths = self.buf
        if not xs:
            return
        batch = np.stack(xs)
        if self.tail and self.fitting:
            first = self.tail[0]
            if hasattr(first, "partial_fit_array"):
                first.partial_fit_array(batch, self.features)
            else:
                _fit_frames(first, batch, self.index, self.features)
            # Unscaled training examples wait in a plain file until the
            # statistics are complete: cheaper than compressing them twice.
            self.staging.append(batch)
            batch = None
        elif self.tail:
            batch = apply_tail(self.tail, batch, self.index, self.features)
        self.writer.write(self.split, self.written, batch, codes, ids, lengths)
        self.written += len(codes)
        self.ids.extend(ids)
        for buf in self.buf:
            buf.clear()

    def close(self):
        self.flush()
        return self.written, self.ids


class _Staging:
    """A plain float32 file of ``(n, *shape)`` examples, appended then read by blocks."""

    def __init__(self, path, shape):
        self.path = path
        self.shape = tuple(shape)
        self.size = int(np.prod(shape)) * 4
        self.fh = None

    def append(self, batch):
        if self.fh is None:
            self.fh = open(self.path, "w+b")
        self.fh.write(np.ascontiguousarray(batch, dtype="float32").tobytes())

    def read(self, start, stop):
        self.fh.flush()
        self.fh.seek(start * self.size)
        data = self.fh.read((stop - start) * self.size)
        return np.frombuffer(data, dtype="float32").reshape(stop - start, *self.shape)

    def close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None
            self.path.unlink(missing_ok=True)


def _finish_tail_fit(writer, staging, tail, count, index, columns):
    """Training statistics are complete: scale the staged training examples into X.

    Only the first tail step is fitted in the streaming pass; later stateful
    steps are fitted here, one chunk at a time, on the output of the ones
    before them.
    """
    blocks = [(start, min(count, start + writer.chunk))
              for start in range(0, count, writer.chunk)]
    for i in range(1, len(tail)):
        if tail[i].stateful:
            for start, stop in blocks:
                part = apply_tail(tail[:i], staging.read(start, stop), index, columns)
                if hasattr(tail[i], "partial_fit_array"):
                    tail[i].partial_fit_array(part, columns)
                else:
                    _fit_frames(tail[i], part, index, columns)
    for start, stop in blocks:
        writer.write_x("training", start,
                       apply_tail(tail, staging.read(start, stop), index, columns))


def _codes_of(members, ids, code):
    label = {run.id: lb for run, lb in members}
    return [code[label[i]] for i in ids]


def _balance(classes, codes):
    counts = np.bincount(np.asarray(codes, dtype="int64"), minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts)}
