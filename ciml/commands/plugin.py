"""``ciml plugin list|show|check|new``: what is installed, its settings, its health."""

import inspect

from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.base import KINDS
from ciml.plugins import get_manager

#: ``plugin list --kind hook`` lists the lifecycle hooks plugins implement.
HOOK_KIND = "hook"


def _kind(value, allow_hook=False):
    value = value.replace("-", "_")
    if allow_hook and value == HOOK_KIND:
        return value
    if value not in KINDS:
        from ciml.errors import UnknownPluginError

        raise UnknownPluginError("plugin kind", value,
                                 list(KINDS) + ([HOOK_KIND] if allow_hook else []))
    return value


def _hook_rows(manager, plugin_names=None):
    return [(HOOK_KIND, h.hook, h.module, h.distribution or "", h.version or "",
             h.description) for h in manager.lifecycle_hooks()
            if plugin_names is None or h.plugin in plugin_names]


class PluginList(Lister):
    """List the installed plugin components of every kind"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--kind", metavar="KIND",
            help="Only this kind: " + ", ".join(k.replace("_", "-") for k in KINDS)
            + ", or hook (the lifecycle hooks plugins implement)")
        return parser

    def take_action(self, parsed_args):
        # Problems loading a plugin are logged once, when plugins are loaded;
        # ``ciml plugin check`` lists them with their fixes.
        manager = get_manager()
        kind = _kind(parsed_args.kind, allow_hook=True) if parsed_args.kind else None
        columns = ("kind", "name", "module", "distribution", "version", "description")
        rows = []
        if kind != HOOK_KIND:
            rows = [(i.kind.replace("_", "-"), i.name, i.module, i.distribution or "",
                     i.version or "", i.description) for i in manager.all(kind)]
        if kind in (None, HOOK_KIND):
            rows.extend(_hook_rows(manager))
        if kind is None:
            # Extra commands are plugins too: a package may add its own.
            rows.extend(_command_rows(self.app))
        return columns, rows


def _command_rows(app):
    """Commands that come from distributions other than ciml itself."""
    import importlib.metadata

    rows = []
    for dist in importlib.metadata.distributions():
        # Entry points first: reading every distribution's metadata is slow.
        try:
            eps = [ep for ep in dist.entry_points if ep.group == "ciml.cli"]
        except Exception:
            continue
        if not eps:
            continue
        name = dist.metadata["Name"]
        if name is None or name.lower() == "ciml":
            continue
        for ep in eps:
            module = ep.value.split(":", 1)[0]
            try:
                description = ep.load().__doc__ or ""
            except Exception as exc:
                description = f"(failed to load: {exc})"
            rows.append(("command", ep.name.replace("_", " "), module, name,
                         dist.version, description.strip().splitlines()[0]
                         if description.strip() else ""))
    return sorted(rows)


class PluginShow(ShowOne):
    """Show one plugin component: what it does and the parameters it takes"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("kind", metavar="KIND",
                            help="Plugin kind: " + ", ".join(
                                k.replace("_", "-") for k in KINDS))
        parser.add_argument("name", metavar="NAME", help="Component name")
        return parser

    def take_action(self, parsed_args):
        info = get_manager().info(_kind(parsed_args.kind), parsed_args.name)
        params = []
        for p in info.cls.parameters:  # type: ignore[attr-defined]
            line = f"{p.option} ({p.type_name}"
            if p.multiple:
                line += ", several"
            line += ")"
            default = p.display_default()
            if default is not None:
                line += f" default {default}"
            if p.required:
                line += " required"
            if p.choices:
                line += " choices: " + "|".join(str(c) for c in p.choices)
            if p.help:
                line += f": {p.help}"
            params.append(line)
        # The class's own docstring: an inherited one would describe the base.
        doc = inspect.cleandoc(info.cls.__dict__.get("__doc__") or "")
        columns = ("kind", "name", "description", "details", "parameters", "module",
                   "plugin", "distribution", "version")
        data = (info.kind.replace("_", "-"), info.name, info.description,
                "\n".join(doc.splitlines()[1:]).strip(),
                "\n".join(params) or "(none)", info.module, info.plugin,
                info.distribution or "", info.version or "")
        return columns, data


class PluginCheck(Lister):
    """Load plugins strictly and report every problem with its fix (for a plugin's CI)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "distribution", metavar="DISTRIBUTION", nargs="?",
            help="Check only the plugins of this installed distribution "
                 "(e.g. ciml-forest); default: every installed plugin")
        return parser

    def run(self, parsed_args):
        self.problems = []
        rc = super().run(parsed_args)
        for problem in self.problems:
            self.app.stderr.write(f"problem: {problem}\n")
        if self.problems:
            count = len(self.problems)
            self.app.stderr.write(f"{count} problem{'s' if count > 1 else ''} found\n")
            return 1
        return rc

    def take_action(self, parsed_args):
        from ciml.plugins import check_plugins

        report = check_plugins(parsed_args.distribution)
        self.problems.extend(report.problems)
        columns = ("kind", "name", "module", "plugin", "distribution", "version")
        rows = [(i.kind.replace("_", "-"), i.name, i.module, i.plugin,
                 i.distribution or "", i.version or "") for i in report.components]
        rows += [(HOOK_KIND, h.hook, h.module, h.plugin, h.distribution or "",
                  h.version or "") for h in report.hooks]
        return columns, rows


class PluginNew(ShowOne):
    """Write a new plugin package, ready to install, test and check"""

    def get_parser(self, prog_name):
        from ciml.scaffold import KIND_TEMPLATES

        parser = super().get_parser(prog_name)
        parser.add_argument("kind", metavar="KIND", help="Plugin kind: " + ", ".join(
            k.replace("_", "-") for k in KIND_TEMPLATES))
        parser.add_argument("name", metavar="NAME",
                            help="The name users will type (--estimator NAME...): "
                                 "lowercase, hyphenated")
        parser.add_argument("--package", metavar="DISTRIBUTION", default=None,
                            help="Distribution name (default: ciml-NAME); the Python "
                                 "package is the same with underscores")
        parser.add_argument("--directory", metavar="DIR", default=None,
                            help="Where to write it (default: ./DISTRIBUTION); must not "
                                 "exist or be empty")
        return parser

    def take_action(self, parsed_args):
        from ciml.scaffold import write_package

        root, files = write_package(parsed_args.kind, parsed_args.name,
                                    parsed_args.directory, parsed_args.package)
        dist = parsed_args.package or f"ciml-{parsed_args.name}"
        self.app.stderr.write(
            f"wrote {dist} in {root}; next: pip install -e '{root}[test]' && "
            f"python -m pytest {root / 'tests'} && ciml plugin check {dist}\n")
        columns = ("kind", "name", "distribution", "directory", "files")
        return columns, (parsed_args.kind.replace("_", "-"), parsed_args.name, dist,
                         str(root), "\n".join(files))
