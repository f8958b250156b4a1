"""Declared parameters: conversion, choices, secrets, unknown keys."""

import pytest

from ciml.base import Component, Normalizer, Parameter, parse_bool
from ciml.errors import ConfigError


class Thing(Component):
    """Does a thing

    More details that ``plugin list`` does not show.
    """

    name = "thing"
    kind = "normalizer"
    parameters = (
        Parameter("count", int, default=3, help="How many"),
        Parameter("rate", float),
        Parameter("mode", default="fast", choices=("fast", "slow")),
        Parameter("enabled", parse_bool, default=False),
        Parameter("password", secret=True),
        Parameter("columns", multiple=True),
        Parameter("sizes", int, multiple=True),
    )


class Needy(Component):
    """Needs a URL"""

    name = "needy"
    kind = "result_source"
    parameters = (Parameter("url", required=True),)


@pytest.mark.parametrize("text,expected", [
    ("1", True), ("true", True), ("Yes", True), (" on ", True), ("y", True), (True, True),
    ("0", False), ("false", False), ("NO", False), ("off", False), ("n", False),
    (False, False),
])
def test_parse_bool(text, expected):
    assert parse_bool(text) is expected


def test_parse_bool_refuses_other_words():
    with pytest.raises(ValueError, match="expected a boolean"):
        parse_bool("maybe")


def test_defaults_are_applied_and_converted():
    thing = Thing()
    assert thing.count == 3
    assert thing.rate is None
    assert thing.mode == "fast"
    assert thing.enabled is False
    assert thing.columns is None


def test_values_from_strings_are_converted():
    thing = Thing(count="7", rate="0.5", enabled="yes", sizes="1, 2 3")
    assert thing.count == 7
    assert thing.rate == 0.5
    assert thing.enabled is True
    assert thing.sizes == [1, 2, 3]


def test_multiple_accepts_lists_and_comma_or_space_separated_strings():
    assert Thing(columns=["a", "b"]).columns == ["a", "b"]
    assert Thing(columns="a,b c").columns == ["a", "b", "c"]


def test_bad_value_is_a_config_error_naming_the_parameter():
    with pytest.raises(ConfigError, match=r"bad value for count: 'many'"):
        Thing(count="many")
    with pytest.raises(ConfigError, match="bad value for enabled"):
        Thing(enabled="perhaps")


def test_choices():
    assert Thing(mode="slow").mode == "slow"
    with pytest.raises(ConfigError, match="choose from fast, slow"):
        Thing(mode="medium")


def test_unknown_key_lists_the_accepted_ones():
    with pytest.raises(ConfigError) as exc:
        Thing(cuont=1)
    message = str(exc.value)
    assert "normalizer 'thing' has no parameter 'cuont'" in message
    assert "count, rate, mode, enabled, password, columns, sizes" in message


def test_unknown_key_with_no_parameters():
    class Bare(Component):
        name = "bare"

    with pytest.raises(ConfigError, match=r"it takes: \(none\)"):
        Bare(x=1)


def test_required():
    assert Needy(url="http://x").url == "http://x"
    with pytest.raises(ConfigError, match="result source 'needy' needs --url"):
        Needy()


def test_secrets_are_masked():
    thing = Thing(password="hunter2")
    assert thing.password == "hunter2"
    assert thing.get_params()["password"] == "****"
    assert thing.get_params(include_secrets=True)["password"] == "hunter2"
    assert "hunter2" not in repr(thing)
    assert Parameter("token", secret=True, default="abc").display_default() == "****"
    assert Parameter("token", secret=True).display_default() is None
    assert Parameter("n", int, default=2).display_default() == 2


def test_from_options_accepts_hyphens_and_ignores_none():
    thing = Thing.from_options({"count": "4", "rate": None, "mode": "slow"})
    assert (thing.count, thing.rate, thing.mode) == (4, None, "slow")
    needy = Needy.from_options({"url": "u"})
    assert needy.url == "u"
    with pytest.raises(ConfigError, match="no parameter 'nope'"):
        Thing.from_options({"nope": 1})


def test_pick_options_keeps_only_declared_and_set_values():
    options = {"count": "2", "rate": None, "unrelated": "x", "mode": "slow"}
    assert Thing.pick_options(options) == {"count": "2", "mode": "slow"}


def test_parameter_option_and_type_name():
    assert Parameter("sample_interval").option == "--sample-interval"
    assert Parameter("x", int).type_name == "int"
    assert Parameter("x", parse_bool).type_name == "bool"
    assert Parameter("x").type_name == "str"


def test_description_is_the_first_docstring_line():
    assert Thing.description() == "Does a thing"

    class Undocumented(Component):
        pass

    Undocumented.__doc__ = None
    assert Undocumented.description() == ""


def test_normalizer_state_round_trip():
    import numpy as np

    class Scale(Normalizer):
        """Scales"""

        name = "scale"
        stateful = True

        def partial_fit(self, frame):
            self.max_ = np.float64(max(getattr(self, "max_", 0), max(frame)))
            self.seen_ = np.arange(2)
            return self

        def transform(self, frame):
            return [v / self.max_ for v in frame]

    fitted = Scale().fit([[1, 2], [4]])
    state = fitted.get_state()
    assert state == {"max_": 4.0, "seen_": [0, 1]}
    assert type(state["max_"]) is float
    restored = Scale().set_state(state)
    assert restored.transform([2]) == [0.5]
    with pytest.raises(ValueError, match="not a learned attribute"):
        Scale().set_state({"max": 1})
