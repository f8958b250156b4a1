"""Zarr I/O for datasets: the only module that speaks zarr's API.

Layout of one dataset (a Zarr v3 group)::

    <name>/                      attributes: config, features, classes, chain,
                                 provenance, fingerprint, complete
      training/ dev/ test/       one group per split
        X       float32 (example, time|aggregate, feature), chunked by examples
        y       int64 (example,)           class codes into ``classes``
        ids     str (example,)             run ids
        length  int64 (example,)           time steps before cut/pad or aggregation

``complete`` is written last; a group without it is not a dataset.
"""

import numpy as np

from ciml.errors import NotFoundError

#: Target size of one X chunk; the example axis is chunked to about this.
CHUNK_BYTES = 8 * 1024 * 1024
MAX_CHUNK_EXAMPLES = 1024


def chunk_examples(example_shape):
    """Examples per chunk for an example shape, about :data:`CHUNK_BYTES` of float32."""
    per_example = max(1, int(np.prod(example_shape)) * 4)
    return int(max(1, min(MAX_CHUNK_EXAMPLES, CHUNK_BYTES // per_example)))


class DatasetWriter:
    """Create the arrays of a dataset at ``path`` and fill them chunk by chunk."""

    def __init__(self, path, split_sizes, example_shape, chunk=None):
        import zarr

        self.chunk = chunk or chunk_examples(example_shape)
        self.group = zarr.open_group(str(path), mode="w", zarr_format=3)
        self.arrays = {}
        for split, size in split_sizes.items():
            sub = self.group.create_group(split)
            n = max(int(size), 0)
            self.arrays[split] = {
                "X": sub.create_array("X", shape=(n, *example_shape), dtype="float32",
                                      chunks=(self.chunk, *example_shape), fill_value=0.0),
                "y": sub.create_array("y", shape=(n,), dtype="int64",
                                      chunks=(max(self.chunk, 4096),), fill_value=-1),
                "ids": sub.create_array("ids", shape=(n,), dtype=str,
                                        chunks=(max(self.chunk, 4096),)),
                "length": sub.create_array("length", shape=(n,), dtype="int64",
                                           chunks=(max(self.chunk, 4096),), fill_value=0),
            }

    def write(self, split, start, X, y, ids, lengths):
        arrays = self.arrays[split]
        stop = start + len(X)
        arrays["X"][start:stop] = X
        arrays["y"][start:stop] = np.asarray(y, dtype="int64")
        arrays["ids"][start:stop] = np.asarray(ids, dtype=str)
        arrays["length"][start:stop] = np.asarray(lengths, dtype="int64")

    def map_chunks(self, split, count, func):
        """Rewrite ``X[:count]`` one chunk at a time through ``func``."""
        X = self.arrays[split]["X"]
        for start in range(0, count, self.chunk):
            stop = min(count, start + self.chunk)
            X[start:stop] = func(X[start:stop])

    def finish(self, counts, attrs):
        """Trim each split to its example count, then mark the group complete."""
        for split, count in counts.items():
            for array in self.arrays[split].values():
                array.resize((count, *array.shape[1:]))
        self.group.attrs.update(attrs)
        # Last: only now does the group read as a dataset.
        self.group.attrs["complete"] = True


def read_attrs(path):
    """The attributes of a complete dataset group; :class:`NotFoundError` otherwise."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise NotFoundError(f"no dataset at {path}: {exc}") from None
    attrs = dict(group.attrs)
    if not attrs.get("complete"):
        raise NotFoundError(f"{path} is not a complete dataset (an interrupted build?)")
    return attrs


def is_dataset(path):
    try:
        read_attrs(path)
    except NotFoundError:
        return False
    return True


def open_split(path, split):
    """The zarr arrays of one split: ``dict(X=..., y=..., ids=..., length=...)``."""
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    try:
        sub = group[split]
    except KeyError:
        raise NotFoundError(f"dataset {path.name} has no {split!r} split") from None
    return {name: sub[name] for name in ("X", "y", "ids", "length")}


def read_all(array):
    """A whole small array (labels, ids, lengths) as numpy."""
    return np.asarray(array[...])
