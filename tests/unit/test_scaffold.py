"""``ciml plugin new``'s templates: every kind renders to a complete, valid package."""

import ast
import configparser
import re

import pytest

from ciml import scaffold
from ciml.errors import AlreadyExistsError, ConfigError, UnknownPluginError

KINDS = sorted(scaffold.KIND_TEMPLATES)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_a_complete_package(kind):
    files = scaffold.plan(kind, "my-thing")

    module = scaffold.KIND_TEMPLATES[kind].module
    assert set(files) == {
        "pyproject.toml", "setup.cfg", "README.rst", "ciml_my_thing/__init__.py",
        "ciml_my_thing/hooks.py", f"ciml_my_thing/{module}.py", f"tests/test_{module}.py"}
    for path, text in files.items():
        assert not re.search(r"\{\{[a-z_]+\}\}", text), path
        if path.endswith(".py"):
            ast.parse(text, filename=path)
    cfg = configparser.ConfigParser()
    cfg.read_string(files["setup.cfg"])
    assert cfg["metadata"]["name"] == "ciml-my-thing"
    assert cfg["options.entry_points"]["ciml.plugins"].strip() == \
        "ciml-my-thing = ciml_my_thing.hooks"
    assert 'name = "my-thing"' in files[f"ciml_my_thing/{module}.py"]
    assert scaffold.KIND_TEMPLATES[kind].kit in files[f"tests/test_{module}.py"]


def test_package_option_names_the_distribution_and_package():
    files = scaffold.plan("estimator", "forest", "acme-ciml-forest")
    assert "acme_ciml_forest/hooks.py" in files
    assert "name = acme-ciml-forest" in files["setup.cfg"]


@pytest.mark.parametrize("name", ["Forest", "my_thing", "-x", "x--y", "", "1abc"])
def test_bad_names_are_refused(name):
    with pytest.raises(ConfigError, match="bad plugin name"):
        scaffold.plan("estimator", name)


def test_unknown_kind_says_which_exist():
    with pytest.raises(UnknownPluginError, match="did you mean 'estimator'"):
        scaffold.plan("estimater", "x")


def test_never_overwrites(tmp_path):
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "mine.py").write_text("# the author's work\n")
    with pytest.raises(AlreadyExistsError, match="not empty"):
        scaffold.write_package("estimator", "forest", target)
    assert (target / "mine.py").read_text() == "# the author's work\n"

    root, files = scaffold.write_package("trigger", "lines", tmp_path / "new")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == files


def test_plugin_new_command(run_ciml, tmp_path):
    rc, out, err = run_ciml(["plugin", "new", "metric-source", "csvdir", "--directory",
                             tmp_path / "csvdir", "-f", "value", "-c", "distribution"])
    assert rc == 0, err
    assert out.strip() == "ciml-csvdir"
    assert (tmp_path / "csvdir" / "ciml_csvdir" / "metrics.py").is_file()
    assert "ciml plugin check ciml-csvdir" in err
