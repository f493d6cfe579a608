"""A local HTTP server that answers as Vertex AI's prebuilt TensorFlow prediction container
does for this model (TensorFlow Serving's REST API over the exported SavedModel).

    fer-pipeline serve fer-emotion-local@champion --registry build/local/registry --port 8080

Routes (NAME is the registry model name, or ``--name``; ``/versions/V`` may follow NAME):

  - ``GET /v1/models/NAME``: version status, ``{"model_version_status": [...]}``.
  - ``GET /v1/models/NAME/metadata``: the ``serving_default`` signature's inputs and outputs.
  - ``POST /v1/models/NAME:predict``: Vertex's body ``{"instances": [{"image_bytes":
    {"b64": "..."}}]}`` in, ``{"predictions": [{"scores": [7 floats], "label": ...,
    "classes": [7 names]}]}`` out: the exported signature's outputs, one row per instance.
  - ``POST /v1/models/NAME:detect``: a photo's bytes (``Content-Type: image/...``) in,
    ``{"faces": [{"box": [x, y, w, h], "emotions": {class: p}, "label": ...}]}`` out
    (``predict.classify_photo``); ``?skip_detection=true`` classifies the whole photo as one face.
  - ``GET /health`` (and ``$AIP_HEALTH_ROUTE`` when set): 200 once the model is loaded;
    ``$AIP_PREDICT_ROUTE``, when set, is one more :predict route.

Every refusal is a JSON ``{"error": "..."}`` (TensorFlow Serving's shape) with a 4xx status
naming the problem; 503 when the server is full; 500 only for a bug, logged with its
traceback. The limits (``Limits``) bound the body, the instances and decoded pixels per
request, and the requests in progress: no request waits in an unbounded queue.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fer_pipeline.errors import FerError
from fer_pipeline.files import MODEL_FILE
from fer_pipeline.serve_limits import Limits
from fer_pipeline.serve_model import ServedModel, load_served_model, model_metadata, model_status
from fer_pipeline.serve_requests import ApiError, detect_body, detect_options, predict_body

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
PHOTO_TYPES = ("application/octet-stream",)  # and any image/*


# ---- admission: bounded work in progress ---------------------------------------------------


class AdmissionGate:
    """At most ``max_concurrent`` requests use the model at once and ``max_queue`` more
    wait for it; any beyond are refused at once with a 503, so that no client waits in an
    unbounded queue. Used from the event loop only (one thread: the counter needs no lock)."""

    def __init__(self, max_concurrent: int, max_queue: int):
        self.limiter = anyio.CapacityLimiter(max_concurrent)
        self.capacity = max_concurrent + max_queue
        self.admitted = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.admitted >= self.capacity:
            raise ApiError(
                503,
                f"server busy: {self.admitted} requests in progress, the most it holds "
                "(--max-concurrent + --max-queue); retry shortly",
                {"Retry-After": "1"},
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, work: Callable[[], Any]) -> Any:
        """``work`` in a worker thread once one of the model's slots is free."""
        return await anyio.to_thread.run_sync(work, limiter=self.limiter)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused with 413 past ``max_body_bytes`` (before reading when declared) and
    408 when it takes longer than ``body_timeout_s`` to arrive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, body_too_large(int(declared), limits))
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise ApiError(413, body_too_large(size, limits, at_least=True))
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"the body took over {limits.body_timeout_s:g} s to arrive") from None
    except ClientDisconnect:
        raise ApiError(400, "the client went away before sending the whole body") from None
    return b"".join(chunks)


def body_too_large(size: int, limits: Limits, at_least: bool = False) -> str:
    return (
        f"the body is {'over ' if at_least else ''}{size:,} bytes, over the limit of "
        f"{limits.max_body_bytes:,} (--max-body-bytes)"
    )


def check_content_type(request: Request, accepted: tuple[str, ...], images: bool, hint: str) -> None:
    """415 unless the Content-Type is one of ``accepted`` (or image/* when ``images``);
    a missing Content-Type is taken as the right one, as TF Serving takes it."""
    header = request.headers.get("content-type")
    if header is None:
        return
    media = header.split(";", 1)[0].strip().lower()
    if media in accepted or (images and media.startswith("image/")) or (not images and media.endswith("+json")):
        return
    raise ApiError(415, f"Content-Type {media!r} is not accepted here; {hint}")


# ---- the application -------------------------------------------------------------------


def build_app(
    model: ServedModel, limits: Limits, *, health_routes: tuple[str, ...] = (), predict_routes: tuple[str, ...] = ()
) -> FastAPI:
    """The FastAPI application serving ``model`` under ``limits``; ``health_routes`` and
    ``predict_routes`` are extra paths (Vertex's) for /health and :predict."""
    app = FastAPI(title="fer-pipeline serve", docs_url=None, redoc_url=None, openapi_url=None)
    gate = AdmissionGate(limits.max_concurrent, limits.max_queue)
    add_error_handlers(app)

    def served(request: Request) -> ServedModel:
        # Vertex's own routes name no model: they mean this one.
        check_model(model, request.path_params.get("name", model.name), request.path_params.get("version"))
        return model

    async def status(request: Request) -> dict[str, Any]:
        return model_status(served(request))

    async def metadata(request: Request) -> dict[str, Any]:
        return model_metadata(served(request))

    async def predict(request: Request) -> dict[str, Any]:
        target = served(request)
        if request.query_params:  # options belong to :detect; here they would be ignored
            raise ApiError(
                400, f"unknown query parameter(s) {', '.join(sorted(request.query_params))}; :predict takes none"
            )
        check_content_type(request, JSON_TYPES, images=False, hint="send JSON with Content-Type: application/json")
        with gate.admit():
            body = await read_body(request, limits)
            return await gate.run(functools.partial(predict_body, target, body, limits))

    async def detect(request: Request) -> dict[str, Any]:
        target = served(request)
        if target.keras_model is None:
            raise ApiError(
                404, f"{target.source} has no {MODEL_FILE} beside its SavedModel, so :detect is off for this model"
            )
        check_content_type(
            request,
            PHOTO_TYPES,
            images=True,
            hint="send the photo's bytes with Content-Type: image/jpeg (image/png, ...); base64 JSON goes to :predict",
        )
        options = detect_options(dict(request.query_params))
        with gate.admit():
            body = await read_body(request, limits)
            return await gate.run(functools.partial(detect_body, target, body, options, limits))

    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.name, "version": model.version_text}

    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        app.add_api_route(prefix, status, methods=["GET"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix + ":predict", predict, methods=["POST"])
        app.add_api_route(prefix + ":detect", detect, methods=["POST"])
    for route in ("/health", *health_routes):
        app.add_api_route(route, health, methods=["GET"])
    for route in predict_routes:
        app.add_api_route(route, predict, methods=["POST"])
    return app


VERBS = ("predict", "detect")
ROUTES = "routes: GET /v1/models/NAME[/metadata], POST /v1/models/NAME:predict or :detect, GET /health"


def check_model(model: ServedModel, name: str, version: str | None) -> None:
    """404 naming what is served when the path names another model or version."""
    if ":" in name:
        verb = name.partition(":")[2]
        if verb not in VERBS:
            raise ApiError(404, f"no route :{verb}; {ROUTES}")
        raise ApiError(405, f":{verb} takes POST; GET /v1/models/{model.name} gives the status")
    if name != model.name:
        raise ApiError(404, f"no model named {name!r} here; this server serves {model.name!r}")
    if version is not None and version != model.version_text:
        raise ApiError(404, f"{model.name!r} has no version {version!r} here; it serves version {model.version}")


def add_error_handlers(app: FastAPI) -> None:
    """Every answer that is not a prediction is ``{"error": message}`` with its status."""

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message, status = f"{exc.detail}: {request.method} {request.url.path}", exc.status_code
        verb = request.url.path.rpartition("/")[2].partition(":")[2]
        if status == 405 and verb and verb not in VERBS:  # POST NAME:explain matched GET NAME's route
            message, status = f"no route :{verb}: {request.method} {request.url.path}", 404
        if status == 404:
            message += f"; {ROUTES}"
        return JSONResponse(
            {"error": message}, status_code=status, headers=exc.headers if status == exc.status_code else None
        )

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("Unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the server's log has the traceback"}, status_code=500
        )


# ---- running it ------------------------------------------------------------------------


def bind_socket(host: str, port: int):
    """A listening TCP socket, bound before the model loads so that a busy port fails in a second."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FerError(f"--host {host!r} is not an address this machine knows ({exc.strerror}).") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise FerError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port.") from None
    sock.listen(2048)
    return sock


def vertex_route(variable: str, *taken: str) -> tuple[str, ...]:
    """The route Vertex names in ``$AIP_HEALTH_ROUTE`` or ``$AIP_PREDICT_ROUTE``, when set."""
    route = os.environ.get(variable, "").strip()
    return (route,) if route.startswith("/") and route not in taken else ()


def serve(
    ref: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    limits: Limits | None = None,
    registry_root: Path | None = None,
    name: str | None = None,
    log_path: Path | None = None,
    access_log: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Load ``ref``, listen on ``host:port`` and serve until interrupted (Ctrl-C)."""
    import uvicorn

    limits = limits or Limits()
    sock = bind_socket(host, port)
    with ExitStack() as stack:
        stack.callback(sock.close)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fer-serve-")))
        model = load_served_model(ref, registry_root, scratch, name, log_path)
        app = build_app(
            model,
            limits,
            health_routes=vertex_route("AIP_HEALTH_ROUTE", "/health"),
            predict_routes=vertex_route("AIP_PREDICT_ROUTE"),
        )
        bound_host, bound_port = sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            log_level="info",
            access_log=access_log,
            server_header=False,
            timeout_keep_alive=5,
            # A backstop for connection floods, well above what the admission gate lets in,
            # so that the gate's JSON 503 answers first; past it uvicorn answers a plain 503.
            limit_concurrency=8 * (limits.max_concurrent + limits.max_queue) + 64,
        )
        announce(
            f"serving {model.name} v{model.version} ({model.source}) at "
            f"http://{url_host(bound_host)}:{bound_port}/v1/models/{model.name} "
            f"(POST :predict, :detect; GET /health); Ctrl-C stops"
        )
        uvicorn.Server(config).run(sockets=[sock])


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
