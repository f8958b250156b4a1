"""Sphinx configuration for ciml's documentation (builds offline, warnings are errors)."""

import ciml

project = "ciml"
author = "The ciml developers"
copyright = "the ciml developers"
release = ciml.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "cliff.sphinxext",
]

# Every ciml name the docs refer to (:func:`ciml.dataset.iter_batches`...) must
# exist and be documented: an unresolved one fails the -W build.  Names from
# other projects cannot be resolved offline (no intersphinx), and ciml's
# internals are not part of the documented API, so both are left out.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(datetime|abc|pathlib|pandas|pd|numpy|np|zarr|collections|typing|"
               r"importlib|argparse|threading|os|pluggy|contextlib|http)(\..*)?"),
    (r"py:.*", r"ciml\.(?!base|hookspecs|testing|records|errors|plugins|fileutil|paths|"
               r"dataset\.iter_batches)\w+(\..*)?"),
    # A private base class (shown by show-inheritance) is not API to document.
    (r"py:class", r"ciml\..*\._[A-Za-z]\w*"),
    # Type variables and aliases in annotations.
    (r"py:.*", r"(ciml\.base\.component\.)?[CT]|Self|ArrayLike|PathLike|Register|"
               r"NoneType|Any"),
]

# The plugin guide's examples run under `sphinx-build -b doctest` (tox -e
# docs): the names they import must exist where the guide says.  The example
# packages the guide shows are importable from the source tree.
doctest_global_setup = """
import sys, pathlib
_here = pathlib.Path(%r)
for _path in (_here / "plugins" / "ciml-lstm", _here.parents[1] / "tests" / "example_plugin"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
""" % str(__import__("pathlib").Path(__file__).resolve().parent)

# No intersphinx: the build must work without network access.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autoprogram_cliff_application = "ciml"
# cliff's common output options are documented once, not on every command.
autoprogram_cliff_ignored = ["--help", "--noindent", "--max-width", "--fit-width",
                             "--print-empty", "--quote", "--prefix", "--variable"]

templates_path = []
exclude_patterns = []
html_theme = "alabaster"
html_static_path = []
html_title = f"ciml {release}"
