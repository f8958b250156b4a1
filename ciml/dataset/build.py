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

import array
import collections
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import os
import time

import numpy as np

import ciml
from ciml import fileutil, human_labels, storage
from ciml.dataset import labels as labels_mod
from ciml.dataset import runs as runs_mod
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


def split_positions(n, tdt_split, split="random", seed=0):
    """Assign ``n`` runs (sorted by start, id) to training, dev and test.

    Returns ``{split: sorted positions in range(n)}``.  The sizes follow the
    original: ``int(n * training / 10)`` training runs, ``int(n * dev / 10)``
    dev runs, the rest test.  ``random`` is a seeded permutation; ``time``
    trains on the oldest runs and tests on the newest.
    """
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
    return dict(zip(SPLITS, parts))


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


def _selects_features(spec):
    from ciml.plugins import get_manager

    return bool(getattr(get_manager().get("normalizer", spec["name"]), "selects_features",
                        False))


def default_chain(features_regex=None, sample_interval=None, aggregation_functions=None,
                  scale="range", normalizers=None, scale_per="cell"):
    """The chain specs for the build options (columns are pinned later).

    The first step selects the features: the built-in ``filter`` (with
    ``features_regex``), or the one given normalizer that declares
    ``selects_features``, which then takes its place.
    """
    from ciml.base.normalizer import normalized_length

    extra = [_as_spec(n) for n in normalizers or ()]
    selectors = [s for s in extra if _selects_features(s)]
    if len(selectors) > 1:
        raise ConfigError("only one normalizer may select the features; got "
                          + ", ".join(s["name"] for s in selectors))
    if selectors:
        if features_regex:
            raise ConfigError(f"--features-regex is the built-in filter's option; normalizer "
                              f"{selectors[0]['name']!r} selects the features itself")
        specs = [selectors[0]]
        extra.remove(selectors[0])
    else:
        specs = [{"name": "filter", "params": {"regex": features_regex}}]
    if sample_interval:
        specs.append({"name": "resample", "params": {"interval": sample_interval}})
    # Third-party steps work on the time-indexed series (a derivative, an FFT).
    specs.extend(extra)
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


def _as_block(data):
    from ciml.series import Block, Series

    if isinstance(data, Block):
        return data
    if isinstance(data, Series):
        return Block.from_series(data)
    return Block.from_frame(data)


def _as_frame(data):
    from ciml.series import Block, Series

    if isinstance(data, Series):
        data = Block.from_series(data)
    return data.frame() if isinstance(data, Block) else data


def _rows(data):
    from ciml.series import Block, Series

    if isinstance(data, Series):
        return len(data.timestamps)
    return len(data.values) if isinstance(data, Block) else len(data)


def _is_timed(data):
    from ciml.series import Block, Series

    if isinstance(data, Series):
        return True
    if isinstance(data, Block):
        return data.timed
    import pandas as pd

    return isinstance(data.index, pd.DatetimeIndex)


#: Send every step a DataFrame, as before the array path (tests compare the two).
REFERENCE_FRAMES = False


def transform_block(steps, data, frames=None):
    """Run ``steps`` over a run; returns ``(block, length)``.

    ``data`` is a :class:`ciml.series.Series` (what the raw cache gives), a
    :class:`ciml.series.Block` or a DataFrame.  A step with
    ``transform_block`` (the built-in ones) works on arrays; any other gets
    a DataFrame.  ``frames=True`` sends every step a DataFrame (the
    reference the array path is tested against).  ``length`` is the number
    of time steps the series had just before it lost its time axis (cut/pad
    or aggregation), or at the end if it kept it: what a dataset stores as
    the example's length.
    """
    if frames is None:
        frames = REFERENCE_FRAMES
    state = data
    length = _rows(state)
    if length == 0:
        # Cut/pad would turn it into an example of zeros.
        raise MetricsUnavailable("empty", "the run has no samples")
    for step in steps:
        out = NotImplemented
        fast = None if frames else getattr(step, "transform_block", None)
        if fast is not None:
            out = fast(_as_block(state))
        if out is NotImplemented:
            out = step.transform(_as_frame(state))
        state = out
        if _is_timed(state):
            length = _rows(state)
    return _as_block(state), length


def transform_with_length(steps, frame):
    """Run ``steps`` over a run's frame; returns ``(frame, length)``.

    See :func:`transform_block`.
    """
    block, length = transform_block(steps, frame)
    return block.frame(), length


def head_values(head, data, frames=None):
    """The stateless steps on one run: ``(values float32, block, length)``.

    ``length`` is the number of time steps the series had just before it
    lost its time axis (cut/pad or aggregation): the original's example size.
    """
    block, length = transform_block(head, data, frames=frames)
    values = np.asarray(block.values)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise MetricsUnavailable("empty", "no samples or no columns after normalization")
    # C order: a batch stacks whole examples with plain copies (the values,
    # not their layout, are the example).
    return values.astype("float32", order="C"), block, length


def _index_labels(block):
    """``[str(label)]`` of the rows of ``block``, as its pandas index would give them.

    pandas is needed only while the rows are still time stamps.
    """
    if block.timed:
        return [str(i) for i in block.index()]
    if block.labels is None:
        return [str(i) for i in range(len(block.values))]
    return [str(i) for i in block.labels]


def apply_tail(tail, values, index, columns):
    """Run the stateful tail on a batch ``(n, t, f)``; returns float32.

    ``index`` may be a function returning the index labels: then it is
    called only if a step needs a DataFrame (the built-in ones do not, and
    a one-run ``predict`` spares itself pandas).
    """
    for step in tail:
        if hasattr(step, "transform_array"):
            values = step.transform_array(values)
        else:
            import pandas as pd

            if callable(index):
                index = index()
            values = np.stack([
                step.transform(pd.DataFrame(v, index=index, columns=columns))
                .to_numpy(dtype="float32") for v in values])
    return np.asarray(values, dtype="float32")


def make_example(chain, frame):
    """One run's frame -> ``(example, columns, length)``: the one definition of an example.

    A build computes its examples in two halves: the stateless head in
    worker processes, whose output is float32 (that is what travels between
    processes and waits in the staging file while scaling is fitted), then
    the stateful tail on batches.  Prediction must give the very same bits,
    so it goes through the same two halves with the same cast between
    them; scaling float64 values instead differs in the last bits, which a
    model near a decision boundary can notice.  ``example`` is float32
    ``(time or aggregate, feature)``.
    """
    head, tail = split_chain(chain)
    values, block, length = head_values(head, frame)
    columns = list(block.columns)
    if tail:
        values = apply_tail(tail, values[None, ...], block.index, columns)[0]
    return values, columns, length


# -- per-run work (worker processes) ---------------------------------------

_WORKER = {}


def _read(cache, run_id, folder=None):
    """A cached run as arrays (a test double without ``series``: its frame).

    ``folder``: where a raw cache keeps the run, when the build knows it.
    """
    series = getattr(cache, "series", None)
    if series is None:
        return cache.frame(run_id)
    return series(run_id) if folder is None else series(run_id, folder)


def _init_worker(cache_root, head_specs, owner_pid):
    from ciml import procutil
    from ciml.cache import RawCache
    from ciml.paths import DataPath

    procutil.die_with_parent(owner_pid)
    _WORKER["cache"] = RawCache(cache_root if isinstance(cache_root, DataPath)
                                else DataPath(cache_root))
    _WORKER["head"] = make_chain(head_specs)


def _init_forked(cache, head, owner_pid):
    from ciml import procutil

    procutil.die_with_parent(owner_pid)
    _WORKER["cache"] = cache
    _WORKER["head"] = head


def load_example(cache, head, run_id, frames=None, folder=None):
    """``(run_id, values float32, length, error)`` for one run; never raises for bad data.

    The per-run half of a build (see :func:`transform_runs`).
    """
    try:
        values, _block, length = head_values(head, _read(cache, run_id, folder),
                                             frames=frames)
        return run_id, values, length, None
    except MetricsUnavailable as exc:
        return run_id, None, None, (exc.reason, str(exc))
    except CimlError as exc:
        return run_id, None, None, ("error", str(exc))
    except Exception as exc:  # a bad series must not stop the build
        return run_id, None, None, ("error", f"{type(exc).__name__}: {exc}")


def transform_runs(cache, head_specs, run_ids, folders=None):
    """The stateless half of a build for a slice of runs: a list of :func:`load_example` results.

    What a worker of a distributed build runs on its share of the runs:
    ``cache`` is a raw cache (or anything with ``series`` or ``frame``),
    ``head_specs`` the build's ``head_specs`` (``_Build.select`` pins the
    features and the fixed length into them), ``folders`` the runs' folder
    names where the build knows them.  The result for a run does not depend
    on which other runs share its slice.
    """
    return load_examples(cache, make_chain(head_specs), run_ids, folders)


def load_examples(cache, head, run_ids, folders=None):
    """:func:`load_example` of each run, in order."""
    return [load_example(cache, head, run_id, folder=folder)
            for run_id, folder in zip(run_ids, folders or itertools.repeat(None))]


def _worker_load_many(run_ids, folders):
    return load_examples(_WORKER["cache"], _WORKER["head"], run_ids, folders)


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

            if "fork" in multiprocessing.get_all_start_methods():
                # Forked workers start in milliseconds with everything imported;
                # they only decode and transform, never touch zarr's event loop
                # thread, and the catalog opens its own connection in a new
                # process.
                ctx = multiprocessing.get_context("fork")
                init, args = _init_forked, (cache, self.head, os.getpid())
            else:
                ctx = multiprocessing.get_context("forkserver")
                init, args = _init_worker, (cache_root, head_specs, os.getpid())
            self.pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=init, initargs=args)
        elif executor == "thread":
            self.pool = concurrent.futures.ThreadPoolExecutor(workers)

    #: Runs per task sent to a worker process: a task's round trip costs
    #: about what transforming a run at 1 min does.
    PROCESS_BATCH = 8

    def map(self, runs):
        """:func:`load_example` of each of ``runs`` (``(run_id, folder or None)``
        pairs, any iterable), in order."""
        if self.pool is None:
            for run_id, folder in runs:
                yield load_example(self.cache, self.head, run_id, folder=folder)
            return
        window = collections.deque()
        limit = 4 * self.workers
        if self.kind == "process":
            batch, fn = self.PROCESS_BATCH, _worker_load_many
        else:
            batch, fn = 1, functools.partial(load_examples, self.cache, self.head)
        runs = iter(runs)
        while task := list(itertools.islice(runs, batch)):
            window.append(self.pool.submit(fn, *zip(*task)))
            if len(window) >= limit:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# -- the build ---------------------------------------------------------------


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
        split_ids = ids.get(split, ())
        if isinstance(split_ids, np.ndarray) and split_ids.dtype.kind == "S":
            # UTF-8 bytes joined a batch at a time: the same bytes as the strings joined.
            for start in range(0, len(split_ids), 4096):
                if start:
                    digest.update(b"\n")
                digest.update(b"\n".join(split_ids[start:start + 4096].tolist()))
        else:
            digest.update("\n".join(split_ids).encode())
    return digest.hexdigest()[:16]


class _Build:
    """One ``build-dataset`` run, in stages: plan, select, stream, finalize.

    :meth:`plan` checks the options and the chain before anything is read;
    :meth:`select` picks the runs, their labels, the features and the
    example layout from the cache; :meth:`stream` pushes every run through
    the chain into a hidden folder; :meth:`finalize` fits the profile,
    writes the attributes and moves the folder into place.
    """

    def __init__(self, data_path, name, build_name, cache, options):
        self.data_path = data_path
        self.name = name
        self.build_name = build_name
        self.cache = cache
        self.opts = options
        self.final = data_path.dataset(name)
        self.skipped = []

    # -- plan --------------------------------------------------------------------

    def plan(self):
        opts = self.opts
        self.tdt = check_tdt_split(opts["tdt_split"])
        if opts["split"] not in ("random", "time"):
            raise ConfigError(f"bad --split {opts['split']!r}: choose random or time")
        if store.is_dataset(self.final) and not opts["force"]:
            raise AlreadyExistsError(f"dataset {self.name!r} already exists; use --force "
                                     "to replace it")
        if self.final.exists() and not opts["force"] and any(self.final.iterdir()):
            raise AlreadyExistsError(f"{self.final} exists (not a complete dataset); use "
                                     "--force to replace it")
        self.slice = parse_slicer(opts["slicer"])
        if opts.get("scale_per") in (None, "auto"):
            opts["scale_per"] = "cell" if opts["aggregation_functions"] else "feature"
        specs = default_chain(opts["features_regex"], opts["sample_interval"],
                              opts["aggregation_functions"], opts["scale"],
                              opts["normalizers"], scale_per=opts["scale_per"])
        self.chain = make_chain(specs)  # validates names and parameters early
        self.head, self.tail = split_chain(self.chain)
        self.time_axis = not opts["aggregation_functions"]

    # -- select ------------------------------------------------------------------

    def select(self):
        """Runs, labels, features, splits and the example layout."""
        opts = self.opts
        # What a person said about a run beats what its source said.
        human = human_labels.labels_of(self.cache)
        self.human = {run_id: set(keys) for run_id, keys in human.items()}
        # One streaming read of the index; a few bytes kept per run.
        table = runs_mod.scan(self.cache, self.build_name, opts["class_label"],
                              {run_id: {k: v["value"] for k, v in keys.items()}
                               for run_id, keys in human.items()})
        table = table.take(self.slice)
        if not len(table):
            raise CimlError(f"no cached runs for build name {self.build_name!r} "
                            f"(slice {opts['slicer'] or ':'}); run cache-data first")
        self.runs_selected = len(table)
        table = self._pin_features(self._label(table))
        self.classes = labels_mod.class_names(
            opts["class_label"], [table.labels[c] for c in np.unique(table.label)])
        self.code = {c: i for i, c in enumerate(self.classes)}
        # A run's class code is its label code looked up here.
        self.class_of_label = np.array([self.code.get(lb, -1) for lb in table.labels],
                                       dtype="int64")
        # What the attributes need of the whole selection; the splits hold the rest.
        self.sources = sorted({table.sources[c] for c in np.unique(table.source)})
        self.metric_source = _table_metric_source(table, self.name)
        self.parts = {name: table.take(index) for name, index in
                      split_positions(len(table), self.tdt, opts["split"],
                                      opts["seed"]).items()}
        self.splits = tuple(s for s, share in zip(SPLITS, self.tdt) if share > 0)
        self.length_from = _set_fixed_length(self.head, self.cache, self.parts["training"],
                                             opts["sample_interval"], opts.get("fixed_length"))
        self._probe_layout()

    def split_codes(self, split):
        """The class code of each run planned for ``split``, in order."""
        return self.class_of_label[self.parts[split].label]

    def _label(self, table):
        class_label = self.opts["class_label"]
        unlabelled = table.label < 0
        for i in np.flatnonzero(unlabelled):
            self.skipped.append({"run_id": table.run_id(i), "split": None,
                                 "reason": "unlabelled",
                                 "message": f"run has no {class_label!r}"})
        if unlabelled.all():
            raise CimlError(f"none of the {len(table)} runs has a {class_label!r} label")
        return table.take(~unlabelled)

    def _pin_features(self, table):
        """Fix the features every run has; returns the runs that have some."""
        features_regex = self.opts["features_regex"]
        selector = next((s for s in self.chain if s.selects_features), None)
        if selector is None:
            raise ConfigError("no step of the normalizer chain selects the features")
        table = _columns_asked(self.cache, table)
        selection = select_features_by_sets(table.columns, table.column_sets, selector)
        for i in selection["unmatched"]:
            self.skipped.append({"run_id": table.run_id(i), "split": None,
                                 "reason": "missing-columns",
                                 "message": _no_match_message(features_regex)})
        if not selection["columns"]:
            raise CimlError(_no_common_message(self.build_name, features_regex, selection))
        # Pinned by name: every later run, here or at prediction time, gives these.
        selector.pin_features(selection["columns"])
        self.dropped = selection["dropped"]
        if self.dropped:
            LOG.warning("%s: %d feature(s) not in every run left out: %s", self.name,
                        len(self.dropped),
                        ", ".join(f"{c} (missing in {n} of {selection['runs']} runs)"
                                  for c, n in self.dropped.items()))
        keep = np.ones(len(table), dtype=bool)
        keep[selection["unmatched"]] = False
        return table.take(keep)

    def _probe_layout(self):
        """The example layout (time steps or aggregates, output feature labels)
        from the first training run that goes through the head."""
        features = index_labels = None
        probe_rejects = {}
        for run_id, folder in self.parts["training"].iter_runs():
            try:
                _values, block, _ = head_values(self.head, _read(self.cache, run_id, folder))
                features = list(block.columns)
                index_labels = _index_labels(block)
                break
            except (MetricsUnavailable, CimlError, ValueError, KeyError) as exc:
                probe_rejects[run_id] = str(exc)
                continue
        if features is None:
            raise CimlError(
                f"no training run of {self.build_name!r} could be normalized; e.g. "
                + "; ".join(f"{k}: {v}" for k, v in list(probe_rejects.items())[:3]))
        self.features, self.index_labels = features, index_labels
        self.head_specs = [step_spec(s) for s in self.head]
        self.example_shape = (len(index_labels), len(features))

    # -- stream ------------------------------------------------------------------

    def _loader(self):
        from ciml.cache import RawCache

        # Worker processes open their own RawCache: only the real one can travel.
        cache_is_raw = isinstance(self.cache, RawCache)
        total = sum(len(self.parts[s]) for s in self.splits)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        executor = self.opts["executor"]
        if executor in (None, "auto"):
            executor = _choose_executor(cpus, total, self.example_shape, cache_is_raw)
        if executor == "process" and not cache_is_raw:
            executor = "thread"
        workers = self.opts["workers"] or cpus
        return _Loader(self.cache, self.data_path, self.head_specs, workers, executor)

    def stream(self, tmp, loader):
        """Every selected run through the chain into the dataset at ``tmp``."""
        name = self.name
        total = sum(len(self.parts[s]) for s in self.splits)
        self.counts, self.ids_by_split, self.positions = {}, {}, {}
        self.writer = writer = store.DatasetWriter(
            tmp, {s: len(self.parts[s]) for s in self.splits}, self.example_shape)
        staging = _Staging(storage.scratch_file(tmp, "training.staging"), self.example_shape)
        bar = _progress(self.opts["progress"], total, f"building {name}")
        for split_name in self.splits:
            stream = _SplitStream(split_name, writer, staging, self.tail, self.features,
                                  self.index_labels, self.example_shape,
                                  self.parts[split_name].ids, self.split_codes(split_name))
            results = loader.map(self.parts[split_name].iter_runs())
            for position, (run_id, values, length, error) in enumerate(results):
                bar.update(1)
                if error is None:
                    error = stream.add(position, values, length)
                if error is not None:
                    self.skipped.append({"run_id": run_id, "split": split_name,
                                         "reason": error[0], "message": error[1]})
            written, ids_written, positions = stream.close()
            if split_name == "training":
                if written == 0:
                    raise CimlError(f"no usable training run for {name!r}; "
                                    f"{len(self.skipped)} run(s) skipped")
                if self.tail:
                    _finish_tail_fit(writer, staging, self.tail, written, self.index_labels,
                                     self.features)
                staging.close()
            self.counts[split_name] = written
            self.ids_by_split[split_name] = ids_written
            self.positions[split_name] = positions
        bar.close()

    # -- finalize ----------------------------------------------------------------

    def _profile(self):
        # What a new run is compared with to say how unusual it is: the
        # training runs that passed, which is what normal means to a CI
        # operator, or all of them when too few passed.
        train = self.writer.arrays["training"]
        n_train = self.counts["training"]
        passed = self.parts["training"].passed[self.positions["training"]]
        use_passed = passed.sum() >= MIN_PROFILE_RUNS
        return fit_profile(train["X"], np.asarray(train["length"][:n_train]),
                           "time" if self.time_axis else "aggregate", self.index_labels,
                           self.features, chunk=self.writer.chunk,
                           reference=passed if use_passed else None,
                           reference_name="passed training runs" if use_passed
                           else "training runs")

    def attributes(self):
        """The dataset's attributes and its large fitted arrays."""
        opts = self.opts
        chain_specs, state_arrays = externalize_state(
            self.head_specs + [step_spec(s) for s in self.tail])
        self.config = {
            "build_name": self.build_name, "slicer": opts["slicer"] or ":",
            "features_regex": opts["features_regex"],
            "sample_interval": opts["sample_interval"],
            "aggregation_functions": list(opts["aggregation_functions"] or []) or None,
            "class_label": opts["class_label"], "tdt_split": list(self.tdt),
            "split": opts["split"], "seed": opts["seed"], "scale": opts["scale"],
            "normalizers": [_as_spec(n) for n in opts["normalizers"] or ()],
            "normalized_length": self.example_shape[0] if self.time_axis else None,
            "fixed_length_from": self.length_from, "scale_per": opts["scale_per"],
        }
        # 12.8: prediction reads new runs with the metric source these were cached with.
        self.config.update(self.metric_source)
        sources = self.sources
        balance = {s: _balance(self.classes, self.split_codes(s)[self.positions[s]])
                   for s in self.splits}
        attrs = {
            "name": self.name, "config": self.config, "features": self.features,
            "classes": self.classes, "axis": "time" if self.time_axis else "aggregate",
            "steps": self.index_labels, "chain": chain_specs, "splits": list(self.splits),
            "counts": self.counts, "class_balance": balance,
            "profile": self._profile(),
            "dropped_features": list(self.dropped),
            "skipped": self.skipped,
            "provenance": {
                "source": sources[0] if len(sources) == 1 else sources,
                "query": {"build_name": self.build_name, "slicer": opts["slicer"] or ":"},
                "run_count": self.runs_selected, "example_count": sum(self.counts.values()),
                "human_labels": human_labels.human_count(
                    opts["class_label"], itertools.chain.from_iterable(
                        runs_mod.decoded(self.ids_by_split[s]) for s in self.splits),
                    self.human),
                "ciml_version": ciml.__version__,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            },
        }
        attrs["fingerprint"] = fingerprint(attrs, self.ids_by_split, state_arrays)
        return attrs, state_arrays

    def finalize(self, tmp):
        """Write the attributes and move the dataset at ``tmp`` into place."""
        self.attrs, state_arrays = self.attributes()
        self.writer.finish(self.counts, self.attrs, state_arrays)
        store.verify(tmp, self.counts, self.ids_by_split)
        if store.is_dataset(self.final) and not self.opts["force"]:
            raise AlreadyExistsError(f"dataset {self.name!r} appeared meanwhile; use --force")
        # The root's zarr.json (``complete``) is the marker: on an object
        # store it is copied in last.
        storage.publish_dir(tmp, self.final, store.MARKER)

    def summary(self, elapsed):
        return {
            "name": self.name, "path": str(self.final), "splits": self.counts,
            "classes": self.classes, "features": self.features,
            "example_shape": list(self.example_shape),
            "class_balance": self.attrs["class_balance"], "config": self.config,
            "runs_selected": self.runs_selected, "skipped": self.skipped,
            "skipped_by_reason": skipped_by_reason(self.skipped),
            "dropped_features": list(self.dropped),
            "fingerprint": self.attrs["fingerprint"],
            "elapsed_s": round(elapsed, 3),
        }


def build_dataset(data_path, name, build_name, *, slicer=None, features_regex=None,
                  sample_interval=None, aggregation_functions=None, class_label="status",
                  tdt_split=(6, 2, 2), split="random", seed=0, force=False,
                  normalizers=None, progress=None, visualize=False, scale="range",
                  workers=None, executor=None, cache=None, plot_dir=None,
                  fixed_length=None, scale_per="auto", cluster=None):
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
    ``cluster``: a :class:`ciml.executor.Cluster`; its workers transform the
    runs and write the examples (:mod:`ciml.dataset.distributed`), with the
    same result as a local build.  Every worker must reach ``data_path``.
    """
    from ciml.paths import DataPath

    started = time.monotonic()
    if not isinstance(data_path, DataPath):
        data_path = DataPath(data_path)
    options = {"slicer": slicer, "features_regex": features_regex,
               "sample_interval": sample_interval,
               "aggregation_functions": aggregation_functions, "class_label": class_label,
               "tdt_split": tdt_split, "split": split, "seed": seed, "force": force,
               "normalizers": normalizers, "progress": progress, "scale": scale,
               "workers": workers, "executor": executor, "fixed_length": fixed_length,
               "scale_per": scale_per}
    own_cache = cache is None
    if own_cache:
        from ciml.cache import RawCache

        cache = RawCache(data_path)
    try:
        build = _Build(data_path, name, build_name, cache, options)
        build.plan()
        build.select()
        datasets_dir = data_path.datasets
        datasets_dir.mkdir(parents=True, exist_ok=True)
        storage.remove_abandoned(datasets_dir, name)
        tmp = datasets_dir / fileutil.work_name("tmp", name)
        loader = build._loader() if cluster is None else None
        try:
            if loader is None:
                from ciml.dataset.distributed import ClusterStream

                ClusterStream(build, cluster).run(tmp)
            else:
                build.stream(tmp, loader)
                loader.close()
            build.finalize(tmp)
        except BaseException:
            if loader is not None:
                loader.close()
            else:
                cluster.cancel()
            storage.rmtree(tmp)
            raise
    finally:
        if own_cache:
            cache.close()

    summary = build.summary(time.monotonic() - started)
    log_skipped(name, build.skipped)
    from ciml.plugins import get_manager

    get_manager().call_lifecycle("ciml_dataset_built", name=name, path=build.final,
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
    spans = training.span.copy()
    # Runs whose index has no first and last sample: their series tells.
    for i in np.flatnonzero(np.isnan(spans)):
        span = length_mod.span_seconds(cache, training.run_id(i))
        spans[i] = np.nan if span is None else span
    needed = length_mod.length_of_spans(spans, sample_interval)
    if needed is None:
        return "default"
    step.length = needed
    return f"p{length_mod.PERCENTILE:g} of the training runs' lengths"


# -- features and reports ------------------------------------------------------


def _table_metric_source(table, name):
    """``{"metric_source", "metric_source_options"}`` the table's runs were cached with.

    ``None`` values for runs cached before ciml recorded it (prediction then
    uses the default dstat source).
    """
    from ciml.base.metric_source import common_provenance_of_counts

    codes = table.provenance[table.provenance >= 0]
    counts = np.bincount(codes, minlength=len(table.provenances))
    found, others = common_provenance_of_counts(
        {key: int(n) for key, n in zip(table.provenances, counts) if n})
    if others:
        LOG.warning("%s: %d run(s) were cached with another metric source or other options "
                    "than %s; prediction uses %s", name, others, found["name"], found["name"])
    return {"metric_source": found["name"] if found else None,
            "metric_source_options": found["params"] if found else None}


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
    run_ids = list(run_ids)
    sets = runs_mod.Codes()
    codes = np.array([_columns_code(cache, run_id, sets) for run_id in run_ids], dtype="int64")
    selection = select_features_by_sets(codes, sets.values, filter_step)
    for key in ("unmatched", "unreadable"):
        selection[key] = [run_ids[i] for i in selection[key]]
    return selection


#: A run whose columns could not be read (``_columns_code``).
UNREADABLE = -2


def _columns_code(cache, run_id, sets):
    try:
        return sets.code(tuple(run_columns(cache, run_id)))
    except (MetricsUnavailable, CimlError, OSError, ValueError, KeyError):
        return UNREADABLE


def _columns_asked(cache, table):
    """``table`` with the column lists its index lacked read from the runs themselves."""
    unknown = np.flatnonzero(table.columns == runs_mod.UNKNOWN)
    if not len(unknown):
        return table
    sets = runs_mod.Codes(table.column_sets)
    codes = table.columns.copy()
    for i in unknown:
        codes[i] = _columns_code(cache, table.run_id(i), sets)
    return dataclasses.replace(table, columns=codes, column_sets=sets.values)


def select_features_by_sets(codes, column_sets, filter_step):
    """:func:`select_features` of runs given as codes into ``column_sets``.

    Each distinct column list goes through ``filter_step`` once.  ``unmatched``
    and ``unreadable`` (code :data:`UNREADABLE`) are positions in ``codes``.
    """
    codes = np.asarray(codes, dtype="int64")
    known = codes[codes >= 0]
    counts = np.bincount(known, minlength=len(column_sets))
    seen = collections.Counter()
    empty, n = [], 0
    for code, (columns, count) in enumerate(zip(column_sets, counts)):
        if not count:
            continue
        matched = set(filter_step.select(list(columns)))
        if not matched:
            empty.append(code)
            continue
        for column in matched:
            seen[column] += int(count)
        n += int(count)
    common = sorted(c for c, k in seen.items() if k == n)
    dropped = {c: n - k for c, k in sorted(seen.items()) if k < n}
    return {"columns": common, "dropped": dropped,
            "unmatched": np.flatnonzero(np.isin(codes, empty)) if empty
            else np.array([], dtype="int64"),
            "unreadable": np.flatnonzero(codes == UNREADABLE), "runs": n}


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


def _choose_executor(cpus, total, example_shape, cache_is_raw):
    """Threads when there are cores and runs enough, else serial; processes only on request.

    Per run, a build now reads one compressed series into arrays and runs
    numpy on it (zstd and numpy release the GIL).  Worker processes are
    forked with everything loaded, 8 runs a task, but pickle every example
    back and double the resident memory counted per process.  Measured on
    2 busy cores (benchmarks/bench_build_dataset.py, 1000 one-hour runs,
    series.bin v2, CPU per run of the whole command, load 21-25): at 1 s
    threads 5.8 ms, processes 6.9 ms; at 1 min 3.8 against 4.5 ms;
    aggregated 4.3 against 6.4 ms.  Which gives more runs a second on
    idle cores is not measured yet (``--executors thread process``).
    """
    if cpus < 2 or total < 64:
        return "serial"
    return "thread"


def _fit_frames(step, batch, index, columns):
    import pandas as pd

    for values in batch:
        step.partial_fit(pd.DataFrame(values, index=index, columns=columns))


class _SplitStream:
    """Buffers one split's examples into whole chunks and writes them.

    Training chunks feed the fit of the first stateful step and wait,
    unscaled, in the staging file; other splits are scaled as they pass.
    """

    def __init__(self, split, writer, staging, tail, features, index, example_shape,
                 planned_ids, planned_codes):
        self.split, self.writer, self.staging, self.tail = split, writer, staging, tail
        self.features, self.index, self.shape = features, index, tuple(example_shape)
        self.planned_ids, self.planned_codes = planned_ids, planned_codes
        self.fitting = split == "training"
        self.written = 0
        # The small arrays are written a whole chunk of theirs (4096 or more
        # runs) at a time: a zarr write per chunk of examples cost more than
        # the data, and holding a split's ids until its end would grow with
        # the runs.  ``positions``: where each written run is in
        # ``planned_ids`` and ``planned_codes`` (kept for the whole split:
        # 8 bytes a run).
        self.small_written = 0
        self.lengths, self.positions = array.array("q"), array.array("q")
        self.buf = ([], [], [])  # values, lengths, positions

    def add(self, position, values, length):
        """Buffer one example; returns an ``(reason, message)`` error or ``None``."""
        if values.shape != self.shape:
            return "shape", f"example shape {values.shape}, expected {self.shape}"
        for buf, item in zip(self.buf, (values, length, position)):
            buf.append(item)
        if len(self.buf[0]) >= self.writer.chunk:
            self.flush()
        return None

    def flush(self):
        xs, lengths, positions = self.buf
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
        else:
            if self.tail:
                batch = apply_tail(self.tail, batch, self.index, self.features)
            self.writer.write_x(self.split, self.written, batch)
        self.written += len(xs)
        self.lengths.extend(lengths)
        self.positions.extend(positions)
        for buf in self.buf:
            buf.clear()
        if len(self.lengths) >= self.writer.small_chunk:
            self._write_small(self.writer.small_chunk)

    def _write_small(self, n):
        """Write the first ``n`` pending labels, ids and lengths."""
        start = self.small_written
        positions = np.frombuffer(self.positions, dtype="int64")[start:start + n]
        self.writer.write(self.split, start, None, self.planned_codes[positions],
                          self.planned_ids[positions], self.lengths[:n])
        del self.lengths[:n]
        self.small_written += n

    def close(self):
        """Write what is left; returns ``(examples written, their ids, their positions)``."""
        self.flush()
        if self.lengths:
            self._write_small(len(self.lengths))
        positions = np.frombuffer(self.positions, dtype="int64")
        return self.written, self.planned_ids[positions], positions


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
        # The array's own buffer: tobytes() would copy a chunk of examples first.
        self.fh.write(memoryview(np.ascontiguousarray(batch, dtype="float32")).cast("B"))

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


def _balance(classes, codes):
    counts = np.bincount(np.asarray(codes, dtype="int64"), minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, counts)}
