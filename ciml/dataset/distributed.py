"""build-dataset on a Dask cluster: workers transform slices of runs and write their own regions.

The local build (:meth:`ciml.dataset.build._Build.stream`) streams every
run through one process.  On a cluster the same work is cut in three
rounds of tasks, each writing to the data path rather than sending arrays
back, so that neither the client's memory nor its network grows with the
number of runs:

1. **transform** — each task takes a slice of one chunk's worth of
   consecutive runs of a split (in the build's order), runs the stateless
   head of the chain on each (:func:`ciml.dataset.build.transform_runs`)
   and writes the examples, unscaled, into a staging array at the runs'
   *planned* positions (chunk-aligned, so no two tasks share a chunk).
   It returns only each run's length or the reason it was left out.
2. **fit** — the client now knows which runs are left out, hence every
   example's *written* position.  For each chunk of written training
   examples a task computes the stateful step's ``partial_state``; the
   client folds them in chunk order (``merge_state``): the same chunks in
   the same order as the local build, so the same bits.
3. **write** — each task reads one chunk's worth of written examples from
   staging, applies the fitted tail and writes that chunk of ``X``
   (chunk-aligned in written positions).  The client writes the small
   arrays (labels, ids, lengths) and the attributes, and the dataset
   becomes visible only when the whole folder is moved into place.

A worker that dies mid-task loses nothing: its tasks run again on another
worker and write the same bytes to the same regions, and everything is
written under the build's hidden folder until the end.
"""

import array
import logging

import numpy as np

from ciml import storage
from ciml.dataset import store
from ciml.dataset.build import apply_tail, make_chain, step_spec, transform_runs
from ciml.errors import CimlError

LOG = logging.getLogger(__name__)

#: The staging arrays' folder inside the build's hidden folder (removed at the end).
STAGING = "staging"


# -- tasks (run on the workers) ------------------------------------------------


# Tasks name arrays by the data path (which pickles as its location and
# storage options) and the parts of a path under it: a worker opens them
# on its own file system, with its own credentials.


def _array(data_path, parts, mode):
    import zarr

    from ciml.storage import zarr_store

    path = data_path.root
    for part in parts:
        path = path / part
    return zarr.open_array(zarr_store(path, read_only=mode == "r"), mode=mode)


def _worker_cache(data_path):
    from ciml.cache import RawCache
    from ciml.executor import data_path_key, worker_cached

    return worker_cached(("raw-cache", data_path_key(data_path)),
                         lambda: RawCache(data_path))


def transform_slice(data_path, head_specs, run_ids, staging, start, shape, folders=None):
    """Task: the head of the chain on ``run_ids``, written to ``staging`` from ``start``.

    ``folders``: the runs' folder names, where the client knows them (on an
    object store), so that the worker need not ask the catalog for each.

    Returns ``[(run_id, length, error)]``: ``error`` is ``None`` or the
    ``(reason, message)`` the local build would give.
    """
    shape = tuple(shape)
    block = np.zeros((len(run_ids), *shape), dtype="float32")
    verdicts = []
    for i, (run_id, values, length, error) in enumerate(
            transform_runs(_worker_cache(data_path), head_specs, run_ids, folders)):
        if error is None and values.shape != shape:
            error = ("shape", f"example shape {values.shape}, expected {shape}")
        if error is None:
            block[i] = values
        verdicts.append((run_id, length, error))
    _array(data_path, staging, "r+")[start:start + len(run_ids)] = block
    return verdicts


def _read_written(data_path, staging, positions):
    """The staged examples at ``positions`` (sorted planned positions), as one batch."""
    positions = np.asarray(positions, dtype="int64")
    lo, hi = int(positions[0]), int(positions[-1]) + 1
    block = _array(data_path, staging, "r")[lo:hi]
    return np.ascontiguousarray(block[positions - lo])


def partial_state_of(data_path, staging, positions, tail_specs, index, columns):
    """Task: the last step of ``tail_specs``'s partial state on one chunk of examples,
    after the (fitted) steps before it."""
    tail = make_chain(tail_specs)
    batch = _read_written(data_path, staging, positions)
    if len(tail) > 1:
        batch = apply_tail(tail[:-1], batch, index, columns)
    return tail[-1].partial_state(batch)


def write_chunk(data_path, staging, positions, tail_specs, index, columns, x, start):
    """Task: one chunk of written examples through the fitted tail into ``x`` at ``start``."""
    batch = _read_written(data_path, staging, positions)
    if tail_specs:
        batch = apply_tail(make_chain(tail_specs), batch, index, columns)
    _array(data_path, x, "r+")[start:start + len(batch)] = batch
    return len(batch)


# -- the client's side ---------------------------------------------------------


def _fold(step, state, columns):
    """Fold one chunk's partial state into ``step``, as its ``partial_fit_array`` would."""
    if not hasattr(step, "features_"):
        step.features_ = [str(c) for c in columns]
    step.merge_state(state)


class ClusterStream:
    """The cluster's replacement for :meth:`_Build.stream` (same results, same attributes)."""

    def __init__(self, build, cluster):
        self.build = build
        self.cluster = cluster

    def _window(self):
        # Tasks in flight at once: enough to keep every worker thread busy
        # while results come back; the client's memory does not grow with
        # the runs (a future and its result cost kilobytes on the client and
        # the scheduler).
        return 4 * self.cluster.threads()

    def _results(self, tasks, bar=None):
        """The results of ``tasks`` (``(weight, fn, *args)``, an iterable), in their order.

        At most :meth:`_window` tasks are submitted or waiting to be handed
        back at a time; the bar advances by a task's weight as it finishes.
        """
        import queue

        done = queue.SimpleQueue()
        limit, running, ready, turn = self._window(), {}, {}, 0
        tasks = enumerate(tasks)
        more = True
        while True:
            while more and len(running) + len(ready) < limit:
                item = next(tasks, None)
                if item is None:
                    more = False
                    break
                i, (weight, fn, *args) = item
                future = self.cluster.submit(fn, *args)
                running[future.key] = (i, weight)
                future.add_done_callback(done.put)
            if turn in ready:
                yield ready.pop(turn)
                turn += 1
                continue
            if not running:
                return
            future = done.get()
            i, weight = running.pop(future.key)
            ready[i] = future.result()
            del future
            if bar is not None:
                bar.update(weight)

    def run(self, tmp):
        import zarr

        from ciml.dataset.build import _progress

        b = self.build
        dp = b.data_path
        shape = tuple(b.example_shape)
        b.counts, b.ids_by_split = {}, {}
        b.writer = writer = store.DatasetWriter(
            tmp, {s: len(b.parts[s]) for s in b.splits}, shape)
        chunk = writer.chunk
        staging = zarr.open_group(storage.zarr_store(tmp / STAGING), mode="w", zarr_format=3)
        # The build's folder, as parts under the data path (see _array).
        where = tuple(str(tmp.relative_to(dp.root)).split("/"))
        paths = {}
        for split in b.splits:
            n = len(b.parts[split])
            staging.create_array(split, shape=(max(n, 0), *shape), dtype="float32",
                                 chunks=(chunk, *shape), fill_value=0.0,
                                 compressors=store._x_codec())
            paths[split] = (*where, STAGING, split)
        total = sum(len(b.parts[s]) for s in b.splits)

        # 1. transform: one task per chunk of planned runs, every split at once.
        bar = _progress(b.opts["progress"], total, f"building {b.name} on {self.cluster.address}")
        slices = [(split, start, min(chunk, len(b.parts[split]) - start))
                  for split in b.splits for start in range(0, len(b.parts[split]), chunk)]
        tasks = ((n, transform_slice, dp, b.head_specs,
                  b.parts[split].run_ids(slice(start, start + n)), paths[split], start, shape,
                  b.parts[split].folder_names(slice(start, start + n)))
                 for split, start, n in slices)
        # Per split, where each run that went through was planned, and its length.
        written = {split: (array.array("q"), array.array("q")) for split in b.splits}
        for (split, start, _n), verdicts in zip(slices, self._results(tasks, bar)):
            positions, lengths = written[split]
            for position, (run_id, length, error) in enumerate(verdicts, start):
                if error is None:
                    positions.append(position)
                    lengths.append(length)
                else:
                    b.skipped.append({"run_id": run_id, "split": split, "reason": error[0],
                                      "message": error[1]})
        bar.close()
        written = {split: tuple(np.asarray(a, dtype="int64") for a in arrays)
                   for split, arrays in written.items()}
        if not len(written["training"][0]):
            raise CimlError(f"no usable training run for {b.name!r}; "
                            f"{len(b.skipped)} run(s) skipped")
        blocks = {s: [written[s][0][k:k + chunk].tolist()
                      for k in range(0, len(written[s][0]), chunk)] for s in b.splits}

        # 2. fit the stateful steps, each on the output of those before it.
        for i, step in enumerate(b.tail):
            if step.stateful:
                self._fit(step, b.tail[:i], paths["training"], blocks["training"])

        # 3. write X, chunk by chunk, and the small arrays here.
        tail_specs = [step_spec(s) for s in b.tail]
        tasks = [(len(positions), write_chunk, dp, paths[split], positions, tail_specs,
                  b.index_labels, b.features, (*where, split, "X"), k * chunk)
                 for split in b.splits for k, positions in enumerate(blocks[split])]
        bar = _progress(b.opts["progress"], sum(t[0] for t in tasks), f"writing {b.name}")
        for _ in self._results(tasks, bar):
            pass
        bar.close()
        b.positions = {}
        for split in b.splits:
            positions, lengths = written[split]
            ids = b.parts[split].ids[positions]
            codes = b.split_codes(split)[positions]
            # A chunk of the small arrays at a time, not one write per chunk of X.
            for start in range(0, len(positions), writer.small_chunk):
                stop = start + writer.small_chunk
                writer.write(split, start, None, codes[start:stop], ids[start:stop],
                             lengths[start:stop])
            b.counts[split] = len(positions)
            b.ids_by_split[split] = ids
            b.positions[split] = positions
        storage.rmtree(tmp / STAGING)

    def _fit(self, step, before, staging, blocks):
        """Fit ``step`` on the training chunks, folding their states in chunk order."""
        b = self.build
        if hasattr(step, "partial_state") and hasattr(step, "merge_state"):
            specs = [step_spec(s) for s in before] + [step_spec(step)]
            tasks = ((1, partial_state_of, b.data_path, staging, positions, specs,
                      b.index_labels, b.features) for positions in blocks)
            for state in self._results(tasks):
                _fold(step, state, b.features)
            return
        # A step without partial states (a third-party one) is fitted here,
        # one chunk at a time, on the same chunks as the local build.
        from ciml.dataset.build import _fit_frames

        for positions in blocks:
            batch = _read_written(b.data_path, staging, positions)
            if before:
                batch = apply_tail(before, batch, b.index_labels, b.features)
            if hasattr(step, "partial_fit_array"):
                step.partial_fit_array(batch, b.features)
            else:
                _fit_frames(step, batch, b.index_labels, b.features)
