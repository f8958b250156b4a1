"""Settings from the ciml configuration file, one TOML table per plugin.

The configuration file (``--config FILE``, ``$CIML_CONFIG``, or
:file:`ciml.toml` in the data path) holds what a plugin needs and a command
line should not carry: a server's URL, a threshold, the path of a
credentials file.  Each plugin reads its own table::

    [gerrit]
    url = "https://review.example.org"
    min_confidence = 0.8

    [ciml-foo]
    token = "s3cret"

through :func:`settings`::

    from ciml.base import Secret, positive_float, settings

    conf = settings("gerrit")
    url = conf.get("url", str, required=True)
    floor = conf.get("min_confidence", positive_float, 0.8)
    token = conf.get("token", str, secret=True)   # a Secret: never printed

Values are converted and checked by the same parameter types a
:class:`ciml.base.Parameter` takes; a wrong one is a
:class:`ciml.errors.ConfigError` naming the file, the table and the key.
A value read with ``secret=True`` comes back as a :class:`Secret`, whose
text and ``repr`` are masked; :meth:`Secret.reveal` gives the value to the
code that sends it.  Keys whose names say they are secret (``password``,
``token``, ``secret``, ``credential``...) are masked in every dump
(:meth:`Settings.as_dict`, ``ciml config show``) whatever the plugin asks.
"""

from __future__ import annotations

import os
import pathlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ciml.errors import ConfigError

#: Environment variable naming the configuration file (``--config`` overrides it).
ENV_VAR = "CIML_CONFIG"
#: The file read from the data path when none is named.
DEFAULT_FILE = "ciml.toml"
#: What a masked value prints as.
MASK = "********"

_SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|credential|api[_-]?key|"
                          r"private[_-]?key)", re.IGNORECASE)


def looks_secret(key: str) -> bool:
    """Whether a key's name says its value is secret (masked in every dump).

    ``password_file`` and ``credentials_path`` name where a secret is, not
    the secret: they are shown.
    """
    if key.lower().endswith(("_file", "_path", "_dir")):
        return False
    return bool(_SECRET_NAME.search(key))


class Secret:
    """A secret value: prints as ``********``; :meth:`reveal` gives it to the code using it."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self._value = value

    def reveal(self) -> Any:
        """The value itself; pass it on, never print or log it."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask(key: str, value: Any) -> Any:
    """``value`` as a dump shows it: masked if a :class:`Secret` or its key looks secret."""
    if isinstance(value, Secret) or (looks_secret(key) and value not in (None, "")):
        return MASK
    if isinstance(value, Mapping):
        return {k: mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(key, v) for v in value]
    if isinstance(value, str) and "@" in value:
        from ciml.http import redact_text

        # A database or server URL with its password in it.
        return redact_text(value)
    return value


class Settings:
    """One table of the configuration file: a plugin's settings.

    An empty :class:`Settings` (no file, or no table for the plugin) answers
    every :meth:`get` with its default, so a plugin needs no special case
    for a missing file.
    """

    def __init__(self, name: str, values: Mapping[str, Any] | None = None,
                 source: pathlib.Path | None = None):
        #: The table's name (``[gerrit]``).
        self.name = name
        #: The file it came from, or ``None``.
        self.source = source
        self._values = dict(values or {})

    def __repr__(self) -> str:
        return f"Settings({self.name!r}, {self.as_dict()!r})"

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def _where(self, key: str) -> str:
        place = f"{self.source}: " if self.source else ""
        return f"{place}[{self.name}] {key}"

    def get(self, key: str, type: Callable[[Any], Any] = str, default: Any = None, *,
            secret: bool = False, required: bool = False) -> Any:
        """The value of ``key`` converted by ``type``; ``default`` when it is not set.

        :param key: the key in the plugin's table.
        :param type: a converter, as :class:`ciml.base.Parameter` takes
            (``str``, ``int``, ``float``, :func:`ciml.base.parse_bool`,
            :func:`ciml.base.positive_float`, :func:`ciml.base.bounded_int`...).
        :param default: returned, unconverted, when the key is not set.
        :param secret: return a :class:`Secret` (the default too, if not ``None``).
        :param required: a missing key is a :class:`ciml.errors.ConfigError`.
        :raise ciml.errors.ConfigError: the value does not convert.
        """
        if key not in self._values or self._values[key] is None:
            if required:
                raise ConfigError(f"{self._where(key)} is not set; the {self.name} plugin "
                                  "needs it")
            return Secret(default) if secret and default is not None else default
        raw = self._values[key]
        if type is int and isinstance(raw, bool):
            raise ConfigError(f"{self._where(key)}: expected an integer, got {raw!r}")
        try:
            value = type(raw)
        except (TypeError, ValueError, ConfigError) as exc:
            shown = MASK if secret or looks_secret(key) else repr(raw)
            what = getattr(type, "type_name", getattr(type, "__name__", "value"))
            reason = str(exc) if not (secret or looks_secret(key)) else f"not a valid {what}"
            raise ConfigError(f"{self._where(key)}: {reason} (got {shown})") from None
        return Secret(value) if secret else value

    def as_dict(self) -> dict[str, Any]:
        """The table with secrets masked: what may be printed."""
        return {k: mask(k, v) for k, v in self._values.items()}


class Config:
    """The whole configuration file: a :class:`Settings` per table."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]] | None = None,
                 path: pathlib.Path | None = None):
        #: The file read, or ``None`` when there was none.
        self.path = path
        self._tables = {str(k): dict(v) for k, v in (tables or {}).items()}

    def __repr__(self) -> str:
        return f"Config({str(self.path) if self.path else None!r})"

    def section(self, name: str) -> Settings:
        """The table ``[name]`` (empty when the file has none)."""
        return Settings(name, self._tables.get(name), self.path)

    def names(self) -> list[str]:
        """The tables the file has, sorted."""
        return sorted(self._tables)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every table, secrets masked."""
        return {name: self.section(name).as_dict() for name in self.names()}

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             data_path: Any = None) -> Config:
        """Read the file ``path`` names, or ``$CIML_CONFIG``, or the data path's :file:`ciml.toml`.

        A file named (by ``path`` or the environment) must exist; the one
        in the data path is optional.  Top-level keys that are not tables
        are refused: every setting belongs to a plugin's table.
        """
        explicit = path or os.environ.get(ENV_VAR)
        if explicit:
            file = pathlib.Path(explicit).expanduser()
            if not file.is_file():
                raise ConfigError(f"configuration file {file} does not exist (given by "
                                  f"{'--config' if path else '$' + ENV_VAR})")
        else:
            if data_path is None:
                return cls()
            # A DataPath's root may be on an object store (ciml.storage).
            from ciml.paths import DataPath

            root = data_path.root if isinstance(data_path, DataPath) \
                else pathlib.Path(os.fspath(data_path))
            file = root / DEFAULT_FILE
            try:
                present = file.is_file()
            except Exception:  # noqa: BLE001 -- an unreachable store: its own check says why
                present = False
            if not present:
                return cls()
        import tomllib

        try:
            with file.open("rb") as fh:
                tables = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the configuration file {file}: {exc}") from None
        loose = [k for k, v in tables.items() if not isinstance(v, dict)]
        if loose:
            raise ConfigError(f"configuration file {file}: {', '.join(sorted(loose))} "
                              "outside a table; put each setting under its plugin's "
                              "[name]")
        return cls(tables, file)


_current = Config()
_current_lock = threading.Lock()


def use(config: Config) -> Config:
    """Make ``config`` the one :func:`ciml.base.settings` reads; returns the previous one.

    The ``ciml`` command does it when a command starts.
    """
    global _current
    with _current_lock:
        previous, _current = _current, config
    return previous


def current() -> Config:
    """The configuration in use."""
    return _current


def settings(name: str) -> Settings:
    """The table ``[name]`` of the configuration in use: a plugin's settings."""
    return _current.section(name)
