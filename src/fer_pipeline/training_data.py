"""Which samples a training phase trains and validates on, and their loss weights:
the split's indices, capped for quick runs (stratified), and class weights per image."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fer_pipeline.classes import NUM_CLASSES
from fer_pipeline.config import TrainConfig
from fer_pipeline.dataset import FerDataset
from fer_pipeline.split import Split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseData:
    """Which samples a phase trains and validates on, and the training loss weights."""

    train_indices: np.ndarray
    val_indices: np.ndarray
    train_sample_weights: np.ndarray | None  # per training sample; None without class weighting


def phase_data(dataset: FerDataset, split: Split, cfg: TrainConfig) -> PhaseData:
    """Training/validation indices (capped by ``cfg.max_train_samples``) and loss weights.

    Args:
        dataset: The canonical dataset.
        split: Training and validation indices and class weights.
        cfg: Uses ``train_on_validation`` (the validation images join the training ones),
            ``max_train_samples`` (images; 0 = all), ``class_weighting``,
            ``class_weight_power`` and ``seed``.

    Returns:
        The indices to use and, with class weighting, each training image's weight
        ``class_weights[label] ** class_weight_power``. Validation loss stays unweighted.

    Raises:
        DatasetError: naming the split file, when it was made for another dataset
            (``Split.check_fits``: indices past its images or on its test images, another
            images.npz).
    """
    split.check_fits(dataset)
    train_idx, val_idx = split.train_indices, split.val_indices
    if cfg.train_on_validation:
        # The split's class weights stay: a stratified split gives its two parts the same class shares.
        train_idx = np.sort(np.concatenate([train_idx, val_idx]))
    if cfg.max_train_samples > 0:
        # Validation shrinks by the same ratio; at least 1 (raised to one per class below).
        val_cap = max(1, round(cfg.max_train_samples * len(val_idx) / max(len(train_idx), 1)))
        train_idx = stratified_cap(train_idx, dataset.labels[train_idx], cfg.max_train_samples, cfg.seed)
        val_idx = stratified_cap(val_idx, dataset.labels[val_idx], val_cap, cfg.seed + 1)
    weights = None
    if cfg.class_weighting:
        by_index = split.class_weight_by_index()
        table = np.array([by_index[i] for i in range(NUM_CLASSES)], dtype=np.float32) ** cfg.class_weight_power
        weights = table[dataset.labels[train_idx].astype(np.int64)]
    return PhaseData(train_idx, val_idx, weights)


def stratified_cap(indices: np.ndarray, labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A seeded random subset of at most ``cap`` indices, class shares kept, every class kept.

    Args:
        indices: Sample indices.
        labels: Class of each entry of ``indices``.
        cap: Most indices to keep; raised to the number of classes present so that
            each keeps at least one. ``cap`` <= 0 or >= ``len(indices)`` keeps all.
        seed: Random seed.

    Returns:
        The kept indices, sorted.
    """
    if cap <= 0 or cap >= len(indices):
        return indices
    classes, counts = np.unique(labels, return_counts=True)
    if cap < len(classes):
        logger.warning("A cap of %d samples is below the %d classes present; keeping one per class.", cap, len(classes))
        cap = len(classes)
    quota = _class_quota(counts, cap)
    rng = np.random.default_rng(seed)
    kept = [rng.choice(indices[labels == c], size=n, replace=False) for c, n in zip(classes, quota)]
    return np.sort(np.concatenate(kept))


def _class_quota(counts: np.ndarray, cap: int) -> np.ndarray:
    """Per-class sample numbers summing to ``cap``: proportional, at least 1, at most the count."""
    exact = counts * cap / counts.sum()
    quota = np.clip(np.floor(exact).astype(np.int64), 1, counts)
    by_remainder = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while quota.sum() < cap:  # hand out the rest by largest remainder
        for i in by_remainder:
            if quota.sum() < cap and quota[i] < counts[i]:
                quota[i] += 1
    while quota.sum() > cap:  # the minimum of one overshot: take back from the largest
        quota[np.argmax(np.where(quota > 1, quota, -1))] -= 1
    return quota
