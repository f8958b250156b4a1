"""Long work reports progress and ends cleanly on Ctrl-C, saying what was kept."""

import io
import json
import logging

import pytest

from ciml import progress
from ciml.base import FetchedMetrics
from ciml.errors import Interrupted
from ciml.hookspecs import hookimpl
from ciml.plugins import get_manager
from ciml.testing import make_dataset
from ciml.testing.estimators import NearestCentroidEstimator


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def verbosity():
    yield progress.set_verbosity
    progress.set_verbosity(1)


def test_epochs_are_lines_in_a_pipe(caplog, verbosity):
    verbosity(1)
    with caplog.at_level(logging.INFO, logger="ciml.progress"):
        bar = progress.EpochProgress(3, stream=io.StringIO())
        bar.update(1, {"loss": 0.5, "val_loss": 0.75, "accuracy": 0.9})
        bar.update(2, {"loss": 0.25})
        bar.close()
    assert [r.getMessage() for r in caplog.records] == [
        "training: epoch 1/3: loss 0.5000, val_loss 0.7500",
        "training: epoch 2/3: loss 0.2500"]


def test_epochs_are_a_bar_on_a_terminal_and_nothing_with_q(caplog, verbosity):
    tty = _Tty()
    verbosity(1)
    with caplog.at_level(logging.INFO, logger="ciml.progress"):
        bar = progress.EpochProgress(2, stream=tty)
        bar.update(1, {"loss": 0.5, "val_loss": 0.75})
        bar.close()
    assert "val_loss=0.7500" in tty.getvalue() and "epoch" in tty.getvalue()
    assert not caplog.records
    verbosity(0)
    tty = _Tty()
    bar = progress.EpochProgress(2, stream=tty)
    bar.update(1, {"loss": 0.5})
    bar.close()
    assert tty.getvalue() == "" and bar.bar is None


def test_cli_quiet_option_sets_progress_verbosity(run_ciml, verbosity):
    run_ciml(["-q", "plugin", "list", "-f", "value", "-c", "name"])
    assert progress.verbosity() == 0
    run_ciml(["plugin", "list", "-f", "value", "-c", "name"])
    assert progress.verbosity() == 1


# -- Ctrl-C ---------------------------------------------------------------------


def test_cache_data_interrupted_says_how_many_runs_were_kept(run_ciml, data_path, monkeypatch):
    import datetime as dt

    import numpy as np
    import pandas as pd

    from ciml import collect
    from ciml.cache import RawCache
    from ciml.records import RunRecord

    def store_two_then_ctrl_c(path, source, metrics, build_name, **kwargs):
        with RawCache(path) as cache:
            for i in range(2):
                run = RunRecord(id=f"r{i}", build_name=build_name, status="passed",
                                start=dt.datetime(2024, 1, 1 + i, tzinfo=dt.timezone.utc))
                index = pd.date_range(run.start, periods=3, freq="s").as_unit("ns")
                cache.store(run, FetchedMetrics("dstat.csv", b"x", "http://l/x"),
                            pd.DataFrame({"cpu_usr": np.ones(3)}, index=index))
        raise KeyboardInterrupt

    monkeypatch.setattr(collect, "cache_data", store_two_then_ctrl_c)
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "cache-data",
                             "--build-name", "tempest-full", "--db-uri",
                             f"sqlite:///{data_path.root / 'none.db'}"])
    assert rc == 130
    assert err.strip().splitlines()[-1] == (
        "interrupted: 2 runs cached (2 of tempest-full in the cache), rerun to continue")


def test_build_dataset_interrupted_says_nothing_was_written(run_ciml, data_path,
                                                           monkeypatch):
    import ciml.dataset

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ciml.dataset, "build_dataset", ctrl_c)
    data_path.root.mkdir()
    rc, out, err = run_ciml(["--data-path", str(data_path.root), "build-dataset",
                             "--dataset", "x"])
    assert rc == 130
    assert "interrupted: nothing was written; dataset 'x' was not created" in err


class InterruptibleEstimator(NearestCentroidEstimator):
    """Fits, then is 'interrupted' as a Keras fit would be, its best model kept."""

    name = "interruptible"

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        super().fit(X, y, classes=classes, validation=validation, log_dir=log_dir, seed=seed)
        self.interrupted_ = {"epochs_run": 4, "best_epoch": 3}
        raise KeyboardInterrupt

    def finish_interrupted(self, X, y, validation=None):
        return bool(self.interrupted_)


class _Plugin:
    @hookimpl
    def ciml_register_estimators(self, register):
        register(InterruptibleEstimator)
        register(NearestCentroidEstimator)


@pytest.fixture
def interruptible(data_path, run_ciml):
    get_manager().add_plugin(_Plugin(), "interruptible-test")
    make_dataset(data_path, "ds", n=30)
    for name in ("interruptible", "nearest-centroid"):
        rc, out, err = run_ciml(["--data-path", str(data_path.root), "setup-experiment",
                                 "--experiment", name, "--estimator", name])
        assert rc == 0, err
    return data_path


def test_train_model_interrupted_saves_nothing_unless_asked(run_ciml, interruptible):
    root = str(interruptible.root)
    rc, out, err = run_ciml(["--data-path", root, "train-model", "--dataset", "ds",
                             "--experiment", "interruptible"])
    assert rc == 130 and out == ""
    assert ("interrupted: training stopped, nothing was saved (train-model "
            "--keep-on-interrupt keeps the best model so far)") in err
    assert not interruptible.model("ds", "interruptible").exists()
    assert not [p for p in (interruptible.models / "ds").iterdir()]  # no staging left


def test_train_model_keeps_the_best_model_when_asked(run_ciml, interruptible):
    root = str(interruptible.root)
    rc, out, err = run_ciml(["--data-path", root, "train-model", "--dataset", "ds",
                             "--experiment", "interruptible", "--keep-on-interrupt",
                             "-f", "json"])
    assert rc == 130
    assert json.loads(out)["interrupted"] == {"epochs_run": 4, "best_epoch": 3}
    folder = interruptible.model("ds", "interruptible")
    assert ("interrupted: training stopped after 4 epoch(s); kept the model of epoch 3, "
            f"the best so far, in {folder}") in err
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["interrupted"] == {"epochs_run": 4, "best_epoch": 3}


def test_gpu_option_needs_an_estimator_with_a_device_choice(run_ciml, interruptible):
    rc, out, err = run_ciml(["--data-path", str(interruptible.root), "train-model",
                             "--dataset", "ds", "--experiment", "nearest-centroid", "--gpu"])
    assert rc == 1
    assert "estimator 'nearest-centroid' has no device choice: --gpu does not apply" in err
    # It uses no GPU anyway: --no-gpu holds.
    rc, out, err = run_ciml(["--data-path", str(interruptible.root), "train-model",
                             "--dataset", "ds", "--experiment", "nearest-centroid",
                             "--no-gpu", "-f", "value", "-c", "accuracy"])
    assert rc == 0, err


def test_interrupted_is_a_keyboard_interrupt_with_its_message():
    exc = Interrupted("3 runs cached")
    assert isinstance(exc, KeyboardInterrupt) and str(exc) == "3 runs cached"
