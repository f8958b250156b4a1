"""Every installed normalizer passes the conformance kit; the kit catches broken ones."""

import numpy as np
import pytest

from ciml.base import Normalizer
from ciml.plugins import get_manager
from ciml.testing import check_normalizer
from ciml.testing.normalizers import make_frames

#: Parameters that make the built-in steps do real work on the kit's frames
#: (120 rows at 1 s); a normalizer not listed is checked with its defaults.
EXAMPLE_PARAMS = {
    "filter": [{}, {"regex": "^(cpu|mem)_"}, {"columns": ["mem_free", "cpu_usr"]}],
    "resample": [{"interval": "10s"}, {"interval": "1min"}],
    "fixed-length": [{}, {"length": 50}],
    "aggregate": [{"functions": ["mean", "std", "max", "p95"]}],
    "scale": [{}, {"method": "zscore"}],
}


def _cases():
    for info in get_manager().all("normalizer"):
        for params in EXAMPLE_PARAMS.get(info.name, [None]):
            yield pytest.param(info.cls, params, id=f"{info.name}-{params}")


@pytest.mark.parametrize("cls, params", list(_cases()))
def test_installed_normalizer_conforms(cls, params):
    check_normalizer(cls, params)


def test_stateful_step_after_cut_and_aggregate():
    # In a build, scale sees frames that went through fixed-length or aggregate.
    from ciml_plugins.normalizers.builtin import AggregateNormalizer, FixedLengthNormalizer

    agg = AggregateNormalizer(functions=["mean", "max"])
    cut = FixedLengthNormalizer(length=200)
    scale = get_manager().get("normalizer", "scale")
    check_normalizer(scale, {"method": "range"}, [agg.transform(f) for f in make_frames()])
    check_normalizer(scale, {"method": "zscore"}, [cut.transform(f) for f in make_frames()])


# -- broken normalizers the kit must refuse -----------------------------------------


class _Base(Normalizer):
    """A test normalizer"""

    name = "broken"

    def transform(self, frame):
        return frame * 2.0


class Mutates(_Base):
    """Doubles its input in place"""

    def transform(self, frame):
        frame.iloc[0, 0] = -1.0
        return frame * 2.0


class NotJsonState(_Base):
    """Keeps a set as its state"""

    stateful = True

    def partial_fit(self, frame):
        self.seen_ = set(frame.columns)
        return self


class Random(_Base):
    """Learns a random offset"""

    stateful = True

    def partial_fit(self, frame):
        self.offset_ = float(np.random.default_rng().random())
        return self

    def transform(self, frame):
        return frame + getattr(self, "offset_", 0.0)


class Centers(_Base):
    """Subtracts the training mean"""

    stateful = True

    def partial_fit(self, frame):
        self.mean_ = frame.mean().to_numpy()
        return self

    def transform(self, frame):
        return frame - np.asarray(self.mean_)


class Duplicates(_Base):
    """Gives two columns the same name"""

    def transform(self, frame):
        out = frame.copy()
        out.columns = ["x"] * len(out.columns)
        return out


class NoFitReturn(_Base):
    """Forgets to return self"""

    stateful = True

    def partial_fit(self, frame):
        self.n_ = getattr(self, "n_", 0) + 1


@pytest.mark.parametrize("cls, message", [
    (Mutates, "check_transform_is_pure.*modified its input"),
    (NotJsonState, "not JSON-ready"),
    (Random, "check_fit_is_deterministic.*different states"),
    (Duplicates, "duplicate column names"),
    (NoFitReturn, "partial_fit\\(\\) must return self"),
])
def test_the_kit_refuses_broken_normalizers(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_normalizer(cls)


def test_required_parameters_must_be_given_as_examples():
    resample = get_manager().get("normalizer", "resample")
    with pytest.raises(AssertionError, match="needs \\['interval'\\]: pass them"):
        check_normalizer(resample)
    with pytest.raises(AssertionError, match="not declared parameters"):
        check_normalizer(resample, {"interval": "10s", "how": "mean"})


def test_state_round_trip_is_checked_through_json():
    check_normalizer(Centers)  # numpy state -> JSON lists -> numpy again: fine

    class Drifts(Centers):
        """Restores another state than it saved"""

        def set_state(self, state):
            super().set_state(state)
            self.mean_ = [m + 1 for m in self.mean_]
            return self

    with pytest.raises(AssertionError, match="set_state\\(get_state\\(\\)\\) gave another"):
        check_normalizer(Drifts)


def test_fast_paths_must_agree():
    from ciml_plugins.normalizers.builtin import ScaleNormalizer

    class FastButWrong(ScaleNormalizer):
        """Learns from the first example only on the fast path"""

        def partial_fit_array(self, values, columns=None):
            return super().partial_fit_array(values[:1], columns)

    with pytest.raises(AssertionError, match="check_array_paths.*partial_fit_array"):
        check_normalizer(FastButWrong)
