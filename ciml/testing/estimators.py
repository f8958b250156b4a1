"""The estimator conformance kit: run ``check_estimator(MyEstimator)`` in a plugin's tests.

Each check is a plain function taking the estimator class (and a scratch
directory where it needs one); :func:`check_estimator` runs them all and
raises :class:`AssertionError` naming the first broken promise.  The data
is tiny and has an easy signal, so a correct estimator passes in seconds
with a few epochs: pass them with ``params`` (e.g. ``{"epochs": 2}``).

:func:`make_dataset` builds a small but real dataset (through
:func:`ciml.dataset.build_dataset`) from synthetic runs, for end-to-end
tests of ``train-model`` with a plugin.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import pathlib
import pickle
import pickletools
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ciml.base import Estimator, Parameter
from ciml.errors import CimlError
from ciml.testing.components import check_component_declaration

#: Parameters that keep the built-in estimators quick in the kit (only those an
#: estimator declares are passed to it).
FAST_PARAMS = {"epochs": 2, "patience": 0}


def make_examples(n: int = 48, n_classes: int = 2, shape: tuple[int, ...] = (4, 3),
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X float32 (n, *shape), y int64 (n,))`` with a learnable class signal.

    Every class is present; class ``c`` shifts the first feature by ``c``.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    X = rng.normal(0.0, 0.5, size=(n, *shape)).astype(np.float32)
    X[..., 0] += y[:, None].astype(np.float32) * 2.0
    return X, y.astype(np.int64)


def zarr_array(X: np.ndarray, path: str | pathlib.Path, chunk: int = 16) -> Any:
    """``X`` written to a Zarr v3 array chunked along examples, like a dataset's."""
    import zarr

    arr = zarr.create_array(str(path), shape=X.shape, dtype="float32",
                            chunks=(chunk, *X.shape[1:]), zarr_format=3)
    arr[...] = X
    return arr


def _construct(cls, params):
    known = {p.name for p in cls.parameters}
    return cls(**{k: v for k, v in (params or {}).items() if k in known})


def check_declares_parameters(cls, params=None):
    check_component_declaration(cls, Estimator)


def check_constructs_with_defaults(cls, params=None):
    est = cls()
    for p in cls.parameters:
        assert hasattr(est, p.name), f"{cls.__name__}() does not store {p.name!r}"


def check_params_round_trip(cls, params=None):
    est = _construct(cls, params)
    values = est.get_params(include_secrets=True)
    assert set(values) == {p.name for p in cls.parameters}, \
        "get_params() must return every declared parameter"
    again = cls(**{k: v for k, v in values.items() if v is not None})
    assert again.get_params(include_secrets=True) == values, \
        "constructing from get_params() must give the same parameters"


def check_unknown_parameter_refused(cls, params=None):
    try:
        cls(no_such_parameter_xyz=1)
    except CimlError:
        return
    raise AssertionError(f"{cls.__name__} accepted an unknown parameter")


def _fit(cls, params, X, y, classes, **kw):
    est = _construct(cls, params)
    out = est.fit(X, y, classes=classes, seed=0, **kw)
    assert out is est, "fit() must return self"
    return est


def _check_proba(est, X, n_classes):
    n = int(X.shape[0])
    proba = np.asarray(est.predict_proba(X))
    assert proba.shape == (n, n_classes), \
        f"predict_proba shape {proba.shape}, expected {(n, n_classes)}"
    assert np.all(np.isfinite(proba)), "predict_proba returned non-finite values"
    assert np.all(proba >= -1e-9) and np.all(proba <= 1 + 1e-9), "probabilities out of [0, 1]"
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5), "probability rows must sum to 1"
    pred = np.asarray(est.predict(X))
    assert pred.shape == (n,), f"predict shape {pred.shape}, expected {(n,)}"
    assert np.issubdtype(pred.dtype, np.integer), "predict must return class indices"
    assert pred.min() >= 0 and pred.max() < n_classes, "predict returned an unknown class"
    assert np.array_equal(pred, proba.argmax(axis=1)), "predict must be argmax of predict_proba"
    return proba


def check_fit_binary(cls, params=None):
    X, y = make_examples(48, 2, seed=1)
    est = _fit(cls, params, X, y, ["passed", "failed"])
    _check_proba(est, X, 2)


def check_fit_multiclass(cls, params=None):
    X, y = make_examples(60, 3, seed=2)
    est = _fit(cls, params, X, y, ["a", "b", "c"])
    _check_proba(est, X, 3)


def check_absent_class(cls, params=None):
    """``len(classes)`` outputs even when a class has no training example."""
    X, y = make_examples(40, 2, seed=3)
    est = _fit(cls, params, X, y, ["a", "b", "c"])
    _check_proba(est, X, 3)


def check_validation_and_logs(cls, params=None):
    X, y = make_examples(48, 2, seed=4)
    vX, vy = make_examples(16, 2, seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        est = _fit(cls, params, X, y, ["passed", "failed"], validation=(vX, vy),
                   log_dir=pathlib.Path(tmp) / "logs")
        _check_proba(est, vX, 2)


def check_zarr_input(cls, params=None):
    X, y = make_examples(50, 2, seed=6)
    with tempfile.TemporaryDirectory() as tmp:
        zX = zarr_array(X, pathlib.Path(tmp) / "X.zarr", chunk=16)
        est = _fit(cls, params, zX, y, ["passed", "failed"])
        from_zarr = _check_proba(est, zX, 2)
        from_numpy = np.asarray(est.predict_proba(X))
        assert np.allclose(from_zarr, from_numpy, atol=1e-6), \
            "predict_proba must not depend on numpy vs Zarr input"


def check_save_load_round_trip(cls, params=None):
    X, y = make_examples(48, 3, seed=7)
    est = _fit(cls, params, X, y, ["a", "b", "c"])
    before = np.asarray(est.predict_proba(X))
    with tempfile.TemporaryDirectory() as tmp:
        est.save(tmp)
        loaded = cls.load(tmp)
        assert isinstance(loaded, Estimator), "load() must return an estimator"
        after = np.asarray(loaded.predict_proba(X))
    assert np.allclose(before, after, atol=1e-6), "a loaded model must predict the same"


#: File name endings of pickles (joblib's included): refused whatever their bytes.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck")
#: Opcodes with which a pickle imports or calls code when it is loaded.
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"}
_SAFE_LOAD = ("ciml loads models without running code from them: save JSON, numpy arrays "
              "(np.save/np.savez, loaded with allow_pickle=False) or a Keras file instead")


def _is_pickle(data):
    """Whether ``data`` is a pickle that imports or calls code (any protocol)."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    try:
        # Protocols 0 and 1 have no header: parse; text fails at once.
        found = set()
        for opcode, _, _ in pickletools.genops(data):
            found.add(opcode.name)
            if opcode.name == "STOP":
                return bool(found & _CODE_OPCODES)
    except Exception:
        return False
    return False


def _pickles_in(name, data, depth=0):
    """The names of the pickles in a saved file, looking inside zip archives."""
    if name.lower().endswith(PICKLE_SUFFIXES) or _is_pickle(data[:1 << 20]):
        return [name]
    if name.endswith(".npy") and data.startswith(b"\x93NUMPY"):
        header = data[:4096].split(b"\n", 1)[0]
        if b"'|O'" in header or b'"|O"' in header:  # an object array is a pickle inside
            return [name]
    found = []
    if depth < 2 and data[:4] == b"PK\x03\x04":  # .keras, .npz and other zip files
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    found += _pickles_in(f"{name}!{member}", archive.read(member), depth + 1)
        except zipfile.BadZipFile:
            pass
    return found


class _PickleRefused(AssertionError):
    pass


@contextlib.contextmanager
def refusing_pickle() -> Iterator[list[tuple[Any, ...]]]:
    """Within, any unpickling fails (``pickle.load(s)``, ``Unpickler``, numpy's pickles).

    Yields a list that records each attempt, so that an estimator catching
    the error still fails the check.
    """
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise _PickleRefused("load() unpickled data; " + _SAFE_LOAD)

    class RefusingUnpickler(pickle.Unpickler):
        def load(self):
            return refuse()

    saved = [(pickle, "load", pickle.load), (pickle, "loads", pickle.loads),
             (pickle, "Unpickler", pickle.Unpickler),
             (pickle._Unpickler, "load", pickle._Unpickler.load)]
    replacements = {"load": refuse, "loads": refuse, "Unpickler": RefusingUnpickler}
    for owner, attr, _ in saved:
        setattr(owner, attr, replacements[attr])
    try:
        yield attempts
    finally:
        for owner, attr, value in saved:
            setattr(owner, attr, value)


def check_save_writes_no_pickle(cls, params=None):
    """What ``save()`` writes holds no pickle, and ``load()`` unpickles nothing."""
    X, y = make_examples(48, 2, seed=9)
    est = _fit(cls, params, X, y, ["passed", "failed"])
    before = np.asarray(est.predict_proba(X))
    with tempfile.TemporaryDirectory() as tmp:
        est.save(tmp)
        root = pathlib.Path(tmp)
        pickles = []
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            pickles += _pickles_in(str(file.relative_to(root)), file.read_bytes())
        assert not pickles, f"save() wrote a pickle ({', '.join(pickles)}); " + _SAFE_LOAD
        with refusing_pickle() as attempts:
            try:
                loaded = cls.load(tmp)
            except _PickleRefused as exc:
                raise AssertionError(str(exc)) from None
        assert not attempts, "load() unpickled data; " + _SAFE_LOAD
        after = np.asarray(loaded.predict_proba(X))
    assert np.allclose(before, after, atol=1e-6), \
        "a model loaded without pickle must predict the same"


def check_reproducible(cls, params=None):
    X, y = make_examples(40, 2, seed=8)
    a = np.asarray(_fit(cls, params, X, y, ["passed", "failed"]).predict_proba(X))
    b = np.asarray(_fit(cls, params, X, y, ["passed", "failed"]).predict_proba(X))
    assert np.allclose(a, b, atol=1e-6), "the same seed must give the same model"


def check_load_missing_fails_cleanly(cls, params=None):
    with tempfile.TemporaryDirectory() as tmp:
        missing = pathlib.Path(tmp) / "nothing-here"
        try:
            cls.load(missing)
        except (CimlError, OSError):
            # A CimlError reads best on the command line; a FileNotFoundError
            # is clean too (ciml names the model folder around it).
            return
        except Exception as exc:
            raise AssertionError(
                f"load() of a missing folder must raise a ciml.errors.CimlError or "
                f"FileNotFoundError, not {type(exc).__name__}: {exc}") from None
    raise AssertionError("load() of a missing folder must fail")


def check_explain(cls, params=None):
    """``explain`` (the core default or the estimator's own) gives one value per input cell.

    When the model fits the easy signal, the informative feature must carry
    the most weight: an explanation that points elsewhere would mislead.
    """
    X, y = make_examples(60, 2, seed=9)
    est = _fit(cls, params, X, y, ["passed", "failed"])
    reference = np.median(X[y == 0], axis=0)
    contrib = np.asarray(est.explain(X[:12], reference))
    assert contrib.shape == X[:12].shape, \
        f"explain() shape {contrib.shape}, expected {X[:12].shape} (like X)"
    assert np.all(np.isfinite(contrib)), "explain() returned non-finite values"
    again = np.asarray(est.explain(X[:12], reference))
    assert np.allclose(contrib, again), "explain() must be deterministic"
    toward = np.asarray(est.explain(X[:12], reference, target=[1] * 12))
    assert toward.shape == X[:12].shape, "explain(target=...) must keep the shape"
    if (np.asarray(est.predict(X)) == y).mean() >= 0.9:
        weight = np.abs(toward).sum(axis=(0, 1))
        assert weight.argmax() == 0, \
            f"explain() puts most weight on feature {int(weight.argmax())}, not on the " \
            "informative feature 0"


CHECKS = (
    check_declares_parameters,
    check_constructs_with_defaults,
    check_params_round_trip,
    check_unknown_parameter_refused,
    check_fit_binary,
    check_fit_multiclass,
    check_absent_class,
    check_validation_and_logs,
    check_zarr_input,
    check_save_load_round_trip,
    check_save_writes_no_pickle,
    check_reproducible,
    check_load_missing_fails_cleanly,
    check_explain,
)


def check_estimator(cls: type[Estimator], params: Mapping[str, Any] | None = None,
                    checks: Sequence[Callable[..., None]] | None = None) -> None:
    """Run every conformance check on the estimator class ``cls``.

    :param params: hyper-parameters for the fits (only those ``cls``
        declares are used); defaults to :data:`ciml.testing.FAST_PARAMS`.
    :param checks: a subset of :data:`ciml.testing.ESTIMATOR_CHECKS` to run.
    :raises AssertionError: ``"<check>: <what is wrong>"``.
    """
    params = FAST_PARAMS if params is None else params
    for check in checks or CHECKS:
        try:
            check(cls, params)
        except AssertionError as exc:
            raise AssertionError(f"{cls.__name__} fails {check.__name__}: {exc}") from None


# -- a reference estimator ------------------------------------------------------


class NearestCentroidEstimator(Estimator):
    """Nearest class centroid on the flattened examples (a test and template estimator)

    No dependency beyond numpy, so tests of the training pipeline need no
    TensorFlow; it is also the smallest complete example of the contract:
    parameters declared, ``fit`` streaming chunks, JSON save/load (no pickle).
    """

    name = "nearest-centroid"
    temperature: float
    parameters = (
        Parameter("temperature", float, 1.0, "softmax temperature of -distance"),
        Parameter("seed", int, None, "unused; accepted like every estimator's seed"),
    )

    def fit(self, X, y, *, classes, validation=None, log_dir=None, seed=None):
        from ciml.dataset import iter_batches

        y = np.asarray(y[...] if not isinstance(y, np.ndarray) else y, dtype=np.int64)
        k = len(classes)
        sums = np.zeros((k, int(np.prod(X.shape[1:]))))
        counts = np.zeros(k)
        for x, yy in iter_batches(X, y):
            flat = x.reshape(len(x), -1)
            np.add.at(sums, yy, flat)
            counts += np.bincount(yy, minlength=k)
        self.centroids_ = sums / np.maximum(counts, 1)[:, None]
        self.present_ = (counts > 0).tolist()
        self.classes_ = list(classes)
        self.input_shape_ = list(X.shape[1:])
        self.history_ = {"loss": [0.0]}
        return self

    def predict_proba(self, X):
        from ciml.dataset import iter_batches

        out = []
        for x, _ in iter_batches(X):
            flat = x.reshape(len(x), -1).astype(np.float64)
            d = np.sqrt(((flat[:, None, :] - self.centroids_[None]) ** 2).sum(-1))
            z = -d / self.temperature
            z[:, ~np.asarray(self.present_)] = -np.inf
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            out.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def save(self, path):
        import json

        state = {"params": self.get_params(), "centroids": self.centroids_.tolist(),
                 "present": self.present_, "classes": self.classes_,
                 "input_shape": self.input_shape_}
        (pathlib.Path(path) / "centroids.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path):
        import json

        from ciml.errors import NotFoundError

        file = pathlib.Path(path) / "centroids.json"
        if not file.is_file():
            raise NotFoundError(f"no saved {cls.name} model in {path}")
        state = json.loads(file.read_text())
        est = cls(**{k: v for k, v in state["params"].items() if v is not None})
        est.centroids_ = np.asarray(state["centroids"], dtype=np.float64)
        est.present_ = state["present"]
        est.classes_ = state["classes"]
        est.input_shape_ = state["input_shape"]
        return est


# -- a tiny real dataset ---------------------------------------------------------


class _MemoryCache:
    """Just enough of :class:`ciml.cache.RawCache` for ``build_dataset(cache=...)``."""

    def __init__(self, runs, frames):
        self._runs = runs
        self._frames = frames

    def runs(self, build_name=None):
        return [r for r in self._runs if build_name in (None, r.build_name)]

    def frame(self, run_id):
        return self._frames[run_id].copy()


PROVIDERS = ("rax-dfw", "rax-ord", "ovh-gra1", "vexxhost-ca-ymq-1", "inap-mtl01")


def synthetic_runs(n=60, seed=0, build_name="tempest-full", fail_every=4, length=40,
                   providers=PROVIDERS):
    """``(runs, frames)``: synthetic runs whose dstat-like series carry their labels.

    Failed runs use more CPU; each provider has its own memory size.
    """
    import pandas as pd

    from ciml.records import FAILED, PASSED, RunRecord

    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    runs, frames = [], {}
    for i in range(n):
        failed = i % fail_every == fail_every - 1
        provider = providers[i % len(providers)]
        run = RunRecord(id=f"run-{i:04d}", build_name=build_name,
                        status=FAILED if failed else PASSED,
                        start=start + dt.timedelta(hours=i), duration=float(length),
                        source="synthetic", metadata={"node_provider": provider})
        t = pd.date_range(run.start, periods=length, freq="s")
        usr = rng.normal(60 if failed else 30, 5, length).clip(0, 100)
        mem = 1e9 * (2 + PROVIDERS.index(provider) if provider in PROVIDERS else 2)
        frames[run.id] = pd.DataFrame({
            "usr": usr, "sys": rng.normal(10, 2, length).clip(0, 100),
            "used": rng.normal(mem, 1e8, length), "free": rng.normal(4e9, 1e8, length),
        }, index=t, dtype="float64")
        runs.append(run)
    return runs, frames


def make_dataset(data_path: Any, name: str, *, n: int = 60, class_label: str = "status",
                 seed: int = 0,
                 features_regex=None, **build_options):
    """Build a small real dataset ``name`` from synthetic runs; returns the summary."""
    from ciml.dataset import build_dataset

    runs, frames = synthetic_runs(n=n, seed=seed)
    build_options.setdefault("aggregation_functions", ("mean", "max", "min"))
    build_options.setdefault("executor", "serial")
    return build_dataset(data_path, name, "tempest-full", class_label=class_label,
                         features_regex=features_regex, seed=seed,
                         cache=_MemoryCache(runs, frames), **build_options)


__all__ = ["CHECKS", "FAST_PARAMS", "PICKLE_SUFFIXES", "NearestCentroidEstimator",
           "check_estimator", "make_dataset", "make_examples", "refusing_pickle",
           "synthetic_runs", "zarr_array"]
__all__ += [c.__name__ for c in CHECKS]
