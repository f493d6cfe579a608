"""Classify the emotions of the faces in photos: read, detect, classify, annotate.

faces.py finds the faces (MTCNN, BlazeFace and CenterFace merged by default, OpenCV's Haar cascade
as the fast option; ``DetectorOptions``) and cuts each out as the model was trained:
turned so the eyes are level, a square grown by ``margin``, gray, resized to the model's
input (48x48). All faces of all images go to the model in one batch. ``skip_detection`` treats each whole image as
one face crop, for inputs that already are FER-style crops.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import FerError, UnusableFileError
from fer_pipeline.export import model_input_side
from fer_pipeline.faces import (
    DEFAULT_OPTIONS,
    MAX_MARGIN,
    DetectorOptions,
    align_face,
    detect_faces,
    resize_to_model,
)
from fer_pipeline.faces import crop_face as crop_face  # callers of predict.crop_face keep working

log = logging.getLogger(__name__)

# Sees each face the model classified: (the (side, side) float32 crop, its class probabilities).
Observer = Callable[[np.ndarray, np.ndarray], None]

NO_FACE_NOTE = (
    "no face found; if the image is already a face crop (FER-style, e.g. 48x48), "
    "classify it whole with --no-detect (skip_detection=True)"
)


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # the `detect` extra
        raise FerError("Face detection needs OpenCV: pip install 'fer-pipeline[detect]'.") from exc
    return cv2


# Photos above this many pixels are refused before decoding: decoding allocates width x
# height x channels bytes (100 Mpx: 300 MB in colour), and OpenCV's own limit raises.
MAX_PHOTO_PIXELS = 100_000_000


class UnreadableImage(UnusableFileError):
    """One input photo cannot be used; the message names it and why."""


class TooManyPixels(UnreadableImage):
    """A photo whose header declares more pixels than the limit: refused before decoding."""


def read_image(path: Path, max_pixels: int = MAX_PHOTO_PIXELS) -> np.ndarray:
    """Decode an image file to a BGR (or gray) uint8 array.

    Raises:
        UnreadableImage: missing, empty, not an image, too many pixels, or undecodable.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # imdecode also copes with non-ASCII paths
    except OSError as exc:
        raise UnreadableImage(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data.tobytes(), str(path), max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PHOTO_PIXELS) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) to a BGR (or gray) uint8 array; ``name`` is
    what messages call it (a path, or "the request's image").

    Raises:
        UnreadableImage: empty, not an image, too many pixels, or undecodable.
    """
    cv2 = _cv2()
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise UnreadableImage(f"cannot read {name}: empty file")
    pixels = _declared_pixels(buffer)
    if pixels is None:  # OpenCV would decode it (Radiance HDR, PFM) with no bound on its pixels
        raise UnreadableImage(
            f"cannot read {name}: not an image whose size can be read before decoding; send JPEG, PNG, BMP or GIF"
        )
    if pixels > max_pixels:
        raise TooManyPixels(
            f"{name} has {pixels:,} pixels, over the {max_pixels:,}-pixel limit (--max-pixels); scale it down first"
        )
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise UnreadableImage(f"cannot decode {name}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise UnreadableImage(f"cannot read {name}: not an image format OpenCV can decode")
    return image


def _declared_pixels(data: np.ndarray) -> int | None:
    """Width x height from the file's header (PIL reads only the header), or None."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:  # PIL refuses twice its own limit at open
        numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
        return numbers[0] if numbers else None
    except Exception:  # not a format PIL knows: OpenCV may still decode it
        return None
    return width * height


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray uint8 from gray, BGR or BGRA (16-bit inputs scaled down to 8 bits)."""
    cv2 = _cv2()
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def face_crops(
    gray: np.ndarray, side: int, *, skip_detection: bool, margin: float, detector: DetectorOptions
) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray]]:
    """Each face's box and its (side, side) crop; the whole image as one face with ``skip_detection``."""
    if skip_detection:
        return [(0, 0, gray.shape[1], gray.shape[0])], [resize_to_model(gray, side)]
    faces = detect_faces(gray, detector)
    return [face.box for face in faces], [align_face(gray, face, side, margin) for face in faces]


def check_margin(margin: float) -> None:
    """NaN fails the comparison too, and an infinite margin has no crop to cut."""
    if not 0.0 <= margin <= MAX_MARGIN:
        raise FerError(f"margin must be from 0 to {MAX_MARGIN:g} (a fraction of the face box), got {margin}.")


def predict_images(
    model,
    image_paths: Iterable[Path | str],
    *,
    skip_detection: bool = False,
    annotate_dir: Path | None = None,
    margin: float = 0.2,
    max_pixels: int = MAX_PHOTO_PIXELS,
    observe: Observer | None = None,
    detector: DetectorOptions = DEFAULT_OPTIONS,
) -> list[dict[str, Any]]:
    """Detect faces in each image and classify their emotions with one model call.

    Args:
        model: a loaded Keras model taking (side, side, 1) raw gray pixels 0..255 and
            returning 7 class probabilities in ``CLASSES`` order.
        image_paths: image files (anything OpenCV reads: JPEG, PNG, BMP, WebP, TIFF...).
        skip_detection: classify each whole image as one face (FER-style crops).
        annotate_dir: when given, write each readable image there with boxes and labels.
        margin: the crop is ``1 + margin`` times the detected box, centred on it.
        max_pixels: photos with more pixels are refused unread (an "error" entry).
        observe: called with each face's crop (what the model saw) and probabilities
            (a prediction log, say).
        detector: which face detector and which of its faces to keep (the ensemble by default).

    Returns:
        One dict per image, in order: ``{"image": path, "faces": [{"box": [x, y, w, h],
        "scores": {class: p}, "label": class}]}``, plus ``"note"`` when no face was found
        and ``"error"`` (naming the file) when it could not be read.
    """
    check_margin(margin)
    if max_pixels <= 0:
        raise FerError(f"max_pixels must be a positive number of pixels, got {max_pixels}.")
    side = model_input_side(model)
    results: list[dict[str, Any]] = []
    crops: list[np.ndarray] = []
    owners: list[tuple[dict[str, Any], list[int]]] = []  # (result, box) per crop
    images: dict[int, np.ndarray] = {}  # result index -> image, kept only for annotation

    for path in image_paths:
        entry: dict[str, Any] = {"image": str(path), "faces": []}
        results.append(entry)
        try:
            image = read_image(Path(path), max_pixels)
        except UnreadableImage as exc:
            entry["error"] = str(exc)
            log.warning(entry["error"])
            continue
        boxes, image_crops = face_crops(
            to_gray(image), side, skip_detection=skip_detection, margin=margin, detector=detector
        )
        crops.extend(image_crops)
        owners.extend((entry, list(box)) for box in boxes)
        if not boxes:
            entry["note"] = NO_FACE_NOTE
        if annotate_dir is not None:
            images[len(results) - 1] = image

    if crops:
        probabilities = np.asarray(model.predict(np.stack(crops)[..., np.newaxis], verbose=0), dtype=np.float64)
        for (entry, box), crop, probs in zip(owners, crops, probabilities):
            entry["faces"].append(face_result(box, probs))
            if observe is not None:
                observe(crop, probs)

    if annotate_dir is not None:
        write_annotations(results, images, Path(annotate_dir))
    return results


def classify_photo(
    model,
    image: np.ndarray,
    *,
    skip_detection: bool = False,
    margin: float = 0.2,
    observe: Observer | None = None,
    detector: DetectorOptions = DEFAULT_OPTIONS,
) -> list[dict[str, Any]]:
    """The faces of one decoded photo (``decode_image``'s array), left to right, each as
    ``face_result`` gives it: ``{"box", "scores", "label"}``; [] when none was found.
    ``observe`` is called with each face's crop and probabilities, and ``detector`` picks
    the face detector, as in ``predict_images``."""
    check_margin(margin)
    side = model_input_side(model)
    boxes, crops = face_crops(to_gray(image), side, skip_detection=skip_detection, margin=margin, detector=detector)
    if not crops:
        return []
    probabilities = np.asarray(model.predict(np.stack(crops)[..., np.newaxis], verbose=0), dtype=np.float64)
    if observe is not None:
        for crop, probs in zip(crops, probabilities):
            observe(crop, probs)
    return [face_result(list(box), probs) for box, probs in zip(boxes, probabilities)]


def face_result(box: list[int], probabilities: np.ndarray) -> dict[str, Any]:
    """One face's JSON-ready result."""
    return {
        "box": [int(v) for v in box],
        "scores": {name: round(float(p), 6) for name, p in zip(CLASSES, probabilities)},
        "label": CLASSES[int(np.argmax(probabilities))],
    }


def annotate_image(image: np.ndarray, faces: list[dict[str, Any]]) -> np.ndarray:
    """A BGR copy of ``image`` with each face's box and ``label p`` drawn on it."""
    cv2 = _cv2()
    canvas = image
    if canvas.dtype != np.uint8 or canvas.ndim == 2 or canvas.shape[2] != 3:
        canvas = cv2.cvtColor(to_gray(image), cv2.COLOR_GRAY2BGR)
    else:
        canvas = canvas.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = face["box"]
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), thickness)
        text = f"{face['label']} {face['scores'][face['label']]:.2f}"
        font_scale = max(0.35, w / 250)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        text_y = y - baseline - 2 if y - th - baseline - 2 >= 0 else y + h + th + 2
        cv2.rectangle(canvas, (x, text_y - th - 2), (x + tw + 2, text_y + baseline), (0, 255, 0), cv2.FILLED)
        cv2.putText(canvas, text, (x + 1, text_y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness)
    return canvas


def write_annotations(results: list[dict[str, Any]], images: dict[int, np.ndarray], annotate_dir: Path) -> None:
    """Write annotated PNGs (``<stem>.png``, ``<stem>-<n>.png`` on a name clash); record the path."""
    cv2 = _cv2()
    annotate_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for index, image in images.items():
        entry = results[index]
        stem = Path(entry["image"]).stem
        name = f"{stem}.png" if f"{stem}.png" not in used else f"{stem}-{index}.png"
        used.add(name)
        target = annotate_dir / name
        if not cv2.imwrite(str(target), annotate_image(image, entry["faces"])):
            raise FerError(f"Could not write the annotated image {target}; check that the folder is writable.")
        entry["annotated"] = str(target)


# ---- loading a model from a path, gs:// URI or registry reference -----------------


def load_model_ref(ref: str, registry_root: Path | None = None):
    """Load a Keras model from a local path, a ``gs://`` URI or a registry reference.

    Args:
        ref: a folder holding ``model.keras`` or a ``.keras`` file; ``gs://bucket/...``
            pointing at either; or ``NAME``, ``NAME@champion``, ``NAME@challenger``,
            ``NAME@<version>`` in the local registry.
        registry_root: the local registry folder; None uses ``FER_REGISTRY`` or
            ``build/registry``.

    Raises:
        FerError: the reference matches nothing; the message says what was tried.
    """
    from fer_pipeline.export import load_keras_model
    from fer_pipeline.registry import LocalRegistry, RegistryError, default_registry_root, parse_ref

    if ref.startswith("gs://"):
        with tempfile.TemporaryDirectory(prefix="fer-model-") as tmp:
            return load_keras_model(download_gcs_model(ref, Path(tmp)))
    if Path(ref).exists():
        return load_keras_model(Path(ref))
    registry = LocalRegistry(registry_root if registry_root is not None else default_registry_root())
    try:
        parse_ref(ref)
        version = registry.resolve(ref)
    except RegistryError as exc:
        raise FerError(
            f"Model {ref!r} is not a local path, not a gs:// URI, and not in the registry at {registry.root}: {exc}"
        ) from exc
    log.info("Loading %s from %s", version.ref, version.path)
    return load_keras_model(version.path)


def download_gcs_model(uri: str, dest: Path) -> Path:
    """Download ``gs://.../x.keras`` or ``gs://.../<folder>/model.keras`` into ``dest``.

    Returns:
        The local ``.keras`` file.
    """
    from fer_pipeline import storage
    from fer_pipeline.export import KERAS_MODEL_FILE

    bucket_name, _, blob_name = uri[len("gs://") :].partition("/")
    if not bucket_name:
        raise FerError(f"{uri!r} has no bucket; use gs://BUCKET/path/model.keras or gs://BUCKET/folder.")
    if not blob_name.endswith(".keras"):
        blob_name = f"{blob_name.rstrip('/')}/{KERAS_MODEL_FILE}".lstrip("/")
    # storage.py is the one module that talks to Cloud Storage (retries, error messages).
    return storage.download_object(f"gs://{bucket_name}/{blob_name}", dest / Path(blob_name).name)
