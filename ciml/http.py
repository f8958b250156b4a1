"""What ciml's HTTP clients share: their timeout and retry settings."""

from ciml.base.component import Parameter

#: The settings of a plugin that talks HTTP with retries (dstat logs, Zuul's
#: API); declared once so that both read and document them alike.
HTTP_PARAMETERS = (
    Parameter("timeout", float, default=30.0,
              help="seconds to wait for the server between bytes (read timeout)"),
    Parameter("connect_timeout", float, default=10.0,
              help="seconds to wait for a connection"),
    Parameter("retries", int, default=3,
              help="retries after a server error (5xx) or a connection error"),
    Parameter("backoff", float, default=0.5,
              help="first wait before a retry, in seconds; doubles each time"),
)


def backoff_delay(backoff, attempt, cap=30.0):
    """Seconds to wait before retry number ``attempt`` (1 for the first)."""
    return min(backoff * 2 ** (attempt - 1), cap)
