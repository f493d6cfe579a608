"""Small generated FER-style data for tests and `make run-local` without a download.

The images are not faces: each class draws a bright bar at its own angle on a noisy
background of its own brightness, so that even a randomly initialised backbone
separates them in an epoch or two and a pipeline run
shows real (if easy) metrics. The layouts match FER-2013 exactly: the Kaggle zip
and folder tree, and the original ``fer2013.csv``.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from fer_pipeline.classes import CLASSES, CSV_CODE_TO_CLASS, IMAGE_SIZE

_CLASS_TO_CSV_CODE = {name: code for code, name in CSV_CODE_TO_CLASS.items()}


def make_images(n_per_class: int, seed: int = 0, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: ``n_per_class`` uint8 images of each class, class-sorted."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    images, labels = [], []
    for label in range(len(CLASSES)):
        angle = np.pi * label / len(CLASSES)
        for _ in range(n_per_class):
            jitter = rng.normal(0.0, 0.05)
            dist = np.abs(xx * np.sin(angle + jitter) - yy * np.cos(angle + jitter))
            bar = np.clip(1.0 - dist / 4.0, 0.0, 1.0) * 150.0
            noise = rng.normal(40.0 + 15.0 * label, 20.0, size=(size, size))
            images.append(np.clip(noise + bar, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.uint8)


def train_dataset(n_per_class: int, seed: int = 0):
    """A canonical dataset of ``make_images`` in the train split only (for training tests)."""
    from fer_pipeline.dataset import FerDataset

    images, labels = make_images(n_per_class, seed=seed)
    n = len(labels)
    return FerDataset(
        images=images,
        labels=labels,
        splits=np.array(["train"] * n),
        source_splits=np.array(["Training"] * n),
        keys=np.array([f"s{i}" for i in range(n)]),
    )


def _samples(n_train: int, n_test: int, seed: int):
    """Yield ``(usage, label, image)`` with test split evenly into PublicTest/PrivateTest."""
    train_x, train_y = make_images(n_train, seed)
    test_x, test_y = make_images(n_test, seed + 1)
    for x, y in zip(train_x, train_y):
        yield "Training", int(y), x
    for i, (x, y) in enumerate(zip(test_x, test_y)):
        yield ("PublicTest" if i % 2 == 0 else "PrivateTest"), int(y), x


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format=fmt)
    return buffer.getvalue()


def _tree_entries(n_train: int, n_test: int, seed: int, fmt: str):
    ext = "jpg" if fmt == "JPEG" else fmt.lower()
    for row, (usage, label, image) in enumerate(_samples(n_train, n_test, seed)):
        split = "train" if usage == "Training" else "test"
        yield f"{split}/{CLASSES[label]}/{usage}_{row}.{ext}", _encode(image, fmt)


def write_kaggle_tree(root: str | Path, n_train: int = 20, n_test: int = 6, seed: int = 0, fmt: str = "JPEG") -> Path:
    """Write ``root/{train,test}/<class>/<Usage>_<row>.jpg`` like the Kaggle download."""
    root = Path(root)
    for name, data in _tree_entries(n_train, n_test, seed, fmt):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_kaggle_zip(path: str | Path, n_train: int = 20, n_test: int = 6, seed: int = 0, fmt: str = "JPEG") -> Path:
    """Write the Kaggle layout as a zip, entries ``train/...`` and ``test/...``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in _tree_entries(n_train, n_test, seed, fmt):
            archive.writestr(name, data)
    return path


def write_fer_csv(path: str | Path, n_train: int = 20, n_test: int = 6, seed: int = 0) -> Path:
    """Write the original ``emotion,pixels,Usage`` CSV (CSV class codes) for the same samples."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, label, image in _samples(n_train, n_test, seed):
            pixels = " ".join(str(int(v)) for v in image.reshape(-1))
            writer.writerow([_CLASS_TO_CSV_CODE[CLASSES[label]], pixels, usage])
    return path
