"""Datasets: normalized, split, chunked Zarr arrays built from the raw cache.

The names here are the contract the training and prediction stages use;
zarr's API itself is used only in :mod:`ciml.dataset.store`.
"""

import numpy as np

from ciml.dataset.build import build_dataset
from ciml.dataset.labels import run_label
from ciml.errors import NotFoundError

__all__ = ["Dataset", "Split", "build_dataset", "delete_dataset", "iter_batches",
           "list_datasets", "run_label"]


def _data_path(data_path):
    from ciml.paths import DataPath

    return data_path if isinstance(data_path, DataPath) else DataPath(data_path)


class Split:
    """One split of a dataset: ``X`` (a zarr array), ``y``, ``ids``, ``lengths``."""

    def __init__(self, name, arrays):
        from ciml.dataset import store

        self.name = name
        self.X = arrays["X"]
        self.y = store.read_all(arrays["y"]).astype("int64")
        self.ids = [str(i) for i in store.read_all(arrays["ids"])]
        self.lengths = store.read_all(arrays["length"]).astype("int64")

    def __len__(self):
        return len(self.y)

    def __repr__(self):
        return f"Split({self.name!r}, X={tuple(self.X.shape)})"


class Dataset:
    """A built dataset, opened read-only."""

    def __init__(self, name, path, attrs):
        self.name = name
        self.path = path
        self.attrs = attrs
        self.config = attrs["config"]
        self.classes = list(attrs["classes"])
        self.features = list(attrs["features"])
        self.fingerprint = attrs["fingerprint"]
        self.splits = tuple(attrs["splits"])
        #: ``time`` or ``aggregate``: what the middle axis of ``X`` is.
        self.axis = attrs.get("axis", "time")
        #: The labels of the middle axis (aggregate names, or time steps).
        self.steps = list(attrs.get("steps") or [])
        self.provenance = attrs.get("provenance", {})
        self._splits = {}

    @classmethod
    def open(cls, data_path, name):
        from ciml.dataset import store

        path = _data_path(data_path).dataset(name)
        # The marker, not the folder: an object store may keep an emptied prefix.
        if not (path / store.MARKER).is_file():
            raise NotFoundError(f"no dataset named {name!r} (looked in {path.parent})")
        return cls(name, path, store.read_attrs(path))

    def __repr__(self):
        return f"Dataset({self.name!r}, splits={self.splits})"

    @property
    def example_shape(self):
        return (len(self.steps), len(self.features))

    def split(self, name):
        from ciml.dataset import store

        if name not in self.splits:
            raise NotFoundError(f"dataset {self.name!r} has no {name!r} split "
                                f"(it has: {', '.join(self.splits)})")
        if name not in self._splits:
            self._splits[name] = Split(name, store.open_split(self.path, name))
        return self._splits[name]

    def chain(self):
        """The normalizer chain, fitted, in order (fresh instances each call)."""
        from ciml.dataset import store
        from ciml.dataset.build import make_chain, resolve_state

        return make_chain(resolve_state(
            self.attrs["chain"], lambda key: store.read_state_array(self.path, key)))

    def example_from_frame(self, frame, with_length=False):
        """One raw run's frame -> its example, float32 ``(t, f)``, as built.

        Columns are picked by name from the list pinned in the stored chain
        (:attr:`features`); extra columns and their order do not matter.
        Raises :class:`ciml.errors.MetricsUnavailable` (``missing-columns``)
        when the frame lacks one of them, or (``empty``) has no samples.
        With ``with_length``, returns ``(example, length)``: the number of
        time steps before the series lost its time axis, as stored at build.
        """
        from ciml.dataset.build import make_example
        from ciml.errors import MetricsUnavailable

        if not hasattr(self, "_chain"):
            self._chain = self.chain()
        # The build's own function: bit for bit the stored examples.
        example, columns, length = make_example(self._chain, frame)
        if columns != self.features:
            # Only a third-party step that renames columns gets here.
            raise MetricsUnavailable(
                "missing-columns", f"the chain of dataset {self.name!r} gave columns "
                f"{columns[:8]}, not the dataset's features")
        if example.shape != self.example_shape:
            raise MetricsUnavailable("shape", f"example shape {example.shape}, dataset "
                                     f"{self.name!r} has {self.example_shape}")
        return (example, length) if with_length else example

    @property
    def profile(self):
        """The training runs' profile (:mod:`ciml.dataset.profile`), or ``None``.

        Datasets built before profiles existed have none.
        """
        from ciml.dataset.profile import usable

        profile = self.attrs.get("profile")
        return profile if usable(profile) else None

    def unusual(self, example, length, percentile=None):
        """How unusual one example is among the training runs (``None`` without a profile)."""
        from ciml.dataset import profile as prof

        profile = self.profile
        if profile is None:
            return None
        return prof.score(profile, example, length, self.axis,
                          percentile=prof.DEFAULT_PERCENTILE if percentile is None
                          else percentile)

    def label_of(self, run):
        """The class name of a run under this dataset's class label (or ``None``)."""
        return run_label(run, self.config["class_label"])


def iter_batches(X, y=None, batch_size=None):
    """Yield ``(x, y)`` numpy batches; by default one whole zarr chunk at a time.

    Reading whole chunks is what makes streaming fast: a zarr chunk is
    decompressed once.  ``y`` may be ``None`` (then ``None`` is yielded).
    """
    n = X.shape[0]
    if batch_size is None:
        chunks = getattr(X, "chunks", None)
        batch_size = chunks[0] if chunks else 1024
    batch_size = max(1, int(batch_size))
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x = np.asarray(X[start:stop], dtype="float32")
        yield x, (None if y is None else np.asarray(y[start:stop]))


def list_datasets(data_path):
    """The names of the complete datasets under the data path, sorted."""
    from ciml.dataset import store

    root = _data_path(data_path).datasets
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and store.is_dataset(p))


def delete_dataset(data_path, name):
    """Remove a dataset (complete or not); :class:`NotFoundError` if absent."""
    path = _data_path(data_path).dataset(name)
    if not path.is_dir() or not any(True for _ in path.iterdir()):
        raise NotFoundError(f"no dataset named {name!r}")
    from ciml import storage
    from ciml.dataset import store

    return storage.remove_dir(path, store.MARKER)
