"""The dataset store: attributes read straight from zarr.json agree with zarr's reader."""

import json

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
