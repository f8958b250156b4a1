"""What every plugin component shares: a name, a description, declared parameters.

Parameters are declared, not discovered from ``__init__``, because the CLI,
``ciml plugin show`` and saved experiments all need them before anything is
constructed: the CLI turns each into a ``--long-option``, ``plugin show``
lists them with defaults, and a saved experiment is checked against them.
"""

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from ciml.errors import ConfigError

_MISSING = object()

T = TypeVar("T")

#: Spellings of "no value" that :func:`optional` accepts from a command line.
NONE_WORDS = ("", "none", "null")


def _named(function: Callable[[Any], T], type_name: str) -> Callable[[Any], T]:
    # ``ciml plugin show`` and ``--help`` print this instead of the function's name.
    function.type_name = type_name  # type: ignore[attr-defined]
    return function


def parse_bool(value: Any) -> bool:
    """Accept the spellings people type for booleans."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def bounded_int(min: int | None = None, max: int | None = None) -> Callable[[Any], int]:
    """A parameter type: an integer within ``[min, max]`` (either bound may be open).

    ``Parameter("depth", bounded_int(1, 64), 8)`` refuses ``0`` and ``65``
    with a message naming the range, and ``ciml plugin show`` prints its
    type as ``int 1..64``.
    """
    if min is not None and max is not None and min > max:
        raise ValueError(f"bounded_int: min {min} is above max {max}")

    def convert(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        number = int(value)
        if (min is not None and number < min) or (max is not None and number > max):
            raise ValueError(f"expected an integer {_range_text(min, max)}")
        return number

    convert.__name__ = "int"  # what argparse names in "invalid int value"
    return _named(convert, "int" + (f" {_range_text(min, max)}" if (min, max) != (None, None)
                                    else ""))


def _range_text(low: int | float | None, high: int | float | None) -> str:
    if low is not None and high is not None:
        return f"{low}..{high}"
    if low is not None:
        return f">= {low}"
    return f"<= {high}"


def optional(convert: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """A parameter type: ``convert``'s values, or none (``none`` on a command line).

    For a setting whose absence means something ("no limit", "unbounded
    depth"): ``Parameter("max_depth", optional(bounded_int(1)), None)``
    accepts ``--max-depth none`` as well as ``--max-depth 12``, and shows
    as ``int >= 1 or none``.
    """
    def convert_optional(value: Any) -> T | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        return convert(value)

    convert_optional.__name__ = getattr(convert, "__name__", "value")
    return _named(convert_optional, f"{type_name(convert)} or none")


def type_name(convert: Callable[[Any], Any]) -> str:
    """How a parameter type reads for users (``int``, ``bool``, ``int 1..64``)."""
    if convert is parse_bool:
        return "bool"
    return str(getattr(convert, "type_name", None) or getattr(convert, "__name__", convert))


# Plain functions, not bounded_int() closures: argparse names them in its
# errors, and a function defined at module level pickles.
def positive_int(value: Any) -> int:
    """An integer of at least 1 (counts, sizes)."""
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


def non_negative_int(value: Any) -> int:
    """An integer of at least 0."""
    number = int(value)
    if number < 0:
        raise ValueError("expected an integer >= 0")
    return number


def positive_float(value: Any) -> float:
    """A number above 0."""
    number = float(value)
    if not number > 0:
        raise ValueError("expected a positive number")
    return number


def non_negative_float(value: Any) -> float:
    """A number of at least 0."""
    number = float(value)
    if number < 0:
        raise ValueError("expected a number >= 0")
    return number


_named(positive_int, "int >= 1")
_named(non_negative_int, "int >= 0")
_named(positive_float, "float > 0")
_named(non_negative_float, "float >= 0")


#: The common spellings, accepted without importing pandas (0.5 s): a
#: positive whole number of seconds, minutes, hours or milliseconds, which
#: pandas' Timedelta and to_offset both read as that fixed duration.
_PLAIN_INTERVAL = re.compile(r"[1-9][0-9]{0,8}(?:s|min|h|ms)")


_UNIT_NS = {"s": 1_000_000_000, "min": 60_000_000_000, "h": 3_600_000_000_000,
            "ms": 1_000_000}


def fixed_interval_ns(value: object) -> int | None:
    """The length in nanoseconds of a plain interval (``10s``, ``1min``), else ``None``."""
    text = str(value).strip()
    if not _PLAIN_INTERVAL.fullmatch(text):
        return None
    digits = text.rstrip("minhs")
    return int(digits) * _UNIT_NS[text[len(digits):]]


def interval(value: object) -> str:
    """A sampling interval (``10s``, ``1min``...): a positive, fixed duration, as typed."""
    text = str(value).strip()
    if _PLAIN_INTERVAL.fullmatch(text):
        return text
    import pandas as pd

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
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    def convert(self, value: Any) -> Any:
        """Convert and check one value; raise :class:`ciml.errors.ConfigError` if bad."""
        if value is None:
            return None
        if self.multiple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return [self._convert_one(v) for v in value]
        return self._convert_one(value)

    def _convert_one(self, value: Any) -> Any:
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

    def display_default(self) -> Any:
        if self.secret and self.default is not None:
            return "****"
        return self.default


C = TypeVar("C", bound="Component")


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

    def __init__(self, **params: Any) -> None:
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
    def _unknown_message(cls, key: str) -> str:
        names = ", ".join(p.name for p in cls.parameters) or "(none)"
        return (f"{cls.kind.replace('_', ' ')} {cls.name!r} has no parameter "
                f"{key!r}; it takes: {names}")

    @classmethod
    def from_options(cls: type[C], options: Mapping[str, Any] | None) -> C:
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
    def pick_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of a mapping (e.g. parsed CLI args) this class accepts."""
        names = {p.name for p in cls.parameters}
        return {k: v for k, v in options.items() if k in names and v is not None}

    def get_params(self, include_secrets: bool = False) -> dict[str, Any]:
        """The current parameter values, as a plain dict (secrets masked)."""
        out = {}
        for p in self.parameters:
            value = getattr(self, p.name, None)
            if p.secret and value is not None and not include_secrets:
                value = "****"
            out[p.name] = value
        return out

    @classmethod
    def description(cls) -> str:
        # The class's own docstring only: an undocumented plugin must not
        # show its base class's description as its own.
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
