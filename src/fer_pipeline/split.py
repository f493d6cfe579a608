"""Stratified, seeded train/validation split of the Kaggle `train` split, and
balanced class weights computed from the training part only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import train_test_split

from fer_pipeline.classes import CLASSES
from fer_pipeline.config import SplitConfig
from fer_pipeline.dataset import IMAGES_FILE, FerDataset, class_counts
from fer_pipeline.errors import DatasetError, UnusableFileError, check_shape, read_json_file
from fer_pipeline.files import write_json

SPLIT_FORMAT_VERSION = 1
SPLIT_FILE = "a split file written by `fer-pipeline split`"
RERUN = "rerun `fer-pipeline split` on this dataset and pass the file it writes"


class _SplitShape(BaseModel):
    """What ``Split.load`` relies on in a split file (``Split.to_json``); checked on every read,
    so that valid JSON of another shape is refused with the file's name, not a crash."""

    model_config = ConfigDict(extra="allow", strict=True)
    format_version: int
    val_fraction: float = Field(gt=0, lt=1)
    seed: int
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    class_weights: dict[str, float]
    train_indices: list[Annotated[int, Field(ge=0)]]
    val_indices: list[Annotated[int, Field(ge=0)]]


def _check_shape(data: Any, path: Path) -> None:
    """UnusableFileError naming ``path`` and the first misplaced field when ``data`` is not a split."""
    check_shape(_SplitShape, data, path, SPLIT_FILE, UnusableFileError, advice=RERUN)
    missing = [name for name in CLASSES if name not in data["class_weights"]]
    if missing:
        raise UnusableFileError(f"{path} is not {SPLIT_FILE}: class_weights lacks {', '.join(missing)}; {RERUN}.")


@dataclass(frozen=True)
class Split:
    """Indices into the canonical dataset, and the weights the loss uses."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    class_weights: dict[str, float]
    config: SplitConfig
    source: str = field(default="", compare=False)  # the file it was loaded from, for messages
    dataset_md5: str = field(default="", compare=False)  # images.npz's, as the dataset's manifest gives it

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
            **({"dataset_images_md5": self.dataset_md5} if self.dataset_md5 else {}),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_json(), indent=None)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """The split in ``path``; UnusableFileError naming the file when it is missing, not
        JSON, or not the shape ``save`` writes (indices are whole numbers, none negative)."""
        path = Path(path)
        data = read_json_file(path, SPLIT_FILE)
        if isinstance(data, dict) and data.get("format_version") != SPLIT_FORMAT_VERSION:
            raise DatasetError(f"{path}: unknown split format {data.get('format_version')!r}; re-run the split step.")
        _check_shape(data, path)
        return cls(
            np.asarray(data["train_indices"], dtype=np.int64),
            np.asarray(data["val_indices"], dtype=np.int64),
            data["train_counts"],
            data["val_counts"],
            data["class_weights"],
            SplitConfig(val_fraction=data["val_fraction"], seed=data["seed"]),
            str(path),
            str(data.get("dataset_images_md5") or ""),  # absent in files written before it was recorded
        )

    def check_fits(self, dataset: FerDataset) -> None:
        """DatasetError naming the split file when it was made for another dataset: an index
        past its images, one of its test images (training on them would leak the test
        split), or another images.npz than the one it recorded."""
        named = self.source or "The split"
        indices = np.concatenate([self.train_indices, self.val_indices])
        if len(indices) and (indices.max() >= len(dataset) or indices.min() < 0):
            bad = int(indices.max()) if indices.max() >= len(dataset) else int(indices.min())
            raise DatasetError(
                f"{named} holds index {bad}, but the dataset has {len(dataset)} images "
                f"(indices 0 to {len(dataset) - 1}): the split was made for another dataset; {RERUN}."
            )
        if len(indices) and (not_train := indices[dataset.splits[indices] != "train"]).size:
            raise DatasetError(
                f"{named} puts {not_train.size} of this dataset's test images (index {int(not_train[0])} first) "
                f"in training or validation: the split was made for another dataset; {RERUN}."
            )
        recorded, present = self.dataset_md5, dataset_md5(dataset)
        if recorded and present and recorded != present:
            raise DatasetError(
                f"{named} was made for a dataset whose images.npz has MD5 {recorded}, this one's is {present}; {RERUN}."
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
        dataset_md5=dataset_md5(dataset),
    )


def dataset_md5(dataset: FerDataset) -> str:
    """The MD5 of the dataset's images.npz its manifest records ("" when it records none):
    ingest writes the same bytes for the same source and options, so it names the data."""
    return str(dataset.manifest.get("files", {}).get(IMAGES_FILE, {}).get("md5") or "")
