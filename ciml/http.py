"""What ciml's HTTP clients share: their timeout and retry settings, a fast downloader."""

import logging
import os
import pathlib
import threading
import time
import urllib.parse
import urllib.request

from ciml.base.component import Parameter, non_negative_float, non_negative_int, positive_float

#: The settings of a plugin that talks HTTP with retries (dstat logs, Zuul's
#: API); declared once so that both read and document them alike.
HTTP_PARAMETERS = (
    Parameter("timeout", positive_float, default=30.0,
              help="seconds to wait for the server between bytes (read timeout)"),
    Parameter("connect_timeout", positive_float, default=10.0,
              help="seconds to wait for a connection"),
    Parameter("retries", non_negative_int, default=3,
              help="retries after a server error (5xx) or a connection error"),
    Parameter("backoff", non_negative_float, default=0.5,
              help="first wait before a retry, in seconds; doubles each time"),
)


LOG = logging.getLogger(__name__)


class FetchError(Exception):
    """A file could not be fetched.

    ``reason`` is a short code (``http-error``, ``connection-error``,
    ``too-large``, ``read-error``); ``transient`` says that trying again
    later may work (a server error, a dropped connection).
    """

    def __init__(self, reason, message, transient=False):
        super().__init__(message)
        self.reason = reason
        self.transient = transient


def is_remote(url):
    """Whether ``url`` is fetched over HTTP(S) (else it is a local path or ``file:``)."""
    return url.split(":", 1)[0].lower() in ("http", "https")


def local_path(url):
    """The path a ``file:`` URL or a plain local path names."""
    if url.lower().startswith("file:"):
        return pathlib.Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    return pathlib.Path(url).expanduser()


def looks_like_html(head):
    """Whether the first bytes of a download are an HTML (or XML) page.

    Log servers answer 200 with an error or login page where a file was
    expected; callers reject such a page instead of parsing it.
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return (text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))
            or (text.startswith(b"<") and b"<html" in text[:4096]))


def read_local(path, max_bytes):
    """A local file's bytes; ``None`` when there is no file at ``path``.

    Raises :class:`FetchError` for a file over ``max_bytes`` (checked
    before reading) or one that cannot be read.
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            return None
        if size > max_bytes:
            raise FetchError("too-large", f"{path} is {size} bytes, over the {max_bytes} limit")
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise FetchError("read-error", f"cannot read {path}: {exc}") from None


def backoff_delay(backoff, attempt, cap=30.0):
    """Seconds to wait before retry number ``attempt`` (1 for the first)."""
    return min(backoff * 2 ** (attempt - 1), cap)


#: An unread error page up to this size is read to keep its connection.
_DRAIN_BYTES = 64 * 1024


class Downloader:
    """A thread-safe HTTP(S) GET client for many small files, on urllib3.

    ``requests`` costs about a millisecond of Python per request, which
    caps ``cache-data`` when a few threads fetch hundreds of files a
    second; urllib3's pools (which ``requests`` itself uses) cost a
    third of that.  What ``requests`` adds and ciml relies on is kept:
    proxies from the environment (``http_proxy``, ``https_proxy``,
    ``no_proxy``), certificates from ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` or certifi's bundle, credentials in the URL as
    basic auth, and redirects (which drop the credentials when they leave
    the host).  No retries: callers retry with their own backoff.
    """

    def __init__(self, user_agent="ciml", max_redirects=10, pool_size=32):
        # Nothing is imported or connected here: a source builds its client
        # when it is built, and parse processes that never fetch pay nothing.
        self.user_agent = user_agent
        self.pool_size = pool_size
        self.max_redirects = max_redirects
        self._retries = None
        self._lock = threading.Lock()
        self._managers = {}   # proxy URL (or None) -> PoolManager / ProxyManager

    def _retry_policy(self):
        if self._retries is None:  # two threads racing build the same policy
            import urllib3

            # Redirects only: errors go back to the caller's own retry loop.
            self._retries = urllib3.Retry(total=None, connect=0, read=0, other=0, status=0,
                                          redirect=self.max_redirects, raise_on_redirect=True)
        return self._retries

    def _ca_certs(self):
        for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            if os.environ.get(var):
                return os.environ[var]
        try:
            import certifi
        except ImportError:  # the system's store, as urllib3 does by default
            return None
        return certifi.where()

    def _manager(self, url):
        import urllib3

        parts = urllib.parse.urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = None
        with self._lock:
            manager = self._managers.get(proxy)
            if manager is None:
                kwargs = {"num_pools": 16, "maxsize": self.pool_size, "block": False}
                ca_certs = self._ca_certs()
                if ca_certs:
                    kwargs["ca_certs"] = ca_certs
                if proxy:
                    proxy_parts = urllib.parse.urlsplit(proxy)
                    if proxy_parts.username is not None:
                        kwargs["proxy_headers"] = urllib3.make_headers(
                            proxy_basic_auth=_userinfo(proxy_parts))
                    manager = urllib3.ProxyManager(proxy, **kwargs)
                else:
                    manager = urllib3.PoolManager(**kwargs)
                self._managers[proxy] = manager
            return manager

    def get(self, url, connect_timeout, read_timeout):
        """Start a GET; the caller reads ``.stream()`` and then calls :meth:`release`.

        Raises ``urllib3.exceptions.HTTPError`` subclasses for connection
        errors, timeouts and too many redirects.
        """
        import urllib3

        parts = urllib.parse.urlsplit(url)
        headers = {"User-Agent": self.user_agent}
        if "@" in parts.netloc:
            headers.update(urllib3.make_headers(basic_auth=_userinfo(parts)))
            url = without_credentials(url)
        return self._manager(url).request(
            "GET", url, headers=headers, preload_content=False,
            decode_content=False, redirect=True, retries=self._retry_policy(),
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))

    def release(self, resp, body_read):
        """Give a response's connection back to the pool, or close it.

        A connection can be reused only once its body was read: a small
        error page is read and dropped (keep-alive saves a handshake per
        404); a large or unsized one, or a body abandoned half way, closes
        the connection.
        """
        try:
            if not body_read:
                length = resp.headers.get("Content-Length")
                if not (length and length.isdigit() and int(length) <= _DRAIN_BYTES):
                    resp.close()
                    return
                resp.drain_conn()
            resp.release_conn()
        except Exception:  # the connection is gone either way
            resp.close()

    def fetch(self, url, *, connect_timeout, read_timeout, retries, backoff, max_bytes):
        """The bytes at ``url``, exactly as served; ``None`` for 404 or 410.

        Server errors (5xx, 429), refused, reset and timed-out connections
        are retried ``retries`` times with exponential ``backoff``.  Raises
        :class:`FetchError` for what remains, and for a body over
        ``max_bytes`` (checked as it streams in, so a huge file cannot
        exhaust memory).  Messages never show URL credentials.
        """
        import http.client

        import urllib3

        safe_url = without_credentials(url)
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff_delay(backoff, attempt))
            resp = None
            data = None
            try:
                resp = self.get(url, connect_timeout, read_timeout)
                status = resp.status
                if status in (404, 410):
                    return None
                if status >= 500 or status == 429:
                    message = f"HTTP {status} from {safe_url}"
                    LOG.debug("%s (attempt %d)", message, attempt + 1)
                    if attempt == retries:
                        raise FetchError("http-error", message, transient=True)
                    continue
                if status >= 400:
                    raise FetchError("http-error", f"HTTP {status} from {safe_url}")
                data = self._read_capped(resp, safe_url, max_bytes)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                # A connection refused, reset or timed out, before or during
                # the body; MaxRetryError names the cause (too many
                # redirects among them).
                cause = getattr(exc, "reason", None) or exc
                LOG.debug("fetching %s failed (attempt %d): %s", safe_url, attempt + 1,
                          type(cause).__name__)
                if attempt == retries:
                    raise FetchError("connection-error",
                                     f"cannot fetch {safe_url}: {type(cause).__name__}",
                                     transient=True) from None
                continue
            finally:
                if resp is not None:
                    self.release(resp, body_read=data is not None)
            return data
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _read_capped(resp, safe_url, max_bytes):
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise FetchError("too-large",
                             f"{safe_url} is {length} bytes, over the {max_bytes} limit")
        parts = []
        total = 0
        # decode_content=False: keep the bytes exactly as the server holds them,
        # even when it labels a .gz file with Content-Encoding: gzip.
        for chunk in resp.stream(1 << 16, decode_content=False):
            total += len(chunk)
            if total > max_bytes:
                raise FetchError("too-large", f"{safe_url} is over the {max_bytes} byte limit")
            parts.append(chunk)
        return b"".join(parts)

    def close(self):
        """Close every pooled connection.  Idempotent; the client stays usable."""
        with self._lock:
            managers, self._managers = list(self._managers.values()), {}
        for manager in managers:
            manager.clear()


def _userinfo(parts):
    return (f"{urllib.parse.unquote(parts.username or '')}:"
            f"{urllib.parse.unquote(parts.password or '')}")


def without_credentials(url):
    """``url`` without its ``user:password@`` part (host and port as written)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
