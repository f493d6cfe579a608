"""Stratified, seeded train/validation split of the Kaggle `train` split, and
balanced class weights computed from the training part only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from fer_pipeline.classes import CLASSES
from fer_pipeline.config import SplitConfig
from fer_pipeline.dataset import FerDataset, class_counts
from fer_pipeline.errors import DatasetError
from fer_pipeline.files import write_json

SPLIT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Indices into the canonical dataset, and the weights the loss uses."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    class_weights: dict[str, float]
    config: SplitConfig

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": SPLIT_FORMAT_VERSION,
            "val_fraction": self.config.val_fraction,
            "seed": self.config.seed,
            "train_counts": self.train_counts,
            "val_counts": self.val_counts,
            "class_weights": self.class_weights,
            "train_indices": self.train_indices.tolist(),
            "val_indices": self.val_indices.tolist(),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_json(), indent=None)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        data = json.loads(Path(path).read_text())
        if data.get("format_version") != SPLIT_FORMAT_VERSION:
            raise DatasetError(f"{path}: unknown split format {data.get('format_version')!r}; re-run the split step.")
        return cls(
            np.asarray(data["train_indices"], dtype=np.int64),
            np.asarray(data["val_indices"], dtype=np.int64),
            data["train_counts"],
            data["val_counts"],
            data["class_weights"],
            SplitConfig(val_fraction=data["val_fraction"], seed=data["seed"]),
        )

    def class_weight_by_index(self) -> dict[int, float]:
        """Weights keyed by class index, as Keras' ``fit(class_weight=...)`` wants them."""
        return {i: self.class_weights[name] for i, name in enumerate(CLASSES)}


def balanced_class_weights(counts: dict[str, int]) -> dict[str, float]:
    """``n / (k * count_k)`` per class, as scikit-learn's "balanced"; k counts present classes."""
    present = {name: c for name, c in counts.items() if c > 0}
    n, k = sum(present.values()), len(present)
    return {name: (n / (k * present[name]) if name in present else 0.0) for name in CLASSES}


def check_stratifiable(labels: np.ndarray, cfg: SplitConfig) -> None:
    """Fail with the numbers when some class is too small for a stratified split."""
    counts = class_counts(labels)
    small = {name: c for name, c in counts.items() if c < cfg.min_per_class}
    if small:
        detail = ", ".join(f"{name}={c}" for name, c in small.items())
        raise DatasetError(
            f"Cannot make a stratified split: class(es) with fewer than {cfg.min_per_class} "
            f"training images: {detail}. Add images for these classes or use a dataset with all seven."
        )
    n_val = int(round(cfg.val_fraction * len(labels)))
    if n_val < len(CLASSES) or len(labels) - n_val < len(CLASSES):
        raise DatasetError(
            f"val_fraction={cfg.val_fraction} of {len(labels)} training images gives {n_val} "
            f"validation images; both parts need at least one image per class ({len(CLASSES)})."
        )


def make_split(dataset: FerDataset, cfg: SplitConfig) -> Split:
    """Split the dataset's `train` samples, stratified by class, reproducibly from ``cfg.seed``."""
    candidates = dataset.indices("train")
    labels = dataset.labels[candidates]
    check_stratifiable(labels, cfg)
    train_idx, val_idx = train_test_split(
        candidates, test_size=cfg.val_fraction, stratify=labels, random_state=cfg.seed, shuffle=True
    )
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    train_counts = class_counts(dataset.labels[train_idx])
    return Split(
        train_idx,
        val_idx,
        train_counts,
        class_counts(dataset.labels[val_idx]),
        balanced_class_weights(train_counts),
        cfg,
    )
