"""Find faces in a photo and cut them out the way FER-2013's crops look.

Four detectors, picked by ``DetectorOptions.name``:

- ``ensemble`` (default): six passes merged, each face counted once: MTCNN on the photo
  and on its mirror image; MediaPipe's BlazeFace back-camera and front-camera (close-up)
  models on the photo (``blazeface.py``: two small models shipped in the package, run by
  OpenCV; faces scored ``blazeface.MIN_SCORE`` or more, with eye landmarks); the
  back-camera model on four zoomed corner tiles, for faces MTCNN scored just under
  min_confidence (TILE_SIDE and the constants after it); and CenterFace on the photo at
  its own size (``centerface.py``: a model shipped in the package, run by OpenCV; faces
  scored ``centerface.MIN_SCORE`` or more that no other pass kept). BlazeFace finds faces MTCNN
  misses, the mirror pass some profiles, the tiles small faces, CenterFace turned and
  partly hidden ones. The most faces found of the four: 96.8% of 2,626 faces over the
  bench's fifteen face sets (97.3% on the nine never looked at while choosing it; every
  set but one 95.7-99.1%), against one MTCNN pass's 89.8% on the first ten; a few more
  false ones (0.071 a photo), about three times ``mtcnn``'s time.
- ``mtcnn``: the MTCNN cascade of the ``mtcnn`` package (weights in its wheel, runs on
  TensorFlow), loaded once per process. It gives a confidence and five landmarks; the
  eyes are used to rotate each face upright before cropping. Where time per photo
  matters more than the last faces.
- ``mtcnn-tta``: MTCNN run on three copies of the photo, their faces merged (test-time
  augmentation): the photo, its mirror image and a darker copy. A face MTCNN misses in one
  copy (a profile, a washed-out face) it sometimes finds in another; each face is counted
  once. More faces found, a few more false ones, about three times ``mtcnn``'s time.
- ``haar``: OpenCV's bundled frontal-face Haar cascade: no TensorFlow and no landmarks (no
  rotation), about twice as fast as ``mtcnn``, but it finds fewer faces and more false
  ones: the fallback where speed, or MTCNN's TensorFlow and seconds of loading, matter more.

Each face becomes a square ``1 + margin`` times its box, centred on it, gray, resized to
the model's side (48): FER-2013's framing. docs/benchmarks.md ("Face detection") has the
measured recall, false positives and speed of each (``DETECTOR_RECALL`` below).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fer_pipeline.boxes import box_iou, centre_inside
from fer_pipeline.errors import ConfigError, FerError

DETECTORS = ("ensemble", "mtcnn", "mtcnn-tta", "haar")  # the default first
CASCADE_FILE = "haarcascade_frontalface_default.xml"
# Detection cost grows with pixels; larger photos are searched at this size (boxes are
# mapped back to the photo's pixels). Faces smaller than min_face after that are lost.
DETECTION_MAX_SIDE = 1024
MAX_MARGIN = 2.0  # the widest crop around a face box, as a fraction of its side (predict and serve)


MARGIN_RANGE = f"a number from 0 to {MAX_MARGIN:g} (a fraction of the face box)"


def valid_margin(value: float | str) -> float | None:
    """The margin ``value`` reads as, or None outside 0..MAX_MARGIN: NaN and text fail too,
    and an infinite margin has no crop to cut. The one check of predict, serve and the CLI."""
    try:
        margin = float(value)
    except (TypeError, ValueError):
        return None
    return margin if 0.0 <= margin <= MAX_MARGIN else None


# The smallest face each detector can see in the searched image: MTCNN's PNet window
# is 12 pixels, the cascade's 24.
SMALLEST_WINDOW = {"mtcnn": 12, "ensemble": 12, "mtcnn-tta": 12, "haar": 24}
# MTCNN is always asked for faces from 20 pixels (its own default), and the photo is
# scaled so that min_face lands there: mtcnn 1.0.0's image pyramid is sized for that
# start, and finds nothing at all from min_face_size of about 25 up (its smallest level
# gets under PNet's 12-pixel window and the error is taken for "no face").
MTCNN_MIN_FACE = 20
# Raw 48x48 FER-2013 crops given whole as photos: MTCNN finds a face in 39 of 60 searched
# at half size (min_face 40), 55 of 60 searched at 96 pixels (docs/benchmarks.md).
MTCNN_SMALL_PHOTO_SIDE = 96
# The first two stages' thresholds (the last stage's is min_confidence). RNet at 0.4
# (the package's default is 0.7) finds 3% more of the faces for no more false positives
# once min_confidence filters; docs/benchmarks.md, "Face detection", has the sweep.
MTCNN_THRESHOLDS = {"threshold_pnet": 0.6, "threshold_rnet": 0.4}
# mtcnn-tta's darker copy: gray levels (0..1) raised to this power, so washed-out faces
# regain contrast. Merged with one pass on the bench's seed-0 face set it found 3 more
# faces, a brighter copy (gamma 0.6) none; copies turned +-20 degrees found as many there
# and more on seed 1, in two passes (docs/benchmarks.md, "second detectors").
MTCNN_TTA_GAMMA = 1.6
# A face found in a later copy is one already kept when their boxes overlap at this IoU
# or either's centre lies inside the other (bench/face_detection.py counts a face found at
# IoU 0.3 too).
MERGE_IOU = 0.3
# The ensemble's zoomed pass: BlazeFace on four overlapping corner tiles, each this fraction
# of the searched photo's width and height (1 / 0.6: faces 1.7 times larger in its input),
# for photos of at least TILE_MIN_PHOTO_SIDE pixels (10 MTCNN_MIN_FACE faces across). A tile
# face scored TILE_MIN_SCORE or more is kept only where MTCNN, too, saw a face scored
# MTCNN_WEAK_CONFIDENCE or more (under min_confidence): alone, tiles at 0.6 tripled the false
# positives. Chosen on the bench's face sets of seeds 0-4 and checked on seeds 5-9
# (docs/benchmarks.md, "Face detection: the ensemble's front-camera and zoomed passes").
TILE_SIDE = 0.6
TILE_MIN_PHOTO_SIDE = 10 * MTCNN_MIN_FACE
TILE_MIN_SCORE = 0.4
MTCNN_WEAK_CONFIDENCE = 0.5
# Eyes closer to level than this are left as they are: a sub-degree turn changes nothing
# visible at 48x48 and only adds interpolation blur.
MIN_ROTATION_DEGREES = 1.0

# Measured by bench/face_detection.py (docs/benchmarks.md, "Face detection"), with each
# detector's default options; the model card quotes these.
FACE_SET = (
    "124 real FER-2013 test faces (60-200 px, turned up to 15 degrees, brightness and contrast changed) "
    "pasted into 56 photos over gradient, noise, texture and non-face photo backgrounds, plus 64 photos "
    "without a face; a face is found when a box overlaps it at IoU >= 0.3; seed 0, 2 AMD EPYC cores, 2026-11-30"
)
DETECTOR_RECALL: dict[str, dict[str, object]] = {
    "ensemble": {  # the default; 96.8% over fifteen face sets (seeds 0-14), 97.3% on the nine never looked at
        "recall": 0.968,  # 120 of 124
        "false_positives_per_photo": 0.075,  # 9 in 120 photos
        "ms_per_photo": 367,
        "settings": (
            "min_confidence 0.7, min_face 40 (the defaults); BlazeFace back and front models >= 0.6, back model "
            "on corner tiles >= 0.4 where MTCNN scored 0.5-0.7; CenterFace on the photo >= 0.3; timed alone on "
            "2 Intel Xeon cores (one-pass MTCNN 127 ms in the same run); "
            "on fourteen more face sets (seeds 1-14; 2-9 and 14 never looked at while choosing it) 94.8-99.1% "
            "per set, 2542 of 2626 faces over all fifteen (96.8%) at 0.071 false positives per photo"
        ),
        "face_set": FACE_SET,
    },
    "mtcnn": {
        "recall": 0.911,  # 113 of 124
        "false_positives_per_photo": 0.033,  # 4 in 120 photos
        "ms_per_photo": 87,
        "settings": "min_confidence 0.7, min_face 40 (the defaults)",
        "face_set": FACE_SET,
    },
    "mtcnn-tta": {
        "recall": 0.952,  # 118 of 124
        "false_positives_per_photo": 0.042,  # 5 in 120 photos
        "ms_per_photo": 460,
        "settings": (
            "min_confidence 0.7, min_face 40 (the defaults); timed on a loaded machine, where one-pass MTCNN "
            "took 162 ms (87 ms in a quieter run); on a second face set (seed 1) 91.1% at 0.092"
        ),
        "face_set": FACE_SET,
    },
    "haar": {
        "recall": 0.685,  # 85 of 124
        "false_positives_per_photo": 0.150,  # 18 in 120 photos
        "ms_per_photo": 42,
        "settings": "min_face 40 (the default)",
        "face_set": FACE_SET,
    },
}


@dataclass(frozen=True)
class DetectorOptions:
    """Which detector, and which of its faces to keep.

    Attributes:
        name: ``"ensemble"`` (default: MTCNN, BlazeFace and CenterFace passes merged, module
            docstring), ``"mtcnn"`` (one MTCNN pass), ``"mtcnn-tta"`` (MTCNN on the photo,
            its mirror image and a darker copy, merged) or ``"haar"``.
        min_confidence: MTCNN faces below this confidence (0..1, its last stage's
            probability) are dropped; the Haar cascade has no confidence and ignores it,
            and ``ensemble``'s BlazeFace and CenterFace passes keep faces at their own
            scores (``blazeface.MIN_SCORE``, 0.6; TILE_MIN_SCORE on tiles;
            ``centerface.MIN_SCORE``, 0.3) whatever this is.
        min_face: faces whose box is smaller than this many pixels (the larger side, in
            the photo's pixels) are dropped, and not searched for: MTCNN searches the
            photo scaled by 20 / min_face, so a larger min_face is also faster.

    The defaults (0.7, 40) were chosen on the face set of bench/face_detection.py, where
    no face is under 60 pixels: pass a smaller min_face for photos of small faces.
    """

    name: str = "ensemble"
    min_confidence: float = 0.7
    min_face: int = 40

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ConfigError(
                f"detector (--detector) must be one of {', '.join(DETECTORS)}, got {self.name!r}; pick one of those."
            )
        if isinstance(self.min_confidence, bool) or not isinstance(self.min_confidence, (int, float)):
            raise ConfigError(
                f"min_confidence (--min-confidence) must be a number from 0 to 1, got {self.min_confidence!r}."
            )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(
                f"min_confidence (--min-confidence) must be from 0 to 1 (MTCNN's face probability), got {self.min_confidence}; "
                "lower it to find more faces, raise it for fewer false ones."
            )
        if isinstance(self.min_face, bool) or not isinstance(self.min_face, int):
            raise ConfigError(f"min_face (--min-face) must be a whole number of pixels, got {self.min_face!r}.")
        if self.min_face < SMALLEST_WINDOW["mtcnn"]:
            raise ConfigError(
                f"min_face (--min-face) must be at least {SMALLEST_WINDOW['mtcnn']} pixels (the smallest face MTCNN sees), "
                f"got {self.min_face}; scale small photos up instead."
            )


DEFAULT_OPTIONS = DetectorOptions()


@dataclass(frozen=True)
class Face:
    """One detected face: its box ``(x, y, w, h)`` in the photo's pixels, the detector's
    confidence (None for Haar), and the eye centres ``((x, y), (x, y))``, the eye on the
    photo's left first (None for Haar)."""

    box: tuple[int, int, int, int]
    confidence: float | None = None
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None


def cv2_module():
    try:
        import cv2
    except ImportError as exc:  # the `detect` extra
        raise FerError("Face detection needs OpenCV: pip install 'fer-pipeline[detect]'.") from exc
    return cv2


# ---- detection -------------------------------------------------------------------------


def detect_faces(gray: np.ndarray, options: DetectorOptions = DEFAULT_OPTIONS) -> list[Face]:
    """The faces in a gray uint8 photo, left to right, boxes in its pixel coordinates."""
    cv2_module()  # every detector runs on OpenCV: one clear line if it is missing, whatever the photo
    found = detect_in_search_copy(gray, options)
    if options.name == "ensemble":  # its last pass, on the photo itself: adds faces none of the others kept
        found = merge_faces(found, [f for f in centerface_faces(gray) if max(f.box[2:]) >= options.min_face])
    return sorted(found, key=lambda f: f.box)


def detect_in_search_copy(gray: np.ndarray, options: DetectorOptions) -> list[Face]:
    """The faces found in the photo resized by ``search_scale`` (all the passes of every
    detector but the ensemble's CenterFace), in the photo's pixels, min_face applied."""
    scale = search_scale(gray.shape, options)
    gray = resized(gray, scale)
    if min(gray.shape) < SMALLEST_WINDOW[options.name]:
        return []
    if options.name == "ensemble":
        found = detect_ensemble(gray, options.min_confidence)
    elif options.name == "mtcnn-tta":
        found = detect_mtcnn_tta(gray, options.min_confidence)
    elif options.name == "mtcnn":
        found = detect_mtcnn(gray, options.min_confidence)
    else:
        found = detect_haar(gray, max(SMALLEST_WINDOW["haar"], int(round(options.min_face * scale))))
    faces = [scaled_face(face, 1.0 / scale) for face in found]
    return [f for f in faces if max(f.box[2:]) >= options.min_face]


def resized(gray: np.ndarray, scale: float) -> np.ndarray:
    """``gray`` resized by ``scale`` (averaging when it shrinks), each side at least one pixel."""
    if scale == 1.0:
        return gray
    cv2 = cv2_module()
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    height, width = gray.shape[:2]
    if round(min(height, width) * scale) < 1:  # a strip (5000x1) shrunk: OpenCV refuses a side of 0
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(gray, size, interpolation=interpolation)
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interpolation)


def search_scale(shape: tuple[int, ...], options: DetectorOptions) -> float:
    """How much the photo is resized before the search: large photos down to
    DETECTION_MAX_SIDE; for MTCNN also so that a min_face face is MTCNN_MIN_FACE pixels,
    but photos never below MTCNN_SMALL_PHOTO_SIDE on their short side (small ones are
    scaled up to it)."""
    largest = DETECTION_MAX_SIDE / max(shape)
    if options.name == "haar":
        return min(1.0, largest)
    # A small photo is likely one face filling it: searched at MTCNN_SMALL_PHOTO_SIDE.
    return min(largest, max(MTCNN_MIN_FACE / options.min_face, MTCNN_SMALL_PHOTO_SIDE / min(shape)))


def detect_haar(gray: np.ndarray, min_window: int) -> list[Face]:
    # No histogram equalisation: on FER-2013 faces pasted into scenes it cost a fifth of
    # the detections (66 -> 45 of 100 found).
    found = load_haar().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_window, min_window))
    return [Face(tuple(int(v) for v in box)) for box in np.asarray(found).reshape(-1, 4)]


def detect_mtcnn(gray: np.ndarray, min_confidence: float) -> list[Face]:
    cv2 = cv2_module()
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)  # MTCNN takes 3 channels; gray in each
    found = load_mtcnn().detect_faces(
        rgb, min_face_size=MTCNN_MIN_FACE, threshold_onet=min_confidence, **MTCNN_THRESHOLDS
    )
    faces = []
    for item in found:
        if float(item["confidence"]) < min_confidence:  # the last stage's threshold, checked here too
            continue
        keypoints = item["keypoints"]
        eyes = sorted((float(x), float(y)) for x, y in (keypoints["left_eye"], keypoints["right_eye"]))
        faces.append(Face(tuple(int(v) for v in item["box"]), float(item["confidence"]), (eyes[0], eyes[1])))
    return faces


def detect_mtcnn_tta(gray: np.ndarray, min_confidence: float) -> list[Face]:
    """MTCNN's faces in the photo, then those it finds only in the photo's mirror image,
    then those only in a darker copy (gray ** MTCNN_TTA_GAMMA)."""
    found = detect_mtcnn_and_mirror(gray, min_confidence)
    return merge_faces(found, detect_mtcnn(gamma_corrected(gray, MTCNN_TTA_GAMMA), min_confidence))


def detect_ensemble(gray: np.ndarray, min_confidence: float) -> list[Face]:
    """The merged passes of the module docstring but the last (CenterFace's, ``detect_faces``),
    in that order: a later pass adds only faces no earlier one found. A face MTCNN scores
    under ``min_confidence`` but at MTCNN_WEAK_CONFIDENCE or more is kept only where
    BlazeFace, on a zoomed corner tile, finds it too (two weak detectors agreeing)."""
    from fer_pipeline import blazeface

    strong, weak = mtcnn_and_mirror_by_confidence(gray, min_confidence)
    passes = (
        [blaze_face(d) for d in blazeface.detect(gray)],
        [blaze_face(d) for d in blazeface.detect(gray, model=blazeface.FRONT)],
        # only weak faces can be confirmed there: no weak face, no tile search
        [face for face in (blazeface_on_tiles(gray) if weak else []) if any(same_face(face.box, w.box) for w in weak)],
    )
    found = strong
    for extra in passes:
        found = merge_faces(found, extra)
    return found


def centerface_faces(photo: np.ndarray) -> list[Face]:
    """CenterFace's faces scored ``centerface.MIN_SCORE`` or more, searched in the photo at its
    own size (at most DETECTION_MAX_SIDE), in its pixels. The other passes search a copy
    sized for MTCNN (half size at the default min_face), where CenterFace finds fewer of the
    faces it adds (docs/benchmarks.md)."""
    from fer_pipeline import centerface

    own = min(1.0, DETECTION_MAX_SIDE / max(photo.shape[:2]))
    found = centerface.detect(resized(photo, own))
    return [scaled_face(blaze_face(d), 1.0 / own) for d in found]


def mtcnn_and_mirror_by_confidence(gray: np.ndarray, min_confidence: float) -> tuple[list[Face], list[Face]]:
    """MTCNN's faces in the photo and its mirror image, each set merged as in
    ``detect_mtcnn_and_mirror``: those scored ``min_confidence`` or more, and the weak ones
    below it (down to MTCNN_WEAK_CONFIDENCE), from one search of each image."""
    passes = mtcnn_on_photo_and_mirror(gray, min(min_confidence, MTCNN_WEAK_CONFIDENCE))
    strong = [[f for f in faces if f.confidence >= min_confidence] for faces in passes]
    weak = [[f for f in faces if f.confidence < min_confidence] for faces in passes]
    return merge_faces(*strong), merge_faces(*weak)


def blaze_face(detection) -> Face:
    """A ``blazeface.Detection`` as a Face (its score as the confidence)."""
    return Face(detection.box, detection.score, detection.eyes)


def blazeface_on_tiles(gray: np.ndarray) -> list[Face]:
    """BlazeFace's (back model) faces scored TILE_MIN_SCORE or more in the photo's four
    corner tiles (TILE_SIDE of its width and height each, so they overlap), in the photo's
    pixels, best score first; none for a photo under TILE_MIN_PHOTO_SIDE pixels, where a
    face is already large in the model's input."""
    from fer_pipeline import blazeface

    height, width = gray.shape[:2]
    if max(height, width) < TILE_MIN_PHOTO_SIDE:
        return []
    tile_h, tile_w = int(height * TILE_SIDE), int(width * TILE_SIDE)
    found = []
    for top in (0, height - tile_h):
        for left in (0, width - tile_w):
            tile = np.ascontiguousarray(gray[top : top + tile_h, left : left + tile_w])
            for d in blazeface.detect(tile, min_score=TILE_MIN_SCORE):
                found.append(shifted_face(blaze_face(d), left, top))
    return sorted(found, key=lambda f: -f.confidence)


def shifted_face(face: Face, dx: int, dy: int) -> Face:
    """``face`` found in a tile whose corner is at (dx, dy), in the photo's pixels."""
    x, y, w, h = face.box
    eyes = None if face.eyes is None else tuple((ex + dx, ey + dy) for ex, ey in face.eyes)
    return Face((x + dx, y + dy, w, h), face.confidence, eyes)


def detect_mtcnn_and_mirror(gray: np.ndarray, min_confidence: float) -> list[Face]:
    """MTCNN's faces in the photo, then those it finds only in the photo's mirror image
    (mtcnn-tta's first two passes)."""
    return merge_faces(*mtcnn_on_photo_and_mirror(gray, min_confidence))


def mtcnn_on_photo_and_mirror(gray: np.ndarray, min_confidence: float) -> tuple[list[Face], list[Face]]:
    """MTCNN's faces in the photo, and in its mirror image (in the photo's coordinates)."""
    found = detect_mtcnn(gray, min_confidence)
    mirrored = detect_mtcnn(np.ascontiguousarray(gray[:, ::-1]), min_confidence)
    return found, [mirrored_face(face, gray.shape[1]) for face in mirrored]


def gamma_corrected(gray: np.ndarray, gamma: float) -> np.ndarray:
    """``gray`` with each level v (0..255) mapped to 255 * (v / 255) ** gamma."""
    table = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
    return table[gray]


def mirrored_face(face: Face, width: int) -> Face:
    """A face found in the mirror image of a ``width``-pixel-wide photo, in the photo's
    coordinates (its eyes re-sorted, the one on the photo's left first)."""
    x, y, w, h = face.box
    eyes = None
    if face.eyes is not None:
        left, right = sorted((width - ex, ey) for ex, ey in face.eyes)
        eyes = (left, right)
    return Face((width - x - w, y, w, h), face.confidence, eyes)


def merge_faces(kept: list[Face], extra: list[Face]) -> list[Face]:
    """``kept``, plus each face of ``extra`` that is none of them (``same_face``) nor an
    earlier one of ``extra``."""
    merged = list(kept)
    for face in extra:
        if not any(same_face(face.box, other.box) for other in merged):
            merged.append(face)
    return merged


def same_face(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether boxes ``a`` and ``b`` (x, y, w, h) overlap at MERGE_IOU or more, or either's
    centre lies inside the other."""
    return box_iou(a, b) >= MERGE_IOU or centre_inside(a, b) or centre_inside(b, a)


def scaled_face(face: Face, factor: float) -> Face:
    """``face`` in coordinates ``factor`` times larger (the search image back to the photo)."""
    if factor == 1.0:
        return face
    box = tuple(int(round(v * factor)) for v in face.box)
    eyes = None if face.eyes is None else tuple((x * factor, y * factor) for x, y in face.eyes)
    return Face(box, face.confidence, eyes)


@functools.lru_cache(maxsize=1)
def load_haar():
    """OpenCV's bundled frontal-face Haar cascade (loaded once per process)."""
    cv2 = cv2_module()
    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise FerError(f"Could not load the face detector from {path}; reinstall opencv-python-headless.")
    return detector


@functools.lru_cache(maxsize=1)
def load_mtcnn():
    """The MTCNN detector (three small networks; weights from the package), built once
    per process: building it takes seconds, detecting a photo a tenth of one."""
    try:
        from mtcnn import MTCNN
    except ImportError as exc:
        raise FerError(
            "The MTCNN face detector is not installed: pip install 'fer-pipeline[detect]', "
            "or use the Haar cascade (--detector haar)."
        ) from exc
    return MTCNN(stages="face_and_landmarks_detection", device="CPU:0")


# ---- alignment and cropping --------------------------------------------------------------


def eye_angle(eyes: tuple[tuple[float, float], tuple[float, float]]) -> float:
    """Degrees the line from the left eye to the right one turns clockwise on screen
    (image y points down); rotating the photo by this much counter-clockwise levels them."""
    (lx, ly), (rx, ry) = eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def rotate_points(points: np.ndarray, center: tuple[float, float], degrees: float) -> np.ndarray:
    """Where ``points`` (N, 2) land when the image is turned ``degrees`` counter-clockwise
    about ``center``: the same affine map cv2.warpAffine applies in ``align_face``."""
    cv2 = cv2_module()
    matrix = cv2.getRotationMatrix2D(center, degrees, 1.0)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(gray: np.ndarray, face: Face, side: int, margin: float) -> np.ndarray:
    """The face as the model saw faces in training: turned so the eyes are level (when
    the detector found them), a square ``1 + margin`` times the box around its centre,
    gray, (side, side) float32."""
    angle = eye_angle(face.eyes) if face.eyes is not None else 0.0
    if abs(angle) < MIN_ROTATION_DEGREES:
        return crop_face(gray, face.box, side, margin)
    cv2 = cv2_module()
    x, y, w, h = face.box
    size = max(1, int(round(max(w, h) * (1.0 + margin))))
    center = (x + w / 2, y + h / 2)
    matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
    # Move the box centre to the middle of a size x size output: the rotation and the crop
    # are one warp, and corners outside the photo repeat its edge, as crop_face does.
    matrix[:, 2] += (size / 2 - center[0], size / 2 - center[1])
    square = cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return resize_to_model(square, side)


def crop_face(gray: np.ndarray, box: Sequence[int], side: int, margin: float) -> np.ndarray:
    """A square crop around ``box``, ``1 + margin`` times its larger side, as (side, side) float32.

    Parts of the square outside the image repeat the edge pixels, so faces at the
    border keep their position and aspect ratio.
    """
    cv2 = cv2_module()
    x, y, w, h = box
    size = max(1, int(round(max(w, h) * (1.0 + margin))))
    left = int(round(x + w / 2 - size / 2))
    top = int(round(y + h / 2 - size / 2))
    pad = max(0, -left, -top, left + size - gray.shape[1], top + size - gray.shape[0])
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
    square = padded[top + pad : top + pad + size, left + pad : left + pad + size]
    return resize_to_model(square, side)


def resize_to_model(gray: np.ndarray, side: int) -> np.ndarray:
    """Resize to (side, side) float32 gray levels 0..255 (area averaging when shrinking)."""
    cv2 = cv2_module()
    if gray.shape != (side, side):
        gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
    return gray.astype(np.float32)
