"""Every name the docs' Python examples import exists where they import it from.

The plugin guide's ``testcode`` examples also run under ``sphinx-build -b
doctest`` (``tox -e docs``); this test is the fast check the main test run
makes over every Python block of the docs and README, and over the example
package the guide includes (``ciml-lstm``).
"""

import ast
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "doc" / "source"
#: The example packages the guide shows, importable from the source tree.
EXAMPLES = (DOCS / "plugins" / "ciml-lstm", ROOT / "tests" / "example_plugin")

_BLOCK = re.compile(r"^( *)\.\. (?:code-block|code|sourcecode):: python\s*$"
                    r"|^( *)\.\. testcode::\s*$")


def python_blocks(text):
    """The Python code blocks of a reStructuredText document, dedented."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _BLOCK.match(lines[i])
        i += 1
        if not match:
            continue
        indent = len(match.group(1) if match.group(1) is not None else match.group(2))
        while i < len(lines) and lines[i].strip().startswith(":"):
            i += 1  # directive options
        body = []
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        code = "\n".join(body)
        width = min((len(line) - len(line.lstrip()) for line in body if line.strip()),
                    default=0)
        blocks.append("\n".join(line[width:] for line in code.splitlines()))
    return blocks


def imported_names(code):
    """``(module, name)`` for each ``from module import name``; ``(module, None)``
    for each ``import module``."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return found


def _sources():
    docs = sorted(DOCS.rglob("*.rst")) + [ROOT / "README.rst"]
    for path in docs:
        for number, block in enumerate(python_blocks(path.read_text(encoding="utf-8"))):
            yield pytest.param(block, id=f"{path.relative_to(ROOT)}#{number}")
    for path in sorted((DOCS / "plugins" / "ciml-lstm").rglob("*.py")):
        yield pytest.param(path.read_text(encoding="utf-8"), id=str(path.relative_to(ROOT)))


SOURCES = list(_sources())


def test_docs_have_python_examples():
    # Guards the test below against silently checking nothing.
    assert len(SOURCES) > 15


@pytest.fixture
def example_packages(monkeypatch):
    for path in EXAMPLES:
        monkeypatch.syspath_prepend(str(path))


@pytest.mark.parametrize("code", SOURCES)
def test_every_imported_name_exists(code, example_packages):
    try:
        names = imported_names(code)
    except SyntaxError as exc:
        pytest.fail(f"a Python example does not parse: {exc}")
    for module, name in names:
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            pytest.fail(f"the docs import {module!r}, which does not exist: {exc}")
        if name is not None and name != "*" and not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                pytest.fail(f"the docs import {name!r} from {module!r}, which has no such name")


def test_the_check_catches_a_missing_name():
    code = "from ciml import hookimpl\n"
    assert imported_names(code) == [("ciml", "hookimpl")]
    assert not hasattr(importlib.import_module("ciml"), "hookimpl")
    assert python_blocks(".. code-block:: python\n\n   import os\n   x = 1\n\nafter\n") == [
        "\nimport os\nx = 1"]



@pytest.fixture
def lstm_hooks(example_packages):
    from ciml_lstm import hooks

    return hooks


def test_the_guide_package_registers_cleanly(lstm_hooks):
    # What `ciml plugin check ciml-lstm` checks, without installing it.
    from ciml import plugins

    manager = plugins.PluginManager(load_entry_points=False, report=False)
    manager.add_plugin(lstm_hooks, "lstm", distribution="ciml-lstm", version="0.1.0")

    assert manager.failures == []
    info = manager.info("estimator", "lstm")
    assert plugins.component_problems(info) == []


@pytest.mark.tensorflow
@pytest.mark.slow
def test_the_guide_package_passes_the_kit_as_its_test_says(example_packages):
    from ciml_lstm.estimator import LSTMEstimator

    from ciml.testing import check_estimator

    check_estimator(LSTMEstimator, params={"epochs": 2, "units": 8})


#: Names that are entry-point groups, not Python objects.
ENTRY_POINT_GROUPS = {"ciml.cli", "ciml.plugins"}
_DOTTED = re.compile(r"``@?(ciml(?:\.\w+)+)(?:\(\))?``")


def resolves(dotted):
    """Whether ``ciml.a.b`` names a module, or an attribute of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(found, attr):
                return False
            found = getattr(found, attr)
        return True
    return False


def _prose():
    files = sorted(DOCS.rglob("*.rst")) + [ROOT / "README.rst"] + sorted(
        (ROOT / "ciml").rglob("*.py"))
    for path in files:
        for match in _DOTTED.finditer(path.read_text(encoding="utf-8")):
            yield path.relative_to(ROOT), match.group(1)


def test_every_ciml_name_in_prose_exists():
    # ``ciml.base.Estimator`` in a guide or a docstring (the hookspecs
    # docstring once said ``@ciml.hookimpl``, which does not exist).
    names = list(_prose())
    assert len(names) > 20
    missing = sorted({f"{name} ({path})" for path, name in names
                      if name not in ENTRY_POINT_GROUPS and not resolves(name)})
    assert missing == []


def test_resolves():
    assert resolves("ciml.hookspecs.hookimpl")
    assert resolves("ciml.base.Estimator.fit")
    assert not resolves("ciml.hookimpl")
    assert not resolves("ciml.testing.NO_SUCH_NAME")
