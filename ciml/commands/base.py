"""What ciml's commands share: the data path, plugin options, ``-o key=value``."""

import argparse
import contextlib
import contextvars

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


def _shape(param):
    """What argparse must know of a parameter: a switch or not, one value or a list."""
    return (param.type is parse_bool, bool(param.multiple))


def qualified_dest(cls, param_name):
    """The ``argparse`` dest of a parameter whose plain option another owns."""
    return f"{cls.kind}:{cls.name}:{param_name}"


def _help(owners):
    """Help for an option: each owner's text and default, owners of one text together."""
    by_text = {}
    for name, p in owners:
        by_text.setdefault(p.help or "", []).append((name, p))
    parts = []
    for text, group in by_text.items():
        defaults = [(name, p.default) for name, p in group
                    if p.default is not None and not p.secret]
        if len({repr(d) for _, d in defaults}) == 1:
            text += f" (default: {defaults[0][1]})"
        elif defaults:
            text += " (default: " + ", ".join(f"{d} for {name}" for name, d in defaults) + ")"
        parts.append(f"{text} [{', '.join(name for name, _ in group)}]".strip())
    return "; ".join(parts)


#: The option by which ciml's commands choose the component of each kind
#: (``--metric-source csvdir``); ``ciml help`` reads them to show only the
#: chosen components' options.
CHOOSERS = {"result_source": "--source", "metric_source": "--metric-source",
            "trigger": "--trigger", "estimator": "--estimator"}

_only_components = contextvars.ContextVar("ciml_only_components", default=None)


def chosen_components(args):
    """``{kind: name}`` for the components a command line chooses (``--trigger poll``)."""
    finder = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for kind, option in CHOOSERS.items():
        finder.add_argument(option, dest=kind, default=None)
    try:
        found, _ = finder.parse_known_args(list(args))
    except argparse.ArgumentError:
        return {}
    return {kind: name for kind, name in vars(found).items() if name}


@contextlib.contextmanager
def only_components(chosen):
    """Within, :func:`add_component_options` adds only these components' options."""
    token = _only_components.set(dict(chosen))
    try:
        yield
    finally:
        _only_components.reset(token)


def add_component_options(parser, kind, title=None, names=None):
    """Add a ``--long-option`` for every parameter of the components of a kind.

    Parameters of several components that share a name, even across kinds
    (``--timeout`` of a result and of a metric source), share one option
    when argparse can read it the same way for all (a switch or a value,
    one or a list); each component later takes only what it declares.  A
    parameter that cannot share (a switch where the option takes a value,
    say) gets its own ``--<component>-<name>`` option instead, so that no
    plugin's parameter is unusable because of another plugin's.  A
    component's parameter named like one of the command's own options takes
    the command's value.  Defaults stay ``None`` here so that a component's
    own default applies.
    """
    manager = get_manager()
    chosen = (_only_components.get() or {}).get(kind)
    if chosen is not None:
        manager.info(kind, chosen)  # an unknown name: say so, with the valid ones
        names = [chosen]
        title = f"{title or kind.replace('_', ' ') + ' options'} ({chosen})"
    group = parser.add_argument_group(title or f"{kind.replace('_', ' ')} options")
    # Per parser, across calls (one per kind): option name -> its owners.
    shared = parser.__dict__.setdefault("_ciml_component_options", {})
    taken = {action.dest for action in parser._actions}
    for info in manager.all(kind):
        if names is not None and info.name not in names:
            continue
        for p in info.cls.parameters:
            entry = shared.get(p.name)
            if entry is None and p.name in taken:
                continue  # the command's own option
            if entry is not None and entry["shape"] == _shape(p):
                entry["owners"].append((info.name, p))
                entry["action"].help = _help(entry["owners"])
                continue
            if entry is None:
                option, dest = p.option, p.name
            else:
                option = f"--{info.name}-{p.name}".replace("_", "-")
                if option in parser._option_string_actions:
                    option = f"--{kind}-{info.name}-{p.name}".replace("_", "-")
                dest = qualified_dest(info.cls, p.name)
            kwargs = dict(dest=dest, default=None)
            if p.type is parse_bool:
                # A switch (--tls / --no-tls) reads better than --tls true.
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["metavar"] = p.name.upper()
            if p.multiple:
                kwargs["nargs"] = "+"
            action = group.add_argument(option, **kwargs)
            own = {"shape": _shape(p), "owners": [(info.name, p)], "action": action}
            action.help = _help(own["owners"])
            if entry is None:
                shared[p.name] = own
    return group


def component_options(cls, parsed_args, extra=None):
    """The options of ``parsed_args`` (and ``-o`` pairs) that ``cls`` declares."""
    values = vars(parsed_args) if isinstance(parsed_args, argparse.Namespace) else parsed_args
    options = {}
    for p in cls.parameters:
        # A parameter with an option of its own never reads the shared one,
        # whose values have another shape.
        key = qualified_dest(cls, p.name)
        if key not in values:
            key = p.name
        if values.get(key) is not None:
            options[p.name] = values[key]
    for key, value in (extra or {}).items():
        if key not in {p.name for p in cls.parameters}:
            raise ConfigError(cls._unknown_message(key))
        options[key] = value
    return options


def build_component(kind, name, parsed_args=None, extra=None):
    """Instantiate the component ``name`` of ``kind`` from parsed options."""
    cls = get_manager().get(kind, name)
    return cls.from_options(component_options(cls, parsed_args or {}, extra))
