"""Mistakes a user makes get an error in ciml's words, naming what is wrong."""

import pytest

from ciml.testing import make_dataset

READERS = [("dataset", "list"), ("model", "list"), ("run", "list"), ("experiment", "list"),
           ("dataset", "show", "x"), ("run", "show", "x")]


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_missing_data_path_is_named(run_ciml, tmp_path, command):
    missing = tmp_path / "mistyped"
    rc, out, err = run_ciml(["--data-path", str(missing), *command])
    assert rc == 1 and out.strip() == ""
    assert f"data path {missing} does not exist" in err
    assert not missing.exists()


@pytest.mark.parametrize("command", READERS[:4], ids=" ".join)
def test_data_path_that_is_a_file_is_named(run_ciml, tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, out, err = run_ciml(["--data-path", str(afile), *command])
    assert rc == 1 and f"data path {afile} is not a folder" in err


@pytest.mark.parametrize("command", READERS[:4], ids=" ".join)
def test_empty_data_path_lists_nothing(run_ciml, tmp_path, command):
    rc, out, err = run_ciml(["--data-path", str(tmp_path), *command, "-f", "json"])
    assert rc == 0 and out.strip() == "[]", err


def test_cache_data_names_a_bad_data_path(run_ciml, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    db = f"sqlite:///{tmp_path / 'none.db'}"
    rc, out, err = run_ciml(["--data-path", str(afile), "cache-data", "--build-name", "j",
                             "--db-uri", db])
    assert rc == 1 and f"data path {afile} is not a folder" in err
    assert "Errno" not in err
    deep = tmp_path / "typo" / "data"
    rc, out, err = run_ciml(["--data-path", str(deep), "cache-data", "--build-name", "j",
                             "--db-uri", db])
    assert rc == 1 and f"its parent {deep.parent} does not exist" in err
    assert "Errno" not in err and not deep.parent.exists()


def test_cache_data_creates_a_data_path_whose_parent_exists(tmp_path):
    from ciml.paths import check_data_path

    new = tmp_path / "new"
    assert check_data_path(new, create=True) == new and new.is_dir()
    # The default data path is made with its parents (a fresh HOME has no ~/.local).
    deep = tmp_path / "home" / ".local" / "share" / "ciml"
    check_data_path(deep, create=True, explicit=False)
    assert deep.is_dir()


def test_model_show_names_what_does_not_exist(run_ciml, data_path):
    make_dataset(data_path, "ds", n=30)
    root = str(data_path.root)
    rc, out, err = run_ciml(["--data-path", root, "model", "show", "--dataset", "ds",
                             "--experiment", "nosuch"])
    assert rc == 1 and "experiment 'nosuch' does not exist" in err
    assert "train-model first" not in err
    rc, out, err = run_ciml(["--data-path", root, "model", "show", "--dataset", "nods",
                             "--experiment", "nosuch"])
    assert "dataset 'nods' does not exist" in err
    rc, out, err = run_ciml(["--data-path", root, "setup-experiment", "--experiment", "e"])
    assert rc == 0, err
    rc, out, err = run_ciml(["--data-path", root, "model", "show", "--dataset", "ds",
                             "--experiment", "e"])
    assert rc == 1 and "run ciml train-model --dataset ds --experiment e first" in err


@pytest.mark.parametrize("value,message", [
    ("0s", "'0s' is not longer than zero"),
    ("-1min", "'-1min' is not longer than zero"),
    ("banana", "'banana' is not an interval; give a number and a unit"),
])
def test_sample_interval_is_checked_before_building(run_ciml, data_path, value, message):
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "build-dataset",
                             f"--sample-interval={value}"])
    assert rc == 2 and f"argument --sample-interval: {message}" in err
    assert "modulo" not in err and "Traceback" not in err and err.count(message) == 1


def test_interval_longer_than_a_run_skips_it_with_the_reason():
    import numpy as np
    import pandas as pd

    from ciml.errors import MetricsUnavailable
    from ciml_plugins.normalizers.builtin import ResampleNormalizer

    index = pd.date_range("2024-01-01 10:50", periods=1800, freq="s")
    frame = pd.DataFrame({"cpu_usr": np.ones(1800)}, index=index)
    assert len(ResampleNormalizer(interval="1min").transform(frame)) == 30
    with pytest.raises(MetricsUnavailable, match="spans 29m59s, less than the sample "
                       "interval 2h") as info:
        ResampleNormalizer(interval="2h").transform(frame)
    assert info.value.reason == "too-short"
