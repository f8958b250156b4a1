"""What ciml's commands share: the data path, plugin options, ``-o key=value``."""

import argparse

from ciml.base import parse_bool
from ciml.errors import ConfigError
from ciml.plugins import get_manager


def data_path(cmd):
    """The :class:`ciml.paths.DataPath` chosen by ``--data-path``."""
    return cmd.app.data_path


def parse_key_values(items):
    """Parse repeated ``key=value`` strings into a dict (keys may use hyphens)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def add_component_options(parser, kind, title=None, names=None):
    """Add a ``--long-option`` for every parameter of the components of a kind.

    Options of different components that share a name share one option
    (e.g. ``--limit``); each component later takes only what it declares.
    Defaults stay ``None`` here so that a component's own default applies.
    """
    manager = get_manager()
    group = parser.add_argument_group(title or f"{kind.replace('_', ' ')} options")
    seen = {action.dest for action in parser._actions}
    for info in manager.all(kind):
        if names is not None and info.name not in names:
            continue
        for p in info.cls.parameters:
            if p.name in seen:
                continue
            seen.add(p.name)
            help_text = p.help or ""
            if p.default is not None and not p.secret:
                help_text += f" (default: {p.default})"
            help_text += f" [{info.name}]"
            kwargs = dict(dest=p.name, default=None, help=help_text)
            if p.type is parse_bool:
                # A switch (--tls / --no-tls) reads better than --tls true.
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["metavar"] = p.name.upper()
            if p.multiple:
                kwargs["nargs"] = "+"
            group.add_argument(p.option, **kwargs)
    return group


def component_options(cls, parsed_args, extra=None):
    """The options of ``parsed_args`` (and ``-o`` pairs) that ``cls`` declares."""
    values = vars(parsed_args) if isinstance(parsed_args, argparse.Namespace) else parsed_args
    options = cls.pick_options(values)
    for key, value in (extra or {}).items():
        if key not in {p.name for p in cls.parameters}:
            raise ConfigError(cls._unknown_message(key))
        options[key] = value
    return options


def build_component(kind, name, parsed_args=None, extra=None):
    """Instantiate the component ``name`` of ``kind`` from parsed options."""
    cls = get_manager().get(kind, name)
    return cls.from_options(component_options(cls, parsed_args or {}, extra))
