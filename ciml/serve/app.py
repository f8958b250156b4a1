"""The app factory: settings, shared state, error pages, security middleware, routes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import secrets
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from ciml.errors import CimlError, ConfigError, NotFoundError

LOG = logging.getLogger(__name__)

HERE = pathlib.Path(__file__).parent
#: Bodies larger than this are refused (413) unless the route takes uploads.
MAX_BODY = 64 * 1024
#: Uploads (a dstat file for ``POST /api/v1/predict``) larger than this are refused.
MAX_UPLOAD = 32 * 1024 * 1024
API_PREFIX = "/api/v1"
#: Where :meth:`ServeSettings.to_environment` puts the settings for worker processes.
SETTINGS_ENV = "CIML_SERVE_SETTINGS"
TOKEN_ENV = "CIML_SERVE_TOKEN"
SECRET_ENV = "CIML_SERVE_SECRET"
#: Requests handled at once by plain ``def`` routes (anyio's default is 40).
THREADS = 16
#: Seconds the store's per-job and per-class counts are reused by the pages.
SUMMARY_TTL = 5.0
#: Oldest counts a page is given while they are read again in the background.
SUMMARY_MAX_AGE = 2 * SUMMARY_TTL


@dataclasses.dataclass
class ServeSettings:
    """What ``ciml serve``'s options decide; tests build one directly."""

    #: The :class:`ciml.paths.DataPath` whose runs, datasets and models are shown.
    data_path: Any
    #: The prediction store's URL (``None``: the data path's SQLite file, or the config's).
    store_uri: str | None = None
    #: The token writes need (``Authorization: Bearer``, or the form's token field).
    token: str | None = None
    #: Reads need the token too (pages then ask for it once, in a cookie).
    protect_reads: bool = False
    #: Largest upload accepted, in bytes.
    max_upload: int = MAX_UPLOAD
    #: Rows per page on the home page, per job.
    per_job: int = 10
    #: ``scheme://host[:port]`` origins besides the server's own that may post forms
    #: (a reverse proxy that rewrites Host).
    trusted_origins: tuple[str, ...] = ()
    #: Set the cookies' ``Secure`` flag (behind a TLS proxy).
    secure_cookies: bool = False
    #: Seconds the home page and prediction lists are answered from a shared copy
    #: (:mod:`ciml.serve.cache`); 0: every request is answered afresh.
    cache_ttl: float = 2.0
    #: Key of the session cookies' digest; ``None``: a random one per process.
    #: Worker processes of one server share one, so a session holds in each.
    session_secret: bytes | None = None

    def to_environment(self) -> dict[str, str]:
        """Environment variables from which :func:`app_from_environment` rebuilds these.

        The token and the session key travel in variables of their own, to
        the server's own worker processes only.
        """
        plain = {k: v for k, v in dataclasses.asdict(self).items()
                 if k not in ("data_path", "token", "session_secret")}
        plain["data_path"] = str(getattr(self.data_path, "root", self.data_path))
        plain["trusted_origins"] = list(self.trusted_origins)
        env = {SETTINGS_ENV: json.dumps(plain)}
        if self.token:
            env[TOKEN_ENV] = self.token
        if self.session_secret:
            env[SECRET_ENV] = self.session_secret.hex()
        return env


class ServeState:
    """What the routes share: settings, the store, the raw cache, loaded predictors."""

    def __init__(self, settings: ServeSettings, store: Any = None):
        from ciml.prediction_store import PredictionStore, resolve_uri

        self.settings = settings
        self.data_path = settings.data_path
        if store is None:
            store = PredictionStore(resolve_uri(settings.store_uri, self.data_path),
                                    create=True, pool_size=THREADS)
        self.store = store
        # A sign-in lasts as long as the server: a restart asks for the token again.
        self.secret = settings.session_secret or secrets.token_bytes(32)
        self._cache = None
        self._cache_lock = threading.Lock()
        self._predictors: dict[str, Any] = {}
        self._predictors_lock = threading.Lock()
        #: The watcher ``ciml serve --watch`` runs in this process, if any.
        self.watcher: Any = None
        from ciml.serve.views import RunLister

        self.runs = RunLister()
        self._summary: dict[str, Any] | None = None
        self._summary_at = 0.0
        self._summary_lock = threading.Lock()
        self._refreshing = False
        from ciml.serve.cache import Copies

        #: Shared copies of the home page and prediction lists (ciml.serve.cache).
        self.copies = Copies(ttl=settings.cache_ttl)

    @property
    def cache(self):
        """The raw cache (opened on first use; thread-safe)."""
        with self._cache_lock:
            if self._cache is None:
                from ciml.cache import RawCache

                self._cache = RawCache(self.data_path)
            return self._cache

    def predictor(self, model: str):
        """The :class:`ciml.online.Predictor` of ``dataset/experiment``, loaded once."""
        from ciml import online
        from ciml.paths import check_name

        dataset, sep, experiment = model.partition("/")
        if not sep:
            raise ConfigError(f"a model is named dataset/experiment, not {model!r}")
        check_name(dataset, "dataset name")
        check_name(experiment, "experiment name")
        with self._predictors_lock:
            if model not in self._predictors:
                self._predictors[model] = online.Predictor.load(
                    self.data_path, dataset, experiment, lazy=True)
            return self._predictors[model]

    def summary(self) -> dict[str, Any]:
        """``{"jobs", "classes"}`` of the store, read again once :data:`SUMMARY_TTL` s old.

        Both are aggregates over every row (a fifth of a second at 100,000
        predictions); the home page needs them on each view.  Once read, a
        stale copy is served while one thread reads them again, so no
        request waits for the aggregate; never a copy older than
        :data:`SUMMARY_MAX_AGE` s (after a quiet spell the view waits).
        """
        with self._summary_lock:
            summary, age = self._summary, time.monotonic() - self._summary_at
            refresh = summary is not None and age >= SUMMARY_TTL and not self._refreshing
            if refresh:
                self._refreshing = True
        if summary is None or age >= SUMMARY_MAX_AGE:
            return self._read_summary()
        if refresh:
            threading.Thread(target=self._refresh_summary, name="ciml-serve-summary",
                             daemon=True).start()
        return summary

    def _refresh_summary(self) -> None:
        try:
            self._read_summary()
        except Exception as exc:  # the stale copy stays; the next view tries again
            LOG.warning("could not refresh the store's counts: %s", exc)

    def _read_summary(self) -> dict[str, Any]:
        try:
            summary = {"jobs": self.store.jobs(), "classes": sorted(self.store.classes())}
            with self._summary_lock:
                self._summary, self._summary_at = summary, time.monotonic()
            return summary
        finally:
            with self._summary_lock:
                self._refreshing = False

    def close(self):
        if self._cache is not None:
            self._cache.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX) or request.url.path == "/metrics" or \
        "text/html" not in request.headers.get("accept", "")


def error_response(request: Request, status: int, message: str, headers=None) -> Response:
    """An error as JSON (``{"error": ...}``) for the API, as a page for a browser."""
    if _wants_json(request):
        return JSONResponse({"error": message, "status": status}, status_code=status,
                            headers=headers)
    from ciml.serve.pages import root_of

    templates = request.app.state.templates
    context = {"status": status, "message": message, "root": root_of(request),
               "here": request.url.path[len(root_of(request)):] or "/"}
    return templates.TemplateResponse(request, "error.html", context,
                                      status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(request, exc.status_code, str(exc.detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        # Say which parameter is wrong and why, never echo the input back.
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(request, 422, "; ".join(parts) or "invalid request")

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError):
        return error_response(request, 404, str(exc))

    @app.exception_handler(CimlError)
    async def ciml_error(request: Request, exc: CimlError):
        from ciml.prediction_store import StoreError

        if isinstance(exc, StoreError):
            LOG.error("prediction store: %s", exc)
            return error_response(request, 503, "the prediction store is not available; "
                                  "see the server's log")
        status = 400 if isinstance(exc, ConfigError) else 422
        return error_response(request, status, str(exc))



def server_error(request: Request, exc: BaseException) -> Response:
    """A 500 that names an id to quote, never code, paths or values; the log has the rest."""
    ident = uuid.uuid4().hex[:12]
    LOG.error("error %s serving %s %s", ident, request.method, request.url.path,
              exc_info=exc)
    return error_response(request, 500, f"internal error (id {ident}); the server's log "
                          "has the details")


def create_app(data_path: Any = None, *, settings: ServeSettings | None = None,
               store: Any = None, **options: Any) -> FastAPI:
    """The ``ciml serve`` ASGI app.

    Give either ``settings`` or ``data_path`` plus :class:`ServeSettings`'
    fields as keywords.  ``store`` is an open
    :class:`ciml.prediction_store.PredictionStore` to use instead of opening
    one from ``settings.store_uri``.
    """
    from ciml import __version__
    from ciml.paths import DataPath
    from ciml.serve import api, metrics, pages, security

    if settings is None:
        if data_path is None:
            raise ConfigError("create_app needs a data path or settings")
        if not isinstance(data_path, DataPath):
            data_path = DataPath(data_path)
        settings = ServeSettings(data_path=data_path, **options)
    state = ServeState(settings, store=store)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        import anyio.to_thread

        # Routes are short and CPU-bound: more threads than the store's connection
        # pool only wait, each with its own stack and malloc arena.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="ciml", version=__version__,
                  description="Runs, predictions, datasets and models of a ciml data path.",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.ciml = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    pages.setup_templates(templates)
    app.state.templates = templates
    _install_error_handlers(app)
    security.install(app, settings)
    # Pages and SVG plots shrink five to ten times: the dashboard stays quick on a slow
    # link.  Level 5: most of level 9's gain at a third of its CPU.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    from ciml.serve.cache import ResponseCache

    # Outside the guard and gzip: a copy holds the guard's headers and is gzipped once,
    # so an answer from a copy passes through neither.
    app.add_middleware(ResponseCache, copies=state.copies,
                       enabled=settings.cache_ttl > 0 and not settings.protect_reads)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(pages.router)
    app.include_router(pages.open_router)
    metrics.install(app, state)
    return app


def app_from_environment() -> FastAPI:
    """The app of a worker process of ``ciml serve --processes N`` (a uvicorn factory)."""
    from ciml.paths import DataPath

    plain = json.loads(os.environ[SETTINGS_ENV])
    plain["data_path"] = DataPath(plain["data_path"])
    plain["trusted_origins"] = tuple(plain.get("trusted_origins") or ())
    secret = os.environ.get(SECRET_ENV)
    settings = ServeSettings(**plain, token=os.environ.get(TOKEN_ENV) or None,
                             session_secret=bytes.fromhex(secret) if secret else None)
    return create_app(settings=settings)
