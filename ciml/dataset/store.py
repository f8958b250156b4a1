"""Zarr I/O for datasets: the only module that speaks zarr's API.

Layout of one dataset (a Zarr v3 group)::

    <name>/                      attributes: config, features, classes, chain,
                                 provenance, fingerprint, complete
      training/ dev/ test/       one group per split
        X       float32 (example, time|aggregate, feature), chunked by examples
        y       int64 (example,)           class codes into ``classes``
        ids     str (example,)             run ids
        length  int64 (example,)           time steps before cut/pad or aggregation

``complete`` is written last; a group without it is not a dataset.  On an
object store the root's ``zarr.json`` (:data:`MARKER`) is also the last
object copied when the dataset is published (:func:`ciml.storage.publish_dir`).
"""

import numpy as np

from ciml.errors import NotFoundError
from ciml.storage import zarr_store

#: Target size of one X chunk; the example axis is chunked to about this.
CHUNK_BYTES = 8 * 1024 * 1024
MAX_CHUNK_EXAMPLES = 1024
#: The least examples per chunk of the small arrays (labels, ids, lengths).
MIN_SMALL_CHUNK = 4096
#: Where fitted normalizer arrays too large for attributes are kept.
STATE_GROUP = "state"
#: The completion marker: the root group's metadata, holding ``complete``.
MARKER = "zarr.json"


def chunk_examples(example_shape):
    """Examples per chunk for an example shape, about :data:`CHUNK_BYTES` of float32."""
    per_example = max(1, int(np.prod(example_shape)) * 4)
    return int(max(1, min(MAX_CHUNK_EXAMPLES, CHUNK_BYTES // per_example)))


# Every chunk is written, even one that equals the fill value, so that a
# missing chunk file always means a lost write (see :func:`verify`), never
# "all zeros".
_EVERY_CHUNK = {"write_empty_chunks": True}


def _x_codec():
    # Blosc lz4 with byte shuffle: 2-3x faster than zarr's default zstd both
    # ways for about 20% more bytes; training reads X many times.
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class DatasetWriter:
    """Create the arrays of a dataset at ``path`` and fill them chunk by chunk."""

    def __init__(self, path, split_sizes, example_shape, chunk=None):
        import zarr

        self.chunk = chunk or chunk_examples(example_shape)
        #: Examples per chunk of the small arrays (labels, ids, lengths):
        #: a build writes them a whole chunk at a time.
        self.small_chunk = max(self.chunk, MIN_SMALL_CHUNK)
        self.group = zarr.open_group(zarr_store(path), mode="w", zarr_format=3)
        self.arrays = {}
        for split, size in split_sizes.items():
            sub = self.group.create_group(split)
            n = max(int(size), 0)
            self.arrays[split] = {
                "X": sub.create_array("X", shape=(n, *example_shape), dtype="float32",
                                      chunks=(self.chunk, *example_shape), fill_value=0.0,
                                      compressors=_x_codec(), config=_EVERY_CHUNK),
                "y": sub.create_array("y", shape=(n,), dtype="int64",
                                      chunks=(self.small_chunk,), fill_value=-1,
                                      config=_EVERY_CHUNK),
                "ids": sub.create_array("ids", shape=(n,), dtype=str,
                                        chunks=(self.small_chunk,), config=_EVERY_CHUNK),
                "length": sub.create_array("length", shape=(n,), dtype="int64",
                                           chunks=(self.small_chunk,), fill_value=0,
                                           config=_EVERY_CHUNK),
            }

    def write(self, split, start, X, y, ids, lengths):
        """Write examples from ``start``; ``X=None`` leaves X for :meth:`write_x`."""
        arrays = self.arrays[split]
        stop = start + len(y)
        if X is not None:
            arrays["X"][start:stop] = X
        arrays["y"][start:stop] = np.asarray(y, dtype="int64")
        arrays["ids"][start:stop] = _as_text(ids)
        arrays["length"][start:stop] = np.asarray(lengths, dtype="int64")

    def write_x(self, split, start, X):
        self.arrays[split]["X"][start:start + len(X)] = X

    def finish(self, counts, attrs, state_arrays=None):
        """Trim each split, store the large fitted arrays, then mark the group complete.

        Fitted parameters the size of an example (per-time-step scaling) go
        to arrays under ``state/``: as JSON attributes they would cost
        seconds to write and to read.
        """
        for split, count in counts.items():
            for array in self.arrays[split].values():
                array.resize((count, *array.shape[1:]))
        if state_arrays:
            state = self.group.create_group(STATE_GROUP)
            for key, value in state_arrays.items():
                value = np.asarray(value)
                array = state.create_array(key, shape=value.shape, dtype=value.dtype,
                                           chunks=value.shape or None)
                array[...] = value
        # One write of the attributes, then the marker: only now does the
        # group read as a dataset.
        self.group.update_attributes(dict(attrs))
        self.group.update_attributes({"complete": True})


def _as_text(ids):
    """Run ids as a numpy string array (UTF-8 byte strings decoded)."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "S":
        return np.char.decode(ids, "utf-8")
    if ids.dtype.kind in "UTO":  # str, numpy's variable-width strings (zarr's), objects
        return ids
    return ids.astype(str)


def verify(path, counts, ids):
    """Check that the dataset written at ``path`` is whole before it is moved into place.

    A build writes into a hidden folder for minutes; if anything removed or
    changed it meanwhile (a careless cleanup, a full disk), zarr would read
    the missing chunks as zeros.  So: the group is complete, every split has
    its arrays with ``counts[split]`` examples and every chunk on disk, and
    its ids are ``ids[split]``.  Raises :class:`ciml.errors.CimlError`.
    """
    import zarr

    from ciml.errors import CimlError

    def broken(why):
        return CimlError(f"the dataset being built at {path} was changed by something "
                         f"else while it was built ({why}); nothing was replaced, build "
                         "it again")

    try:
        attrs = read_attrs(path)
        group = zarr.open_group(zarr_store(path, read_only=True), mode="r", zarr_format=3)
        for split, count in counts.items():
            sub = group[split]
            for name in ("X", "y", "ids", "length"):
                array = sub[name]
                if array.shape[0] != count:
                    raise broken(f"{split}/{name} has {array.shape[0]} examples, "
                                 f"expected {count}")
                if array.nchunks_initialized < array.nchunks:
                    raise broken(f"{split}/{name} has {array.nchunks_initialized} of "
                                 f"{array.nchunks} chunks")
            # A chunk at a time: the ids of a million runs are hundreds of MB as text.
            stored, expected, step = sub["ids"], ids[split], int(sub["ids"].chunks[0])
            if len(expected) != count:
                raise broken(f"{split} has {count} examples but {len(expected)} ids written")
            for start in range(0, count, step):
                if not np.array_equal(np.asarray(stored[start:start + step]),
                                      _as_text(expected[start:start + step])):
                    raise broken(f"{split}/ids differ from the runs written")
    except NotFoundError as exc:
        raise broken(str(exc)) from None
    except (KeyError, FileNotFoundError, ValueError, OSError) as exc:
        raise broken(f"{type(exc).__name__}: {exc}") from None
    return attrs


def _local_group_attrs(path):
    """The attributes in a local group's ``zarr.json``, or ``None`` to ask zarr.

    Zarr v3 keeps a group's attributes as plain JSON in its ``zarr.json``
    (the format's specification); reading them directly spares a command
    that only needs the dataset's description (``predict``, ``watch``,
    ``dataset show``) the import of zarr, about a quarter of a second.
    """
    import json
    import pathlib

    if not isinstance(path, pathlib.Path):
        return None
    try:
        with open(path / "zarr.json", "rb") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None  # zarr's own reader gives the error
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 \
            or meta.get("node_type") != "group":
        return None
    return dict(meta.get("attributes") or {})


def read_attrs(path):
    """The attributes of a complete dataset group; :class:`NotFoundError` otherwise."""
    attrs = _local_group_attrs(path)
    if attrs is not None:
        if not attrs.get("complete"):
            raise NotFoundError(f"{path} is not a complete dataset (an interrupted build?)")
        return attrs
    import zarr

    try:
        group = zarr.open_group(zarr_store(path, read_only=True), mode="r", zarr_format=3)
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

    group = zarr.open_group(zarr_store(path, read_only=True), mode="r", zarr_format=3)
    try:
        sub = group[split]
    except KeyError:
        raise NotFoundError(f"dataset {path.name} has no {split!r} split") from None
    return {name: sub[name] for name in ("X", "y", "ids", "length")}


def read_state_array(path, key):
    """A fitted normalizer array stored by :meth:`DatasetWriter.finish`."""
    value = _local_state_array(path, key)
    if value is not None:
        return value
    import zarr

    group = zarr.open_group(zarr_store(path, read_only=True), mode="r", zarr_format=3)
    return np.asarray(group[STATE_GROUP][key][...])


#: Zarr v3 data types the direct reader takes (numpy's names for them).
_PLAIN_TYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                          "uint32", "uint64", "float32", "float64"})


def _local_state_array(path, key):
    """A local state array read from its one chunk, or ``None`` to ask zarr.

    ``predict`` needs the fitted scaler of the dataset (a few KB) and
    nothing else of zarr, whose import costs about a quarter of a second.
    What :meth:`DatasetWriter.finish` writes is one chunk the size of the
    array, encoded ``bytes`` then ``zstd`` (zarr's defaults); the Zarr v3
    specification fixes how that lies on disk (``zarr.json``, the chunk
    ``c/0/0``).  Anything else (another codec, several chunks, a missing
    chunk that zarr would fill, an object store) goes to zarr.
    """
    import json
    import pathlib

    if not isinstance(path, pathlib.Path) or not key or "/" in key or "\\" in key \
            or key in (".", ".."):
        return None
    folder = path / STATE_GROUP / key
    try:
        with open(folder / "zarr.json", "rb") as fh:
            meta = json.load(fh)
        shape = [int(d) for d in meta["shape"]]
        grid = meta["chunk_grid"]
        encoding = meta["chunk_key_encoding"]
        codecs = meta["codecs"]
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" \
                or meta.get("storage_transformers") or meta["data_type"] not in _PLAIN_TYPES \
                or grid.get("name") != "regular" \
                or [int(d) for d in grid["configuration"]["chunk_shape"]] != shape \
                or min(shape, default=1) < 1 or encoding.get("name") != "default" \
                or not codecs or codecs[0].get("name") != "bytes" \
                or [c.get("name") for c in codecs[1:]] not in ([], ["zstd"]):
            return None
        separator = (encoding.get("configuration") or {}).get("separator", "/")
        endian = (codecs[0].get("configuration") or {}).get("endian", "little")
        if separator not in ("/", ".") or endian not in ("little", "big"):
            return None
        chunk = folder.joinpath(*separator.join(["c"] + ["0"] * len(shape)).split("/"))
        with open(chunk, "rb") as fh:
            data = fh.read()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if len(codecs) == 2:
        from numcodecs import zstd

        try:
            data = zstd.decompress(data)
        except RuntimeError:
            return None
    dtype = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
    if len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        return None
    value = np.frombuffer(data, dtype=dtype).reshape(shape)
    # Native byte order, writable: what zarr hands back.
    return value.astype(dtype.newbyteorder("="))


def read_all(array):
    """A whole small array (labels, ids, lengths) as numpy."""
    return np.asarray(array[...])


#: Attributes that say what a dataset is called and when and by what it was
#: made, not what it holds.
VOLATILE_ATTRS = (("name",), ("provenance", "created"), ("provenance", "ciml_version"))


def differences(path_a, path_b, ignore=VOLATILE_ATTRS):
    """Where two datasets differ: a list of strings, empty when they are identical.

    Every array (``X``, ``y``, ``ids``, ``length`` of every split, the
    fitted state) is compared element by element with ``==`` and by its
    bytes, so that ``-0.0`` against ``0.0`` or two different NaN payloads
    count too; the attributes are compared as JSON, less the ``ignore``
    paths (the creation time).  What a distributed or faster build must
    satisfy against the local reference build.
    """
    import json

    import zarr

    out = []
    attrs = []
    for path in (path_a, path_b):
        found = json.loads(json.dumps(dict(read_attrs(path)), default=str))
        for keys in ignore:
            node = found
            for key in keys[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(keys[-1], None)
        attrs.append(json.dumps(found, sort_keys=True, default=str))
    if attrs[0] != attrs[1]:
        a, b = (json.loads(x) for x in attrs)
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        out.append(f"attributes differ: {', '.join(keys)}")
    groups = [zarr.open_group(zarr_store(p, read_only=True), mode="r", zarr_format=3)
              for p in (path_a, path_b)]

    def arrays(group, prefix=""):
        found = {}
        for name, member in group.members():
            if isinstance(member, zarr.Group):
                found.update(arrays(member, f"{prefix}{name}/"))
            else:
                found[f"{prefix}{name}"] = member
        return found

    left, right = arrays(groups[0]), arrays(groups[1])
    for name in sorted(set(left) ^ set(right)):
        out.append(f"{name}: only in {path_a if name in left else path_b}")
    for name in sorted(set(left) & set(right)):
        a, b = read_all(left[name]), read_all(right[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            out.append(f"{name}: {a.shape} {a.dtype} against {b.shape} {b.dtype}")
        elif a.dtype.kind in "fiub":
            if not (np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
                    and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()):
                out.append(f"{name}: {int(np.count_nonzero(a != b))} element(s) differ")
        elif [str(x) for x in a.ravel()] != [str(x) for x in b.ravel()]:
            out.append(f"{name}: differ")
    return out
