"""Sphinx configuration for ciml's documentation (builds offline, warnings are errors)."""

import ciml

project = "ciml"
author = "The ciml developers"
copyright = "the ciml developers"
release = ciml.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "cliff.sphinxext",
]

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
