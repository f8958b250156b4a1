"""The data path: one folder holding the raw cache, datasets, experiments and models."""

import os
import pathlib
import re

from ciml.errors import ConfigError

ENV_VAR = "CIML_DATA_PATH"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_data_path():
    """``$CIML_DATA_PATH``, else ``$XDG_DATA_HOME/ciml`` (``~/.local/share/ciml``)."""
    if os.environ.get(ENV_VAR):
        return pathlib.Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return pathlib.Path(base).expanduser() / "ciml"


def check_name(name, what="name"):
    """Refuse names that are unsafe as a single path component.

    Dataset, experiment and model names become folder names; this keeps
    them to letters, digits, ``.``, ``_`` and ``-`` so that no name can
    escape the data path or hide as a dot-file.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ConfigError(
            f"bad {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return name


def check_data_path(path, create=False, explicit=True):
    """Refuse a data path that is not a folder or, unless ``create``, does not exist.

    ``create`` makes a missing one; a path given explicitly (``--data-path``,
    ``$CIML_DATA_PATH``) only when its parent folder exists, so that a typo
    is reported instead of creating a tree in the wrong place.
    """
    root = path.root if isinstance(path, DataPath) else pathlib.Path(path)
    how = ("give an existing folder with --data-path or $" + ENV_VAR
           if explicit else "it is the default; give one with --data-path or $" + ENV_VAR)
    if root.exists():
        if not root.is_dir():
            raise ConfigError(f"data path {root} is not a folder ({how})")
        return root
    if not create:
        from ciml.errors import NotFoundError

        raise NotFoundError(
            f"data path {root} does not exist ({how}; 'ciml cache-data' or "
            "'ciml demo' creates one)")
    parent = root.parent
    if explicit and not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ConfigError(f"data path {root} cannot be created: its parent {parent} {what}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data path {root} cannot be created: {exc.strerror}") from None
    return root


class DataPath:
    """Where everything lives under the data path, in one place."""

    def __init__(self, root=None):
        self.root = pathlib.Path(root).expanduser() if root else default_data_path()

    def __repr__(self):
        return f"DataPath({str(self.root)!r})"

    def __fspath__(self):
        return str(self.root)

    @property
    def raw(self):
        """The raw cache: fetched metrics and run records, plus their index."""
        return self.root / "raw"

    @property
    def datasets(self):
        return self.root / "datasets"

    @property
    def experiments(self):
        return self.root / "experiments"

    @property
    def models(self):
        return self.root / "models"

    @property
    def state(self):
        """Small state files: trigger cursors, locks."""
        return self.root / "state"

    def dataset(self, name):
        return self.datasets / check_name(name, "dataset name")

    def experiment(self, name):
        return self.experiments / (check_name(name, "experiment name") + ".json")

    def model(self, dataset, experiment):
        return (self.models / check_name(dataset, "dataset name")
                / check_name(experiment, "experiment name"))
