"""How unusual a run is: the training profile stored with a dataset, and its scores."""

import numpy as np
import pytest

from ciml.dataset import Dataset, build_dataset
from ciml.dataset import profile as prof

FEATURES = ["cpu", "mem", "net"]


def _examples(n=200, t=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n, t, len(FEATURES))).astype("float32")
    lengths = rng.integers(500, 700, n)
    return X, lengths


def test_summary_labels_and_shapes():
    X, lengths = _examples(n=5)
    s = prof.summarize(X, lengths, "time")
    assert s.shape == (5, 2 * len(FEATURES) + 1)
    assert prof.summary_labels("time", [], FEATURES) == [
        "cpu:mean", "mem:mean", "net:mean", "cpu:max", "mem:max", "net:max", "length"]
    agg = prof.summarize(X[:, :2, :], lengths, "aggregate")
    assert agg.shape == (5, 2 * len(FEATURES) + 1)
    assert prof.summary_labels("aggregate", ["mean", "max"], FEATURES)[:4] == [
        "cpu:mean", "mem:mean", "net:mean", "cpu:max"]
    # One example alone, as at prediction time, gives the same summary.
    assert np.allclose(prof.summarize(X[2], [lengths[2]], "time")[0], s[2])


def test_fit_streams_in_chunks_and_ignores_reserved_rows():
    X, lengths = _examples(n=103)
    padded = np.concatenate([X, np.full((7, *X.shape[1:]), 99.0, "float32")])
    whole = prof.fit_profile(X, lengths, "time", [], FEATURES, chunk=1000)
    chunked = prof.fit_profile(padded, lengths, "time", [], FEATURES, chunk=10)
    assert whole["runs"] == chunked["runs"] == 103
    assert np.allclose(whole["center"], chunked["center"])
    assert np.allclose(whole["scale"], chunked["scale"])
    assert np.allclose(whole["scores"], chunked["scores"])
    assert prof.fit_profile(X[:0], lengths[:0], "time", [], FEATURES) is None


def test_a_shifted_feature_is_unusual_and_named():
    X, lengths = _examples()
    profile = prof.fit_profile(X, lengths, "time", [], FEATURES)
    ordinary = prof.score(profile, X[0], lengths[0], "time")
    assert 0.0 <= ordinary["percentile"] <= 100.0
    odd = X[0].copy()
    odd[:, 1] += 6.0   # memory far above every training run
    result = prof.score(profile, odd, lengths[0], "time")
    assert result["unusual"] is True and result["percentile"] == 100.0
    assert result["score"] > ordinary["score"]
    assert result["features"][0]["feature"] in ("mem:mean", "mem:max")
    assert result["features"][0]["z"] > 5
    # A run cut short is unusual by its length alone.
    short = prof.score(profile, X[0], 20, "time")
    assert short["features"][0] == {"feature": "length", "z": pytest.approx(-10.0)}


def test_training_scores_spread_over_the_percentiles():
    X, lengths = _examples(n=400, seed=3)
    profile = prof.fit_profile(X, lengths, "time", [], FEATURES)
    pcts = [prof.score(profile, X[i], lengths[i], "time")["percentile"] for i in range(400)]
    # The training runs themselves are spread evenly: 1% at or above the 99th.
    assert 45 < np.mean(pcts) < 55
    assert sum(p >= prof.DEFAULT_PERCENTILE for p in pcts) <= 8


def test_what_never_varied_in_training_is_floored_not_infinite():
    X, lengths = _examples(n=50)
    X[:, :, 2] = 0.0   # zero padding in every training run
    profile = prof.fit_profile(X, lengths, "time", [], FEATURES)
    odd = X[0].copy()
    odd[:, 2] = 1e-4   # float noise: below the floor, nothing unusual
    assert all(f["feature"] not in ("net:mean", "net:max")
               for f in prof.score(profile, odd, lengths[0], "time")["features"][:1])
    odd[:, 2] = 5.0
    result = prof.score(profile, odd, lengths[0], "time")
    assert np.isfinite(result["score"]) and result["unusual"]
    assert max(abs(f["z"]) for f in result["features"]) == prof.MAX_Z


def test_reference_runs_define_normal():
    X, lengths = _examples(n=100)
    X[50:, :, 0] += 4.0   # half the runs: high CPU
    normal = np.arange(100) < 50
    profile = prof.fit_profile(X, lengths, "time", [], FEATURES, reference=normal,
                               reference_name="passed training runs")
    assert profile["runs"] == 50 and profile["reference"] == "passed training runs"
    assert prof.score(profile, X[70], lengths[70], "time")["unusual"] is True
    assert prof.fit_profile(X, lengths, "time", [], FEATURES,
                            reference=np.zeros(100, bool)) is None


def test_usable():
    assert not prof.usable(None)
    assert not prof.usable({"version": prof.VERSION + 1, "scores": [1.0]})
    assert not prof.usable({"version": prof.VERSION, "scores": []})


@pytest.mark.parametrize("layout", [dict(sample_interval="10s"),
                                    dict(aggregation_functions=["mean", "max"])])
def test_a_built_dataset_scores_new_runs(data_path, history, layout):
    build_dataset(data_path, "ds", "tempest-full", cache=history, progress=False, **layout)
    ds = Dataset.open(data_path, "ds")
    profile = ds.profile
    training = ds.split("training")
    # Normal is what passed (0 is the "passed" class of the status label).
    assert profile["reference"] == "passed training runs"
    assert profile["runs"] == int((training.y == ds.classes.index("passed")).sum()) >= 10
    assert profile["labels"][-1] == "length"
    run_id = ds.split("test").ids[0]
    frame = history.frame(run_id)
    example, length = ds.example_from_frame(frame, with_length=True)
    assert np.array_equal(example, ds.example_from_frame(frame))
    test = ds.split("test")
    assert length == test.lengths[0]
    result = ds.unusual(example, length)
    assert set(result) == {"score", "percentile", "unusual", "features"}
    odd = frame.copy()
    odd["used"] = odd["used"] * 50
    assert ds.unusual(*ds.example_from_frame(odd, with_length=True))["percentile"] == 100.0
    # A strict threshold flags what the default does not.
    assert ds.unusual(example, length, percentile=0.0)["unusual"] is True


def test_a_dataset_without_a_profile_scores_nothing(data_path, history):
    build_dataset(data_path, "ds", "tempest-full", cache=history, progress=False,
                  sample_interval="10s")
    ds = Dataset.open(data_path, "ds")
    ds.attrs = {**ds.attrs, "profile": None}
    example, length = ds.example_from_frame(history.frame(ds.split("test").ids[0]),
                                            with_length=True)
    assert ds.profile is None and ds.unusual(example, length) is None


def test_batch_scores_agree_with_one_at_a_time():
    X, lengths = _examples(n=30)
    profile = prof.fit_profile(X, lengths, "time", [], FEATURES)
    batch = prof.scores(profile, X, lengths, "time")
    one = [prof.score(profile, X[i], lengths[i], "time")["score"] for i in range(30)]
    assert np.allclose(np.round(batch, 4), one)
    line = prof.threshold(profile)
    assert np.mean(batch >= line) <= 0.05
