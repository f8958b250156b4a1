"""Every hookspec is documented (when, arguments, results) and exercised by a test."""

import ast
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


def _is_hookimpl(decorator):
    """``@hookimpl``, ``@hookspecs.hookimpl``, ``@hookimpl(...)`` and the like."""
    if isinstance(decorator, ast.Call):
        decorator = decorator.func
    if isinstance(decorator, ast.Attribute):
        return decorator.attr == "hookimpl"
    return isinstance(decorator, ast.Name) and decorator.id == "hookimpl"


def _is_hook_relay(node):
    """``<anything>.hook`` or ``hook``: pluggy's relay, through which hooks are called."""
    return ((isinstance(node, ast.Attribute) and node.attr == "hook")
            or (isinstance(node, ast.Name) and node.id == "hook"))


def implemented_hooks(source):
    """The ciml hooks a source file implements or calls (parsed, not grepped).

    A hook counts where a function of its name is decorated with
    ``hookimpl`` (a throwaway plugin) or where it is called through pluggy's
    relay (``manager.hook.ciml_x(...)``).
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                _is_hookimpl(d) for d in node.decorator_list):
            found.add(node.name)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and _is_hook_relay(node.func.value)):
            found.add(node.func.attr)
    return found


def _implementations():
    here = pathlib.Path(__file__).resolve()
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path == here:
            continue
        for name in implemented_hooks(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(path)
    return found


IMPLEMENTED = _implementations()


@pytest.mark.parametrize("name", SPECS)
def test_hookspec_is_exercised_by_a_test(name):
    # A hook counts as tested where a test implements it (a throwaway plugin,
    # the example plugin) or calls it: a mention in a comment or a string does not.
    assert IMPLEMENTED.get(name), (
        f"no test implements {name} with @hookimpl (a throwaway plugin, as in "
        "test_plugins.py) or calls it through the hook relay")


def test_implemented_hooks_ignores_comments_and_strings():
    source = (
        "# ciml_run_cached is handy\n"
        "NOTE = 'ciml_dataset_built'\n"
        "def ciml_model_trained(dataset):\n"
        "    pass\n"
        "@hookimpl\n"
        "def ciml_prediction_made(prediction):\n"
        "    pass\n"
        "class Plugin:\n"
        "    @hookspecs.hookimpl(tryfirst=True)\n"
        "    def ciml_register_estimators(self, register):\n"
        "        pass\n"
        "manager.hook.ciml_watch_reporters(options={})\n"
        "print('manager.hook.ciml_run_cached(run=1)')\n")
    assert implemented_hooks(source) == {"ciml_prediction_made", "ciml_register_estimators",
                                         "ciml_watch_reporters"}


def test_hook_names_are_prefixed():
    for name, obj in vars(hookspecs).items():
        if hasattr(obj, hookspecs.PROJECT + "_spec"):
            assert name.startswith("ciml_")
