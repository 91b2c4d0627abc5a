"""``titlecat serve``: a trained model behind a REST API and a web page (FastAPI on uvicorn).

::

    POST /predict   {"titles": [...], "k": 3, "language": "spanish"} -> each title's top-k categories
    GET  /health    {"status": "ok", ...}: the model is loaded and the server answers
    GET  /model     kind, categories, the scores its bundle records, when it was trained
    GET  /          the web page: type or paste titles, see their categories with probability bars
    GET  /docs      the OpenAPI documentation, from the request and response models below

The bundle (any kind: a network, the TF-IDF baseline, an ensemble) is loaded once, before the
port is opened, so a server that answers has its model.  Bad requests get a 4xx whose ``detail``
names the problem -- malformed JSON, no titles, a title that is not a string, ``k`` out of range,
more titles than ``max_batch``, a body over ``max_body_bytes`` -- and the server goes on serving.

Predictions run one request at a time (``predict_lock``): torch's own threads are the
parallelism.  A request of a few titles (``SMALL_REQUEST``) is predicted on the event loop, on one
torch thread -- about a millisecond for the default MLP, where handing it to a worker thread, or
splitting it over two torch threads, costs more than it saves (and each waits for a core a
neighbour may hold).  A larger batch runs in the application's own worker thread, on every torch
thread it was given (``threads``), so the event loop keeps answering ``/health`` meanwhile.
"""

# no ``from __future__ import annotations``: FastAPI reads the route's annotations, and the request
# model is made per application (its limits are the server's), so it is no module-level name
import asyncio
import functools
import inspect
import json
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model

from ._version import __version__
from .classifier import Classifier, load

DEFAULT_MAX_BATCH = 10_000  # titles per request
DEFAULT_MAX_BODY_MB = 8.0  # ~800 bytes per title at the largest batch: titles here are under 200
SMALL_REQUEST = 32  # titles up to which a request runs on one torch thread (see the module doc)
MODEL_URI_SCHEMES = ("models:/", "runs:/")  # --model names an MLflow model instead of a bundle directory
WORKER_START_SECONDS = 300  # how long a worker process (--workers > 1) may take to load its model


@dataclass
class ServeOptions:
    """What ``titlecat serve`` was asked for: the model and the server's limits."""

    model: str  # a bundle directory, or an MLflow model URI (models:/NAME@ALIAS, runs:/RUN/model)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # server processes, each with its own copy of the model
    threads: int | None = None  # torch threads per worker (None: the cores shared among the workers)
    max_batch: int = DEFAULT_MAX_BATCH  # titles per request
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1e6)  # request body size
    access_log: bool = True  # uvicorn's line per request
    bundle: str | None = field(default=None)  # the bundle directory the model was found in (set by ``serve``)


# ---- the API's requests and answers (their schemas are the OpenAPI documentation) ---------------


class CategoryProbability(BaseModel):
    category: str
    probability: float


class TitlePrediction(BaseModel):
    """One title's ``k`` most probable categories, most probable first (``titlecat predict --json``'s
    fields: the same numbers, rounded to 6 decimals)."""

    title: str
    categories: list[str]
    probabilities: list[float]


class PredictResponse(BaseModel):
    model: str = Field(description="the model's kind (model.name)")
    predictions: list[TitlePrediction] = Field(description="one per title, in the order given")


class ModelInfo(BaseModel):
    """What ``GET /model`` tells about the loaded model."""

    model: str = Field(description="its kind: mlp, cnn, rnn, transformer, tfidf, ensemble, ...")
    source: str = Field(description="the bundle directory or MLflow model URI it was loaded from")
    categories: list[str]
    n_categories: int
    scores: dict[str, float | int | None] = Field(description="the scores its bundle records (test, validation)")
    trained_at: str | None = Field(description="when its training ended (UTC, ISO 8601); null: not recorded")
    saved_at: str | None = Field(description="when its bundle was written (UTC, ISO 8601)")
    mlflow_run_id: str | None
    titlecat_version: str | None = Field(description="the titlecat that wrote the bundle")
    parameters: int
    settings: dict[str, Any] = Field(description="its model section (an ensemble's: members and weights)")
    language_token: bool = Field(description="whether a request's language changes its predictions")
    max_batch: int = Field(description="titles per request")
    max_body_bytes: int


class Health(BaseModel):
    status: str
    model: str
    titlecat_version: str


def request_model(n_categories: int, max_batch: int) -> type[BaseModel]:
    """The ``POST /predict`` body, with this server's limits in its schema."""
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"titles": ["Zapatillas Nike Air Max 90 Talle 42", "Casco moto LS2"], "k": 3}]}),
        titles=(list[StrictStr], Field(min_length=1, max_length=max_batch,
                                       description=f"1 to {max_batch:,} product titles")),
        k=(StrictInt, Field(1, ge=1, le=n_categories, description=f"categories per title, 1 to {n_categories}")),
        language=(StrictStr | None, Field(None, max_length=40, description=(
            "the titles' language (spanish, portuguese) for models trained with text.language_token; "
            "others ignore it"))),
    )


# ---- errors: a 4xx whose detail names the problem, never a 500 for a bad request ----------------


def _validation_message(err: dict, max_batch: int, n_categories: int) -> tuple[int, str]:
    """(status, message) of one pydantic error of the request body."""
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    where = loc[0] + "".join(f"[{x}]" for x in loc[1:]) if loc else "body"
    got = type(err.get("input")).__name__
    if kind == "json_invalid":
        return 400, f"malformed JSON: {ctx.get('error', 'not JSON')} (at character {loc[0] if loc else 0})"
    if kind == "missing":
        return 422, f"{where}: missing (expected {{\"titles\": [\"a title\", ...], \"k\": 1}})"
    if where == "body":  # not a JSON object at all
        hint = " (the body was not read as JSON: send Content-Type: application/json)" if got == "bytes" else ""
        return 422, f'expected a JSON object {{"titles": ["a title", ...], "k": 1}}, got {_json_type(got)}{hint}'
    if kind == "extra_forbidden":
        return 422, f"{where}: unknown field (known: titles, k, language)"
    if loc[:1] == ["titles"] and kind == "too_long":
        return 413, (f"titles: {ctx.get('actual_length', 'too many'):,} titles; at most {max_batch:,} per request "
                     "(titlecat serve --max-batch); send them in smaller batches")
    if loc[:1] == ["titles"] and kind == "too_short":
        return 422, "titles: empty list; give at least one title"
    if kind in ("string_type", "list_type", "int_type", "model_type", "dict_type"):
        expected = {"string_type": "a string", "list_type": "a list", "int_type": "an integer",
                    "model_type": "a JSON object", "dict_type": "a JSON object"}[kind]
        return 422, f"{where}: expected {expected}, got {_json_type(got)}"
    if loc[:1] == ["k"] and kind in ("greater_than_equal", "less_than_equal"):
        return 422, f"k: {err.get('input')} is out of range; 1 <= k <= {n_categories} (the model's categories)"
    return 422, f"{where}: {err.get('msg', 'invalid')}"


def _json_type(python_type: str) -> str:
    return {"NoneType": "null", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean",
            "list": "a list", "dict": "an object", "bytes": "bytes"}.get(python_type, python_type)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 naming the limit -- refused on
    its ``Content-Length`` before it is read, or as soon as a chunked body grows past the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> str:
        return (f"request body of {size} is over the limit of {self.max_bytes:,} bytes "
                "(titlecat serve --max-body-mb); send fewer titles per request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large(f"{int(declared):,} bytes")}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # FastAPI turns this into the response (before the route runs)
                raise HTTPException(413, self._too_large(f"more than {self.max_bytes:,} bytes"))
            return message

        await self.app(scope, counted, send)


# ---- the application -----------------------------------------------------------------------------


def create_app(clf: Classifier, source: str, *, max_batch: int = DEFAULT_MAX_BATCH,
               max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1e6), threads: int | None = None) -> FastAPI:
    """The FastAPI application serving ``clf`` (loaded from ``source``)."""
    name = clf.config.model.name
    classes = list(clf.labels.classes_)
    threads = threads or torch.get_num_threads()
    predict_lock = asyncio.Lock()  # one prediction at a time: torch's threads are the parallelism
    batch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="titlecat-predict")  # large batches
    PredictRequest = request_model(len(classes), max_batch)  # noqa: N806  (a class)
    info = model_info(clf, source, max_batch, max_body_bytes)
    page = resources.files("titlecat").joinpath("web/index.html").read_text(encoding="utf-8")

    app = FastAPI(title="titlecat", version=__version__,
                  description=f"Product-title categorisation: the {name} model of {source} "
                              f"({len(classes)} categories).")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc.errors()[0], max_batch, len(classes))
        return JSONResponse({"detail": message}, status_code=status)

    @app.post("/predict", response_model=PredictResponse, summary="top-k categories of titles")
    async def predict(body: PredictRequest) -> Response:
        small = len(body.titles) <= SMALL_REQUEST
        run = functools.partial(_answer, clf, body.titles, body.k, body.language, 1 if small else threads)
        async with predict_lock:
            answer = run() if small else await asyncio.get_running_loop().run_in_executor(batch_thread, run)
        return Response(answer, media_type="application/json")

    @app.get("/health", response_model=Health, summary="the model is loaded and the server answers")
    async def health() -> Health:
        return Health(status="ok", model=name, titlecat_version=__version__)

    @app.get("/model", response_model=ModelInfo, summary="the loaded model: kind, categories, scores")
    async def model() -> ModelInfo:
        return info

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def _answer(clf: Classifier, titles: list[str], k: int, language: str | None, threads: int) -> bytes:
    """The JSON of a ``PredictResponse``: ``clf.predict`` on ``threads`` torch threads, written with
    orjson straight from the arrays: for 1,000 titles 1.6 ms, where building the response objects
    and dumping them took 4.1 ms (and FastAPI checks a returned model once more), against ~14 ms
    for the default MLP to predict them.  The classifier's own checks are a 422."""
    torch.set_num_threads(threads)
    try:
        labels, probs = clf.predict(titles, k=k, language=language)
    except ValueError as e:  # a request that passed the request model's checks should not get here
        raise HTTPException(422, str(e)) from None
    return orjson.dumps({"model": clf.config.model.name, "predictions": [
        {"title": t, "categories": labs, "probabilities": [round(p, 6) for p in ps]}
        for t, labs, ps in zip(titles, labels, probs.tolist())]})


def model_info(clf: Classifier, source: str, max_batch: int, max_body_bytes: int) -> ModelInfo:
    i = clf.info
    scores = {k: getattr(i, k) for k in ("test_balanced_accuracy", "test_accuracy", "test_n",
                                         "best_val_balanced_accuracy") if getattr(i, k) is not None}
    return ModelInfo(model=clf.config.model.name, source=source, categories=list(clf.labels.classes_),
                     n_categories=len(clf.labels), scores=scores, trained_at=i.trained_at, saved_at=i.saved_at,
                     mlflow_run_id=i.mlflow_run_id, titlecat_version=i.titlecat_version,
                     parameters=clf.num_parameters(), settings=clf.config.model.model_dump(mode="json"),
                     language_token=clf.text_config.language_token, max_batch=max_batch,
                     max_body_bytes=max_body_bytes)


# ---- running it ------------------------------------------------------------------------------------

_OPTIONS_ENV = "TITLECAT_SERVE_OPTIONS"  # how uvicorn's worker processes learn the options (--workers > 1)


def worker_app() -> FastAPI:
    """The application of one of several uvicorn worker processes: each loads the model itself."""
    opts = ServeOptions(**json.loads(os.environ[_OPTIONS_ENV]))
    return _app(opts)


def _app(opts: ServeOptions) -> FastAPI:
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.workers)
    torch.set_num_threads(threads)
    clf = load(opts.bundle or opts.model)
    return create_app(clf, opts.model, max_batch=opts.max_batch, max_body_bytes=opts.max_body_bytes,
                      threads=threads)


def serve(opts: ServeOptions) -> None:
    """Load the model, open the port, answer until SIGTERM or Ctrl-C (either ends the server
    cleanly: requests in flight are answered, then it exits)."""
    import tempfile

    import uvicorn

    if min(opts.workers, opts.max_batch, opts.max_body_bytes, opts.threads or 1) < 1:
        raise ValueError("serve: --workers, --threads, --max-batch and --max-body-mb must be positive")
    with tempfile.TemporaryDirectory(prefix="titlecat-serve-") as tmp:
        opts.bundle = resolve_model(opts.model, tmp)
        sock = _bind(opts.host, opts.port)  # before loading the model: a port in use is said at once
        config = dict(host=opts.host, port=opts.port, access_log=opts.access_log, log_level="info",
                      timeout_graceful_shutdown=30)
        try:
            if opts.workers == 1:
                app = _app(opts)
                _say_listening(opts)
                # uvicorn stops gracefully on SIGTERM, then raises it again for the handler it found
                # installed: ours does nothing, so serve() returns -- the downloaded model is deleted
                # and the exit code is 0 -- instead of the process dying of the signal
                previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
                try:
                    uvicorn.Server(uvicorn.Config(app, **config)).run(sockets=[sock])
                finally:
                    signal.signal(signal.SIGTERM, previous)
                return
            from .bundle import read_bundle

            read_bundle(opts.bundle)  # a damaged bundle is said once, here, not by every worker
        finally:
            sock.close()
        # several workers: uvicorn's supervisor binds the port again and starts the processes,
        # each of which loads the model (``worker_app``)
        os.environ[_OPTIONS_ENV] = json.dumps(opts.__dict__)
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
            # a worker is "ready" once its model is loaded: seconds (an ensemble's, more), not
            # uvicorn's default 5 s, after which it would kill the worker and start another
            config["timeout_worker_healthcheck"] = WORKER_START_SECONDS
        _say_listening(opts)
        uvicorn.run("titlecat.serve:worker_app", factory=True, workers=opts.workers, **config)


def resolve_model(model: str, tmp: str) -> str:
    """The bundle directory of ``--model``: itself, or the bundle inside the MLflow model a
    ``models:/`` or ``runs:/`` URI names (downloaded into ``tmp``; MLFLOW_TRACKING_URI honoured)."""
    if not model.startswith(MODEL_URI_SCHEMES):
        return model
    from .mlflow_model import bundle_in
    from .tracking import download_model

    return str(bundle_in(download_model(model, Path(tmp) / "mlflow-model")))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on the connections of such a socket only.
    # Without it a keep-alive client waits ~40 ms for every answer (Nagle's algorithm holds the
    # answer's body until the client acknowledges its headers, which the client delays)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ValueError(f"serve: cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    sock.set_inheritable(True)
    return sock


def _say_listening(opts: ServeOptions) -> None:
    shown = f"[{opts.host}]" if ":" in opts.host else opts.host
    print(f"titlecat: serving {opts.model} on http://{shown}:{opts.port}  (page /, API /predict, docs /docs; "
          f"{opts.workers} worker{'s' if opts.workers > 1 else ''}); Ctrl-C or SIGTERM stops it",
          file=sys.stderr, flush=True)
