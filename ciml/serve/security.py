"""Safe by default: tokens for writes, cross-site form protection, body limits, headers.

* Writes (``POST``) need the server's token: the API takes it as
  ``Authorization: Bearer TOKEN`` only (never from a cookie, so a page on
  another site cannot make a browser send it); a form takes it in its
  ``token`` field, or from the session cookie an earlier form or
  ``/login`` set.
* Forms carry a per-browser CSRF value that must equal their
  ``ciml_csrf`` cookie (``SameSite=Strict``, ``HttpOnly``), and a request
  whose ``Origin`` (or ``Referer``) names another site is refused.
* Bodies are limited as they stream in (413): :data:`ciml.serve.app.MAX_BODY`
  for forms and JSON, ``max_upload`` for the one route that takes files.
* Every response says ``nosniff``, no framing, and a Content-Security-Policy
  that allows this server's own scripts and styles only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from typing import Any

from fastapi import HTTPException, Request

CSRF_COOKIE = "ciml_csrf"
SESSION_COOKIE = "ciml_session"
CSRF_FIELD = "csrf"
TOKEN_FIELD = "token"
#: Paths whose bodies may be as large as ``max_upload``.
UPLOAD_PATHS = ("/api/v1/predict",)

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", CSP.encode()),
]


class BodyTooLarge(Exception):
    pass


class Guard:
    """Pure ASGI middleware: body limits, security headers, the CSRF cookie.

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: it adds no
    task and no copy per request, which matters at fifty clients.
    """

    def __init__(self, app: Any, settings: Any):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.settings.max_upload if path in UPLOAD_PATHS else _max_body()
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = True
            if too_big:
                return await _refuse(send, 413, f"request body over {limit} bytes")
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = list(_HEADERS)
                # Made by csrf_value() only when a page with a form needed one: the
                # API and pages without forms set no cookie and spend no random bytes.
                new_csrf = scope.get("state", {}).get("csrf")
                if new_csrf is not None:
                    extra.append((b"set-cookie", _cookie(CSRF_COOKIE, new_csrf,
                                                         self.settings).encode()))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"request body over {limit} bytes")
        except Exception as exc:
            # Answered here rather than by Starlette's outer handler, which
            # re-raises after answering and makes uvicorn drop the connection.
            if started:
                raise
            from starlette.requests import Request

            from ciml.serve.app import server_error

            response = server_error(Request(scope), exc)
            await response(scope, receive, send_with_headers)


def _max_body():
    from ciml.serve.app import MAX_BODY

    return MAX_BODY


async def _refuse(send, status, message):
    import json

    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")] + _HEADERS})
    await send({"type": "http.response.body", "body": body})


def _cookie(name, value, settings, max_age=None):
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if settings.secure_cookies:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    return "; ".join(parts)


def install(app, settings):
    app.add_middleware(Guard, settings=settings)


# -- tokens --------------------------------------------------------------------


def _state(request: Request):
    return request.app.state.ciml


def session_value(state) -> str | None:
    """What the session cookie holds once the token was given: a keyed digest of it."""
    token = state.settings.token
    if not token:
        return None
    return hmac.new(state.secret, token.encode(), hashlib.sha256).hexdigest()


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def has_session(request: Request) -> bool:
    return _same(request.cookies.get(SESSION_COOKIE), session_value(_state(request)))


async def require_token_header(request: Request) -> None:
    """API writes: the token as ``Authorization: Bearer``; 401 without, 403 when wrong."""
    state = _state(request)
    if not state.settings.token:
        raise HTTPException(403, "writes are off: this server has no token")
    given = bearer(request)
    if given is None:
        raise HTTPException(401, "this needs the server's token: send "
                            "Authorization: Bearer TOKEN",
                            headers={"WWW-Authenticate": "Bearer"})
    if not _same(given, state.settings.token):
        raise HTTPException(403, "wrong token")


async def require_read(request: Request) -> None:
    """With ``protect_reads``, reads need the token (header or session cookie)."""
    state = _state(request)
    if not state.settings.protect_reads:
        return
    if has_session(request) or _same(bearer(request), state.settings.token):
        return
    if request.url.path.startswith("/api/") or request.url.path == "/metrics":
        raise HTTPException(401, "this server needs its token for reads: send "
                            "Authorization: Bearer TOKEN",
                            headers={"WWW-Authenticate": "Bearer"})
    raise HTTPException(401, "this server needs its token: sign in first")


# -- forms ---------------------------------------------------------------------


def csrf_value(request: Request) -> str:
    """The value a form embeds: the browser's CSRF cookie, or one made now.

    A value made now is set as the cookie by the response of this request.
    """
    given = request.cookies.get(CSRF_COOKIE)
    if given:
        return given
    state = request.scope.setdefault("state", {})
    if state.get("csrf") is None:
        state["csrf"] = secrets.token_urlsafe(24)
    return state["csrf"]


def _origin_allowed(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            # Same-origin form posts from every current browser send Origin;
            # none at all is a non-browser client, which still needs the
            # token and the CSRF pair below.
            return origin is None
        parts = urllib.parse.urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    own = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    return origin == own or origin in request.app.state.ciml.settings.trusted_origins


def check_form(request: Request, form: Any) -> None:
    """A form post: same origin, CSRF pair, and the token (field or session)."""
    state = _state(request)
    if not _origin_allowed(request):
        raise HTTPException(403, "cross-site form post refused")
    if not _same(form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE)):
        raise HTTPException(403, "the form expired or came from elsewhere; reload the "
                            "page and send it again")
    if not state.settings.token:
        raise HTTPException(403, "writes are off: this server has no token")
    if has_session(request):
        return
    if not _same(form.get(TOKEN_FIELD), state.settings.token):
        raise HTTPException(403, "wrong or missing token")


def session_cookie(request: Request) -> str:
    """``Set-Cookie`` text that keeps the browser signed in after a form gave the token."""
    state = _state(request)
    return _cookie(SESSION_COOKIE, session_value(state), state.settings, max_age=12 * 3600)
