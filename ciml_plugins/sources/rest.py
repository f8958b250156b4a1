"""What the REST result sources (GitHub, GitLab, Jenkins) share: JSON calls, paging, errors."""

import re

from ciml.base import ResultSource
from ciml.errors import SourceError
from ciml.http import (
    FetchError,
    HttpClient,
    redact_url,
    register_credentials,
    unregister_credentials,
)

_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^",;]+)"?')


def next_link(headers):
    """The ``rel="next"`` URL of an RFC 8288 ``Link`` header (GitHub, GitLab), or ``None``."""
    value = headers.get("Link") if headers is not None else None
    for url, rel in _LINK.findall(value or ""):
        if "next" in rel.split():
            return url
    return None


def get_json(client, url, *, params=None, system, token_hint):
    """A JSON document from a CI system's API; ``None`` for 404.

    Every failure becomes a :class:`SourceError` in ciml's words, naming
    the system and the (redacted) URL: ``token_hint`` says how to give a
    token when the server refuses the one it got.  Refused credentials,
    rate limits, server errors and answers cut short are transient: the
    next ``cache-data`` tries again.
    """
    try:
        data, _ = client.get_json(url, params=params, what=f"the {system} API")
    except FetchError as exc:
        raise source_error(exc, system, token_hint) from None
    return data


def get_json_page(client, url, *, params=None, system, token_hint):
    """``(document, next_url)`` for a paged list; ``(None, None)`` for 404."""
    try:
        data, resp = client.get_json(url, params=params, what=f"the {system} API")
    except FetchError as exc:
        raise source_error(exc, system, token_hint) from None
    if data is None:
        return None, None
    return data, next_link(resp.headers)


def source_error(exc, system, token_hint):
    """The :class:`SourceError` a :class:`~ciml.http.FetchError` from an API call means."""
    if exc.reason == "auth":
        return SourceError(f"{exc}; {token_hint}", transient=True)
    if exc.reason == "not-json":
        # An HTML page from a proxy or a login wall, or a body cut short:
        # often passing, never a fact about the runs.
        return SourceError(str(exc), transient=True)
    return SourceError(f"{system} API: {exc}", transient=exc.transient)


def expect(data, kind, what, url):
    """``data`` if it is a ``kind`` (``dict``/``list``), else a clear :class:`SourceError`."""
    if not isinstance(data, kind):
        raise SourceError(f"{what} at {redact_url(url)} is not a JSON "
                          f"{'object' if kind is dict else 'list'}", transient=False)
    return data


def text(value):
    """A metadata value as a string (booleans as ``1``/``0``), ``None`` kept."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def is_http_url(value):
    """Whether ``value`` is an ``http://`` or ``https://`` URL."""
    return bool(value) and str(value).lower().startswith(("http://", "https://"))


class RestResultSource(ResultSource):
    """A result source over a CI system's JSON API, with one HTTP client.

    The credentials (``auth`` headers) go with every API call and are lent
    to the metric source for artifact downloads under :attr:`credential_root`
    only, until :meth:`close`.  Subclasses name the ``system`` for error
    messages and say in ``token_hint`` how to give a token that works.
    """

    system = ""
    token_hint = ""

    @property
    def credential_root(self):
        """The URL prefix under which this source's credentials may be sent."""
        raise NotImplementedError

    def _open_client(self, user_agent, auth=None, headers=None):
        self._lent = dict(auth) if auth else None
        if self._lent:
            register_credentials(self.credential_root, self._lent)
        self._client = HttpClient.for_component(self, user_agent,
                                                headers={**(headers or {}), **(auth or {})})

    def close(self):
        if self._lent:
            unregister_credentials(self.credential_root, self._lent)
        self._client.close()

    def _get(self, url, params=None):
        return get_json(self._client, url, params=params, system=self.system,
                        token_hint=self.token_hint)
