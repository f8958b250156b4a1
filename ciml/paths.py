"""The data path: one folder holding the raw cache, datasets, experiments and models.

The folder may be local or on an object store (``s3://bucket/prefix``, any
fsspec URL): see :mod:`ciml.storage`.
"""

import os
import pathlib
import re

from ciml.errors import ConfigError
from ciml.storage import is_remote, is_url, location, redact_url

ENV_VAR = "CIML_DATA_PATH"
#: The raw cache's catalog (``--catalog-uri``), when not the local SQLite file.
CATALOG_ENV_VAR = "CIML_CATALOG_URI"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_data_path():
    """``$CIML_DATA_PATH``, else ``$XDG_DATA_HOME/ciml`` (``~/.local/share/ciml``)."""
    if os.environ.get(ENV_VAR):
        value = os.environ[ENV_VAR]
        return value if is_url(value) else pathlib.Path(value).expanduser()
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
    root = path.root if isinstance(path, DataPath) else location(path)
    if is_remote(root):
        return _check_remote(root)
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


def _check_remote(root):
    """An object store's data path needs only its bucket: prefixes appear with objects."""
    bucket = root.path.split("/", 1)[0]
    shown = redact_url(str(root))
    try:
        # info, not exists: exists() reads "cannot reach" as "does not exist".
        root.fs.info(bucket)
        found = True
    except FileNotFoundError:
        found = False
    except PermissionError:
        raise ConfigError(f"data path {shown}: access denied (check the credentials: "
                          "environment, AWS profile or --storage-option)") from None
    except Exception as exc:  # noqa: BLE001 -- botocore, aiohttp, ...: all "cannot reach"
        raise ConfigError(f"data path {shown} cannot be reached: "
                          f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not found:
        raise ConfigError(f"data path {shown}: bucket {bucket!r} does not exist "
                          "(create it first; ciml does not create buckets)")
    return root


def _first_line(exc):
    return str(exc).splitlines()[0][:300] if str(exc) else ""


class DataPath:
    """Where everything lives under the data path, in one place.

    :param root: a local folder or an fsspec URL (``s3://bucket/prefix``).
    :param storage_options: keyword arguments of the fsspec file system
        (``--storage-option``: ``endpoint_url``, ``profile``, ``key``...).
    :param catalog_uri: the SQLAlchemy URL of the raw cache's catalog
        (``--catalog-uri``); by default SQLite under a local data path.
    """

    def __init__(self, root=None, storage_options=None, catalog_uri=None):
        self.storage_options = dict(storage_options or {})
        self.catalog_uri = catalog_uri or os.environ.get(CATALOG_ENV_VAR) or None
        self.url = str(root) if root else None
        self.root = location(root if root else default_data_path(), self.storage_options)

    def __repr__(self):
        return f"DataPath({redact_url(str(self.root))!r})"

    def __str__(self):
        return redact_url(str(self.root))

    def __fspath__(self):
        if is_remote(self.root):
            raise TypeError(f"{self} is not a local folder")
        return str(self.root)

    def __getstate__(self):
        # A file system object need not pickle: worker processes rebuild it.
        return {"url": str(self.root), "storage_options": self.storage_options,
                "catalog_uri": self.catalog_uri}

    def __setstate__(self, state):
        self.__init__(state["url"], state["storage_options"], state["catalog_uri"])

    @property
    def is_remote(self):
        """Whether the data path is on an object store (not a local folder)."""
        return is_remote(self.root)

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
