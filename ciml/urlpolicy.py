"""Which URLs ciml may fetch when they come from untrusted input (events, result sources).

A trigger's event is whatever a publisher sent: a ``file:`` artifacts URL
would make ciml read its own disk, a log URL on an internal host would make
it probe the operator's network.  So URLs taken from events (and from the
result source a watcher or ``predict`` asks) are fetched only when they pass
a :class:`UrlPolicy`: ``http``/``https`` unless the operator allows more
schemes, and only listed hosts when a host allow-list is given.  A refused
URL is a :class:`UrlRefused`, which the watcher turns into an error record.
"""

import urllib.parse

from ciml.errors import CimlError
from ciml.http import redact_url

#: What a URL from an event may use unless the operator allows more.
DEFAULT_SCHEMES = ("http", "https")


class UrlRefused(CimlError):
    """A URL from untrusted input that the policy does not allow."""

    reason = "url-refused"
    transient = False


def _host_matches(host, pattern):
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        pattern = pattern[1:]
    if pattern.startswith("."):
        # ".example.org" allows every name under example.org, not the bare name.
        return host.endswith(pattern)
    return host == pattern


class UrlPolicy:
    """Allowed schemes and, optionally, allowed hosts for URLs from untrusted input.

    :param schemes: extra schemes to allow besides http and https (``file``
        lets events name local folders, which only a trusted publisher should).
    :param hosts: when given, only these hosts (``logs.example.org``, or
        ``.example.org`` -- also written ``*.example.org`` -- for every name
        under it) are fetched.
    """

    def __init__(self, schemes=(), hosts=None):
        self.schemes = frozenset(s.lower().rstrip(":") for s in (*DEFAULT_SCHEMES, *schemes))
        self.hosts = tuple(h.strip().lower() for h in hosts or () if h.strip()) or None

    def __repr__(self):
        return f"UrlPolicy(schemes={sorted(self.schemes)}, hosts={self.hosts})"

    def check(self, url, what="URL"):
        """Return ``url`` if allowed, else raise :class:`UrlRefused` saying why."""
        if url is None:
            return url
        shown = redact_url(str(url))
        parts = urllib.parse.urlsplit(str(url))
        # A bare path is read from local disk by the metric sources: a file URL.
        scheme = parts.scheme.lower() if parts.netloc or "://" in str(url) or \
            parts.scheme.lower() == "file" else (parts.scheme.lower() or "file")
        if len(scheme) == 1:
            scheme = "file"  # a Windows drive letter, "C:\..."
        if scheme not in self.schemes:
            raise UrlRefused(
                f"refusing the {what} {shown}: scheme {scheme!r} is not allowed "
                f"(allowed: {', '.join(sorted(self.schemes))}; see --allow-scheme)")
        if self.hosts is not None and scheme != "file":
            host = (parts.hostname or "").lower().rstrip(".")
            if not host or not any(_host_matches(host, p) for p in self.hosts):
                raise UrlRefused(
                    f"refusing the {what} {shown}: host {host or '(none)'!r} is not in "
                    f"--allow-host ({', '.join(self.hosts)})")
        return url


#: What the online stage uses when the caller gives no policy.
DEFAULT_POLICY = UrlPolicy()
