"""The dataset store: attributes read straight from zarr.json agree with zarr's reader."""

import json

import numpy as np
import pytest
import zarr

from ciml.dataset import store
from ciml.errors import NotFoundError
from ciml.paths import DataPath
from ciml.testing import make_dataset


def test_attributes_read_without_zarr_equal_zarrs(data_path):
    make_dataset(data_path, "ds", n=30)
    path = DataPath(data_path).dataset("ds")
    fast = store.read_attrs(path)
    by_zarr = dict(zarr.open_group(str(path), mode="r", zarr_format=3).attrs)
    assert fast == by_zarr
    assert fast["complete"] is True


def test_an_incomplete_or_broken_group_is_refused(data_path, tmp_path):
    make_dataset(data_path, "ds", n=30)
    path = DataPath(data_path).dataset("ds")
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["complete"]
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(NotFoundError, match="not a complete dataset"):
        store.read_attrs(path)
    # Not JSON: zarr's own reader is asked, and its error reported.
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(NotFoundError):
        store.read_attrs(path)
    with pytest.raises(NotFoundError):
        store.read_attrs(tmp_path / "nothing-here")


@pytest.mark.parametrize("value", [
    np.arange(290, dtype="float64").reshape(10, 29) / 7.0,
    np.array([np.nan, -0.0, 1e-300, np.inf], dtype="float64"),
    np.arange(12, dtype="float32").reshape(3, 4) - 5.5,
    np.arange(-3, 9, dtype="int64"),
    np.array([2.5], dtype="float64"),
])
def test_state_arrays_read_without_zarr_equal_zarrs(tmp_path, monkeypatch, value):
    path = tmp_path / "ds"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    # As DatasetWriter.finish stores a fitted normalizer's arrays.
    state = group.create_group(store.STATE_GROUP)
    array = state.create_array("1-scale-mean_", shape=value.shape, dtype=value.dtype,
                               chunks=value.shape or None)
    array[...] = value
    fast = store._local_state_array(path, "1-scale-mean_")
    assert fast is not None
    by_zarr = np.asarray(zarr.open_group(str(path), mode="r")[store.STATE_GROUP]
                         ["1-scale-mean_"][...])
    assert fast.dtype == by_zarr.dtype and fast.shape == by_zarr.shape
    assert fast.tobytes() == by_zarr.tobytes()
    assert fast.flags.writeable
    assert store.read_state_array(path, "1-scale-mean_").tobytes() == by_zarr.tobytes()


def test_state_arrays_zarr_must_read_are_left_to_zarr(tmp_path):
    from zarr.codecs import BloscCodec

    path = tmp_path / "ds"
    state = zarr.open_group(str(path), mode="w", zarr_format=3).create_group(store.STATE_GROUP)
    value = np.arange(40, dtype="float64").reshape(4, 10)
    # Another codec, and several chunks: zarr's business.
    state.create_array("blosc", shape=value.shape, dtype=value.dtype, chunks=value.shape,
                       compressors=BloscCodec())[...] = value
    state.create_array("chunked", shape=value.shape, dtype=value.dtype,
                       chunks=(2, 10))[...] = value
    # A chunk never written reads as the fill value.
    state.create_array("unwritten", shape=value.shape, dtype=value.dtype, chunks=value.shape,
                       fill_value=3.0)
    for key in ("blosc", "chunked", "unwritten", "../state/blosc", "missing"):
        assert store._local_state_array(path, key) is None, key
    assert np.array_equal(store.read_state_array(path, "blosc"), value)
    assert np.array_equal(store.read_state_array(path, "chunked"), value)
    assert np.array_equal(store.read_state_array(path, "unwritten"), np.full((4, 10), 3.0))
    # A corrupt chunk is zarr's to report, not silently read.
    state.create_array("corrupt", shape=value.shape, dtype=value.dtype,
                       chunks=value.shape)[...] = value
    chunk = path / store.STATE_GROUP / "corrupt" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    assert store._local_state_array(path, "corrupt") is None
