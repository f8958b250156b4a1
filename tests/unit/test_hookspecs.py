"""Every hookspec is documented (when, arguments, results) and exercised by a test."""

import inspect
import pathlib

import pytest

from ciml import hookspecs
from ciml.base import KINDS

TESTS = pathlib.Path(__file__).resolve().parent.parent


def _hookspecs():
    return sorted(
        name for name, obj in vars(hookspecs).items()
        if name.startswith("ciml_") and callable(obj)
        and hasattr(obj, hookspecs.PROJECT + "_spec"))


SPECS = _hookspecs()


def test_hookspecs_are_found():
    # Guards the two tests below against silently checking nothing.
    assert len(SPECS) >= 9
    for _, hook_name in KINDS.values():
        assert hook_name in SPECS
    for lifecycle in ("ciml_run_cached", "ciml_dataset_built", "ciml_model_trained",
                      "ciml_prediction_made"):
        assert lifecycle in SPECS


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_is_documented(name):
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    assert doc, f"{name} has no docstring"
    assert "Called" in doc, f"{name}'s docstring does not say when it is called"
    for arg in inspect.signature(spec).parameters:
        assert f":param {arg}:" in doc, f"{name} does not document {arg!r}"
    assert ":return:" in doc, f"{name} does not say what its result is or how it combines"


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_is_exercised_by_a_test(name):
    here = pathlib.Path(__file__).resolve()
    users = [p for p in TESTS.rglob("*.py")
             if p != here and name in p.read_text(encoding="utf-8")]
    assert users, f"no test outside {here.name} uses {name}"


def test_hook_names_are_prefixed():
    for name, obj in vars(hookspecs).items():
        if hasattr(obj, hookspecs.PROJECT + "_spec"):
            assert name.startswith("ciml_")
