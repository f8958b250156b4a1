"""Experiments: an estimator's name and its checked hyper-parameters, as a small JSON file.

An experiment is stored as ``<data>/experiments/<name>.json``.  Its
parameters are checked against what the estimator declares when it is set
up, and stored *resolved* (every declared parameter with its value), so a
model trained later from it does not change when an estimator's defaults do.
It may name the dataset it is meant for (``dataset``), as the original
ciml's experiments did: ``ciml-train-model`` then defaults to it and
refuses another; ``ciml train-model`` trains it on any dataset.
"""

import datetime as dt

import ciml
from ciml import fileutil
from ciml.errors import AlreadyExistsError, ConfigError, NotFoundError
from ciml.paths import DataPath, check_name


def _data_path(data_path):
    return data_path if isinstance(data_path, DataPath) else DataPath(data_path)


def check_params(estimator, params):
    """Resolve ``params`` against the estimator's declared parameters.

    Returns every declared parameter, converted, with defaults filled in.
    An unknown key or a bad value is a :class:`ConfigError` naming what the
    estimator takes.
    """
    from ciml.plugins import get_manager

    cls = get_manager().get("estimator", estimator)
    known = {p.name for p in cls.parameters}
    params = {str(k).replace("-", "_"): v for k, v in (params or {}).items()}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"estimator {estimator!r} has no parameter {unknown[0]!r}; it takes: "
            + (", ".join(p.name for p in cls.parameters) or "(none)"))
    try:
        instance = cls.from_options(params)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (estimator {estimator!r} takes: "
                          + ", ".join(p.name for p in cls.parameters) + ")") from None
    return instance.get_params(include_secrets=True)


class Experiment:
    """A named estimator configuration: ``name``, ``estimator``, ``params``, ``dataset``."""

    def __init__(self, name, estimator, params=None, created=None, ciml_version=None,
                 dataset=None):
        self.name = check_name(name, "experiment name")
        self.estimator = estimator
        self.params = dict(params or {})
        self.created = created
        self.ciml_version = ciml_version
        self.dataset = check_name(dataset, "dataset name") if dataset else None

    def __repr__(self):
        return f"Experiment({self.name!r}, estimator={self.estimator!r})"

    @classmethod
    def create(cls, name, estimator, params=None, dataset=None):
        """A new experiment with ``params`` checked and resolved for ``estimator``."""
        return cls(name, estimator, check_params(estimator, params), dataset=dataset)

    def to_dict(self):
        data = {"name": self.name, "estimator": self.estimator, "params": self.params,
                "created": self.created, "ciml_version": self.ciml_version}
        if self.dataset:
            data["dataset"] = self.dataset
        return data

    def save(self, data_path, force=False):
        """Write ``<data>/experiments/<name>.json`` atomically; returns its path."""
        path = _data_path(data_path).experiment(self.name)
        if path.exists() and not force:
            raise AlreadyExistsError(
                f"experiment {self.name!r} already exists; use --force to replace it")
        self.created = dt.datetime.now(dt.timezone.utc).isoformat()
        self.ciml_version = ciml.__version__
        fileutil.atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, data_path, name):
        path = _data_path(data_path).experiment(name)
        if not path.is_file():
            raise NotFoundError(f"no experiment named {name!r}; create it with "
                                "ciml setup-experiment")
        try:
            data = fileutil.read_json(path)
            return cls(data.get("name") or name, data["estimator"], data.get("params"),
                       data.get("created"), data.get("ciml_version"), data.get("dataset"))
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            raise ConfigError(f"experiment file {path} is not valid: {exc}") from None

    def build_estimator(self):
        """A fresh, unfitted estimator configured with the saved parameters.

        Parameters the estimator no longer declares are an error naming them
        (an experiment saved with an older version of a plugin).
        """
        from ciml.plugins import get_manager

        cls = get_manager().get("estimator", self.estimator)
        params = {k: v for k, v in self.params.items() if v is not None}
        try:
            return cls.from_options(params)
        except ConfigError as exc:
            raise ConfigError(f"experiment {self.name!r}: {exc}") from None


def delete_experiment(data_path, name):
    """Remove a saved experiment; the models trained from it stay.

    :class:`NotFoundError` if there is none.
    """
    path = _data_path(data_path).experiment(name)
    try:
        path.unlink()
    except FileNotFoundError:
        raise NotFoundError(f"no experiment named {name!r}") from None
    fileutil.fsync_dir(path.parent)
    return path


def list_experiments(data_path):
    """The saved experiments, sorted by name (unreadable files are skipped)."""
    root = _data_path(data_path).experiments
    out = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            out.append(Experiment.load(data_path, path.stem))
        except (ConfigError, NotFoundError):
            continue
    return out
