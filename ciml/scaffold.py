"""``ciml plugin new``: write a ready plugin package from ciml's own templates.

The templates (``ciml/templates/plugin``) hold one working component per
kind, small but real (each passes its kind's conformance kit), with the
package around it: setup.cfg with the entry point, a hooks module, a test
file that runs the kit, a README.  Placeholders are ``{{name}}``; nothing
else in a template is special, so the files read as the code they become.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import ciml
from ciml.errors import AlreadyExistsError, ConfigError

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates" / "plugin"

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_DIST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]$|^[A-Za-z0-9]$")


@dataclasses.dataclass(frozen=True)
class KindTemplate:
    """What differs between the kinds of generated plugin."""

    module: str
    suffix: str
    summary: str
    kit: str
    usage: str


KIND_TEMPLATES = {
    "estimator": KindTemplate(
        "estimator", "Estimator", "Gaussian naive Bayes estimator", "check_estimator",
        "   $ ciml setup-experiment --experiment {name} --estimator {name}\n"
        "   $ ciml train-model --dataset DATASET --experiment {name}"),
    "normalizer": KindTemplate(
        "normalizer", "Normalizer", "scale each feature by its largest training value",
        "check_normalizer",
        "   $ ciml plugin list --kind normalizer"),
    "metric_source": KindTemplate(
        "metrics", "MetricSource", "metrics from <directory>/<run id>.csv files",
        "check_metric_source",
        "   $ ciml cache-data --build-name JOB --metric-source {name} --directory DIR"),
    "result_source": KindTemplate(
        "source", "ResultSource", "runs from a JSON-Lines file", "check_result_source",
        "   $ ciml cache-data --build-name JOB --source {name} --runs-file runs.jsonl"),
    "trigger": KindTemplate(
        "trigger", "Trigger", "finished runs announced as lines of a file",
        "check_trigger",
        "   $ ciml watch --dataset DATASET --experiment EXPERIMENT --trigger {name} "
        "--events-file runs.txt"),
}


def _class_name(name: str, suffix: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name)) + suffix


def render(text: str, values: dict[str, str]) -> str:
    """Fill ``{{key}}`` placeholders; an unknown one is a bug in the template."""
    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"\{\{([a-z_]+)\}\}", fill, text)


def plan(kind: str, name: str, distribution: str | None = None) -> dict[str, str]:
    """The files of a new plugin package: relative path -> content."""
    from ciml.base import KINDS

    kind = kind.replace("-", "_")
    if kind not in KIND_TEMPLATES:
        from ciml.errors import UnknownPluginError

        raise UnknownPluginError("plugin kind", kind, KIND_TEMPLATES)
    if not _NAME.match(name):
        raise ConfigError(f"bad plugin name {name!r}: use lowercase letters, digits and "
                          "single hyphens, starting with a letter (e.g. forest, csv-dir); "
                          "users type it")
    distribution = distribution or f"ciml-{name}"
    if not _DIST.match(distribution):
        raise ConfigError(f"bad distribution name {distribution!r}: use letters, digits, "
                          "'.', '_' and '-' (e.g. ciml-forest)")
    package = re.sub(r"[^a-z0-9]+", "_", distribution.lower()).strip("_")
    if not package.isidentifier():
        package = "ciml_" + package
    spec = KIND_TEMPLATES[kind]
    label = kind.replace("_", " ")
    major_minor = ".".join(ciml.__version__.split(".")[:2])
    values = {
        "name": name, "dist": distribution, "package": package, "module": spec.module,
        "class": _class_name(name, spec.suffix), "kind": kind, "kind_label": label,
        "kind_option": kind.replace("_", "-"), "hook": KINDS[kind][1],
        "summary": f"{spec.summary[0].upper()}{spec.summary[1:]}", "kit": spec.kit,
        "ciml_version": major_minor, "title_bar": "=" * len(distribution),
        "usage": spec.usage.format(name=name),
    }
    common = TEMPLATES / "common"
    own = TEMPLATES / kind
    files = {
        "pyproject.toml": common / "pyproject.toml.tmpl",
        "setup.cfg": common / "setup.cfg.tmpl",
        "README.rst": common / "README.rst.tmpl",
        f"{package}/__init__.py": common / "__init__.py.tmpl",
        f"{package}/hooks.py": common / "hooks.py.tmpl",
        f"{package}/{spec.module}.py": own / "component.py.tmpl",
        f"tests/test_{spec.module}.py": own / "test.py.tmpl",
    }
    return {path: render(template.read_text(encoding="utf-8"), values)
            for path, template in files.items()}


def write_package(kind: str, name: str, directory: str | os.PathLike[str] | None = None,
                  distribution: str | None = None) -> tuple[pathlib.Path, list[str]]:
    """Write a new plugin package; returns its folder and the files written.

    The folder (default ``./<distribution>``) must not exist or be empty:
    nothing a plugin author wrote is ever overwritten.
    """
    files = plan(kind, name, distribution)
    dist = distribution or f"ciml-{name}"
    root = pathlib.Path(directory) if directory else pathlib.Path.cwd() / dist
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AlreadyExistsError(f"{root} exists and is not empty; choose another "
                                 "--directory")
    for relative, text in sorted(files.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root, sorted(files)
