"""``ciml plugin list`` and ``ciml plugin show``: what is installed, and its settings."""

from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.base import KINDS
from ciml.plugins import get_manager


def _kind(value):
    value = value.replace("-", "_")
    if value not in KINDS:
        from ciml.errors import UnknownPluginError

        raise UnknownPluginError("plugin kind", value, KINDS)
    return value


class PluginList(Lister):
    """List the installed plugin components of every kind"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--kind", metavar="KIND",
            help="Only this kind: " + ", ".join(k.replace("_", "-") for k in KINDS))
        return parser

    def take_action(self, parsed_args):
        manager = get_manager()
        kind = _kind(parsed_args.kind) if parsed_args.kind else None
        columns = ("kind", "name", "module", "distribution", "version", "description")
        rows = [(i.kind.replace("_", "-"), i.name, i.module, i.distribution or "",
                 i.version or "", i.description) for i in manager.all(kind)]
        if kind is None:
            # Extra commands are plugins too: a package may add its own.
            rows.extend(_command_rows(self.app))
        for failure in manager.failures:
            self.app.stderr.write(
                f"warning: plugin {failure.plugin!r} from "
                f"{failure.distribution or 'an unknown distribution'} "
                f"failed to load: {failure.error}\n")
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
        for p in info.cls.parameters:
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
        import inspect

        # The class's own docstring: an inherited one would describe the base.
        doc = inspect.cleandoc(info.cls.__dict__.get("__doc__") or "")
        columns = ("kind", "name", "description", "details", "parameters", "module",
                   "plugin", "distribution", "version")
        data = (info.kind.replace("_", "-"), info.name, info.description,
                "\n".join(doc.splitlines()[1:]).strip(),
                "\n".join(params) or "(none)", info.module, info.plugin,
                info.distribution or "", info.version or "")
        return columns, data
