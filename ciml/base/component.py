"""What every plugin component shares: a name, a description, declared parameters.

Parameters are declared, not discovered from ``__init__``, because the CLI,
``ciml plugin show`` and saved experiments all need them before anything is
constructed: the CLI turns each into a ``--long-option``, ``plugin show``
lists them with defaults, and a saved experiment is checked against them.
"""

import dataclasses
import inspect
from typing import Any, Callable, ClassVar, Sequence

from ciml.errors import ConfigError

_MISSING = object()


def parse_bool(value):
    """Accept the spellings people type for booleans."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def positive_int(value):
    """An integer of at least 1 (counts, sizes)."""
    value = int(value)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def non_negative_int(value):
    value = int(value)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def positive_float(value):
    value = float(value)
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def non_negative_float(value):
    value = float(value)
    if value < 0:
        raise ValueError("expected a number >= 0")
    return value


def interval(value):
    """A sampling interval (``10s``, ``1min``...): a positive, fixed duration, as typed."""
    import pandas as pd

    text = str(value).strip()
    hint = "give a number and a unit, e.g. 10s, 30s, 1min or 5min"
    try:
        duration = pd.Timedelta(text)
        pd.tseries.frequencies.to_offset(text)
    except (ValueError, TypeError, OverflowError):
        # pandas' own message names its internals, not what to type.
        raise ValueError(f"{value!r} is not an interval; {hint}") from None
    if pd.isna(duration) or duration <= pd.Timedelta(0):
        raise ValueError(f"{value!r} is not longer than zero; {hint}")
    return text


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One setting a component accepts.

    ``name`` is a Python identifier; on the command line it becomes
    ``--name-with-hyphens`` and in ``-o key=value`` the key is the name (either
    spelling).  ``type`` converts a string from the command line; it is also
    applied to defaults and to values read from saved files.  ``secret``
    values (passwords, tokens) are never printed or logged.  ``multiple``
    parameters take a list.
    """

    name: str
    type: Callable[[Any], Any] = str
    default: Any = None
    help: str = ""
    choices: Sequence[Any] | None = None
    required: bool = False
    secret: bool = False
    multiple: bool = False

    @property
    def option(self):
        return "--" + self.name.replace("_", "-")

    @property
    def type_name(self):
        if self.type is parse_bool:
            return "bool"
        return getattr(self.type, "__name__", str(self.type))

    def convert(self, value):
        """Convert and check one value; raise :class:`ConfigError` if bad."""
        if value is None:
            return None
        if self.multiple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return [self._convert_one(v) for v in value]
        return self._convert_one(value)

    def _convert_one(self, value):
        try:
            converted = self.type(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"bad value for {self.name}: {value!r} ({exc})") from None
        if self.choices is not None and converted not in self.choices:
            raise ConfigError(
                f"bad value for {self.name}: {value!r}; choose from "
                + ", ".join(str(c) for c in self.choices))
        return converted

    def display_default(self):
        if self.secret and self.default is not None:
            return "****"
        return self.default


class Component:
    """Base of every plugin kind: a registered, described, configurable class.

    Subclasses declare ``parameters``; ``__init__`` receives each as a keyword
    argument (already converted) and should only store them, as in
    scikit-learn, so that constructing a component is cheap and never touches
    the network or imports heavy libraries.

    The first line of the class docstring is what ``ciml plugin list`` shows:
    write it for users.
    """

    #: The name users type. Set by the class or by ``register(cls, name=)``.
    name: ClassVar[str | None] = None
    #: The kind, set by each base class (``result_source``...).
    kind: ClassVar[str] = "component"
    #: The settings this component takes.
    parameters: ClassVar[Sequence[Parameter]] = ()

    def __init__(self, **params):
        known = {p.name: p for p in self.parameters}
        for key in params:
            if key not in known:
                raise ConfigError(self._unknown_message(key))
        for p in self.parameters:
            value = params.get(p.name, _MISSING)
            if value is _MISSING or value is None:
                value = p.convert(p.default) if p.default is not None else None
            else:
                value = p.convert(value)
            if p.required and value is None:
                raise ConfigError(
                    f"{self.kind.replace('_', ' ')} {self.name!r} needs {p.option}")
            setattr(self, p.name, value)

    @classmethod
    def _unknown_message(cls, key):
        names = ", ".join(p.name for p in cls.parameters) or "(none)"
        return (f"{cls.kind.replace('_', ' ')} {cls.name!r} has no parameter "
                f"{key!r}; it takes: {names}")

    @classmethod
    def from_options(cls, options):
        """Build from a mapping of option values, ignoring keys set to ``None``.

        Keys may use hyphens or underscores.  Unknown keys are an error, so
        that a typo in ``-o lerning_rate=0.1`` is not silently ignored.
        """
        params = {}
        for key, value in (options or {}).items():
            if value is None:
                continue
            params[key.replace("-", "_")] = value
        return cls(**params)

    @classmethod
    def pick_options(cls, options):
        """The subset of a mapping (e.g. parsed CLI args) this class accepts."""
        names = {p.name for p in cls.parameters}
        return {k: v for k, v in options.items() if k in names and v is not None}

    def get_params(self, include_secrets=False):
        """The current parameter values, as a plain dict (secrets masked)."""
        out = {}
        for p in self.parameters:
            value = getattr(self, p.name, None)
            if p.secret and value is not None and not include_secrets:
                value = "****"
            out[p.name] = value
        return out

    @classmethod
    def description(cls):
        # The class's own docstring only: an undocumented plugin must not
        # show its base class's description as its own.
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
