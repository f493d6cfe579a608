"""CenterFace, an anchor-free face detector, run by OpenCV's DNN module: one pass of the
``ensemble`` detector (faces.py).

The model ships in ``models/`` (MIT; ``models/NOTICE`` says where from): ``centerface.onnx``
(7.3 MB), a fully convolutional network that, for a photo whose sides are multiples of 32,
gives on a grid of stride 4 a face-centre heatmap, each centre's box size (log, in grid
cells), its offset within the cell and five landmarks. The steps are the reference
implementation's (Star-Clouds/CenterFace, ``prj-python/centerface.py``):

1. the photo, gray in R, G and B at 0..255, padded at the right and bottom to multiples of
   32 (the reference stretches the photo to them; padding keeps its geometry);
2. every heatmap cell scored ``min_score`` or more gives a box: centre at (cell + offset +
   0.5) x 4, sides exp(size) x 4, and the landmarks relative to the box;
3. boxes overlapping a better-scored one at NMS_IOU or more dropped (OpenCV's NMSBoxes).

It finds faces the MTCNN and BlazeFace passes miss (faces in profile, turned, or partly
out of the frame), which is why the ensemble has it: docs/benchmarks.md ("Face detection:
CenterFace as a sixth pass of the ensemble").
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from fer_pipeline.blazeface import Detection
from fer_pipeline.errors import FerError

MODEL_FILE = Path(__file__).parent / "models" / "centerface.onnx"
# quoted in models/NOTICE too; tests/test_faces.py checks both against the file
MODEL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
OUTPUTS = ("537", "538", "539", "540")  # heatmap, size, offset, landmarks (the ONNX graph's names)
STRIDE = 4  # input pixels per output cell
MULTIPLE = 32  # the network's input sides must be multiples of this
NMS_IOU = 0.3  # the reference's
# Faces scored below this are dropped: the ensemble's threshold, chosen on face sets 0, 1, 10 and 11
# with 12 and 13 looked at (0.2 found 3 more of 814 faces for 2 more false ones; docs/benchmarks.md,
# "Face detection: CenterFace as a sixth pass of the ensemble").
MIN_SCORE = 0.3
# OpenCV's importer fixes a network's shapes at its first input, so each padded input shape
# gets its own network (40 ms to load); the last few are kept.
NETS_KEPT = 8


def padded_input(gray: np.ndarray) -> np.ndarray:
    """The network's input for a gray uint8 photo: (1, 3, H, W) float32 at 0..255, gray in
    each channel, zero-padded at the right and bottom to multiples of MULTIPLE."""
    height, width = gray.shape[:2]
    padded = np.zeros((-(-height // MULTIPLE) * MULTIPLE, -(-width // MULTIPLE) * MULTIPLE), np.float32)
    padded[:height, :width] = gray
    return np.repeat(padded[np.newaxis, np.newaxis], 3, axis=1)


def decode(
    heatmap: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, landmarks: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes, scores, points)`` of every cell scored ``min_score`` or more: boxes (N, 4) as
    (x, y, w, h) in input pixels, scores (N,), points (N, 5, 2) the landmarks as (x, y)
    (the eyes first)."""
    rows, cols = np.nonzero(heatmap[0, 0] >= min_score)
    height = np.exp(sizes[0, 0, rows, cols]) * STRIDE
    width = np.exp(sizes[0, 1, rows, cols]) * STRIDE
    top = np.maximum(0.0, (rows + offsets[0, 0, rows, cols] + 0.5) * STRIDE - height / 2)
    left = np.maximum(0.0, (cols + offsets[0, 1, rows, cols] + 0.5) * STRIDE - width / 2)
    marks = landmarks[0][:, rows, cols].T.reshape(-1, 5, 2)  # (y, x) pairs, relative to the box
    points = np.stack(
        [marks[..., 1] * width[:, None] + left[:, None], marks[..., 0] * height[:, None] + top[:, None]], -1
    )
    boxes = np.stack([left, top, width, height], axis=1)
    return boxes, heatmap[0, 0, rows, cols], points


def detect(gray: np.ndarray, min_score: float = MIN_SCORE) -> list[Detection]:
    """CenterFace's faces in a gray uint8 photo scored ``min_score`` or more, in its pixels,
    best first."""
    import cv2

    tensor = padded_input(gray)
    net = load_net(tensor.shape)
    net.setInput(tensor)
    heatmap, sizes, offsets, landmarks = net.forward(list(OUTPUTS))
    boxes, scores, points = decode(heatmap, sizes, offsets, landmarks, min_score)
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), min_score, NMS_IOU), dtype=int).reshape(-1)
    height, width = gray.shape[:2]
    found = []
    for i in sorted(keep, key=lambda i: -scores[i]):
        x, y, w, h = boxes[i]
        x2, y2 = min(x + w, width), min(y + h, height)  # the padding is not the photo
        box = (int(round(x)), int(round(y)), int(round(x2 - x)), int(round(y2 - y)))
        left_eye, right_eye = sorted((float(px), float(py)) for px, py in points[i, :2])
        found.append(Detection(box, float(scores[i]), (left_eye, right_eye)))
    return found


@functools.lru_cache(maxsize=NETS_KEPT)
def load_net(input_shape: tuple[int, ...]):
    """The network for inputs of ``input_shape`` (a fresh one per shape: see NETS_KEPT)."""
    import cv2

    if not MODEL_FILE.is_file():
        raise FerError(
            f"The CenterFace model is missing at {MODEL_FILE}; reinstall fer-pipeline (the file ships in its package data)."
        )
    return cv2.dnn.readNetFromONNX(str(MODEL_FILE))


def model_sha256() -> str:
    """The sha256 of the shipped model file, to compare with MODEL_SHA256 and models/NOTICE."""
    return hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
