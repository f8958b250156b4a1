"""Building datasets: Zarr layout, splits, scaling, skips, determinism, atomicity."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr
from fakes import COLUMNS_072, fake_history  # conftest puts this folder on the path

from ciml.dataset import Dataset, build_dataset, delete_dataset, iter_batches, list_datasets
from ciml.errors import (
    AlreadyExistsError,
    CimlError,
    ConfigError,
    MetricsUnavailable,
    NotFoundError,
)
from ciml_plugins.normalizers.builtin import normalized_length

HERE = os.path.dirname(__file__)


def build(data_path, history, name="ds", **kw):
    kw.setdefault("progress", False)
    return build_dataset(data_path, name, "tempest-full", cache=history, **kw)


def test_layout_read_back_with_zarr(data_path, history):
    summary = build(data_path, history, sample_interval="10s", fixed_length=550)
    group = zarr.open_group(str(data_path.dataset("ds")), mode="r")
    assert group.metadata.zarr_format == 3
    attrs = dict(group.attrs)
    assert attrs["complete"] is True
    assert attrs["classes"] == ["passed", "failed"]
    assert attrs["config"]["sample_interval"] == "10s"
    assert attrs["provenance"]["run_count"] == 40
    assert attrs["provenance"]["query"] == {"build_name": "tempest-full", "slicer": ":"}
    assert attrs["provenance"]["ciml_version"]
    assert [s["name"] for s in attrs["chain"]] == ["filter", "resample", "fixed-length",
                                                   "scale"]
    total = 0
    for split in ("training", "dev", "test"):
        X = group[split]["X"]
        assert X.dtype == np.float32
        assert X.shape[1:] == (550, 9)
        assert X.chunks[1:] == (550, 9)
        assert group[split]["y"].dtype == np.int64
        assert group[split]["ids"].shape == (X.shape[0],)
        total += X.shape[0]
    assert total == 39  # one corrupt run left out
    assert summary["splits"] == {s: group[s]["X"].shape[0] for s in attrs["splits"]}


def test_chunked_along_examples(data_path):
    from fakes import fake_history

    build(data_path, fake_history(n=30), aggregation_functions=["mean"], scale="none")
    ds = Dataset.open(data_path, "ds")
    X = ds.split("training").X
    assert X.shape == (18, 1, 9)
    from ciml.dataset import store

    big = store.chunk_examples((5500, 31))
    assert 1 <= big < 100 and store.chunk_examples((1, 31)) == store.MAX_CHUNK_EXAMPLES
    batches = list(iter_batches(X, ds.split("training").y, batch_size=7))
    assert [len(b[0]) for b in batches] == [7, 7, 4]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), X[:])


def test_resampled_example_equals_pandas_by_hand(data_path, history):
    build(data_path, history, sample_interval="1min", scale="none",
          fixed_length=normalized_length("1min"))
    ds = Dataset.open(data_path, "ds")
    sp = ds.split("dev")
    run_id = sp.ids[0]
    raw = history.frame(run_id)
    by_hand = raw[ds.features].resample("1min").mean().to_numpy()
    length = normalized_length("1min")
    expected = np.zeros((length, len(ds.features)))
    expected[:len(by_hand)] = by_hand[:length]
    np.testing.assert_allclose(sp.X[0], expected.astype("float32"), rtol=1e-6)
    assert sp.lengths[0] == len(by_hand)


def test_scaling_fitted_on_training_only(data_path, history):
    build(data_path, history, name="raw", aggregation_functions=["mean", "max"], scale="none")
    build(data_path, history, name="scaled", aggregation_functions=["mean", "max"])
    raw, scaled = Dataset.open(data_path, "raw"), Dataset.open(data_path, "scaled")
    train = raw.split("training").X[:]
    state = scaled.chain()[-1].get_state()
    np.testing.assert_allclose(state["mean_"], train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(state["scale_"], train.max(axis=0) - train.min(axis=0),
                               rtol=1e-5)
    assert state["n_samples_seen_"] == len(train)
    mean = np.asarray(state["mean_"])
    rng = np.asarray(state["scale_"])
    for split in ("training", "test"):
        expected = (raw.split(split).X[:] - mean) / rng
        np.testing.assert_allclose(scaled.split(split).X[:], expected, rtol=1e-4, atol=1e-5)
    # Training values span at most one range around the mean.
    assert np.abs(scaled.split("training").X[:]).max() <= 1.0 + 1e-6


def test_zero_padding_is_not_passed_through_raw(data_path, history):
    # At 1 s every run is shorter than 5500 samples: the tail is constant 0 in
    # training, so dev/test values there must come out 0, never raw.
    build(data_path, history, fixed_length=5500, scale_per="cell")
    ds = Dataset.open(data_path, "ds")
    for split in ds.splits:
        X = ds.split(split).X[:]
        assert np.isfinite(X).all()
        # No run is longer than 300 samples: past that, everything is 0.
        assert (X[:, 300:, :] == 0).all()


def test_default_length_is_what_the_training_runs_need(data_path, history):
    from ciml.dataset.length import training_length

    build(data_path, history, sample_interval="10s", scale="none")
    ds = Dataset.open(data_path, "ds")
    train_ids = ds.split("training").ids
    needed = training_length(history, train_ids, "10s")
    assert ds.example_shape[0] == needed
    assert ds.config["fixed_length_from"] == "p95 of the training runs' lengths"
    # Nearly every training run fits whole: few are cut, little is padding.
    lengths = ds.split("training").lengths
    assert (lengths <= needed).mean() >= 0.9
    assert lengths.mean() / needed > 0.5
    # A new run is cut or padded to the stored length at prediction time.
    long = history.frame(train_ids[0])
    example = ds.example_from_frame(long)
    assert example.shape == ds.example_shape


def test_per_feature_scaling_keeps_dev_and_test_in_range(data_path, history):
    build(data_path, history, name="cell", scale_per="cell", fixed_length=400)
    build(data_path, history, name="feat", fixed_length=400)
    cell, feat = Dataset.open(data_path, "cell"), Dataset.open(data_path, "feat")
    assert feat.config["scale_per"] == "feature" and cell.config["scale_per"] == "cell"
    assert np.asarray(feat.chain()[-1].get_state()["mean_"]).shape == (1, 9)
    for split in ("dev", "test"):
        # One scale per feature: a late time step few training runs reached
        # is not scaled by those few values.
        assert np.abs(feat.split(split).X[:]).max() <= np.abs(cell.split(split).X[:]).max()
        assert np.abs(feat.split(split).X[:]).max() < 50


def test_time_split_trains_on_the_past(data_path, history):
    build(data_path, history, split="time", tdt_split=(6, 2, 2))
    ds = Dataset.open(data_path, "ds")
    starts = {r.id: r.start for r in history.runs()}
    last = None
    for split in ("training", "dev", "test"):
        ids = ds.split(split).ids
        assert ids == sorted(ids, key=lambda i: (starts[i], i))
        if last is not None:
            assert min(starts[i] for i in ids) > last
        last = max(starts[i] for i in ids)
    assert len(ds.split("training")) == 23  # 24 oldest, less the corrupt run 5


def test_reproducible_with_a_seed(data_path, history):
    a = build(data_path, history, name="a", seed=7, aggregation_functions=["mean", "std"])
    b = build(data_path, history, name="b", seed=7, aggregation_functions=["mean", "std"])
    c = build(data_path, history, name="c", seed=8, aggregation_functions=["mean", "std"])
    assert a["fingerprint"] == b["fingerprint"] != c["fingerprint"]
    da, db, dc = (Dataset.open(data_path, n) for n in "abc")
    for split in da.splits:
        np.testing.assert_array_equal(da.split(split).X[:], db.split(split).X[:])
        np.testing.assert_array_equal(da.split(split).y, db.split(split).y)
        assert da.split(split).ids == db.split(split).ids
    assert da.split("training").ids != dc.split("training").ids


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_parallel_executors_give_the_same_dataset(data_path, history, executor):
    a = build(data_path, history, name="serial", executor="serial", sample_interval="10s")
    b = build(data_path, history, name=executor, executor=executor, workers=2,
              sample_interval="10s")
    assert a["fingerprint"] == b["fingerprint"]
    for split in ("training", "test"):
        np.testing.assert_array_equal(Dataset.open(data_path, "serial").split(split).X[:],
                                      Dataset.open(data_path, executor).split(split).X[:])


def test_bad_runs_are_reported_and_left_out(data_path, history):
    summary = build(data_path, history, features_regex="^(usr|free)$")
    reasons = {s["run_id"]: s["reason"] for s in summary["skipped"]}
    assert reasons == {"run-0005": "corrupt-cache"}
    ds = Dataset.open(data_path, "ds")
    assert ds.features == ["free", "usr"]  # sorted by name, whatever the file order
    assert "run-0005" not in sum((ds.split(s).ids for s in ds.splits), [])
    assert ds.attrs["skipped"][0]["run_id"] == "run-0005"


def test_features_are_the_columns_every_run_has(data_path, history, caplog):
    # Like a cache mixing dstat 0.7.2 (hiq, siq) and 0.7.3 (stl) runs: the
    # odd columns are dropped, reported once, and no run is left out for them.
    runs = history.runs()
    for i, run in enumerate(runs):
        if run.id in history.frames:
            history.frames[run.id]["hiq" if i % 2 else "stl"] = 1.0
    history.frames[runs[3].id] = history.frames[runs[3].id].drop(columns=["free"])
    with caplog.at_level("WARNING", logger="ciml.dataset.build"):
        summary = build(data_path, history)
    assert [s["reason"] for s in summary["skipped"]] == ["corrupt-cache"]
    assert summary["dropped_features"] == ["free", "hiq", "stl"]
    ds = Dataset.open(data_path, "ds")
    assert ds.features == sorted(set(COLUMNS_072) - {"free"})
    assert ds.attrs["dropped_features"] == ["free", "hiq", "stl"]
    assert runs[3].id in ds.split("training").ids + ds.split("dev").ids + ds.split("test").ids
    dropped = [r.getMessage() for r in caplog.records if "not in every run" in r.getMessage()]
    assert len(dropped) == 1 and "free (missing in 1 of 39 runs)" in dropped[0]
    # The pinned list is in the stored chain: prediction picks the same columns.
    assert ds.attrs["chain"][0]["params"]["columns"] == ds.features


def test_regex_matches_missing_from_some_runs_are_dropped(data_path, history):
    run = history.runs()[3]
    history.frames[run.id] = history.frames[run.id].drop(columns=["free"])
    summary = build(data_path, history, features_regex="^(usr|sys|free)$")
    assert summary["features"] == ["sys", "usr"]
    assert summary["dropped_features"] == ["free"]
    assert summary["skipped_by_reason"] == {"corrupt-cache": 1}


def test_run_without_any_matching_column_is_left_out(data_path, history):
    run = history.runs()[3]
    history.frames[run.id] = history.frames[run.id].drop(columns=["usr", "sys"])
    summary = build(data_path, history, features_regex="^(usr|sys)$")
    skipped = {s["run_id"]: s for s in summary["skipped"]}
    assert skipped[run.id]["reason"] == "missing-columns"
    assert "^(usr|sys)$" in skipped[run.id]["message"]
    assert summary["features"] == ["sys", "usr"] and summary["dropped_features"] == []
    with pytest.raises(CimlError, match="no run of 'tempest-full' has a metric column "
                       "matching"):
        build(data_path, history, name="none", features_regex="^nosuch$")


def test_no_common_column_is_a_clear_error(data_path):
    cache = fake_history(n=12)
    for i, run in enumerate(cache.runs()):
        cache.frames[run.id] = cache.frames[run.id][["usr"] if i % 2 else ["sys"]]
    with pytest.raises(CimlError, match="no metric column is present in all 12 runs"):
        build(data_path, cache)


def test_skipped_runs_one_line_per_reason(data_path, caplog):
    cache = fake_history(n=40, bad=(2, 5, 9, 11, 20))
    cache.records["run-0007"].status = None
    with caplog.at_level("DEBUG", logger="ciml.dataset.build"):
        summary = build(data_path, cache)
    assert summary["skipped_by_reason"] == {"corrupt-cache": 5, "unlabelled": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    corrupt = next(w for w in warnings if "corrupt-cache" in w)
    assert "ds: 5 run(s) left out, corrupt-cache: " in corrupt and "and 2 more" in corrupt
    per_run = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"
               and "left out run-" in r.getMessage()]
    assert len(per_run) == 6


def test_tdt_split_must_sum_to_ten(data_path, history):
    with pytest.raises(ConfigError, match="sum to 10"):
        build(data_path, history, tdt_split=(6, 2, 1))
    with pytest.raises(ConfigError):
        build(data_path, history, tdt_split=(0, 5, 5))
    assert list_datasets(data_path) == []


def test_no_overwrite_without_force(data_path, history):
    first = build(data_path, history, seed=1)
    with pytest.raises(AlreadyExistsError, match="--force"):
        build(data_path, history, seed=2)
    assert Dataset.open(data_path, "ds").fingerprint == first["fingerprint"]
    second = build(data_path, history, seed=2, force=True)
    assert Dataset.open(data_path, "ds").fingerprint == second["fingerprint"]
    assert [p.name for p in data_path.datasets.iterdir()] == ["ds"]


@pytest.mark.parametrize("options", [
    {"sample_interval": "10s"},
    {"sample_interval": "10s", "scale": "zscore"},
    {"aggregation_functions": ["mean", "p90", "max"]},
    {"scale": "none"},
])
def test_example_from_frame_is_bit_identical_to_the_stored_example(data_path, history,
                                                                    options):
    """12.9: prediction computes every example exactly as the build stored it."""
    build(data_path, history, **options)
    ds = Dataset.open(data_path, "ds")
    for name in ds.splits:
        sp = ds.split(name)
        stored = np.asarray(sp.X[...])
        for i, run_id in enumerate(sp.ids):
            example = ds.example_from_frame(history.frame(run_id))
            assert example.dtype == np.float32 and example.shape == ds.example_shape
            assert (example == stored[i]).all(), (name, run_id)


def test_example_from_frame_uses_the_pinned_features(data_path, history):
    run = history.runs()[3]
    history.frames[run.id] = history.frames[run.id].drop(columns=["free"])
    build(data_path, history, sample_interval="10s")
    ds = Dataset.open(data_path, "ds")
    assert "free" not in ds.features
    sp = ds.split("test")
    frame = history.frame(sp.ids[0])
    # Extra columns and another column order change nothing.
    frame["cpu_new"] = 7.0
    frame = frame[list(reversed(frame.columns))]
    assert np.array_equal(ds.example_from_frame(frame), sp.X[0])
    with pytest.raises(MetricsUnavailable) as info:
        ds.example_from_frame(frame.drop(columns=["usr", "idl"]))
    assert info.value.reason == "missing-columns"
    assert "idl, usr" in str(info.value)
    with pytest.raises(MetricsUnavailable) as info:
        ds.example_from_frame(frame.iloc[:0])
    assert info.value.reason == "empty"


def test_node_provider_classes_and_label_of(data_path, history):
    build(data_path, history, class_label="node_provider", aggregation_functions=["mean"])
    ds = Dataset.open(data_path, "ds")
    assert ds.classes == ["inap", "limestone", "ovh", "rax", "vexxhost"]
    run = history.record("run-0000")
    assert ds.label_of(run) == "rax"
    tr = ds.split("training")
    code = tr.y[tr.ids.index("run-0000")] if "run-0000" in tr.ids else None
    if code is not None:
        assert ds.classes[code] == "rax"


def test_open_list_delete(data_path, history):
    with pytest.raises(NotFoundError):
        Dataset.open(data_path, "ds")
    build(data_path, history, aggregation_functions=["mean"])
    assert list_datasets(data_path) == ["ds"]
    with pytest.raises(NotFoundError):
        Dataset.open(data_path, "ds").split("nosuch")
    delete_dataset(data_path, "ds")
    assert list_datasets(data_path) == []
    with pytest.raises(NotFoundError):
        delete_dataset(data_path, "ds")


SLOW_BUILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    from fakes import fake_history
    from ciml.dataset import build_dataset
    cache = fake_history(n=400)
    frame = cache.frame
    def slow(run_id):
        time.sleep(0.02)
        return frame(run_id)
    cache.frame = slow
    print("started", flush=True)
    build_dataset({root!r}, "ds", "tempest-full", cache=cache, force=True, seed=3,
                  progress=False, executor="serial")
""")


def test_interrupted_build_keeps_the_previous_dataset(data_path, history):
    before = build(data_path, history, seed=1)
    script = SLOW_BUILD.format(here=HERE, root=str(data_path.root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"started"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.name.startswith(".tmp@") and p.name.endswith("@ds")
               for p in data_path.datasets.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_datasets(data_path) == ["ds"]
    assert Dataset.open(data_path, "ds").fingerprint == before["fingerprint"]
    leftovers = [p for p in data_path.datasets.iterdir() if p.name != "ds"]
    assert leftovers and all(p.name.startswith(".") for p in leftovers)
    # The next build of the name cleans up after the dead one.
    build(data_path, history, seed=2, force=True)
    assert [p.name for p in data_path.datasets.iterdir()] == ["ds"]


PAUSED_BUILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {here!r})
    from fakes import fake_history
    from ciml.dataset import build_dataset, store
    opened = store.DatasetWriter.__init__
    def pause_once_open(self, *a, **kw):
        opened(self, *a, **kw)
        # The temporary folder exists now: stop here until the test resumes us.
        os.kill(os.getpid(), signal.SIGSTOP)
    store.DatasetWriter.__init__ = pause_once_open
    build_dataset({root!r}, {name!r}, "tempest-full", cache=fake_history(n=40, bad=(5,)), seed=3,
                  progress=False, executor="serial")
""")


def test_a_build_of_a_prefix_name_leaves_a_paused_build_alone(data_path, history):
    """12.1: ``build tf`` while ``build tf-<N>`` is paused must not delete its folder.

    The old cleanup read ``N`` as the paused build's process id; N is above
    any pid so that, there, the process always looked dead.
    """
    name = "tf-999999999"
    script = PAUSED_BUILD.format(here=HERE, root=str(data_path.root), name=name)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), status
        staging = [p.name for p in data_path.datasets.iterdir() if p.name.startswith(".")]
        assert len(staging) == 1
        build(data_path, history, name="tf", seed=3)
        assert [p.name for p in data_path.datasets.iterdir()
                if p.name.startswith(".")] == staging
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=300) == 0
    assert sorted(list_datasets(data_path)) == ["tf", name]
    paused = Dataset.open(data_path, name)
    # fake_history(n=40, bad=(5,)) is the fixture's history: the same runs and chain.
    assert paused.fingerprint == Dataset.open(data_path, "tf").fingerprint
    assert len(paused.split("training")) == paused.attrs["counts"]["training"] > 0


def test_a_build_whose_folder_was_changed_is_not_moved_into_place(data_path, history,
                                                                   monkeypatch):
    import shutil

    from ciml.dataset import store

    finish = store.DatasetWriter.finish

    def finish_then_lose_a_chunk(self, counts, attrs, state_arrays=None):
        finish(self, counts, attrs, state_arrays)
        # What a stray cleanup does to a build in progress.
        shutil.rmtree(os.path.join(self.group.store.root, "training", "X", "c"))

    monkeypatch.setattr(store.DatasetWriter, "finish", finish_then_lose_a_chunk)
    with pytest.raises(CimlError, match="changed by something else.*training/X has 0 of"):
        build(data_path, history)
    assert list(data_path.datasets.iterdir()) == []


def test_dataset_built_hook_is_called(data_path, history):
    from ciml.hookspecs import hookimpl
    from ciml.plugins import get_manager

    seen = []

    class Reporter:
        @hookimpl
        def ciml_dataset_built(self, name, path, summary):
            seen.append((name, path, summary["splits"]))

    get_manager().add_plugin(Reporter(), "reporter")
    summary = build(data_path, history, aggregation_functions=["mean"])
    assert seen == [("ds", data_path.dataset("ds"), summary["splits"])]


def test_iter_batches_whole_chunks(data_path):
    from fakes import fake_history

    from ciml.dataset import store

    build(data_path, fake_history(n=20), scale="none")
    X = Dataset.open(data_path, "ds").split("training").X
    assert X.chunks[0] == store.chunk_examples(X.shape[1:])
    (x, y), = list(iter_batches(X))
    assert y is None and x.shape == X.shape and x.dtype == np.float32


def test_every_chunk_is_on_disk_before_the_dataset_is_moved_into_place(data_path, history,
                                                                        monkeypatch):
    """12.6: no "complete" dataset whose chunks a power loss leaves empty."""
    from ciml import fileutil

    synced, moved = set(), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        if os.path.isdir(src) and str(dst) == str(data_path.dataset("ds")):
            files = {os.path.realpath(os.path.join(r, f))
                     for r, _, fs in os.walk(src) for f in fs}
            moved.append(sorted(files - synced))
        return real_replace(src, dst)

    monkeypatch.setattr(fileutil.os, "fsync", fsync)
    monkeypatch.setattr(fileutil.os, "replace", replace)
    build(data_path, history)
    assert moved == [[]]


class _MemoryOnly:
    """A third-party normalizer that selects the features instead of the built-in filter."""

    @staticmethod
    def make():
        from ciml.base import Normalizer, Parameter

        class MemoryOnlyNormalizer(Normalizer):
            """Keep the memory columns, largest name first"""

            name = "memory-only"
            selects_features = True
            parameters = (Parameter("columns", multiple=True, help="pinned by the build"),)

            def select(self, columns):
                return sorted((c for c in columns if c in ("used", "free", "buff", "cach")),
                              reverse=True)

            def pin_features(self, columns):
                self.columns = list(columns)

            def transform(self, frame):
                missing = [c for c in self.columns if c not in frame.columns]
                if missing:
                    raise MetricsUnavailable("missing-columns", f"lacks {missing}")
                return frame[list(self.columns)].astype("float64")

        return MemoryOnlyNormalizer


def test_a_third_party_normalizer_can_select_the_features(data_path, history):
    """12.14: the build asks the chain's selector, not the built-in filter by position."""
    from ciml.hookspecs import hookimpl
    from ciml.plugins import get_manager

    cls = _MemoryOnly.make()

    class Plugin:
        @hookimpl
        def ciml_register_normalizers(self, register):
            register(cls)

    get_manager().add_plugin(Plugin(), "memory-only")
    build(data_path, history, normalizers=["memory-only"], sample_interval="10s")
    ds = Dataset.open(data_path, "ds")
    # Its own selection (sorted by name, as every build does), pinned; no filter step.
    assert ds.features == ["buff", "cach", "free", "used"]
    assert [s["name"] for s in ds.attrs["chain"]][:2] == ["memory-only", "resample"]
    assert ds.attrs["chain"][0]["params"]["columns"] == ds.features
    sp = ds.split("test")
    frame = history.frame(sp.ids[0])
    assert np.array_equal(ds.example_from_frame(frame), sp.X[0])
    with pytest.raises(MetricsUnavailable):
        ds.example_from_frame(frame.drop(columns=["cach"]))
    with pytest.raises(ConfigError, match="selects the features itself"):
        build(data_path, history, name="other", normalizers=["memory-only"],
              features_regex="usr")


def test_the_default_chain_needs_no_built_in_module():
    """12.14: the core computes the default length itself (ciml.base.normalized_length)."""
    code = ("import sys; from ciml.dataset.build import default_chain; "
            "from ciml.plugins import get_manager; m = get_manager(); "
            "sys.modules.pop('ciml_plugins.normalizers.builtin', None); "
            "import builtins; real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    assert name != 'ciml_plugins.normalizers.builtin', name\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "print(default_chain(sample_interval='10s')[-2])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'length': 550" in proc.stdout


def test_a_dataset_of_many_chunks_with_skipped_runs_passes_its_own_check(data_path, history,
                                                                         monkeypatch):
    from ciml.dataset import store

    monkeypatch.setattr(store, "MAX_CHUNK_EXAMPLES", 4)
    summary = build(data_path, history)
    assert summary["skipped"] and summary["splits"]["training"] > 8
    ds = Dataset.open(data_path, "ds")
    assert ds.split("training").X.chunks[0] == 4
