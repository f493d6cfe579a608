"""The bodies ``fer-pipeline serve`` reads and answers: Vertex's JSON for :predict (checked,
then run through the exported signature), a raw photo for :detect, and the prediction log
lines both append. Everything here runs without FastAPI; a refusal is an ``ApiError``."""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fer_pipeline.errors import FerError
from fer_pipeline.export import INPUT_NAME, SIGNATURE_NAME
from fer_pipeline.faces import MARGIN_RANGE, valid_margin
from fer_pipeline.serve_limits import Limits

if TYPE_CHECKING:
    from fer_pipeline.serve_model import ServedModel

log = logging.getLogger("fer_pipeline.serve")  # the server's logger, one name for all its modules

# What tf.io.decode_image (the exported signature) decodes, as PIL names the formats;
# MPO is the multi-picture JPEG many cameras write.
SIGNATURE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP")
HUGE_IMAGE = "huge"  # image_header's format for a header declaring a decompression bomb
# Keras' predict keeps per-call state on the model: :detect calls it one at a time.
keras_lock = threading.Lock()


class ApiError(Exception):
    """A request the server refuses: the status and a message naming the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


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
        margin = valid_margin(query["margin"])
        if margin is None:
            raise ApiError(400, f"margin={query['margin']!r}: use {MARGIN_RANGE}")
        options = DetectOptions(skip_detection=options.skip_detection, margin=margin)
    return options


def detect_body(model: ServedModel, body: bytes, options: DetectOptions, limits: Limits) -> dict[str, Any]:
    """A photo's bytes in, its faces out (runs in a worker thread)."""
    from fer_pipeline.predict import NO_FACE_NOTE, TooManyPixels, UnreadableImage, classify_photo, decode_image
    from fer_pipeline.prediction_log import Observed

    if not body:
        raise ApiError(400, "the body is empty; send the photo's bytes (curl --data-binary @photo.jpg)")
    try:
        image = decode_image(body, "the request's photo", limits.max_pixels)
    except UnreadableImage as exc:  # over the pixel limit: 413, as :predict answers
        status = 413 if isinstance(exc, TooManyPixels) else 400
        raise ApiError(status, str(exc).replace("(--max-pixels)", "(serve --max-pixels)")) from None
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
