"""The normalizer conformance kit: run ``check_normalizer(MyNormalizer)`` in a plugin's tests.

A dataset stores its normalizer chain (names, parameters, fitted state as
JSON) and replays it on one new run at prediction time, so a normalizer
must keep a few promises for the examples made at build time and at
prediction time to be identical.  Each promise is a plain function taking
the class, example parameters and frames; :func:`check_normalizer` runs
them all and raises :class:`AssertionError` naming the first broken one:

* it is a documented :class:`ciml.base.Normalizer` and constructs with its
  defaults (or, with a required parameter, refuses to with a
  :class:`ciml.errors.CimlError`);
* its parameters survive ``get_params`` -> JSON -> ``from_options``;
* :meth:`transform` is pure: it leaves its input (and its own state)
  untouched, and the same frame gives the same result twice;
* the output is a :class:`pandas.DataFrame` with unique column names;
* the fitted state survives ``get_state`` -> JSON -> ``set_state``: the
  restored step transforms exactly like the original;
* a stateful step learns through :meth:`partial_fit` (which returns
  ``self``), and two fits on the same frames give the same state;
* the optional fast paths the builder prefers (``transform_array``,
  ``partial_fit_array``) agree with ``transform`` and ``partial_fit``.

Some normalizers only mean something with parameters (``filter`` with a
regex, ``resample`` with an interval): pass them as ``params``.  The
frames are dstat-like (see :func:`ciml.testing.make_frames`); pass your own as
``frames`` when your step needs other columns.  A stateful step is fitted
on frames of one shape, as in a dataset build, where stateful steps come
after cut/pad or aggregation.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ciml.base import Normalizer
from ciml.errors import CimlError
from ciml.testing.components import check_component_declaration

#: Column names like the dstat plugin's (see ciml_plugins.metrics.dstat).
COLUMNS = ("cpu_usr", "cpu_sys", "cpu_idl", "cpu_wai", "mem_used", "mem_free",
           "mem_buff", "mem_cach", "net_recv", "net_send", "load_1m")


def make_frames(n: int = 3, rows: int = 120, columns: Sequence[str] = COLUMNS, seed: int = 0,
                start: str = "2026-01-01 00:00:00") -> list[Any]:
    """``n`` dstat-like frames: float64, a UTC 1 s ``DatetimeIndex``, one shape.

    Each frame starts an hour after the previous one; values are positive
    with a different scale per column, like CPU percentages next to bytes.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        index = pd.date_range(pd.Timestamp(start, tz="UTC") + pd.Timedelta(hours=i),
                              periods=rows, freq="s", name="time")
        scale = 10.0 ** (np.arange(len(columns)) % 4)
        values = rng.random((rows, len(columns))) * scale
        frames.append(pd.DataFrame(values, index=index, columns=list(columns)))
    return frames


def _make(cls, params):
    return cls.from_options(dict(params or {}))


def _fitted(cls, params, frames):
    step = _make(cls, params)
    if step.stateful:
        for frame in frames:
            out = step.partial_fit(frame.copy())
            assert out is step, "partial_fit() must return self"
    return step


def _state_text(step):
    state = step.get_state()
    assert isinstance(state, dict), "get_state() must return a dict"
    try:
        return json.dumps(state, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"get_state() is not JSON-ready ({exc}): the state is "
                             "stored in the dataset's attributes") from None


def _assert_same_frame(a, b, what, exact=True):
    assert list(map(str, a.columns)) == list(map(str, b.columns)), \
        f"{what}: columns differ: {list(a.columns)[:6]} vs {list(b.columns)[:6]}"
    assert a.shape == b.shape, f"{what}: shapes differ: {a.shape} vs {b.shape}"
    assert a.index.equals(b.index), f"{what}: the index differs"
    _assert_same_values(a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64"), what,
                        exact)


def _assert_same_values(x, y, what, exact=True):
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    assert x.shape == y.shape, f"{what}: shapes differ: {x.shape} vs {y.shape}"
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    if not exact:
        # float32 tolerance: the fast paths may compute in another precision.
        same |= np.isclose(x, y, rtol=1e-5, atol=1e-6)
    if not same.all():
        diff = np.abs(np.nan_to_num(x - y, nan=np.inf))
        raise AssertionError(f"{what}: values differ in {int((~same).sum())} of {same.size}"
                             f" cells (largest difference {diff.max():.3g})")


def check_declares_parameters(cls, params=None, frames=None):
    names = check_component_declaration(cls, Normalizer)
    unknown = set(params or {}) - set(names)
    assert not unknown, f"example params {sorted(unknown)} are not declared parameters"


def check_constructs_with_defaults(cls, params=None, frames=None):
    required = [p.name for p in cls.parameters if p.required and p.default is None]
    if required:
        try:
            cls()
        except CimlError:
            pass
        else:
            raise AssertionError(f"{cls.__name__}() accepted no {required[0]!r} although "
                                 "it is required")
        assert set(required) <= set(params or {}), \
            f"{cls.__name__} needs {required}: pass them as example params"
    else:
        step = cls()
        for p in cls.parameters:
            assert hasattr(step, p.name), f"{cls.__name__}() does not store {p.name!r}"
    try:
        cls(no_such_parameter_xyz=1)
    except CimlError:
        pass
    else:
        raise AssertionError(f"{cls.__name__} accepted an unknown parameter")


def check_params_round_trip(cls, params=None, frames=None):
    step = _make(cls, params)
    values = step.get_params(include_secrets=True)
    assert set(values) == {p.name for p in cls.parameters}, \
        "get_params() must return every declared parameter"
    try:
        text = json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"get_params() is not JSON-ready ({exc}): parameters are "
                             "stored in the dataset's attributes") from None
    again = cls.from_options(json.loads(text))
    assert again.get_params(include_secrets=True) == values, \
        "from_options(get_params()) must give the same parameters"


def check_transform_is_pure(cls, params=None, frames=None):
    import pandas as pd

    frames = frames or make_frames()
    step = _fitted(cls, params, frames)
    state = _state_text(step)
    for frame in frames:
        before = frame.copy(deep=True)
        first = step.transform(frame)
        assert first is not frame, "transform() must return a new frame, not its argument"
        try:
            pd.testing.assert_frame_equal(frame, before)
        except AssertionError as exc:
            raise AssertionError(f"transform() modified its input: {exc}") from None
        _assert_same_frame(step.transform(frame), first,
                           "transform() twice on the same frame")
    assert _state_text(step) == state, "transform() changed the fitted state"


def check_output_frame(cls, params=None, frames=None):
    import pandas as pd

    frames = frames or make_frames()
    step = _fitted(cls, params, frames)
    out = step.transform(frames[0])
    assert isinstance(out, pd.DataFrame), \
        f"transform() returned {type(out).__name__}, not a pandas DataFrame"
    names = [str(c) for c in out.columns]
    assert len(names) == len(set(names)), \
        f"transform() gave duplicate column names: {names}"
    assert out.shape[1] > 0, "transform() dropped every column"
    try:
        out.to_numpy(dtype="float32")
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"transform() output is not numeric ({exc})") from None


def check_state_round_trip(cls, params=None, frames=None):
    frames = frames or make_frames()
    step = _fitted(cls, params, frames)
    text = _state_text(step)
    restored = cls.from_options(json.loads(json.dumps(step.get_params(include_secrets=True))))
    restored.set_state(json.loads(text))
    assert _state_text(restored) == text, "set_state(get_state()) gave another state"
    for frame in frames:
        _assert_same_frame(restored.transform(frame), step.transform(frame),
                           "a step restored from its JSON state")


def check_fit_is_deterministic(cls, params=None, frames=None):
    frames = frames or make_frames()
    one, two = _fitted(cls, params, frames), _fitted(cls, params, frames)
    if not one.stateful:
        assert _make(cls, params).get_state() == one.get_state(), \
            "a stateless step must not change its state (set stateful = True)"
        return
    assert _state_text(one) != _state_text(_make(cls, params)), \
        "partial_fit() learned nothing (no attribute ending in '_' changed)"
    assert _state_text(one) == _state_text(two), \
        "two fits on the same frames gave different states"
    for frame in frames:
        _assert_same_frame(one.transform(frame), two.transform(frame),
                           "two fits on the same frames")


def check_array_paths(cls, params=None, frames=None):
    """The builder's fast paths must agree with transform and partial_fit."""
    frames = frames or make_frames()
    step = _fitted(cls, params, frames)
    columns = [str(c) for c in frames[0].columns]
    if hasattr(step, "partial_fit_array"):
        fast = _make(cls, params)
        out = fast.partial_fit_array(np.stack([f.to_numpy() for f in frames]), columns)
        assert out is fast, "partial_fit_array() must return self"
        slow, quick = json.loads(_state_text(step)), json.loads(_state_text(fast))
        assert set(slow) == set(quick), \
            "partial_fit_array() and partial_fit() learn different attributes"
        for frame in frames:
            _assert_same_frame(fast.transform(frame), step.transform(frame),
                               "fitted by partial_fit_array() vs partial_fit()",
                               exact=False)
    if hasattr(step, "transform_array"):
        batch = np.stack([f.to_numpy() for f in frames])
        out = np.asarray(step.transform_array(batch))
        expected = np.stack([step.transform(f).to_numpy(dtype="float64") for f in frames])
        _assert_same_values(out, expected, "transform_array() vs transform()", exact=False)


CHECKS = (check_declares_parameters, check_constructs_with_defaults, check_params_round_trip,
          check_transform_is_pure, check_output_frame, check_state_round_trip,
          check_fit_is_deterministic, check_array_paths)


def check_normalizer(cls: type[Normalizer], params: Mapping[str, Any] | None = None,
                     frames: Sequence[Any] | None = None) -> None:
    """Run every check on a normalizer class; raise :class:`AssertionError` on the first failure.

    ``params``: example parameters (``{"regex": "^cpu_"}``) used wherever the
    kit builds an instance.  ``frames``: input frames (default
    :func:`ciml.testing.make_frames`), all of one shape.
    """
    for check in CHECKS:
        try:
            check(cls, params, frames)
        except AssertionError as exc:
            raise AssertionError(f"{getattr(cls, '__name__', cls)} "
                                 f"({check.__name__}): {exc}") from exc
