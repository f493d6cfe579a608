"""The canonical dataset: what every reader produces and every later step reads.

On disk it is a directory with two files:
  - ``images.npz``: ``images`` (N, 48, 48) uint8, ``labels`` (N,) uint8 indices into
    ``CLASSES``, ``splits`` (N,) "train"/"test", ``source_splits`` (N,) the original
    FER-2013 Usage ("Training", "PublicTest", "PrivateTest", or "" when unknown),
    ``keys`` (N,) the sample's relative path (or ``fer2013.csv:<row>``);
  - ``manifest.json``: counts, source checksum, format version. Written last, so a
    directory without it is incomplete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_pipeline.classes import CLASSES, IMAGE_SIZE
from fer_pipeline.errors import DatasetError
from fer_pipeline.files import write_json

FORMAT_VERSION = 1
IMAGES_FILE = "images.npz"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "test")
PASS_A_DATASET = "pass a canonical dataset: the folder `fer-pipeline ingest` writes (manifest.json and images.npz)"


@dataclass
class FerDataset:
    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    source_splits: np.ndarray
    keys: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def indices(self, split: str) -> np.ndarray:
        """Sample indices of one split ("train" or "test")."""
        return np.flatnonzero(self.splits == split)

    def subset(self, index: np.ndarray) -> FerDataset:
        return FerDataset(
            self.images[index],
            self.labels[index],
            self.splits[index],
            self.source_splits[index],
            self.keys[index],
            dict(self.manifest),
        )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / IMAGES_FILE,
            images=self.images,
            labels=self.labels,
            splits=self.splits.astype("U5"),
            source_splits=self.source_splits.astype("U11"),
            keys=self.keys.astype(str),
        )
        # Manifest last: its presence marks the directory complete.
        write_json(directory / MANIFEST_FILE, self.manifest, sort_keys=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FerDataset:
        """The dataset in ``directory``; DatasetError naming the path and what it should be
        (a folder written by `fer-pipeline ingest`) when it is absent, a file, or damaged."""
        directory = Path(directory)
        if not directory.exists():
            raise DatasetError(
                f"{directory} is not a complete canonical dataset (it does not exist); "
                "run `fer-pipeline ingest` to create it."
            )
        if not directory.is_dir():
            raise DatasetError(f"{directory} is a file, not a dataset folder; {PASS_A_DATASET}.")
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise DatasetError(
                f"{directory} is not a complete canonical dataset (no {MANIFEST_FILE}); "
                "run `fer-pipeline ingest` to create it."
            )
        manifest = _read_manifest(manifest_path)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{manifest_path} has format_version {manifest.get('format_version')!r}, this "
                f"version reads {FORMAT_VERSION}; re-run `fer-pipeline ingest` on the source."
            )
        return cls(*_read_arrays(directory / IMAGES_FILE), manifest)


_ARRAYS = ("images", "labels", "splits", "source_splits", "keys")


def _damaged(path: Path, problem: str) -> DatasetError:
    return DatasetError(
        f"{path} {problem}; the dataset folder is damaged or incomplete: run `fer-pipeline ingest` again to rewrite it."
    )


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise _damaged(path, f"is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise _damaged(path, f"holds a JSON {type(manifest).__name__}, not the manifest object ingest writes")
    return manifest


def _read_arrays(path: Path) -> list[np.ndarray]:
    """The five arrays of ``images.npz``, checked to describe the same samples."""
    import zipfile
    import zlib

    if not path.is_file():
        raise _damaged(path, "is missing")
    try:
        with np.load(path) as data:
            missing = [name for name in _ARRAYS if name not in data.files]
            if missing:
                raise _damaged(path, f"lacks the array(s) {', '.join(missing)}")
            arrays = [data[name] for name in _ARRAYS]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # np.load reads a file that is not an .npz as a pickle, which it refuses (ValueError)
        raise _damaged(path, f"cannot be read as the .npz archive ingest writes ({exc})") from None
    images, *per_sample = arrays
    if images.ndim == 0 or any(a.shape != (images.shape[0],) for a in per_sample):
        shapes = ", ".join(f"{name} {a.shape}" for name, a in zip(_ARRAYS, arrays))
        raise _damaged(path, f"holds arrays of mismatched shapes ({shapes})")
    if problem := _content_problem(*arrays):
        raise _damaged(path, problem)
    return arrays


def _content_problem(images, labels, splits, source_splits, keys) -> str | None:
    """What in the arrays no ingest writes: each would end a later step in a traceback
    (a label past the classes) or in silently dropped images (an unknown split)."""
    side = (IMAGE_SIZE, IMAGE_SIZE)
    if images.dtype != np.uint8 or images.shape[1:] != side:
        return f"holds images of {images.dtype} {images.shape[1:]}, not the 8-bit {side[0]}x{side[1]} ingest writes"
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(CLASSES)):
        return f"holds labels outside 0-{len(CLASSES) - 1} (the class indices)"
    if unknown := sorted(set(np.unique(splits).tolist()) - set(SPLITS)):
        return f"holds split names {', '.join(map(repr, unknown[:3]))} besides {' and '.join(SPLITS)}"
    return None


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Per-class counts in ``CLASSES`` order, zeros included."""
    counts = np.bincount(labels.astype(np.int64), minlength=len(CLASSES))
    return {name: int(counts[i]) for i, name in enumerate(CLASSES)}
