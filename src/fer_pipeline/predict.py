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

from fer_pipeline.boxes import clip_box
from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import ConfigError, FerError, UnusableFileError
from fer_pipeline.export import model_input_side
from fer_pipeline.faces import (
    DEFAULT_OPTIONS,
    MARGIN_RANGE,
    DetectorOptions,
    align_face,
    detect_faces,
    resize_to_model,
    valid_margin,
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
    """Decode an image file to a BGR (or gray) uint8 or uint16 array, turned upright as its
    EXIF orientation says (``decode_image``).

    Raises:
        UnreadableImage: missing, empty, not an image, too many pixels, or undecodable.
    """
    return read_photo(path, max_pixels)[0]


def read_photo(path: Path, max_pixels: int = MAX_PHOTO_PIXELS) -> tuple[np.ndarray, int]:
    """``read_image``'s array and the number of frames (pages) in the file: only the first
    is decoded."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # imdecode also copes with non-ASCII paths
    except OSError as exc:
        raise UnreadableImage(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_photo(data.tobytes(), str(path), max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PHOTO_PIXELS) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) to a BGR (or gray) uint8 or uint16 array,
    turned upright as its EXIF orientation says (boxes then refer to the photo as viewers
    show it); ``name`` is what messages call it (a path, or "the request's image").

    Raises:
        UnreadableImage: empty, not an image, too many pixels, undecodable, or pixels that
            are not 8- or 16-bit levels.
    """
    return decode_photo(data, name, max_pixels)[0]


def decode_photo(data: bytes, name: str, max_pixels: int = MAX_PHOTO_PIXELS) -> tuple[np.ndarray, int]:
    """``decode_image``'s array and the number of frames (pages) in the file: an animated
    GIF or a multi-page TIFF gives its first."""
    cv2 = _cv2()
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise UnreadableImage(f"cannot read {name}: empty file")
    header = _read_header(buffer)
    if header is None:  # OpenCV would decode it (Radiance HDR, PFM) with no bound on its pixels
        raise UnreadableImage(
            f"cannot read {name}: not an image whose size can be read before decoding; send JPEG, PNG, BMP or GIF"
        )
    pixels, frames = header
    if pixels > max_pixels:
        raise TooManyPixels(
            f"{name} has {pixels:,} pixels, over the {max_pixels:,}-pixel limit (--max-pixels); scale it down first"
        )
    try:
        # Not IMREAD_UNCHANGED: it skips the EXIF orientation. These keep the bit depth and the
        # colour (an alpha channel is dropped: gray ignores it anyway).
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:
        raise UnreadableImage(f"cannot decode {name}: {str(exc).strip().splitlines()[-1]}") from None
    if image is None:
        raise UnreadableImage(f"cannot read {name}: not an image format OpenCV can decode")
    if image.dtype not in (np.uint8, np.uint16):  # float or 32-bit levels: no agreed black and white
        raise UnreadableImage(
            f"cannot use {name}: its pixels are {image.dtype} values, not 8- or 16-bit gray levels; "
            "save it as an 8-bit or 16-bit image"
        )
    return image, frames


def _read_header(data: np.ndarray) -> tuple[int, int] | None:
    """Width x height and the number of frames from the file's header (PIL reads only the
    header), or None."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as image:
                width, height = image.size
                frames = _frame_count(image)
    except Image.DecompressionBombError as exc:  # PIL refuses twice its own limit at open
        numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
        return (numbers[0], 1) if numbers else None
    except Exception:  # not a format PIL knows: OpenCV may still decode it
        return None
    return width * height, frames


def _frame_count(image) -> int:
    """How many frames PIL's header walk finds (GIF and TIFF walk their frame headers, not
    their pixels); 1 where counting fails: the first frame is all that is decoded."""
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # a damaged later frame: the first may still decode
        return 1


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
    """Each face's box, clipped to the photo, and its (side, side) crop; the whole image as
    one face with ``skip_detection``. The crop is cut around the whole detected box (a face
    cut off by the edge keeps its framing); the reported box is the part inside the photo."""
    if skip_detection:
        return [(0, 0, gray.shape[1], gray.shape[0])], [resize_to_model(gray, side)]
    faces = detect_faces(gray, detector)
    height, width = gray.shape[:2]
    return (
        [clip_box(face.box, width, height) for face in faces],
        [align_face(gray, face, side, margin) for face in faces],
    )


def check_margin(margin: float) -> None:
    if valid_margin(margin) is None:
        raise ConfigError(f"margin must be {MARGIN_RANGE}, got {margin}.")


class ModelOutputError(UnusableFileError):
    """The model's outputs are not class probabilities; ``problem`` says what was found."""

    def __init__(self, problem: str, model_name: str = "The model"):
        self.problem = problem
        super().__init__(
            f"{model_name} does not output class probabilities ({problem}; each face needs {len(CLASSES)} "
            "finite numbers from 0 to 1 summing to 1); pass a model.keras written by training, whose last "
            "layer is a softmax."
        )


# Float32 softmax outputs sum to 1 within about 1e-6; a model without one is far off.
PROBABILITY_SUM_TOLERANCE = 1e-3


def check_probabilities(probabilities: np.ndarray) -> None:
    """Refuse model outputs that are not class probabilities (NaN, logits), before any of
    them is printed, logged or drawn.

    Raises:
        ModelOutputError: naming the first offending value.
    """
    if not np.all(np.isfinite(probabilities)):
        raise ModelOutputError("it gave NaN or infinite scores")
    low, high = float(probabilities.min()), float(probabilities.max())
    if low < 0.0 or high > 1.0 + PROBABILITY_SUM_TOLERANCE:
        raise ModelOutputError(f"it gave scores from {low:.6g} to {high:.6g}")
    sums = probabilities.sum(axis=-1)
    worst = float(sums[np.argmax(np.abs(sums - 1.0))])
    if abs(worst - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ModelOutputError(f"a face's scores sum to {worst:.6g}")


def classify_crops(model, crops: list[np.ndarray]) -> np.ndarray:
    """The model's class probabilities for ``crops``, in one call; checked (``check_probabilities``)."""
    probabilities = np.asarray(model.predict(np.stack(crops)[..., np.newaxis], verbose=0), dtype=np.float64)
    check_probabilities(probabilities)
    return probabilities


def check_annotate_dir(annotate_dir: Path | None, image_paths: Iterable[Path | str]) -> None:
    """Refuse an annotation folder that holds an input photo: the annotated copies
    (``<stem>.png``) could replace it or a photo beside it.

    Raises:
        ConfigError: naming the folder and the photo in it.
    """
    if annotate_dir is None:
        return
    folder = Path(annotate_dir).resolve()
    for path in image_paths:
        if Path(path).resolve().parent == folder:
            raise ConfigError(
                f"--annotate {annotate_dir} is the folder of the input photo {path}; the annotated copies could "
                "replace photos there: choose a separate folder."
            )


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
        or only the first frame of an animated or multi-page file was used, and
        ``"error"`` (naming the file) when it could not be read. Boxes lie inside the photo
        as viewers show it (EXIF orientation applied).

    Raises:
        ConfigError: a bad option, or ``annotate_dir`` holding an input photo (nothing written).
        ModelOutputError: the model's outputs are not class probabilities (nothing written).
    """
    check_margin(margin)
    if max_pixels <= 0:
        raise FerError(f"max_pixels must be a positive number of pixels, got {max_pixels}.")
    image_paths = list(image_paths)
    check_annotate_dir(annotate_dir, image_paths)
    side = model_input_side(model)
    results: list[dict[str, Any]] = []
    crops: list[np.ndarray] = []
    owners: list[tuple[dict[str, Any], list[int]]] = []  # (result, box) per crop
    images: dict[int, np.ndarray] = {}  # result index -> image, kept only for annotation

    for path in image_paths:
        entry: dict[str, Any] = {"image": str(path), "faces": []}
        results.append(entry)
        try:
            image, frames = read_photo(Path(path), max_pixels)
        except UnreadableImage as exc:
            entry["error"] = str(exc)
            log.warning(entry["error"])
            continue
        boxes, image_crops = face_crops(
            to_gray(image), side, skip_detection=skip_detection, margin=margin, detector=detector
        )
        crops.extend(image_crops)
        owners.extend((entry, list(box)) for box in boxes)
        notes = [frames_note(frames)] if frames > 1 else []
        if not boxes:
            notes.append(NO_FACE_NOTE)
        if notes:
            entry["note"] = "; ".join(notes)
        if annotate_dir is not None:
            images[len(results) - 1] = image

    if crops:
        probabilities = classify_crops(model, crops)
        for (entry, box), crop, probs in zip(owners, crops, probabilities):
            entry["faces"].append(face_result(box, probs))
            if observe is not None:
                observe(crop, probs)

    if annotate_dir is not None:
        write_annotations(results, images, Path(annotate_dir))
    return results


def frames_note(frames: int) -> str:
    """The note of a photo with more than one frame (an animated GIF, a multi-page TIFF)."""
    return f"only the first of its {frames} frames (pages) was classified"


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
    probabilities = classify_crops(model, crops)
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
    """Write annotated PNGs (``<stem>.png``; ``<stem>-2.png``, ``-3``... when the name is
    taken in this run); record the path. The folder is made with the first one."""
    cv2 = _cv2()
    used: set[str] = set()
    for index, image in images.items():
        entry = results[index]
        name = unused_name(Path(entry["image"]).stem, used)
        annotate_dir.mkdir(parents=True, exist_ok=True)
        target = annotate_dir / name
        if not cv2.imwrite(str(target), annotate_image(image, entry["faces"])):
            raise FerError(f"Could not write the annotated image {target}; check that the folder is writable.")
        entry["annotated"] = str(target)


def unused_name(stem: str, used: set[str]) -> str:
    """``<stem>.png``, or ``<stem>-2.png``, ``-3``... the first not in ``used`` (compared
    case-blind: one file on macOS and Windows), which it is added to."""
    name, number = f"{stem}.png", 1
    while name.casefold() in used:
        number += 1
        name = f"{stem}-{number}.png"
    used.add(name.casefold())
    return name


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
        FerError: the reference matches nothing; the message says what was tried (exit 2).
        UnusableFileError: a damaged registry index, a registered version whose files are
            gone, or a model that does not take (side, side, 1) images or give the classes
            (exit 1).
    """
    from fer_pipeline.registry import resolve_registered

    if ref.startswith("gs://"):
        with tempfile.TemporaryDirectory(prefix="fer-model-") as tmp:
            return checked_model(download_gcs_model(ref, Path(tmp)), ref)
    if Path(ref).exists():
        return checked_model(Path(ref), ref)
    version = resolve_registered(ref, registry_root, tried="not a local path, not a gs:// URI,")
    log.info("Loading %s from %s", version.ref, version.path)
    return checked_model(version.path, f"{version.ref} ({version.path})")


def checked_model(path: Path, name: str):
    """The Keras model at ``path``, refused unless it takes (side, side, 1) images and gives
    the classes (``model_input_side``); ``name`` is what the message calls it."""
    from fer_pipeline.export import load_keras_model

    model = load_keras_model(path)
    model_input_side(model, source=name)
    return model


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
