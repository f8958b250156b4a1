"""The REST API, ``/api/v1``: JSON, paged, filterable; writes need the server's token."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from ciml.errors import ConfigError
from ciml.serve import security, views

# JSONResponse: the data is JSON already (the store gives ISO times); FastAPI's
# generic encoder would cost more than the query on a page of 50 rows.
router = APIRouter(dependencies=[Depends(security.require_read)],
                   default_response_class=JSONResponse)

Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]


def _state(request: Request):
    return request.app.state.ciml


def _since(value):
    from ciml.prediction_store import parse_since

    return parse_since(value) if value else None


#: The filters of the predictions list: (query name, store keyword, type, description).
FILTERS = (
    ("job", "build_name", "string", "only this job (build name)"),
    ("class", "predicted", "string", "only this predicted class"),
    ("unusual", "unusual", "boolean", "only unusual runs (true) or the others (false)"),
    ("status", "status", "string", "only runs whose CI result was this (passed, failed)"),
    ("model", "model", "string", "only this model (dataset/experiment)"),
    ("run", "run_id", "string", "only this run's"),
    ("since", "since", "string", "made at or after: ISO time, or a duration back from "
     "now (24h, 7d)"),
    ("until", "until", "string", "made before: ISO time, or a duration back from now"),
    ("errors", "errors", "boolean", "only runs that could not be predicted (true) or the "
     "others (false)"),
)
_PAGING = (
    ("limit", "integer", "rows per page, 1 to 1000 (default 50)"),
    ("after", "string", "the next_cursor of the previous page"),
    ("offset", "integer", "rows to skip (prefer after)"),
    ("full", "boolean", "add each row's whole record and probabilities"),
)


def _openapi_parameters(params):
    return {"parameters": [{"name": name, "in": "query", "required": False,
                            "description": text, "schema": {"type": kind}}
                           for name, kind, text in params]}


def _flag(name, value):
    from ciml.base import parse_bool

    try:
        return parse_bool(value)
    except ValueError:
        raise ConfigError(f"{name}: expected true or false, not {value[:40]!r}") from None


def _integer(name, value, low, high):
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(f"{name}: expected a whole number from {low} to {high}") from None
    return number


async def prediction_filters(request: Request) -> dict[str, Any]:
    """The store's filters from the query string (shared by the API and the pages).

    Read by hand rather than declared as FastAPI parameters: on a page of
    50 rows FastAPI's per-parameter validation cost more than the query.
    An empty value means no filter (what an unset form field sends).
    """
    from ciml.prediction_store import parse_since

    query = request.query_params
    out: dict[str, Any] = {}
    for name, key, kind, _ in FILTERS:
        value = query.get(name, "").strip()
        if not value:
            out[key] = None
        elif kind == "boolean":
            out[key] = _flag(name, value)
        elif key in ("since", "until"):
            out[key] = parse_since(value)
        else:
            out[key] = value
    return out


@router.get("/predictions", summary="Predictions, newest first",
            openapi_extra=_openapi_parameters(
                [(n, "boolean" if k == "boolean" else "string", t) for n, _, k, t in FILTERS]
                + list(_PAGING)))
def predictions(request: Request, filters: Annotated[dict, Depends(prediction_filters)]):
    """A page of stored predictions; follow ``next`` (or pass ``after=next_cursor``)."""
    query = request.query_params
    limit = _integer("limit", query.get("limit") or "50", 1, 1000)
    offset = _integer("offset", query.get("offset") or "0", 0, 10**9)
    full = _flag("full", query["full"]) if query.get("full") else False
    page = _state(request).store.list(**filters, limit=limit, after=query.get("after"),
                                      offset=offset, full=full)
    out = {"items": page.items, "next_cursor": page.next_cursor, "next": None}
    if page.next_cursor:
        rest = [(k, v) for k, v in query.multi_items() if k not in ("after", "offset")]
        rest.append(("after", page.next_cursor))
        out["next"] = f"{request.url.path}?{urllib.parse.urlencode(rest)}"
    return JSONResponse(out)


@router.get("/predictions/{prediction_id}", summary="One prediction with its whole record")
def prediction(request: Request, prediction_id: int):
    row = _state(request).store.get(prediction_id)
    if row is None:
        raise HTTPException(404, f"no prediction {prediction_id}")
    return JSONResponse(row)


@router.get("/jobs", summary="Jobs with predictions: counts and the latest time")
def jobs(request: Request):
    return JSONResponse({"items": _state(request).store.jobs()})


@router.get("/runs", summary="Cached runs, newest first, with their human labels")
def runs(request: Request, job: str | None = None, labelled: bool = False,
         limit: Limit = 50, offset: Annotated[int, Query(ge=0)] = 0):
    return JSONResponse(views.list_runs(_state(request), build_name=job or None,
                                        labelled=labelled, limit=limit, offset=offset))


class LabelRequest(BaseModel):
    labels: dict[str, str] = Field(..., description="key: value, e.g. {\"cause\": \"oom\"}",
                                   min_length=1, max_length=32)
    who: str | None = Field(None, max_length=128, description="who gives the label")


# Run ids may hold "/": a path parameter, the labels route first.
@router.post("/runs/{run_id:path}/labels", summary="Correct a run's label (needs the token)",
             dependencies=[Depends(security.require_token_header)])
def label_run(request: Request, run_id: str, body: LabelRequest):
    rows = views.set_labels(_state(request), run_id, body.labels, body.who or "ciml-serve")
    return JSONResponse({"items": rows})


@router.get("/runs/{run_id:path}", summary="A run: record, labels, predictions, reports")
def run(request: Request, run_id: str):
    return JSONResponse(views.run_detail(_state(request), run_id))


@router.get("/datasets", summary="Datasets: summary of each")
def datasets(request: Request):
    return JSONResponse({"items": views.list_datasets(_state(request))})


@router.get("/datasets/{name}", summary="A dataset's summary, configuration and classes")
def dataset(request: Request, name: str):
    return JSONResponse(views.dataset_detail(_state(request), name))


@router.get("/datasets/{name}/classes", summary="Examples per class and split")
def dataset_classes(request: Request, name: str):
    return JSONResponse(views.dataset_classes(_state(request), name))


@router.get("/datasets/{name}/splits", summary="Split sizes and how they were made")
def dataset_splits(request: Request, name: str):
    return JSONResponse(views.dataset_splits(_state(request), name))


@router.get("/datasets/{name}/profile", summary="The training runs' profile")
def dataset_profile(request: Request, name: str):
    return JSONResponse(views.dataset_profile(_state(request), name))


@router.get("/models", summary="Trained models with their headline metrics")
def models(request: Request):
    return JSONResponse({"items": views.list_models(_state(request))})


@router.get("/models/{dataset}/{experiment}",
            summary="A model: metrics beside the baseline, operating point, importance")
def model(request: Request, dataset: str, experiment: str):
    return JSONResponse(views.model_detail(_state(request), dataset, experiment))


@router.get("/plugins", summary="Installed plugins and the hooks they implement")
def plugins():
    return JSONResponse({"items": views.list_plugins()})


class PredictRequest(BaseModel):
    model: str = Field(..., description="dataset/experiment")
    run_id: str = Field(..., max_length=255, description="a run in the raw cache")
    store: bool = Field(True, description="keep the prediction in the store")


@router.post("/predict", summary="Predict a cached run, or an uploaded dstat file",
             dependencies=[Depends(security.require_token_header)],
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": PredictRequest.model_json_schema()},
                 "multipart/form-data": {"schema": {
                     "type": "object", "required": ["model", "file"],
                     "properties": {"model": {"type": "string"},
                                    "file": {"type": "string", "format": "binary"},
                                    "build_name": {"type": "string"}}}}}}})
async def predict(request: Request):
    """JSON ``{"model", "run_id"}`` for a cached run; a multipart form with ``model`` and
    ``file`` (a dstat CSV, gzipped or not) for a run that is not cached.  Uploads are
    predicted, not stored."""
    from starlette.concurrency import run_in_threadpool

    state = _state(request)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        model_name = form.get("model")
        if not isinstance(upload, UploadFile) or not isinstance(model_name, str):
            raise HTTPException(422, "a multipart predict needs fields model and file")
        data = await upload.read()
        build_name = form.get("build_name")
        return await run_in_threadpool(_predict_upload, state, model_name, upload.filename,
                                       data, build_name if isinstance(build_name, str)
                                       else None)
    try:
        body = PredictRequest.model_validate_json(await request.body())
    except ValueError as exc:
        raise HTTPException(422, "give JSON {\"model\": \"dataset/experiment\", "
                            f"\"run_id\": ...}}: {_first_error(exc)}") from None
    return await run_in_threadpool(_predict_cached, state, body.model, body.run_id,
                                   body.store)


def _record_response(record):
    import json

    from fastapi.responses import Response

    # As watch prints it: a value JSON has no type for is given as text.
    return Response(json.dumps(record, default=str), media_type="application/json")


def _first_error(exc):
    errors = getattr(exc, "errors", None)
    if errors:
        err = errors()[0]
        return f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}"
    return "not JSON"


def _predict_cached(state, model_name, run_id, store):
    from ciml.cache import CACHED
    from ciml.errors import NotFoundError

    predictor = state.predictor(model_name)
    cache = state.cache
    # Never a file path: a run id reaches the file system only through the cache.
    if not cache.index_path.exists() or cache.state(run_id) != CACHED:
        raise NotFoundError(f"run {run_id!r} is not in the raw cache")
    run = cache.record(run_id)
    record = predictor.record(run, cache.frame(run_id))
    record["trigger"] = "serve"
    if store:
        state.store.add(record)
        state.copies.clear()  # the next list shows it
    return _record_response(record)


def _predict_upload(state, model_name, filename, data, build_name):
    import pathlib

    from ciml.records import RunRecord

    predictor = state.predictor(model_name)
    name = pathlib.PurePath(filename or "upload").name[:128] or "upload"
    run = RunRecord(id=f"upload:{name}", build_name=build_name or predictor.build_name,
                    status=None, source="upload", metadata={"file": name})
    frame = predictor.metric_source.parse(data, run)
    record = predictor.base_record(run)
    record.update(predictor.predict_frame(frame))
    record["trigger"] = "upload"
    return _record_response(record)
