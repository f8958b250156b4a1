"""Compare two datasets array by array, byte for byte (what "bit-identical" means here).

Every array of every group (splits, ``state/``) must have the same dtype,
shape and bytes, and the attributes must be equal apart from when the
dataset was made (``provenance.created``).  Datasets are matched by folder
name under two ``datasets`` folders, e.g. those ``bench_build_dataset.py
--keep`` leaves.

Usage: ``python benchmarks/compare_datasets.py DATASETS_A DATASETS_B [NAME ...]``;
exit status 1 if any pair differs.
"""

import pathlib
import sys

import numpy as np


def _arrays(group, prefix=""):
    for name, item in sorted(group.members()):
        path = f"{prefix}{name}"
        if hasattr(item, "shape"):
            yield path, item
        else:
            yield from _arrays(item, path + "/")


def _attrs(group):
    attrs = dict(group.attrs)
    provenance = dict(attrs.get("provenance") or {})
    provenance.pop("created", None)
    attrs["provenance"] = provenance
    return attrs


def compare(a, b):
    """A list of differences between the datasets at ``a`` and ``b`` (empty: identical)."""
    import zarr

    ga, gb = (zarr.open_group(str(p), mode="r") for p in (a, b))
    diffs = []
    if _attrs(ga) != _attrs(gb):
        keys = sorted(k for k in set(_attrs(ga)) | set(_attrs(gb))
                      if _attrs(ga).get(k) != _attrs(gb).get(k))
        diffs.append(f"attributes differ: {keys}")
    arrays_a, arrays_b = dict(_arrays(ga)), dict(_arrays(gb))
    if set(arrays_a) != set(arrays_b):
        diffs.append(f"arrays differ: {sorted(set(arrays_a) ^ set(arrays_b))}")
    for path in sorted(set(arrays_a) & set(arrays_b)):
        xa, xb = arrays_a[path][...], arrays_b[path][...]
        if xa.dtype != xb.dtype or xa.shape != xb.shape:
            diffs.append(f"{path}: {xa.dtype}{xa.shape} vs {xb.dtype}{xb.shape}")
        elif xa.dtype.kind in "OUT":
            if not np.array_equal(xa, xb):
                diffs.append(f"{path}: values differ")
        elif np.ascontiguousarray(xa).tobytes() != np.ascontiguousarray(xb).tobytes():
            diffs.append(f"{path}: bytes differ")
    return diffs


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    left, right = pathlib.Path(argv[0]), pathlib.Path(argv[1])
    names = argv[2:] or sorted(p.name for p in left.iterdir() if not p.name.startswith("."))
    bad = 0
    for name in names:
        diffs = compare(left / name, right / name)
        print(f"{name}: {'identical' if not diffs else '; '.join(diffs)}")
        bad += bool(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
