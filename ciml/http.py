"""ciml's one HTTP client: retries, Retry-After, rate limits, capped bodies, no leaked secrets.

Every plugin that talks HTTP (the dstat and pcp metric sources, the Zuul,
GitHub, GitLab and Jenkins result sources) uses :class:`HttpClient`, so
that they all behave alike:

* connection errors, timeouts, ``429`` and ``5xx`` answers are retried by
  urllib3's :class:`~urllib3.util.Retry` with exponential backoff, and a
  ``Retry-After`` header (or an exhausted rate limit: ``X-RateLimit-*`` /
  ``RateLimit-*`` headers) is waited for, up to ``max_wait`` seconds; a
  server asking for a longer wait is left alone and the call fails with a
  *transient* ``rate-limited`` error, so the run is tried again later;
* ``401`` and ``403`` are an ``auth`` error, transient too: a token that
  expired is renewed and the run fetched next time, never recorded as
  missing for good;
* bodies are read as a stream with a size cap, so a huge or endless answer
  cannot exhaust memory;
* credentials in a URL (``https://user:secret@host/``) are sent as basic
  auth, and :func:`redact_url` is the one function through which every URL
  reaching a message or a log passes.

Tokens a result source knows (``CIML_GITHUB_TOKEN``...) are lent to every
client for URLs under that source's API (:func:`register_credentials`), so
that the metric source can download a run's artifacts from the same API;
urllib3 drops them on a redirect to another host (GitHub sends artifact
downloads to a signed storage URL).
"""

import dataclasses
import email.utils
import logging
import os
import pathlib
import re
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Callable, Mapping

from ciml.base.component import Parameter, non_negative_float, non_negative_int, positive_float

#: The settings of a plugin that talks HTTP with retries (dstat logs, the
#: result sources' APIs); declared once so that all read and document them alike.
HTTP_PARAMETERS = (
    Parameter("timeout", positive_float, default=30.0,
              help="seconds to wait for the server between bytes (read timeout)"),
    Parameter("connect_timeout", positive_float, default=10.0,
              help="seconds to wait for a connection"),
    Parameter("retries", non_negative_int, default=3,
              help="retries after a server error (5xx, 429) or a connection error"),
    Parameter("backoff", non_negative_float, default=0.5,
              help="first wait before a retry, in seconds; doubles each time"),
    Parameter("max_wait", non_negative_float, default=60.0,
              help="longest wait a server may ask for (Retry-After, rate limit reset), "
                   "in seconds; a longer one fails the call as transient"),
)

#: Default cap on one file's size, compressed or decompressed.  A dstat CSV
#: of a three-hour run is under 20 MB; a fetch of 8 threads on a 2-core
#: machine must hold several at once.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

LOG = logging.getLogger(__name__)


class FetchError(Exception):
    """A request failed.

    ``reason`` is a short code: ``http-error``, ``connection-error``,
    ``auth`` (401/403: credentials missing, wrong or expired),
    ``rate-limited`` (the server asked for a longer wait than allowed),
    ``too-large``, ``read-error``; ``transient`` says that trying again
    later may work.  ``status`` is the HTTP status, when there was one.
    The message never holds credentials.
    """

    def __init__(self, reason: str, message: str, transient: bool = False,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient
        self.status = status


# -- URLs ------------------------------------------------------------------------

#: Query parameters whose values are secrets (tokens, signatures of signed
#: storage URLs): masked by :func:`redact_url`.
_SECRET_QUERY = ("token", "private_token", "access_token", "job_token", "api_key", "apikey",
                 "key", "password", "passwd", "secret", "sig", "signature", "x-amz-signature",
                 "x-amz-credential", "x-amz-security-token", "x-goog-signature",
                 "x-goog-credential", "se", "sv", "skoid", "sktid")


def redact_url(url: str) -> str:
    """``url`` fit for a message or a log: no ``user:password@``, secret query values masked.

    The one function every URL passes through before it is shown; host,
    port and path are kept as written so that the user recognises it.
    """
    if not isinstance(url, str) or ("@" not in url and "=" not in url):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, netloc = parts.netloc.rpartition("@")
    if at and userinfo.partition(":")[2] in ("***", "****"):
        netloc = parts.netloc   # already masked (SQLAlchemy's rendering): kept as shown
    query = parts.query
    if query:
        pairs = []
        for item in query.split("&"):
            key, sep, value = item.partition("=")
            if sep and urllib.parse.unquote(key).lower() in _SECRET_QUERY:
                value = "****"
            pairs.append(key + sep + value)
        query = "&".join(pairs)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


#: The old name, kept for plugins written against it.
without_credentials = redact_url

_URL_IN_TEXT = re.compile(r"""\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")


#: Secret values given on the command line (``--storage-option secret=…``).
_KNOWN_SECRETS: set[str] = set()


def add_secret(value: str) -> None:
    """Mask ``value`` wherever :func:`redact_text` meets it from now on."""
    if isinstance(value, str) and len(value) >= 4:
        _KNOWN_SECRETS.add(value)


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`.

    For messages ciml did not word itself (a library's error, a reason
    stored by an older version) before they are shown or logged.  Values
    registered with :func:`add_secret` are masked too.
    """
    if not isinstance(text, str):
        return text
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "****")
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """A handler filter that passes every log message, traceback included,
    through :func:`redact_text`: the last line of defence for credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logging module's to report
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def is_remote(url: str) -> bool:
    """Whether ``url`` is fetched over HTTP(S) (else it is a local path or ``file:``)."""
    return url.split(":", 1)[0].lower() in ("http", "https")


def local_path(url: str) -> pathlib.Path:
    """The path a ``file:`` URL or a plain local path names."""
    if url.lower().startswith("file:"):
        return pathlib.Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    return pathlib.Path(url).expanduser()


def looks_like_html(head: bytes) -> bool:
    """Whether the first bytes of a download are an HTML (or XML) page.

    Log servers answer 200 with an error or login page where a file was
    expected; callers reject such a page instead of parsing it.
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return (text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))
            or (text.startswith(b"<") and b"<html" in text[:4096]))


def read_local(path: str | os.PathLike, max_bytes: int) -> bytes | None:
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


def backoff_delay(backoff: float, attempt: int, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first)."""
    return min(backoff * 2 ** (attempt - 1), cap)


# -- credentials lent by result sources -------------------------------------------

_CREDENTIALS: dict[str, dict[str, str]] = {}   # normalised base URL -> headers
_CREDENTIALS_LOCK = threading.Lock()


def _origin_prefix(url):
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def register_credentials(base_url: str, headers: Mapping[str, str]) -> None:
    """Send ``headers`` (an ``Authorization`` header, say) with every request under ``base_url``.

    A result source calls it with its API's root and token, so that a
    metric source fetching a run's artifacts from that API is
    authenticated too, without the token being given twice or written into
    a run record.  Only URLs on the same scheme, host and port, under the
    same path, get them.
    """
    with _CREDENTIALS_LOCK:
        _CREDENTIALS[_origin_prefix(base_url)] = dict(headers)


def unregister_credentials(base_url: str, headers: Mapping[str, str] | None = None) -> None:
    """Stop lending credentials under ``base_url`` (only ``headers``, when given).

    A result source calls it when it is closed, so that a later server on
    the same host and port (tests reuse ports) is not sent its token.
    """
    key = _origin_prefix(base_url)
    with _CREDENTIALS_LOCK:
        if headers is None or _CREDENTIALS.get(key) == dict(headers):
            _CREDENTIALS.pop(key, None)


def _lent_headers(url):
    key = _origin_prefix(url)
    with _CREDENTIALS_LOCK:
        best = None
        for prefix, headers in _CREDENTIALS.items():
            if (key == prefix or key.startswith(prefix + "/")) and (
                    best is None or len(prefix) > len(best[0])):
                best = (prefix, headers)
    return dict(best[1]) if best else {}


# -- the client ------------------------------------------------------------------

#: Headers that carry credentials: never sent on to another host.
_SECRET_HEADERS = frozenset({"Authorization", "Proxy-Authorization", "Cookie",
                             "PRIVATE-TOKEN", "JOB-TOKEN"})

#: An unread error page up to this size is read to keep its connection.
_DRAIN_BYTES = 64 * 1024


def server_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a server asks the client to wait before its next request, or ``None``.

    ``Retry-After`` (seconds or an HTTP date); else an exhausted rate limit
    (``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset``, GitHub's
    epoch seconds, or ``RateLimit-Remaining``/``RateLimit-Reset``, GitLab's).
    """
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - now)
    for prefix in ("X-RateLimit-", "RateLimit-"):
        remaining = headers.get(prefix + "Remaining")
        reset = headers.get(prefix + "Reset")
        if remaining is not None and remaining.strip() == "0" and reset:
            try:
                at = float(reset)
            except ValueError:
                continue
            # An epoch time (GitHub, GitLab) or, in the IETF draft, seconds.
            return max(0.0, at - now) if at > 10 ** 9 else at
    return None


class _QuietRetries(logging.Filter):
    """urllib3 warns on every retry, naming the path; ciml reports the outcome itself.

    Its retry warnings become debug records (seen with ``--debug``), their
    URLs redacted like every other.
    """

    def filter(self, record):
        if record.levelno == logging.WARNING:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if record.args:
            record.args = tuple(redact_url(a) if isinstance(a, str) else a
                                for a in record.args)
        return True


_QUIET = _QuietRetries()


def _make_retry(retries, backoff, max_wait, max_redirects):
    import urllib3

    for name in ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)

    class _Retry(urllib3.Retry):
        """urllib3's Retry that waits what the server asks, up to ``max_wait``."""

        def new(self, **kw):
            new = super().new(**kw)
            new.max_wait = self.max_wait
            return new

        def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                      _stacktrace=None):
            if response is not None and response.status in (403, 429, 503):
                wait = server_wait(response.headers)
                if wait is not None and wait > self.max_wait:
                    # Retrying sooner than asked is fighting the server: the
                    # response goes back to the caller, which says so.
                    raise urllib3.exceptions.MaxRetryError(
                        _pool, url, urllib3.exceptions.ResponseError("wait too long"))
            return super().increment(method, url, response, error, _pool, _stacktrace)

        def is_retry(self, method, status_code, has_retry_after=False):
            # 403 with Retry-After is GitHub's "secondary rate limit"; urllib3
            # would only honour it with a ``total`` count, which redirects share.
            if status_code == 403 and has_retry_after and self._is_method_retryable(method):
                return True
            return super().is_retry(method, status_code, has_retry_after)

        def get_retry_after(self, response):
            wait = server_wait(response.headers)
            return None if wait is None else min(wait, self.max_wait)

        def get_backoff_time(self):
            return min(super().get_backoff_time(), 30.0)

    retry = _Retry(total=None, connect=retries, read=retries, status=retries, other=retries,
                   redirect=max_redirects, status_forcelist=(429, 500, 502, 503, 504),
                   allowed_methods=frozenset({"GET", "HEAD"}), backoff_factor=backoff,
                   raise_on_status=False, raise_on_redirect=True,
                   respect_retry_after_header=True,
                   remove_headers_on_redirect=_SECRET_HEADERS)
    retry.max_wait = max_wait
    return retry


@dataclasses.dataclass
class Response:
    """A finished request: its status, headers, body (``None`` if not read) and final URL."""

    status: int
    headers: Any
    body: bytes | None
    url: str


class HttpClient:
    """A thread-safe HTTP(S) GET client with retries, on urllib3.

    ``requests`` costs about a millisecond of Python per request, which
    caps ``cache-data`` when a few threads fetch hundreds of files a
    second; urllib3's pools (which ``requests`` itself uses) cost a third
    of that.  What ``requests`` adds and ciml relies on is kept: proxies
    from the environment (``http_proxy``, ``https_proxy``, ``no_proxy``),
    certificates from ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` or
    certifi's bundle, credentials in the URL as basic auth, and redirects
    (which drop credentials when they leave the host).

    Nothing is imported or connected when it is built: a source builds its
    client in ``__init__``, and parse processes that never fetch pay nothing.
    """

    def __init__(self, *, user_agent: str = "ciml", connect_timeout: float = 10.0,
                 read_timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 max_wait: float = 60.0, headers: Mapping[str, str] | None = None,
                 max_redirects: int = 10, pool_size: int = 32) -> None:
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.headers = dict(headers or {})
        self.max_redirects = max_redirects
        self.pool_size = pool_size
        self._retry = None
        self._lock = threading.Lock()
        self._managers: dict[str | None, Any] = {}   # proxy URL (or None) -> PoolManager
        self._blocked: dict[str, float] = {}   # origin -> monotonic time it asked us to wait

    @classmethod
    def for_component(cls, component: Any, user_agent: str,
                      headers: Mapping[str, str] | None = None) -> "HttpClient":
        """A client with a component's :data:`HTTP_PARAMETERS`."""
        return cls(user_agent=user_agent, connect_timeout=component.connect_timeout,
                   read_timeout=component.timeout, retries=component.retries,
                   backoff=component.backoff, max_wait=component.max_wait, headers=headers)

    # -- plumbing ------------------------------------------------------------------

    def _retry_policy(self):
        if self._retry is None:  # two threads racing build the same policy
            self._retry = _make_retry(self.retries, self.backoff, self.max_wait,
                                      self.max_redirects)
        return self._retry

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

    def _wait_if_asked(self, url):
        """Honour a rate limit an earlier answer announced, before asking again."""
        origin = _origin_prefix(url).split("/", 3)[:3]
        origin = "/".join(origin)
        with self._lock:
            until = self._blocked.get(origin)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            with self._lock:
                self._blocked.pop(origin, None)
            return
        if left > self.max_wait:
            raise FetchError(
                "rate-limited", f"{redact_url(url)}: the server's rate limit is exhausted for "
                f"another {left:.0f} s (more than --max-wait {self.max_wait:g} s); "
                "try again later", transient=True)
        LOG.info("waiting %.1f s for the rate limit of %s", left, origin)
        time.sleep(left)

    def _note_limits(self, url, headers):
        for prefix in ("X-RateLimit-", "RateLimit-"):
            remaining = headers.get(prefix + "Remaining")
            if remaining is not None and remaining.strip() == "0":
                wait = server_wait(headers)
                if wait:
                    origin = "/".join(_origin_prefix(url).split("/", 3)[:3])
                    with self._lock:
                        self._blocked[origin] = time.monotonic() + wait
                return

    def open(self, url, params=None, headers=None):
        """Start a GET (retried as the class says); read it, then call :meth:`release`.

        Raises ``urllib3.exceptions.HTTPError`` subclasses for connection
        errors, timeouts and too many redirects, after the retries.
        """
        import urllib3

        if params:
            query = urllib.parse.urlencode(params, doseq=True)
            url = url + ("&" if urllib.parse.urlsplit(url).query else "?") + query
        parts = urllib.parse.urlsplit(url)
        all_headers = {"User-Agent": self.user_agent, **_lent_headers(url), **self.headers,
                       **(headers or {})}
        if "@" in parts.netloc:
            all_headers.update(urllib3.make_headers(basic_auth=_userinfo(parts)))
            url = urllib.parse.urlunsplit(parts._replace(
                netloc=parts.netloc.rpartition("@")[2]))
        self._wait_if_asked(url)
        return self._manager(url).request(
            "GET", url, headers=all_headers, preload_content=False,
            decode_content=False, redirect=True, retries=self._retry_policy(),
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout))

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

    # -- requests ------------------------------------------------------------------

    def request(self, url: str, *, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                sink: BinaryIO | None = None,
                read_body: Callable[[int], bool] | None = None) -> Response:
        """GET ``url``; a :class:`Response` for whatever status the server ends with.

        Retries happen inside (connection errors, 5xx, 429, waits the server
        asks for); a body cut off half way is fetched again too.  The body
        of a 2xx answer is read (into ``sink``, a binary file, when given;
        ``body`` is then ``None``); ``read_body(status)`` decides for other
        statuses (default: error bodies up to 64 kB, for their message).

        :raises FetchError: ``connection-error`` (transient) when the
            server cannot be reached, ``too-large`` for a body over
            ``max_bytes``, ``rate-limited`` (transient) when the server asks
            for a wait longer than ``max_wait``.
        """
        import http.client

        import urllib3

        safe_url = redact_url(url)
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff_delay(self.backoff, attempt))
            resp = None
            done = False
            try:
                resp = self.open(url, params, headers)
                status = resp.status
                resp_headers = resp.headers   # case-insensitive, as HTTP headers are
                self._note_limits(url, resp.headers)
                wanted = 200 <= status < 300 if read_body is None else read_body(status)
                body = None
                if 200 <= status < 300 and sink is not None:
                    if attempt:
                        sink.seek(0)
                        sink.truncate()
                    self._read_capped(resp, safe_url, max_bytes, sink)
                elif wanted:
                    body = self._read_capped(resp, safe_url, max_bytes)
                elif status >= 400:
                    body = self._read_capped(resp, safe_url, _DRAIN_BYTES, allow_cut=True)
                done = True
                final_url = getattr(resp, "url", None) or url
                if (_unannounced_limit(status, resp_headers, body)
                        and attempt < self.retries and SECONDARY_LIMIT_WAIT <= self.max_wait):
                    # GitHub's documented advice for a secondary rate limit
                    # without Retry-After: wait at least a minute.
                    LOG.info("%s: rate limited without Retry-After; waiting %d s", safe_url,
                             SECONDARY_LIMIT_WAIT)
                    time.sleep(SECONDARY_LIMIT_WAIT)
                    continue
                return Response(status, resp_headers, body, final_url)
            except FetchError:
                raise
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                # A connection refused, reset or timed out, before or during
                # the body (urllib3 retried what came before the headers).
                cause = getattr(exc, "reason", None) or exc
                LOG.debug("GET %s failed (attempt %d): %s", safe_url, attempt + 1,
                          type(cause).__name__)
                if attempt == self.retries or resp is None:
                    raise FetchError("connection-error",
                                     f"cannot fetch {safe_url}: {_why(cause)}",
                                     transient=True) from None
            finally:
                if resp is not None:
                    self.release(resp, body_read=done)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def fetch(self, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
              headers: Mapping[str, str] | None = None,
              sink: BinaryIO | None = None) -> bytes | None:
        """The bytes at ``url``, exactly as served; ``None`` for 404 or 410.

        With ``sink`` (a binary file) the body is written there and ``b""``
        returned.  Raises :class:`FetchError` for every other failure, as
        :func:`check_status` words it.
        """
        resp = self.request(url, headers=headers, max_bytes=max_bytes, sink=sink)
        if resp.status in (404, 410):
            return None
        check_status(resp, redact_url(url))
        return b"" if sink is not None else resp.body

    def get_json(self, url: str, *, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 what: str = "the server") -> tuple[Any, Response]:
        """``(document, response)`` for a JSON API call; ``(None, response)`` on 404.

        :raises FetchError: as :meth:`fetch`, and ``not-json`` for an
            answer that is not JSON (an HTML login page, a body cut short).
        """
        import json

        headers = {"Accept": "application/json", **(headers or {})}
        resp = self.request(url, params=params, headers=headers, max_bytes=max_bytes)
        if resp.status == 404:
            return None, resp
        check_status(resp, redact_url(url), what)
        body = resp.body or b""
        try:
            return json.loads(body), resp
        except (ValueError, UnicodeDecodeError):
            kind = ("an HTML page" if looks_like_html(body[:4096])
                    else "a body that is not JSON (cut short?)")
            raise FetchError("not-json", f"{what} answered {redact_url(url)} with {kind}",
                             status=resp.status) from None

    @staticmethod
    def _read_capped(resp, safe_url, max_bytes, sink=None, allow_cut=False):
        length = resp.headers.get("Content-Length")
        if not allow_cut and length and length.isdigit() and int(length) > max_bytes:
            raise FetchError("too-large",
                             f"{safe_url} is {length} bytes, over the {max_bytes} limit")
        parts = []
        total = 0
        # decode_content=False: keep the bytes exactly as the server holds them,
        # even when it labels a .gz file with Content-Encoding: gzip.
        for chunk in resp.stream(1 << 16, decode_content=False):
            total += len(chunk)
            if total > max_bytes:
                if allow_cut:
                    break
                raise FetchError("too-large", f"{safe_url} is over the {max_bytes} byte limit")
            if sink is not None:
                sink.write(chunk)
            else:
                parts.append(chunk)
        return None if sink is not None else b"".join(parts)

    def close(self) -> None:
        """Close every pooled connection.  Idempotent; the client stays usable."""
        with self._lock:
            managers, self._managers = list(self._managers.values()), {}
        for manager in managers:
            manager.clear()


#: Seconds to wait after a rate limit announced only in the body (GitHub's
#: secondary limits may come without Retry-After; its docs say a minute).
SECONDARY_LIMIT_WAIT = 60


def _unannounced_limit(status, headers, body):
    """A 403/429 that says "rate limit" in its body but gives no wait in its headers."""
    return (status in (403, 429) and server_wait(headers) is None
            and b"rate limit" in (body or b"")[:4096].lower())


def check_status(resp: Response, safe_url: str, what: str = "the server") -> None:
    """Raise the :class:`FetchError` an unsuccessful :class:`Response` means.

    One wording for every plugin: 401/403 are ``auth`` (transient: fix the
    token and run again), a wait longer than allowed is ``rate-limited``,
    5xx and 429 are ``http-error`` (transient), other 4xx ``http-error``.
    """
    status = resp.status
    if 200 <= status < 300:
        return
    wait = server_wait(resp.headers)
    if wait is None and _unannounced_limit(status, resp.headers, resp.body):
        wait = float(SECONDARY_LIMIT_WAIT)
    if status in (403, 429, 503) and wait is not None:
        raise FetchError(
            "rate-limited", f"{what} rate-limits {safe_url} (HTTP {status}) and asks for a "
            f"{wait:.0f} s wait; try again later", transient=True, status=status)
    if status in (401, 403):
        raise FetchError(
            "auth", f"{what} refused access to {safe_url} (HTTP {status}): the credentials "
            "are missing, wrong or expired", transient=True, status=status)
    if status >= 500 or status == 429:
        raise FetchError("http-error", f"HTTP {status} from {safe_url}", transient=True,
                         status=status)
    raise FetchError("http-error", f"HTTP {status} from {safe_url}", status=status)


def _why(exc):
    """A connection failure in words, with the library's name for it."""
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        words = "the server did not answer in time"
    elif "Protocol" in name or "IncompleteRead" in name or isinstance(exc, ConnectionError):
        words = "the connection closed before the whole answer came"
    elif "NewConnection" in name or "NameResolution" in name:
        words = "cannot connect to the server"
    elif "SSL" in name:
        words = "the TLS handshake failed"
    else:
        words = "the request failed"
    return f"{words} ({name})"


def _userinfo(parts):
    return (f"{urllib.parse.unquote(parts.username or '')}:"
            f"{urllib.parse.unquote(parts.password or '')}")


#: The old name of :class:`HttpClient`.
Downloader = HttpClient
