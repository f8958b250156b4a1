"""Exceptions ciml raises on purpose: each carries a message meant for users."""

import difflib


class CimlError(Exception):
    """An error the user can act on; the CLI prints it as one line."""


class ConfigError(CimlError):
    """A bad option value, a missing option, or an inconsistent configuration."""


class UnknownPluginError(CimlError):
    """No plugin of this kind has this name."""

    def __init__(self, kind, name, valid):
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=1)
        msg = f"unknown {kind.replace('_', ' ')} {name!r}"
        msg += "; valid names: " + (", ".join(self.valid) or "(none installed)")
        if close:
            msg += f"; did you mean {close[0]!r}?"
        super().__init__(msg)


class PluginConflictError(CimlError):
    """Two installed distributions register the same kind and name."""


class NotFoundError(CimlError):
    """A named dataset, experiment, model or run does not exist."""


class AlreadyExistsError(CimlError):
    """Something would be overwritten without ``--force``."""


class SourceError(CimlError):
    """A result or metric source failed (server error, database gone, ...).

    ``transient`` says whether trying again later may succeed.
    """

    def __init__(self, message, transient=False):
        super().__init__(message)
        self.transient = transient


class MetricsUnavailable(CimlError):
    """A run's metrics could not be fetched or are not valid.

    ``reason`` is a short stable code (``missing``, ``truncated-gzip``,
    ``html``, ``empty``, ``header-only``, ``non-numeric``, ``too-large``,
    ``http-error``...) recorded in the cache index; the message says the
    details.  ``transient`` marks failures worth retrying later (a 500, a
    dropped connection) as opposed to facts about the file.
    """

    def __init__(self, reason, message, transient=False):
        super().__init__(message)
        self.reason = reason
        self.transient = transient


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept: the CLI prints ``interrupted: <message>``, exits 130."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message
