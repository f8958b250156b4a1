"""The HTML pages: server-rendered from Jinja2 templates, stable links, forms with CSRF.

Every page is a plain ``GET`` of a stable URL (``/runs/{id}``,
``/models/{dataset}/{experiment}``, ``/datasets/{name}``), so a review
comment can link to it.  Templates autoescape everything; none marks data
as safe.  Plots are ``<img>`` tags pointing at SVG routes drawn by
:mod:`ciml.serve.plots`.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ciml.serve import security, views
from ciml.serve.api import prediction_filters

router = APIRouter(dependencies=[Depends(security.require_read)],
                   default_response_class=HTMLResponse)
#: Login is reachable without a session, of course.
open_router = APIRouter(default_response_class=HTMLResponse)

#: Browsers and proxies may keep a plot this long (seconds).
PLOT_MAX_AGE = 300


def _state(request: Request):
    return request.app.state.ciml


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200,
            headers: dict | None = None):
    state = _state(request)
    context = {"csrf": _Csrf(request), "root": root_of(request),
               "signed_in": security.has_session(request),
               "writes": bool(state.settings.token), **context}
    return request.app.state.templates.TemplateResponse(request, name, context,
                                                        status_code=status, headers=headers)


# -- template helpers ---------------------------------------------------------


class _Csrf:
    """The form's CSRF value, made when a template writes it: pages without a form
    set no cookie (and a cached page holds none)."""

    def __init__(self, request: Request):
        self.request = request

    def __str__(self) -> str:
        return security.csrf_value(self.request)

    def __html__(self) -> str:
        import markupsafe

        return str(markupsafe.escape(str(self)))


def root_of(request: Request) -> str:
    """The URL prefix a reverse proxy serves the app under (``--root-path``), or ``""``."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def _when(value):
    """``2026-12-02 10:41`` UTC from ISO text or a datetime; empty for none."""
    if not value:
        return ""
    if isinstance(value, str) and len(value) >= 16 and value.endswith("+00:00"):
        return f"{value[:10]} {value[11:16]}"  # the store's ISO UTC: no parsing needed
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M")


def _pct(value):
    return "" if value is None else f"{100 * float(value):.0f}%"


def _num(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)
    return str(value)


def _quote(value):
    return urllib.parse.quote(str(value), safe="")


def setup_templates(templates) -> None:
    env = templates.env
    # The templates ship with the package: no need to stat each file on every render.
    env.auto_reload = False
    env.filters["when"] = _when
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    env.filters["q"] = _quote
    env.globals["plots_available"] = _plots_module() is not None


def _plots_module():
    try:
        from ciml.serve import plots
    except ImportError:
        return None
    return plots


# -- pages ----------------------------------------------------------------------


def _filter_values(request: Request) -> dict[str, str]:
    """The filter form's fields as the browser sent them (to fill the form again)."""
    keys = ("job", "class", "unusual", "status", "model", "since", "errors")
    return {k: request.query_params.get(k, "") for k in keys}


@router.get("/", summary="Recent predictions per job")
def home(request: Request, filters: Annotated[dict, Depends(prediction_filters)]):
    # Kept and shared for a couple of seconds by ciml.serve.cache: many people and
    # wall screens watch this page, and nothing on it is per visitor.
    return _home(request, filters)


def _home(request: Request, filters):
    from ciml.serve.api import _integer

    state = _state(request)
    per_job = request.query_params.get("per_job")
    per_job = _integer("per_job", per_job, 1, 100) if per_job else state.settings.per_job
    store = state.store
    summary = state.summary()
    jobs, classes = summary["jobs"], summary["classes"]
    names = [filters["build_name"]] if filters["build_name"] else \
        [j["build_name"] for j in jobs if j["build_name"] is not None]
    # One indexed page per job (the store's per-job index), the counts cached.
    others = {k: v for k, v in filters.items() if k != "build_name"}
    recent = {name: store.list(build_name=name, **others, limit=per_job).items
              for name in names}
    if filters["build_name"] is None:
        recent = {name: items for name, items in recent.items() if items}
    return _render(request, "home.html", {
        "recent": recent, "jobs": jobs, "classes": classes,
        "filters": _filter_values(request), "per_job": per_job,
        "filtered": any(v not in (None, "") for v in _filter_values(request).values()),
    })


@router.get("/predictions", summary="Predictions, newest first, page by page")
def predictions_page(request: Request, filters: Annotated[dict, Depends(prediction_filters)],
                     after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100):
    state = _state(request)
    page = state.store.list(**filters, limit=limit, after=after)
    next_url = None
    if page.next_cursor:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        next_url = "/predictions?" + urllib.parse.urlencode(query + [("after",
                                                                      page.next_cursor)])
    return _render(request, "predictions.html", {
        "items": page.items, "next_url": next_url, "filters": _filter_values(request),
        **state.summary()})


@router.get("/runs", summary="Cached runs")
def runs_page(request: Request, job: str | None = None, labelled: bool = False,
              offset: Annotated[int, Query(ge=0)] = 0):
    page = views.list_runs(_state(request), build_name=job or None, labelled=labelled,
                           limit=100, offset=offset)
    return _render(request, "runs.html", {"page": page, "job": job or "",
                                          "labelled": labelled})


# Run ids may hold "/" (Jenkins folders, "org/repo#12"): links quote it as %2F, which
# arrives decoded, so the id is a path parameter and the routes under a run come
# before the run's own page.
@router.post("/runs/{run_id:path}/labels", summary="Correct a run's label (form)")
async def label_form(request: Request, run_id: str):
    from starlette.concurrency import run_in_threadpool

    form = await request.form(max_files=0, max_fields=16)
    security.check_form(request, form)
    key = str(form.get("key") or "").strip()
    value = str(form.get("value") or "").strip()
    who = str(form.get("who") or "").strip()[:128] or "ciml-serve"
    await run_in_threadpool(views.set_labels, _state(request), run_id, {key: value}, who)
    response = RedirectResponse(
        f"{root_of(request)}/runs/{_quote(run_id)}?saved={_quote(key)}#labels",
        status_code=303)
    if not security.has_session(request):
        response.headers.append("set-cookie", security.session_cookie(request))
    return response


@router.get("/runs/{run_id:path}/plot.svg", response_class=Response,
            summary="The run's key series against the passed runs' band (SVG)")
def run_plot(request: Request, run_id: str, model: str):
    plots = _plots_module()
    if plots is None:
        raise HTTPException(404, "plots are not available in this version")
    rows = [r for r in _state(request).store.for_run(run_id) if r["model"] == model]
    if not rows or not rows[0].get("record"):
        raise HTTPException(404, f"no prediction of run {run_id!r} by model {model!r}")
    svg = plots.run_plot(_state(request).data_path, rows[0]["record"])
    return _svg(svg, f"nothing to draw for run {run_id!r}")


@router.get("/runs/{run_id:path}", summary="A run")
def run_page(request: Request, run_id: str, saved: str | None = None):
    detail = views.run_detail(_state(request), run_id)
    plots = _plots_module()
    with_plot = [p for p in detail["predictions"]
                 if plots is not None and (p.get("record") or {}).get("explanation")]
    return _render(request, "run.html", {"d": detail, "with_plot": with_plot,
                                         "saved": saved})



def _svg(svg, missing):
    if svg is None:
        raise HTTPException(404, missing)
    return Response(svg, media_type="image/svg+xml", headers={
        "Cache-Control": f"max-age={PLOT_MAX_AGE}",
        # An SVG opened on its own is a document: it must not run anything.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


@router.get("/models", summary="Trained models")
def models_page(request: Request):
    return _render(request, "models.html", {"models": views.list_models(_state(request))})


@router.get("/models/{dataset}/{experiment}", summary="A model")
def model_page(request: Request, dataset: str, experiment: str):
    detail = views.model_detail(_state(request), dataset, experiment)
    plots = _plots_module()
    kinds = plots.available_model_plots(_state(request).data_path, dataset, experiment) \
        if plots is not None else []
    return _render(request, "model.html", {"m": detail, "plot_kinds": kinds})


@router.get("/models/{dataset}/{experiment}/{kind}.svg", response_class=Response,
            summary="A model's plot (SVG)")
def model_plot(request: Request, dataset: str, experiment: str, kind: str):
    plots = _plots_module()
    if plots is None or kind not in plots.MODEL_PLOTS:
        raise HTTPException(404, f"no plot {kind!r}")
    from ciml.paths import check_name

    check_name(dataset, "dataset name")
    check_name(experiment, "experiment name")
    svg = plots.model_plot(_state(request).data_path, dataset, experiment, kind)
    return _svg(svg, f"model {dataset}/{experiment} has no {kind} plot")


@router.get("/datasets", summary="Datasets")
def datasets_page(request: Request):
    return _render(request, "datasets.html",
                   {"datasets": views.list_datasets(_state(request))})


@router.get("/datasets/{name}", summary="A dataset")
def dataset_page(request: Request, name: str):
    return _render(request, "dataset.html", {"d": views.dataset_detail(_state(request),
                                                                        name)})


@router.get("/plugins", summary="Installed plugins")
def plugins_page(request: Request):
    return _render(request, "plugins.html", {"plugins": views.list_plugins()})


@router.get("/api", summary="The API's reference, from its OpenAPI description")
def api_page(request: Request):
    spec = request.app.openapi()
    routes = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = [{"name": p["name"], "in": p["in"],
                       "required": p.get("required", False),
                       "description": p.get("description", "")}
                      for p in op.get("parameters", [])]
            routes.append({"method": method.upper(), "path": path,
                           "summary": op.get("summary", ""),
                           "description": op.get("description", ""), "params": params})
    return _render(request, "api.html", {"routes": routes,
                                         "openapi_url": request.app.openapi_url})


@open_router.get("/login", summary="Give the token once; the browser keeps a session")
def login_page(request: Request, next: str = "/"):
    return _render(request, "login.html", {"next": _local(next)})


@open_router.post("/login")
async def login(request: Request):
    form = await request.form(max_files=0, max_fields=8)
    security.check_form(request, form)
    response = RedirectResponse(root_of(request) + _local(str(form.get("next") or "/")),
                                status_code=303)
    response.headers.append("set-cookie", security.session_cookie(request))
    return response


def _local(target: str) -> str:
    """Only a path on this server: a login form must not redirect elsewhere."""
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@open_router.get("/favicon.ico", response_class=Response, include_in_schema=False)
def favicon():
    # Pages link static/favicon.svg; browsers and tools that ask for the classic
    # path get the same picture instead of a 404 per page.
    from fastapi.responses import FileResponse

    from ciml.serve.app import HERE

    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})


@open_router.get("/healthz", response_class=Response, summary="Alive, and the store answers")
def healthz(request: Request):
    _state(request).store.count(since=dt.datetime.now(dt.timezone.utc))
    return Response("ok\n", media_type="text/plain")
