"""Mixup and CutMix of training batches (``TrainConfig.mix``), in NumPy, for both feeds:
``feed_numpy`` mixes each batch it hands out, ``tf_data`` each batch of its pipeline
(through ``tf.numpy_function``), so the two draw alike.

Per batch, as in the papers' reference code: one partner for each image (a shuffle of
the batch) and one weight lambda ~ Beta(mix_alpha, mix_alpha) for the whole batch.

- ``mixup`` (Zhang et al., 2018): image = lambda x image + (1 - lambda) x partner.
- ``cutmix`` (Yun et al., 2019): a rectangle of about 1 - lambda of the area, centred
  at a random pixel and clipped at the border, is pasted from the partner; lambda then
  becomes the share of the image's own pixels that is left.

The target of each image is lambda on its label and 1 - lambda on its partner's (one
row of 7 class probabilities; ``optim.SparseCrossentropy`` takes it, with label
smoothing, as lambda x CE(label) + (1 - lambda) x CE(partner's label)). Class weights,
which reach the loss as per-image weights, mix the same way: lambda x the image's
weight + (1 - lambda) x the partner's, so a mixed pair counts as much as its two
images' shares. A batch left unmixed (``mix_prob`` < 1) keeps its images and weights
and carries its labels as one-hot rows, so every batch has the same shape. Validation
batches are never mixed.

Where the model's own layers augment (the TensorFlow feed without XLA), mixing comes
before their flip and shift, so the two images of a pair share one transform (the
NumPy feed and XLA's input stage transform each image on its own, then mix); the
resampling is linear in the pixels, so a mixup image is still the lambda-weighted sum,
and a CutMix rectangle moves with its image (the shares hold up to the repeated edge).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fer_pipeline.classes import NUM_CLASSES
from fer_pipeline.config import TrainConfig

Batch = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # images, targets or labels, per-image weights


@dataclass(frozen=True)
class Draw:
    """One batch's random choices."""

    partner: np.ndarray  # (B,) index of the image each image is mixed with
    lam: float  # share of each image's own label in its target, in [0, 1]
    box: tuple[int, int, int, int] | None = None  # cutmix: rows y0:y1, columns x0:x1 taken from the partner


def draw(cfg: TrainConfig, n: int, size: tuple[int, int], rng: np.random.Generator) -> Draw:
    """Partners, lambda and (cutmix) the rectangle for a batch of ``n`` images of ``size`` (H, W)."""
    partner = rng.permutation(n)
    if rng.uniform() >= cfg.mix_prob:
        return Draw(partner, 1.0)
    lam = float(rng.beta(cfg.mix_alpha, cfg.mix_alpha))
    if cfg.mix != "cutmix":
        return Draw(partner, lam)
    h, w = size
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return Draw(partner, float(kept), (int(y0), int(y1), int(x0), int(x1)))


def apply(chosen: Draw, images: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> Batch:
    """``images`` (B, H, W, C) mixed as ``chosen`` says, their soft targets (B, 7) float32,
    and the mixed ``weights`` (None stays None)."""
    lam, partner = chosen.lam, chosen.partner
    if chosen.box is not None:
        y0, y1, x0, x1 = chosen.box
        images = images.copy()
        images[:, y0:y1, x0:x1] = images[partner, y0:y1, x0:x1]
    elif lam < 1.0:
        images = (lam * images + (1.0 - lam) * images[partner]).astype(images.dtype)
    one_hot = np.eye(NUM_CLASSES, dtype="float32")
    labels = np.asarray(labels).reshape(-1).astype("int64")
    targets = lam * one_hot[labels] + (1.0 - lam) * one_hot[labels[partner]]
    if weights is not None:
        weights = (lam * weights + (1.0 - lam) * weights[partner]).astype("float32")
    return images, targets.astype("float32"), weights


def mixer(cfg: TrainConfig) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.random.Generator], Batch] | None:
    """``mix(images, labels, weights, rng)`` for ``cfg.mix``; None for ``none``."""
    if cfg.mix == "none":
        return None

    def mix(images: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, rng: np.random.Generator) -> Batch:
        return apply(draw(cfg, len(labels), images.shape[1:3], rng), images, labels, weights)

    return mix
