"""The built-in Keras estimators: parameters, data feeding, safe loading, logs."""

import json

import numpy as np
import pytest

from ciml.errors import CimlError, ConfigError, NotFoundError
from ciml.testing.estimators import make_examples, zarr_array
from ciml_plugins.estimators import keras as kest


def test_hidden_layers_are_canonical():
    assert kest.hidden_layers_type("100/100/100") == "100/100/100"
    assert kest.hidden_layers_type([10, 5]) == "10/5"
    assert kest.hidden_layers_type(" 10 / 5 ") == "10/5"
    for bad in ("", "0", "10/-1", "a/b"):
        with pytest.raises(ValueError):
            kest.hidden_layers_type(bad)


def test_defaults_are_the_robust_ones():
    dnn = kest.DNNEstimator()
    assert dnn.optimizer == "Adam" and dnn.class_weight == "balanced"
    assert dnn.normalize is True and 0 < dnn.dropout < 0.5 and dnn.patience > 0
    assert kest.LinearSVMEstimator().l2 > 0
    with pytest.raises(ConfigError, match="it takes"):
        kest.DNNEstimator(nope=1)


def test_class_weights_balance_the_rare_class():
    y = np.array([0] * 95 + [1] * 5)
    w = kest.class_weights(y, 3)
    # n / (k_present * count): 100 / (2 * 95), 100 / (2 * 5); absent class 1.
    assert w.tolist() == pytest.approx([100 / 190, 10.0, 1.0])


def test_constant_training_feature_keeps_unit_scale():
    X = np.zeros((20, 2, 2), np.float32)
    X[:, 0, 0] = np.arange(20)
    mean, var = kest.feature_moments(X, 0, 20)
    assert var[0] == pytest.approx(np.var(np.arange(20)))
    # Zero padding in training must not turn into a division by ~0 later.
    assert var[1:].tolist() == [1.0, 1.0, 1.0]


def test_cnn_standardizes_each_feature_over_all_time_steps(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 1.0, (40, 6, 2)).astype(np.float32)
    X[:, :, 1] = X[:, :, 1] * 50 + 1000
    # Late steps that few runs reach: one mean and deviation per feature.
    X[5:, 4:, 0] = 0.0
    mean, var = kest.feature_moments(X, 0, 40, per="channel")
    assert mean.shape == var.shape == (2,)
    assert mean.tolist() == pytest.approx(X.reshape(-1, 2).mean(axis=0), rel=1e-5)
    assert var.tolist() == pytest.approx(X.reshape(-1, 2).var(axis=0), rel=1e-4)
    y = (X[:, :, 1].mean(axis=1) > 1000).astype(np.int64)
    est = kest.CNNEstimator(epochs=2, seed=0)
    assert est.normalize_per == "channel" and est.conv_layers == 3
    est.fit(X, y, classes=["passed", "failed"])
    est.save(tmp_path / "m")
    loaded = kest.CNNEstimator.load(tmp_path / "m")
    assert np.allclose(loaded.predict_proba(X), est.predict_proba(X))
    layer = est.model_.get_layer("standardize")
    assert np.allclose(np.ravel(layer.mean), mean)


def test_chunks_follow_the_zarr_chunks(tmp_path):
    X = np.arange(50 * 2 * 1, dtype=np.float32).reshape(50, 2, 1)
    zX = zarr_array(X, tmp_path / "x.zarr", chunk=16)
    spans = [(start, len(x)) for start, x in kest._iter_chunks(zX, 5, 40)]
    assert spans == [(5, 11), (16, 16), (32, 8)]


def test_load_of_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="no saved"):
        kest.DNNEstimator.load(tmp_path / "missing")


@pytest.mark.tensorflow
def test_streamed_batches_have_the_batch_size_across_chunks(tmp_path):
    tf, _ = kest._tf()
    X, y = make_examples(50, 2)
    zX = zarr_array(X, tmp_path / "x.zarr", chunk=16)
    est = kest.DNNEstimator(batch_size=20)
    ds = est._dataset(tf, zX, y, 0, 50, np.ones(2), 2, True, 0)
    sizes = [int(x.shape[0]) for x, _, _ in ds]
    assert sizes == [20, 20, 10]
    seen = np.concatenate([t.numpy() for _, t, _ in ds])
    assert sorted(seen.tolist()) == sorted(y.tolist())


@pytest.mark.tensorflow
def test_lambda_layer_is_refused_on_load(tmp_path):
    _, keras = kest._tf()
    inputs = keras.Input(shape=(4, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    keras.Model(inputs, outputs).save(tmp_path / kest.MODEL_FILE)
    (tmp_path / kest.PARAMS_FILE).write_text(json.dumps({
        "params": {}, "classes": ["passed", "failed"], "input_shape": [4, 3]}))
    with pytest.raises(CimlError, match="safe mode"):
        kest.DNNEstimator.load(tmp_path)


@pytest.mark.tensorflow
def test_fit_writes_tensorboard_scalars_and_honours_steps(tmp_path):
    import tensorflow as tf

    X, y = make_examples(64, 2)
    vX, vy = make_examples(16, 2, seed=9)
    est = kest.DNNEstimator(hidden_layers="8", epochs=50, steps=6, batch_size=16, seed=0)
    est.fit(X, y, classes=["passed", "failed"], validation=(vX, vy), log_dir=tmp_path)
    # 4 steps per epoch, capped at 6 steps: 2 epochs of 3 steps.
    assert est.history_["epochs_run"] == 2
    assert est.model_.optimizer.iterations.numpy() == 6
    assert set(est.history_) >= {"loss", "val_loss"}
    tags = {}
    for sub in ("train", "validation"):
        files = list((tmp_path / sub).glob("events.out.tfevents.*"))
        assert files, f"no event file under {sub}"
        for record in tf.data.TFRecordDataset([str(f) for f in files]):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(sub, set()).add(
                    (value.tag, value.metadata.plugin_data.plugin_name))
    assert ("epoch_loss", "scalars") in tags["train"]
    assert ("epoch_loss", "scalars") in tags["validation"]


@pytest.mark.tensorflow
def test_linear_svm_probabilities_keep_the_svm_decision():
    X, y = make_examples(60, 3, seed=4)
    est = kest.LinearSVMEstimator(epochs=20, seed=0).fit(X, y, classes=["a", "b", "c"])
    margins = est._outputs(X)
    assert np.array_equal(est.predict(X), margins.argmax(axis=1))
    assert est.temperature_ > 0
    # One-vs-rest cannot carve out the middle class on one axis; chance is 1/3.
    assert (est.predict(X) == y).mean() > 0.6


@pytest.mark.tensorflow
def test_streaming_from_zarr_gives_the_same_model_as_the_in_memory_copy(tmp_path,
                                                                        monkeypatch):
    X, y = make_examples(50, 2, seed=11)
    zX = zarr_array(X, tmp_path / "x.zarr", chunk=16)
    params = dict(hidden_layers="8", epochs=2, patience=0, batch_size=10, seed=3)
    in_memory = kest.DNNEstimator(**params).fit(zX, y, classes=["passed", "failed"])
    monkeypatch.setenv("CIML_TRAIN_MEMORY_BYTES", "0")
    assert kest.in_memory_if_small(zX, 0, 50)[0] is zX
    streamed = kest.DNNEstimator(**params).fit(zX, y, classes=["passed", "failed"])
    assert np.allclose(in_memory.predict_proba(X), streamed.predict_proba(X), atol=1e-6)


@pytest.mark.tensorflow
def test_steps_per_execution_trains_the_same_model():
    # 46 examples in batches of 4: 12 steps per epoch, not a multiple of 5,
    # so the last call of each epoch runs a short loop.
    X, y = make_examples(46, 2, seed=12)
    vX, vy = make_examples(12, 2, seed=13)
    params = dict(hidden_layers="8", epochs=3, patience=0, batch_size=4, seed=5)
    one = kest.DNNEstimator(steps_per_execution=1, **params).fit(
        X, y, classes=["passed", "failed"], validation=(vX, vy))
    five = kest.DNNEstimator(steps_per_execution=5, **params).fit(
        X, y, classes=["passed", "failed"], validation=(vX, vy))
    assert five.model_.optimizer.iterations.numpy() == 3 * 12
    assert one.history_["loss"] == five.history_["loss"]
    assert one.history_["val_loss"] == five.history_["val_loss"]
    assert np.array_equal(one.predict_proba(vX), five.predict_proba(vX))
