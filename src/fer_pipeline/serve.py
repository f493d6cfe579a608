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

import base64
import binascii
import functools
import io
import json
import logging
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fer_pipeline.errors import FerError
from fer_pipeline.export import INPUT_NAME, SIGNATURE_NAME
from fer_pipeline.files import MODEL_FILE
from fer_pipeline.serve_limits import Limits

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
# The name TensorFlow Serving gives a model served from a bare path (no registry name).
DEFAULT_MODEL_NAME = "default"
DEFAULT_SIDE = 48  # FER-2013's; a model loaded from Keras says its own
# What tf.io.decode_image (the exported signature) decodes, as PIL names the formats;
# MPO is the multi-picture JPEG many cameras write.
SIGNATURE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP")
HUGE_IMAGE = "huge"  # image_header's format for a header declaring a decompression bomb
JSON_TYPES = ("application/json",)
PHOTO_TYPES = ("application/octet-stream",)  # and any image/*
# Keras' predict keeps per-call state on the model: :detect calls it one at a time.
keras_lock = threading.Lock()


class ApiError(Exception):
    """A request the server refuses: the status and a message naming the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class ServedModel:
    """A loaded model: the SavedModel's serving signature (for :predict) and, when the
    folder has one, the Keras model (for :detect)."""

    name: str
    version: int
    source: str
    signature: Any
    keras_model: Any | None
    saved_model: Any = None  # the signature's variables live as long as this object
    prediction_log: Any = None  # a prediction_log.PredictionLog with --log
    side: int = DEFAULT_SIDE  # the model's input side (for the logged crops)

    @property
    def version_text(self) -> str:
        return str(self.version)


# ---- loading ---------------------------------------------------------------------------


def locate_model(ref: str, registry_root: Path | None) -> tuple[str, int, Path]:
    """``(name, version, path)`` for a local path or a registry reference.

    Raises:
        FerError: neither a path nor a registered version (the message says what exists).
    """
    from fer_pipeline.registry import LocalRegistry, RegistryError, RegistryFileError, default_registry_root

    if ref.startswith("gs://"):
        raise FerError(
            f"serve reads local models; copy {ref} to a folder first (gcloud storage cp -r) or serve a registry reference."
        )
    path = Path(ref)
    if path.exists():
        return DEFAULT_MODEL_NAME, 1, path
    if "/" in ref or ref.endswith(".keras"):  # registry names have no "/": this was meant as a path
        raise FerError(
            f"{ref} does not exist; pass a model folder, a .keras file or a registry reference (NAME@champion)."
        )
    registry = LocalRegistry(registry_root if registry_root is not None else default_registry_root())
    try:
        version = registry.resolve(ref)
    except RegistryFileError:
        raise
    except RegistryError as exc:
        raise FerError(f"Model {ref!r} is not a local path and not in the registry at {registry.root}: {exc}") from None
    return version.name, version.version, version.path


def saved_model_folder(path: Path, scratch: Path) -> Path:
    """The SavedModel for ``path``: the folder itself when it holds one, otherwise its
    ``model.keras`` (or the ``.keras`` file) exported into ``scratch`` as the pipeline exports it."""
    from fer_pipeline.export import export_serving_model, resolve_keras_file

    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return path
    keras_file = resolve_keras_file(path)  # FerError naming what is missing
    log.info("No %s beside %s: exporting it for serving", SAVED_MODEL_FILE, keras_file)
    return export_serving_model(keras_file, scratch / "serving")


def keras_file_for(path: Path) -> Path | None:
    """The Keras file :detect runs, when ``path`` has one."""
    if path.is_file() and path.suffix == ".keras":
        return path
    candidate = path / MODEL_FILE
    return candidate if candidate.is_file() else None


def load_served_model(
    ref: str, registry_root: Path | None, scratch: Path, name: str | None = None, log_path: Path | None = None
) -> ServedModel:
    """Load the serving signature (and the Keras model beside it) of ``ref``; with
    ``log_path``, every face it classifies is appended to that prediction log."""
    import tensorflow as tf

    from fer_pipeline.export import load_keras_model, model_input_side
    from fer_pipeline.prediction_log import PredictionLog, model_version_for

    registered_name, version, path = locate_model(ref, registry_root)
    folder = saved_model_folder(path, scratch)
    saved_model = tf.saved_model.load(str(folder))
    if SIGNATURE_NAME not in saved_model.signatures:
        raise FerError(f"{folder} has no {SIGNATURE_NAME!r} signature; export it with fer_pipeline.export.")
    keras_file = keras_file_for(path)
    keras_model = load_keras_model(keras_file) if keras_file else None
    model = ServedModel(
        name=name or registered_name,
        version=version,
        source=str(path),
        signature=saved_model.signatures[SIGNATURE_NAME],
        keras_model=keras_model,
        saved_model=saved_model,
        side=model_input_side(keras_model) if keras_model is not None else DEFAULT_SIDE,
    )
    warm_up(model)  # before the log opens: the warm-up's blank image is no prediction
    if log_path is not None:
        model.prediction_log = PredictionLog(log_path, model_version_for(ref, registry_root))
    return model


def warm_up(model: ServedModel) -> None:
    """One call of each path before the first request, so that it does not pay the set-up."""
    import numpy as np

    from fer_pipeline.predict import classify_photo

    run_signature(model, [blank_png()])
    if model.keras_model is not None:
        classify_photo(model.keras_model, np.zeros((48, 48), np.uint8), skip_detection=True)


def blank_png(side: int = 48) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- the Vertex body (:predict) ---------------------------------------------------------


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, 'the body is empty; send JSON like {"instances": [{"image_bytes": {"b64": "..."}}]}')
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text, so not JSON") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # digits beyond int's limit, nesting beyond the parser's
        reason = str(exc).split(";")[0]  # not Python's advice on raising its limits
        raise ApiError(400, f"the body is not JSON this server reads: {reason}") from None


def instance_blobs(document: Any, limits: Limits) -> list[bytes]:
    """The encoded images of a Vertex request body, in order.

    Raises:
        ApiError: not an object, no ``instances``, too many, or an instance that is not
            ``{"image_bytes": {"b64": ...}}`` (or the bare ``{"b64": ...}``) with valid base64.
    """
    if not isinstance(document, dict):
        raise ApiError(400, 'the body must be a JSON object: {"instances": [{"image_bytes": {"b64": "..."}}]}')
    signature = document.get("signature_name", SIGNATURE_NAME)
    if signature != SIGNATURE_NAME:
        raise ApiError(400, f"signature_name {signature!r} is unknown; this model has {SIGNATURE_NAME!r}")
    if "instances" not in document:
        hint = "; the columnar 'inputs' form is not supported" if "inputs" in document else ""
        raise ApiError(400, f"the body has no 'instances' list{hint}")
    instances = document["instances"]
    if not isinstance(instances, list):
        raise ApiError(400, f"'instances' must be a list, got {type(instances).__name__}")
    if not instances:
        raise ApiError(400, "'instances' is empty; send at least one image")
    if len(instances) > limits.max_instances:
        raise ApiError(
            413,
            f"{len(instances)} instances, over the limit of {limits.max_instances} per request "
            "(--max-instances); split the request",
        )
    return [instance_blob(index, instance) for index, instance in enumerate(instances)]


def instance_blob(index: int, instance: Any) -> bytes:
    """One instance's image bytes; TF Serving also takes the bare value of a one-input signature."""
    where = f"instances[{index}]"
    value = instance.get(INPUT_NAME) if isinstance(instance, dict) and INPUT_NAME in instance else instance
    if not (isinstance(value, dict) and isinstance(value.get("b64"), str)):
        raise ApiError(400, f'{where} must be {{"{INPUT_NAME}": {{"b64": "<base64 of a JPEG or PNG>"}}}}')
    try:
        blob = base64.b64decode("".join(value["b64"].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"{where}: the b64 value is not valid base64 ({exc})") from None
    if not blob:
        raise ApiError(400, f"{where}: the b64 value is empty")
    return blob


def check_images(blobs: list[bytes], limits: Limits) -> list[tuple[int, int]]:
    """Each image's (width, height); refuses what the signature cannot decode, and pixel
    counts over the limit, by their headers."""
    total = 0
    sizes = []
    for index, blob in enumerate(blobs):
        image_format, width, height = image_header(blob)
        where = f"instances[{index}]"
        if image_format is None:
            raise ApiError(400, f"{where} is not an image (the model reads JPEG, PNG, GIF or BMP)")
        if image_format == HUGE_IMAGE:
            raise ApiError(413, f"{where} declares more pixels than PIL will open, far over --max-pixels")
        if image_format not in SIGNATURE_FORMATS:
            raise ApiError(400, f"{where} is a {image_format} image; the model reads JPEG, PNG, GIF or BMP")
        sizes.append((width, height))
        total += width * height
    if total > limits.max_pixels:
        raise ApiError(
            413,
            f"the request's images hold {total:,} pixels, over the limit of {limits.max_pixels:,} "
            "(--max-pixels); scale them down or send fewer",
        )
    return sizes


def image_header(blob: bytes) -> tuple[str | None, int, int]:
    """(format, width, height) from the header alone (PIL decodes nothing here); (None, 0, 0)
    when PIL does not recognise an image."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as image:
                return image.format, image.width, image.height
    except Image.DecompressionBombError:  # PIL refuses twice its own limit even at open
        return HUGE_IMAGE, 0, 0
    except Exception:  # any other failure means "not an image PIL knows"
        return None, 0, 0


def run_signature(model: ServedModel, blobs: list[bytes]) -> list[dict[str, Any]]:
    """The exported signature's outputs, one row per image (TF Serving's row format)."""
    import tensorflow as tf

    try:
        outputs = model.signature(**{INPUT_NAME: tf.constant(blobs)})
    except tf.errors.InvalidArgumentError:  # an image whose header read but whose data does not decode
        raise ApiError(400, undecodable_instance(blobs)) from None
    scores = outputs["scores"].numpy()
    labels = outputs["label"].numpy()
    classes = outputs["classes"].numpy()
    return [
        {
            "scores": [float(p) for p in row_scores],
            "label": label.decode(),
            "classes": [name.decode() for name in row_classes],
        }
        for row_scores, label, row_classes in zip(scores, labels, classes)
    ]


def undecodable_instance(blobs: list[bytes]) -> str:
    """Which instance TensorFlow cannot decode, and why (looked for once a batch failed)."""
    import tensorflow as tf

    for index, blob in enumerate(blobs):
        try:
            tf.io.decode_image(blob, channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError as exc:
            return f"instances[{index}] could not be decoded: {tf_reason(exc.message)}"
    return "an instance could not be decoded"


def tf_reason(message: str) -> str:
    """A TensorFlow error message without its graph node and op names."""
    text = re.sub(r"\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]", " ", message, flags=re.S)
    return " ".join(text.split()) or "TensorFlow cannot decode it"


def predict_body(model: ServedModel, body: bytes, limits: Limits) -> dict[str, Any]:
    """A Vertex request body in, ``{"predictions": [...]}`` out (runs in a worker thread)."""
    blobs = instance_blobs(parse_json(body), limits)
    sizes = check_images(blobs, limits)
    predictions = run_signature(model, blobs)
    if model.prediction_log is not None:
        log_instances(model, blobs, sizes, predictions)
    return {"predictions": predictions}


def log_instances(
    model: ServedModel, blobs: list[bytes], sizes: list[tuple[int, int]], predictions: list[dict[str, Any]]
) -> None:
    """One prediction-log line per instance: the whole image is the face, its crop the
    signature's own decoding of it."""
    import numpy as np

    from fer_pipeline.export import decode_to_model_input

    observed = [
        (decode_to_model_input(blob, model.side).numpy()[..., 0], np.asarray(row["scores"]))
        for blob, row in zip(blobs, predictions)
    ]
    append_to_log(model, observed, [{"box": [0, 0, width, height]} for width, height in sizes])


def append_to_log(model: ServedModel, observed: list, faces: list[dict[str, Any]]) -> None:
    """Log the faces; a log that cannot be written costs its lines, not the answer."""
    try:
        model.prediction_log.observe_faces(observed, faces)
    except FerError as exc:
        log.error("prediction log: %s", exc)


# ---- a raw photo (:detect) -----------------------------------------------------------------


@dataclass(frozen=True)
class DetectOptions:
    skip_detection: bool = False
    margin: float = 0.2


def detect_options(query: dict[str, str]) -> DetectOptions:
    """``?skip_detection=true&margin=0.3`` checked: a wrong value is a 400 naming it."""
    unknown = sorted(set(query) - {"skip_detection", "margin"})
    if unknown:
        raise ApiError(400, f"unknown query parameter(s) {', '.join(unknown)}; known: skip_detection, margin")
    options = DetectOptions()
    if "skip_detection" in query:
        value = query["skip_detection"].lower()
        if value not in ("true", "false", "1", "0"):
            raise ApiError(400, f"skip_detection={query['skip_detection']!r}: use true or false")
        options = DetectOptions(skip_detection=value in ("true", "1"), margin=options.margin)
    if "margin" in query:
        try:
            margin = float(query["margin"])
        except ValueError:
            margin = -1.0
        if not 0.0 <= margin <= 2.0:
            raise ApiError(400, f"margin={query['margin']!r}: use a number from 0 to 2 (a fraction of the face box)")
        options = DetectOptions(skip_detection=options.skip_detection, margin=margin)
    return options


def detect_body(model: ServedModel, body: bytes, options: DetectOptions, limits: Limits) -> dict[str, Any]:
    """A photo's bytes in, its faces out (runs in a worker thread)."""
    from fer_pipeline.predict import NO_FACE_NOTE, UnreadableImage, classify_photo, decode_image
    from fer_pipeline.prediction_log import Observed

    if not body:
        raise ApiError(400, "the body is empty; send the photo's bytes (curl --data-binary @photo.jpg)")
    try:
        image = decode_image(body, "the request's photo", limits.max_pixels)
    except UnreadableImage as exc:
        raise ApiError(400, str(exc).replace("(--max-pixels)", "(serve --max-pixels)")) from None
    seen = Observed()
    with keras_lock:
        faces = classify_photo(
            model.keras_model, image, skip_detection=options.skip_detection, margin=options.margin, observe=seen
        )
    if model.prediction_log is not None:
        append_to_log(model, seen, faces)
    result: dict[str, Any] = {
        "faces": [{"box": face["box"], "emotions": face["scores"], "label": face["label"]} for face in faces]
    }
    if not faces:
        result["note"] = NO_FACE_NOTE.replace("--no-detect (skip_detection=True)", "?skip_detection=true")
    return result


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


def check_model(model: ServedModel, name: str, version: str | None) -> None:
    """404 naming what is served when the path names another model or version."""
    if ":" in name:
        verb = name.partition(":")[2]
        raise ApiError(405, f":{verb} takes POST; GET /v1/models/{model.name} gives the status")
    if name != model.name:
        raise ApiError(404, f"no model named {name!r} here; this server serves {model.name!r}")
    if version is not None and version != model.version_text:
        raise ApiError(404, f"{model.name!r} has no version {version!r} here; it serves version {model.version}")


def model_status(model: ServedModel) -> dict[str, Any]:
    """TF Serving's GetModelStatusResponse as JSON."""
    return {
        "model_version_status": [
            {"version": model.version_text, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """TF Serving's GetModelMetadataResponse as JSON: the serving signature's tensors."""
    inputs = model.signature.structured_input_signature[1]
    outputs = model.signature.structured_outputs
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": model.version_text},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE_NAME: {
                        "inputs": {key: tensor_info(spec, spec.name or key) for key, spec in inputs.items()},
                        "outputs": {key: tensor_info(tensor, tensor.name) for key, tensor in outputs.items()},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


def tensor_info(tensor: Any, name: str) -> dict[str, Any]:
    from tensorflow.core.framework import types_pb2

    dims = tensor.shape.as_list() if tensor.shape.rank is not None else []
    return {
        "dtype": types_pb2.DataType.Name(tensor.dtype.as_datatype_enum),
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in dims],
            "unknown_rank": tensor.shape.rank is None,
        },
        "name": name,
    }


def add_error_handlers(app: FastAPI) -> None:
    """Every answer that is not a prediction is ``{"error": message}`` with its status."""

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{exc.detail}: {request.method} {request.url.path}"
        if exc.status_code == 404:
            message += "; routes: GET /v1/models/NAME[/metadata], POST /v1/models/NAME:predict or :detect, GET /health"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

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
