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

from fer_pipeline.classes import CLASSES
from fer_pipeline.errors import DatasetError
from fer_pipeline.files import write_json

FORMAT_VERSION = 1
IMAGES_FILE = "images.npz"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "test")


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
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise DatasetError(
                f"{directory} is not a complete canonical dataset (no {MANIFEST_FILE}); "
                "run `fer-pipeline ingest` to create it."
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{manifest_path} has format_version {manifest.get('format_version')!r}, this "
                f"version reads {FORMAT_VERSION}; re-run `fer-pipeline ingest` on the source."
            )
        with np.load(directory / IMAGES_FILE) as data:
            return cls(
                data["images"],
                data["labels"],
                data["splits"],
                data["source_splits"],
                data["keys"],
                manifest,
            )


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Per-class counts in ``CLASSES`` order, zeros included."""
    counts = np.bincount(labels.astype(np.int64), minlength=len(CLASSES))
    return {name: int(counts[i]) for i, name in enumerate(CLASSES)}
