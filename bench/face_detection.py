"""Face detection: the ensemble (default), MTCNN (one pass and mtcnn-tta) and OpenCV's Haar cascade on real FER-2013 faces pasted into photos.

    .venv/bin/python -m bench.face_detection [--zip PATH] [--seed 0] [--write]

The face set is made here, seeded, from the zip's test/ crops (read in memory, never
written to disk): each crop is upscaled to 60-200 px, turned by up to 15 degrees, its
brightness and contrast changed, and pasted onto a background made without faces:

- gradient: a linear ramp between two gray levels at a random angle, with light noise;
- noise: Gaussian noise blurred at a random scale (1-12 px), mean and spread random;
- texture: three random sinusoid gratings summed, or a checkerboard, blurred a little;
- scene: a random 48-240 px patch of scikit-learn's two bundled sample photos (a temple
  and a flower: no face in either) upscaled to the photo's size.

"Multi" photos (480x360 to 960x540) hold 1-4 faces apart; "tight" photos hold one face
that fills 70-100% of its side, like a cropped portrait; "empty" photos hold none. The
ground truth of a face is the unrotated square it was pasted into. A detection matches
a face when their IoU is at least 0.3 (one to one, best IoU first); every detection
that matches no face is a false positive. Recall by "centre inside" (a detection's
centre in the face's square) is shown beside it. Time is per photo, after one warm-up photo
(MTCNN's one-off build time is printed apart).

The MTCNN settings are swept over min_face and the second stage's threshold (a new
search each) and min_confidence (a filter on one search); ``mtcnn-tta`` (MTCNN on the
photo, its mirror image and a darker copy, merged) runs once per --tta-confidences value
(the value filters each pass before the merge), and so does ``ensemble`` (MTCNN on the
photo and its mirror image, BlazeFace's and CenterFace's passes at their own scores, merged: faces.py) per
--ensemble-confidences value; --write appends the table to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench._common import DEFAULT_ZIP, append_section, load_average, markdown_table
from fer_pipeline.boxes import box_iou

IOU_MATCH = 0.3
FACE_SIDES = (60, 200)
MAX_TURN_DEGREES = 15.0
MULTI_SIZES = ((480, 360), (640, 480), (800, 600), (960, 540))
BACKGROUNDS = ("gradient", "noise", "texture", "scene")


@dataclass
class Photo:
    gray: np.ndarray
    faces: list[tuple[int, int, int, int]]  # ground-truth boxes (x, y, w, h)
    kind: str  # multi, tight or empty
    background: str


@dataclass
class Tally:
    faces: int = 0
    found: int = 0
    found_by_centre: int = 0
    false_positives: int = 0
    photos: int = 0
    seconds: list[float] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [faces, found, false positives, photos]


# ---- the face set ------------------------------------------------------------------


def read_test_crops(zip_path: Path, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` gray test/ crops drawn at random over all classes, decoded in memory."""
    import cv2

    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("test/") and n.lower().endswith((".jpg", ".png")))
        chosen = rng.choice(len(names), size=count, replace=False)
        return [cv2.imdecode(np.frombuffer(archive.read(names[i]), np.uint8), cv2.IMREAD_GRAYSCALE) for i in chosen]


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's bundled sample photos (no faces), gray."""
    import cv2
    from sklearn.datasets import load_sample_images

    return [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in load_sample_images().images]


def background(kind: str, width: int, height: int, rng: np.random.Generator, scenes: list[np.ndarray]) -> np.ndarray:
    import cv2

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        ramp = (ramp - ramp.min()) / max(1.0, float(np.ptp(ramp)))
        low, high = sorted(rng.uniform(20, 235, 2))
        image = low + (high - low) * ramp + rng.normal(0, 3, ramp.shape)
    elif kind == "noise":
        noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), rng.uniform(1, 12))
        image = rng.uniform(60, 190) + rng.uniform(15, 50) * noise / max(1e-6, float(noise.std()))
    elif kind == "texture":
        if rng.random() < 0.3:
            cell = int(rng.integers(8, 40))
            image = 70 + 110 * (((xs // cell) + (ys // cell)) % 2)
        else:
            image = np.full((height, width), rng.uniform(90, 160), np.float32)
            for _ in range(3):
                fx, fy = rng.uniform(-0.08, 0.08, 2)
                image += rng.uniform(10, 35) * np.sin(2 * math.pi * (fx * xs + fy * ys) + rng.uniform(0, 2 * math.pi))
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
    else:  # scene: an upscaled patch of a photo without faces
        source = scenes[int(rng.integers(len(scenes)))]
        side = int(rng.integers(48, 241))
        span = min(source.shape[1] - 1, int(side * width / height))
        top, left = int(rng.integers(0, source.shape[0] - side)), int(rng.integers(0, source.shape[1] - span))
        patch = source[top : top + side, left : left + span]
        image = cv2.resize(patch, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.float32)


def paste(
    photo: np.ndarray, crop: np.ndarray, center: tuple[float, float], side: int, rng: np.random.Generator
) -> None:
    """Upscale ``crop`` to ``side``, change its brightness and contrast, turn it, paste it
    at ``center`` (anti-aliased edges), in place."""
    import cv2

    face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    face = np.clip((face - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-40, 40), 0, 255)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-MAX_TURN_DEGREES, MAX_TURN_DEGREES), 1.0)
    matrix[:, 2] += (center[0] - side / 2, center[1] - side / 2)
    size = (photo.shape[1], photo.shape[0])
    layer = cv2.warpAffine(face, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((side, side), np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    photo *= 1 - mask
    photo += mask * layer


def place_faces(width: int, height: int, count: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Up to ``count`` (cx, cy, side) squares inside the photo, apart (a turned square's
    corners stay inside and off its neighbours)."""
    placed: list[tuple[int, int, int]] = []
    for _ in range(200):
        if len(placed) == count:
            break
        side = int(rng.integers(FACE_SIDES[0], min(FACE_SIDES[1], int(min(width, height) / 1.45)) + 1))
        reach = side * 0.72  # half the diagonal of a square turned up to 15 degrees
        cx, cy = rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)
        if all(math.hypot(cx - x, cy - y) > reach + s * 0.72 + 4 for x, y, s in placed):
            placed.append((int(cx), int(cy), side))
    return placed


def make_face_set(zip_path: Path, seed: int, multi: int, tight: int, empty: int) -> tuple[list[Photo], dict[str, int]]:
    """The photos, and how many of each background were used."""
    rng = np.random.default_rng(seed)
    scenes = sample_photos()
    layouts = []
    for _ in range(multi):
        width, height = MULTI_SIZES[int(rng.integers(len(MULTI_SIZES)))]
        layouts.append(("multi", width, height, place_faces(width, height, int(rng.integers(1, 5)), rng)))
    for _ in range(tight):
        side = int(rng.integers(*FACE_SIDES))
        frame = int(side / rng.uniform(0.7, 1.0))
        layouts.append(("tight", frame, frame, [(frame // 2, frame // 2, side)]))
    for _ in range(empty):
        width, height = MULTI_SIZES[int(rng.integers(len(MULTI_SIZES)))]
        layouts.append(("empty", width, height, []))
    crops = iter(read_test_crops(zip_path, sum(len(faces) for *_, faces in layouts), rng))
    photos, backgrounds = [], dict.fromkeys(BACKGROUNDS, 0)
    for index, (kind, width, height, faces) in enumerate(layouts):
        name = BACKGROUNDS[index % len(BACKGROUNDS)]
        backgrounds[name] += 1
        image = background(name, width, height, rng, scenes)
        for cx, cy, side in faces:
            paste(image, next(crops), (cx, cy), side, rng)
        boxes = [(cx - side // 2, cy - side // 2, side, side) for cx, cy, side in faces]
        photos.append(Photo(np.clip(image, 0, 255).round().astype(np.uint8), boxes, kind, name))
    return photos, backgrounds


# ---- matching and scoring ------------------------------------------------------------


def match(truth: list[tuple[int, ...]], found: list[tuple[int, ...]]) -> tuple[int, int]:
    """(faces found, false positives): one to one, best IoU first, IoU >= IOU_MATCH."""
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f = set(), set()
    for score, i, j in pairs:
        if score < IOU_MATCH:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t), len(found) - len(used_f)


def found_by_centre(truth: list[tuple[int, ...]], found: list[tuple[int, ...]]) -> int:
    """Faces with a detection's centre inside them (one detection per face)."""
    used: set[int] = set()
    for tx, ty, tw, th in truth:
        for j, (x, y, w, h) in enumerate(found):
            if j not in used and tx <= x + w / 2 <= tx + tw and ty <= y + h / 2 <= ty + th:
                used.add(j)
                break
    return len(used)


def score(photos: list[Photo], detections: list[list], min_confidence: float, seconds: list[float]) -> Tally:
    tally = Tally(seconds=seconds)
    for photo, faces in zip(photos, detections):
        boxes = [f.box for f in faces if f.confidence is None or f.confidence >= min_confidence]
        found, false = match(photo.faces, boxes)
        tally.found_by_centre += found_by_centre(photo.faces, boxes)
        tally.faces += len(photo.faces)
        tally.found += found
        tally.false_positives += false
        tally.photos += 1
        row = tally.by_kind.setdefault(photo.kind, [0, 0, 0, 0])
        for k, v in enumerate((len(photo.faces), found, false, 1)):
            row[k] += v
    return tally


def run_detector(photos: list[Photo], options) -> tuple[list[list], list[float]]:
    """Each photo's faces (all confidences kept) and the seconds each took."""
    from fer_pipeline.faces import detect_faces

    detect_faces(photos[0].gray, options)  # warm-up: graph tracing, caches
    detections, seconds = [], []
    for photo in photos:
        start = time.perf_counter()
        detections.append(detect_faces(photo.gray, options))
        seconds.append(time.perf_counter() - start)
    return detections, seconds


def whole_crops_found(zip_path: Path, seed: int, count: int) -> str:
    """How many raw 48x48 test crops, each given whole as a photo, MTCNN finds a face in:
    with the default options (faces under min_face 40 px are dropped), with min_face 20,
    and upscaled 2x first. detect_faces itself searches photos at 96 px or more on their
    short side (faces.MTCNN_SMALL_PHOTO_SIDE)."""
    import cv2

    from fer_pipeline.faces import DetectorOptions, detect_faces

    crops = read_test_crops(zip_path, count, np.random.default_rng(seed + 1))
    upscaled = [cv2.resize(c, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for c in crops]
    default, small = DetectorOptions(name="mtcnn"), DetectorOptions(name="mtcnn", min_face=20)
    counts = [
        sum(bool(detect_faces(photo, options)) for photo in photos)
        for photos, options in ((crops, default), (crops, small), (upscaled, default))
    ]
    return (
        f"{counts[0]}/{count} with the default options (most boxes there are under min_face 40), "
        f"{counts[1]}/{count} with min_face 20, {counts[2]}/{count} upscaled 2x first (default options)"
    )


def fer_framing(photos: list[Photo], detections: list[list]) -> str:
    """How FER-2013's crop compares with the detector's box, over matched faces: the
    pasted square's side over the box's larger side (the crop margin that reproduces
    FER's framing is this minus 1), and the box centre's offset in face sides."""
    ratios, offsets = [], []
    for photo, faces in zip(photos, detections):
        for face in faces:
            best = max(photo.faces, key=lambda truth: box_iou(truth, face.box), default=None)
            if best is None or box_iou(best, face.box) < IOU_MATCH:
                continue
            x, y, w, h = face.box
            tx, ty, side, _ = best
            ratios.append(side / max(w, h))
            offsets.append(((x + w / 2 - tx - side / 2) / side, (y + h / 2 - ty - side / 2) / side))
    if not ratios:
        return "no face matched"
    dx, dy = np.median(offsets, axis=0)
    low, mid, high = np.percentile(ratios, [25, 50, 75])
    return f"FER side / box side {mid:.2f} (quartiles {low:.2f}-{high:.2f}), box centre off by ({dx:+.2f}, {dy:+.2f}) sides"


def tally_row(label: str, tally: Tally) -> list[str]:
    recall = tally.found / max(1, tally.faces)
    kinds = tally.by_kind
    tight = kinds.get("tight", [0, 0, 0, 0])
    empty = kinds.get("empty", [0, 0, 0, 0])
    return [
        label,
        f"{tally.found}/{tally.faces} = {recall:.1%}",
        f"{tally.found_by_centre / max(1, tally.faces):.1%}",
        f"{tight[1]}/{tight[0]}",
        f"{tally.false_positives / max(1, tally.photos):.3f} ({tally.false_positives})",
        f"{empty[2]}",
        f"{1000 * float(np.median(tally.seconds)):.0f}",
        f"{1000 * float(np.mean(tally.seconds)):.0f}",
    ]


HEADERS = [
    "detector (settings)",
    "recall (IoU >= 0.3)",
    "recall (centre inside)",
    "tight photos found",
    "false positives / photo (total)",
    "FP on empty photos",
    "ms / photo (median)",
    "ms / photo (mean)",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multi", type=int, default=40, help="photos with 1-4 faces (default 40)")
    parser.add_argument("--tight", type=int, default=16, help="photos filled by one face (default 16)")
    parser.add_argument("--empty", type=int, default=64, help="photos without a face (default 64)")
    parser.add_argument(
        "--searches",
        nargs="*",
        default=["20:0.7", "20:0.4", "30:0.4", "40:0.7", "40:0.4", "40:0.3"],
        help="MTCNN searches as MIN_FACE:RNET_THRESHOLD (default: 20:0.7 20:0.4 30:0.4 40:0.7 40:0.4 40:0.3)",
    )
    parser.add_argument("--haar-min-faces", type=int, nargs="*", default=[20, 40], help="Haar min_face values")
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    parser.add_argument(
        "--tta-confidences", type=float, nargs="*", default=[0.7, 0.8], help="mtcnn-tta runs (default 0.7 0.8)"
    )
    parser.add_argument(
        "--ensemble-confidences", type=float, nargs="*", default=[0.7], help="ensemble runs (default 0.7)"
    )
    parser.add_argument("--budget", type=float, default=300, help="seconds; searches past it are skipped")
    parser.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not args.zip.is_file():
        print(f"error: the FER-2013 zip is not at {args.zip}; pass --zip PATH.", file=sys.stderr)
        return 2

    from fer_pipeline import faces
    from fer_pipeline.faces import DetectorOptions, load_mtcnn

    load_before = load_average()
    photos, backgrounds = make_face_set(args.zip, args.seed, args.multi, args.tight, args.empty)
    n_faces = sum(len(p.faces) for p in photos)
    described = (
        f"{n_faces} FER-2013 test faces (60-200 px, turned up to 15 degrees, brightness and contrast changed) "
        f"in {args.multi} multi-face and {args.tight} tight photos, plus {args.empty} photos without a face; "
        f"backgrounds: {', '.join(f'{k} {v}' for k, v in backgrounds.items())}; seed {args.seed}"
    )
    print(described, flush=True)

    start = time.perf_counter()
    load_mtcnn()
    build_seconds = time.perf_counter() - start

    rows, framing = [], []
    for min_face in args.haar_min_faces:
        detections, seconds = run_detector(photos, DetectorOptions(name="haar", min_face=min_face))
        mark = " **default with --detector haar**" if min_face == DetectorOptions().min_face else ""
        rows.append(tally_row(f"haar (min_face {min_face}){mark}", score(photos, detections, 0.0, seconds)))
        framing.append(f"haar {min_face}: {fer_framing(photos, detections)}")
        print(markdown_table(HEADERS, rows[-1:]), flush=True)
    print(markdown_table(HEADERS, rows[-1:]), flush=True)
    default_thresholds = dict(faces.MTCNN_THRESHOLDS)
    chosen = DetectorOptions()
    marks = {
        (
            chosen.min_face,
            default_thresholds["threshold_rnet"],
            chosen.min_confidence,
        ): " **default**" if chosen.name == "mtcnn" else " **default with --detector mtcnn**",
        (20, 0.7, 0.8): " (the mtcnn package's own defaults)",
    }
    skipped = []
    for search in args.searches:
        if time.perf_counter() - start > args.budget:
            skipped.append(search)
            continue
        min_face, rnet = search.split(":")
        faces.MTCNN_THRESHOLDS["threshold_rnet"] = float(rnet)
        detections, seconds = run_detector(
            photos, DetectorOptions(name="mtcnn", min_confidence=0.0, min_face=int(min_face))
        )
        kept = [[f for f in found if f.confidence >= 0.7] for found in detections]
        framing.append(f"mtcnn {search} at min_confidence 0.7: {fer_framing(photos, kept)}")
        for confidence in args.confidences:
            tally = score(photos, detections, confidence, seconds)
            label = f"mtcnn (min_face {min_face}, RNet {rnet}, min_confidence {confidence})"
            rows.append(tally_row(label + marks.get((int(min_face), float(rnet), confidence), ""), tally))
            print(markdown_table(HEADERS, rows[-1:]), flush=True)

    faces.MTCNN_THRESHOLDS.update(default_thresholds)
    for confidence in args.tta_confidences:
        options = DetectorOptions(name="mtcnn-tta", min_confidence=confidence)
        detections, seconds = run_detector(photos, options)
        mark = " **default with --detector mtcnn-tta**" if confidence == chosen.min_confidence else ""
        label = (
            f"mtcnn-tta (min_face {options.min_face}, RNet {default_thresholds['threshold_rnet']}, "
            f"min_confidence {confidence}; the photo, mirrored, gamma {faces.MTCNN_TTA_GAMMA}){mark}"
        )
        rows.append(tally_row(label, score(photos, detections, confidence, seconds)))
        framing.append(f"mtcnn-tta at min_confidence {confidence}: {fer_framing(photos, detections)}")
        print(markdown_table(HEADERS, rows[-1:]), flush=True)
    from fer_pipeline import blazeface, centerface

    for confidence in args.ensemble_confidences:
        options = DetectorOptions(name="ensemble", min_confidence=confidence)
        detections, seconds = run_detector(photos, options)
        mark = ""
        if confidence == chosen.min_confidence:
            mark = " **default**" if chosen.name == "ensemble" else " **default with --detector ensemble**"
        label = (
            f"ensemble (min_face {options.min_face}, RNet {default_thresholds['threshold_rnet']}, "
            f"min_confidence {confidence}; MTCNN on the photo and mirrored; BlazeFace back and front on the photo "
            f">= {blazeface.MIN_SCORE}, back on corner tiles >= {faces.TILE_MIN_SCORE} where MTCNN >= "
            f"{faces.MTCNN_WEAK_CONFIDENCE}; CenterFace on the photo >= {centerface.MIN_SCORE}){mark}"
        )
        # MTCNN's faces are filtered at min_confidence in detect_faces, BlazeFace's and CenterFace's at their own scores
        rows.append(tally_row(label, score(photos, detections, 0.0, seconds)))
        framing.append(f"ensemble at min_confidence {confidence}: {fer_framing(photos, detections)}")
        print(markdown_table(HEADERS, rows[-1:]), flush=True)
    whole = whole_crops_found(args.zip, args.seed, 60)
    table = markdown_table(HEADERS, rows)
    notes = [
        f"face set: {described}",
        f"a detection matches a face at IoU >= {IOU_MATCH} (one to one); false positives are detections matching no face",
        f"MTCNN's one-off build (load_mtcnn): {build_seconds:.1f} s, not in the times",
        "time: whole photos through faces.detect_faces (gray, searched at up to 1024 px), after a warm-up photo",
        "RNet: MTCNN's second-stage threshold (faces.MTCNN_THRESHOLDS; the package's default is 0.7); "
        "min_confidence is the last stage's",
        f"raw 48x48 test crops given whole to MTCNN, a face found in: {whole}",
        "FER-2013 framing (predict crops 1 + margin times the box, margin 0.2 by default): " + "; ".join(framing),
    ]
    if skipped:
        notes.append(f"skipped past the {args.budget:.0f} s budget: {', '.join(skipped)}")
    if args.write:
        append_section(
            "Face detection: the ensemble, MTCNN, mtcnn-tta and Haar on pasted FER-2013 test faces",
            table,
            load_before=load_before,
            notes=notes,
        )
    else:
        print("\n" + "\n".join(notes) + "\n\n" + table)
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
